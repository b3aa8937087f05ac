// Linear layer backward, weight gradient, vec4 loads: dweight (K,N) += inpᵀ · dout, for K and N multiples of 4 (the
// host checks; matmul_backward_weight.wgsl is the scalar fallback). Parameter gradients accumulate.
// Same tiling as matmul_forward.wgsl (see its header). Both operands are contiguous along their output dimension, so
// inp is read as vec4 along K and dout as vec4 along N, and both are stored into the depth-major tiles as they lie
// (one 16-byte load and store per thread and block row); dweight is read-modified-written as vec4 along N.

struct Params { M: u32, N: u32, K: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> inp: array<vec4f>;          // (M,K/4)
@group(0) @binding(2) var<storage, read> dout: array<vec4f>;         // (M,N/4)
@group(0) @binding(3) var<storage, read_write> dweight: array<vec4f>; // (K,N/4)

override TILE_ROWS: u32 = 128;  // rows of dweight (K), multiple of THREAD_ROWS
override TILE_COLS: u32 = 128;  // columns of dweight (N), multiple of THREAD_COLS
override TILE_DEPTH: u32 = 8;   // reduction (M), multiple of 4
override THREAD_ROWS: u32 = 8;  // 4 or 8
override THREAD_COLS: u32 = 8;  // 4 or 8

// Derived; not set by the wrapper.
override WG_COLS = TILE_COLS / THREAD_COLS;
override WG_ROWS = TILE_ROWS / THREAD_ROWS;
override THREADS = WG_COLS * WG_ROWS;
override ROW_BANDS = THREAD_ROWS / 4u;
override COL_BANDS = THREAD_COLS / 4u;
override ROW_BAND4 = TILE_ROWS / ROW_BANDS / 4u;
override COL_BAND4 = TILE_COLS / COL_BANDS / 4u;
override INP_STRIDE4 = TILE_ROWS / 4u;
override DOUT_STRIDE4 = TILE_COLS / 4u;

var<workgroup> inp_tile: array<vec4f, TILE_DEPTH * INP_STRIDE4>;   // (TILE_DEPTH, TILE_ROWS): inp block
var<workgroup> dout_tile: array<vec4f, TILE_DEPTH * DOUT_STRIDE4>; // (TILE_DEPTH, TILE_COLS): dout block

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

fn load_tiles(row0: u32, col0: u32, m0: u32, lindex: u32, partial: bool) {
  let M = params.M;
  let K4 = params.K / 4u;
  let N4 = params.N / 4u;
  for (var e = lindex; e < TILE_DEPTH * INP_STRIDE4; e += THREADS) {
    let d = e / INP_STRIDE4;
    let q = e % INP_STRIDE4;
    let k4 = min(row0 / 4u + q, K4 - 1u);
    var v = vec4f();
    if (!partial || m0 + d < M) { v = inp[(m0 + d) * K4 + k4]; }
    inp_tile[e] = v;
  }
  for (var e = lindex; e < TILE_DEPTH * DOUT_STRIDE4; e += THREADS) {
    let d = e / DOUT_STRIDE4;
    let q = e % DOUT_STRIDE4;
    let n4 = min(col0 / 4u + q, N4 - 1u);
    var v = vec4f();
    if (!partial || m0 + d < M) { v = dout[(m0 + d) * N4 + n4]; }
    dout_tile[e] = v;
  }
}

// The band branches test override constants only, so each pipeline compiles to straight-line code.
fn multiply_tiles(tx: u32, ty: u32) {
  for (var d = 0u; d < TILE_DEPTH; d++) {
    let a0 = inp_tile[d * INP_STRIDE4 + ty];
    let b0 = dout_tile[d * DOUT_STRIDE4 + tx];
    acc00 = outer(acc00, a0, b0);
    if (COL_BANDS > 1u) {
      let b1 = dout_tile[d * DOUT_STRIDE4 + COL_BAND4 + tx];
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

// Adds the chunk to rows row..row+3 of dweight at column quad col4; only rows inside K and a quad inside N.
fn store_chunk(chunk: mat4x4f, row: u32, col4: u32) {
  let N4 = params.N / 4u;
  if (col4 >= N4) { return; }
  for (var i = 0u; i < 4u; i++) {
    if (row + i < params.K) { dweight[(row + i) * N4 + col4] += chunk[i]; }
  }
}

@compute @workgroup_size(WG_COLS, WG_ROWS)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(local_invocation_index) lindex: u32) {
  let M = params.M;
  let row0 = wid.y * TILE_ROWS;
  let col0 = wid.x * TILE_COLS;

  var m0 = 0u;
  for (; m0 + TILE_DEPTH <= M; m0 += TILE_DEPTH) {
    load_tiles(row0, col0, m0, lindex, false);
    workgroupBarrier();
    multiply_tiles(lid.x, lid.y);
    workgroupBarrier();
  }
  if (m0 < M) {
    load_tiles(row0, col0, m0, lindex, true);  // tokens past M are zeros
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
