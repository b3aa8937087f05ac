// Linear layer forward, vec4 loads: out (M,N) = inp (M,K) · weight (K,N) [+ bias (N)], for K and N multiples of 4
// (the host checks; matmul_forward.wgsl is the scalar fallback). Same tiling as matmul_forward.wgsl (see its header:
// TILE_ROWS × TILE_COLS output block per workgroup, TILE_DEPTH steps, THREAD_ROWS × THREAD_COLS outputs per thread
// in 4×4 chunks, edges clamped, only the last depth tile masked), with every global access 16 bytes wide:
// - inp is read along K: a thread takes the same 4 depths of 4 consecutive rows (4 vec4), transposes that 4×4 block
//   in registers and stores it as 4 vec4 into the (TILE_DEPTH, TILE_ROWS + 4) tile, whose padding keeps those stores
//   conflict-free; that is a (TILE_ROWS/4)·(TILE_DEPTH/4)-thread job, and every thread loads one vec4 of weight;
// - weight is read as vec4 along N and stored as it lies; out and bias are written and read as vec4 along N.
// K % 4 = 0 also means a partial depth tile holds whole vec4, so the depth mask works per vec4.

struct Params { M: u32, N: u32, K: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> inp: array<vec4f>;     // (M,K/4)
@group(0) @binding(2) var<storage, read> weight: array<vec4f>;  // (K,N/4)
@group(0) @binding(3) var<storage, read> bias: array<vec4f>;    // (N/4), read only when HAS_BIAS
@group(0) @binding(4) var<storage, read_write> out: array<vec4f>; // (M,N/4)

override TILE_ROWS: u32 = 128;  // multiple of THREAD_ROWS
override TILE_COLS: u32 = 128;  // multiple of THREAD_COLS
override TILE_DEPTH: u32 = 8;   // multiple of 4
override THREAD_ROWS: u32 = 8;  // 4 or 8
override THREAD_COLS: u32 = 8;  // 4 or 8
override HAS_BIAS: bool = false;

// Derived; not set by the wrapper.
override WG_COLS = TILE_COLS / THREAD_COLS;
override WG_ROWS = TILE_ROWS / THREAD_ROWS;
override THREADS = WG_COLS * WG_ROWS;
override ROW_BANDS = THREAD_ROWS / 4u;
override COL_BANDS = THREAD_COLS / 4u;
override ROW_BAND4 = TILE_ROWS / ROW_BANDS / 4u;  // vec4 between a thread's row chunks
override COL_BAND4 = TILE_COLS / COL_BANDS / 4u;
override DEPTH4 = TILE_DEPTH / 4u;
override INP_STRIDE4 = TILE_ROWS / 4u + 1u;       // (TILE_ROWS + 4) floats: padding against bank conflicts
override WEIGHT_STRIDE4 = TILE_COLS / 4u;

var<workgroup> inp_tile: array<vec4f, TILE_DEPTH * INP_STRIDE4>;       // (TILE_DEPTH, TILE_ROWS + 4): inp transposed
var<workgroup> weight_tile: array<vec4f, TILE_DEPTH * WEIGHT_STRIDE4>; // (TILE_DEPTH, TILE_COLS)

// A thread's outputs as up to 2 × 2 chunks of 4×4, acc<row band><column band>; column i of a chunk holds its row i.
// Named matrices rather than an indexed array, so no compiler has to unroll loops to keep them in registers.
var<private> acc00: mat4x4f;
var<private> acc01: mat4x4f;
var<private> acc10: mat4x4f;
var<private> acc11: mat4x4f;

// chunk + a ⊗ b: 4 rows a, 4 columns b.
fn outer(chunk: mat4x4f, a: vec4f, b: vec4f) -> mat4x4f {
  return mat4x4f(fma(vec4f(a.x), b, chunk[0]), fma(vec4f(a.y), b, chunk[1]),
                 fma(vec4f(a.z), b, chunk[2]), fma(vec4f(a.w), b, chunk[3]));
}

fn load_tiles(row0: u32, col0: u32, k0: u32, lindex: u32, partial: bool) {
  let M = params.M;
  let K4 = params.K / 4u;
  let N4 = params.N / 4u;
  let kq0 = k0 / 4u;
  // inp block, transposed: a thread reads the same 4 depths of 4 consecutive rows (4 vec4; consecutive threads take
  // consecutive depth quads of the same rows), transposes the 4×4 block in registers and stores 4 whole vec4.
  for (var e = lindex; e < TILE_ROWS / 4u * DEPTH4; e += THREADS) {
    let quad = e / DEPTH4;
    let q = e % DEPTH4;
    var block = mat4x4f();  // columns: 4 rows' vec4 of depths 4q..4q+3
    if (!partial || kq0 + q < K4) {
      let row = row0 + quad * 4u;
      let kq = kq0 + q;
      block = mat4x4f(inp[min(row, M - 1u) * K4 + kq], inp[min(row + 1u, M - 1u) * K4 + kq],
                      inp[min(row + 2u, M - 1u) * K4 + kq], inp[min(row + 3u, M - 1u) * K4 + kq]);
    }
    let depths = transpose(block);  // column i: depth 4q + i of the 4 rows
    for (var i = 0u; i < 4u; i++) { inp_tile[(q * 4u + i) * INP_STRIDE4 + quad] = depths[i]; }
  }
  // weight block as it lies, one vec4 per thread.
  for (var e = lindex; e < TILE_DEPTH * WEIGHT_STRIDE4; e += THREADS) {
    let d = e / WEIGHT_STRIDE4;
    let col4 = min(col0 / 4u + e % WEIGHT_STRIDE4, N4 - 1u);
    var v = vec4f();
    if (!partial || k0 + d < params.K) { v = weight[(k0 + d) * N4 + col4]; }
    weight_tile[e] = v;
  }
}

// The band branches test override constants only, so each pipeline compiles to straight-line code.
fn multiply_tiles(tx: u32, ty: u32) {
  for (var d = 0u; d < TILE_DEPTH; d++) {
    let a0 = inp_tile[d * INP_STRIDE4 + ty];
    let b0 = weight_tile[d * WEIGHT_STRIDE4 + tx];
    acc00 = outer(acc00, a0, b0);
    if (COL_BANDS > 1u) {
      let b1 = weight_tile[d * WEIGHT_STRIDE4 + COL_BAND4 + tx];
      acc01 = outer(acc01, a0, b1);
      if (ROW_BANDS > 1u) {
        let a1 = inp_tile[d * INP_STRIDE4 + ROW_BAND4 + ty];
        acc10 = outer(acc10, a1, b0);
        acc11 = outer(acc11, a1, b1);
      }
    } else if (ROW_BANDS > 1u) {
      let a1 = inp_tile[d * INP_STRIDE4 + ROW_BAND4 + ty];
      acc10 = outer(acc10, a1, b0);
    }
  }
}

// Rows row..row+3 of out at column quad col4 (+ bias); only rows inside M and a quad inside N are stored.
fn store_chunk(chunk: mat4x4f, row: u32, col4: u32) {
  let N4 = params.N / 4u;
  if (col4 >= N4) { return; }
  var bias4 = vec4f();
  if (HAS_BIAS) { bias4 = bias[col4]; }
  for (var i = 0u; i < 4u; i++) {
    if (row + i < params.M) { out[(row + i) * N4 + col4] = chunk[i] + bias4; }
  }
}

@compute @workgroup_size(WG_COLS, WG_ROWS)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(local_invocation_index) lindex: u32) {
  let K = params.K;
  let row0 = wid.y * TILE_ROWS;
  let col0 = wid.x * TILE_COLS;

  var k0 = 0u;
  for (; k0 + TILE_DEPTH <= K; k0 += TILE_DEPTH) {
    load_tiles(row0, col0, k0, lindex, false);
    workgroupBarrier();
    multiply_tiles(lid.x, lid.y);
    workgroupBarrier();
  }
  if (k0 < K) {
    load_tiles(row0, col0, k0, lindex, true);  // depths past K are zeros
    workgroupBarrier();
    multiply_tiles(lid.x, lid.y);
  }

  let row_a = row0 + lid.y * 4u;  // first rows of the thread's two row bands
  let row_b = row_a + ROW_BAND4 * 4u;
  let col_a = col0 / 4u + lid.x;  // column quads of the thread's two column bands
  let col_b = col_a + COL_BAND4;
  store_chunk(acc00, row_a, col_a);
  if (COL_BANDS > 1u) { store_chunk(acc01, row_a, col_b); }
  if (ROW_BANDS > 1u) { store_chunk(acc10, row_b, col_a); }
  if (ROW_BANDS > 1u && COL_BANDS > 1u) { store_chunk(acc11, row_b, col_b); }
}
