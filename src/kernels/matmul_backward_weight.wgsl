// Linear layer backward, weight gradient, scalar loads: dweight (K,N) += inpᵀ · dout, inp (M,K) read in place (no
// transpose pass). Parameter gradients accumulate. The fallback for K or N not a multiple of 4
// (matmul_backward_weight_vec4.wgsl otherwise). The bias gradient is a separate kernel (matmul_backward_bias) so this
// one needs no optional writable binding.
// Same tiling as matmul_forward.wgsl (see its header): a TILE_ROWS × TILE_COLS block of dweight per workgroup, the
// reduction over the M tokens in TILE_DEPTH steps, THREAD_ROWS × THREAD_COLS outputs per thread in 4×4 chunks.
// Both operands are contiguous along their output dimension (inp along K, dout along N), so both blocks are copied
// as they lie (depth-major already): a thread reads 4 consecutive elements of one row and stores one vec4. Columns
// past K or N are clamped (never stored), only the last depth tile is masked, stores check the edges.

struct Params { M: u32, N: u32, K: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> inp: array<f32>;          // (M,K)
@group(0) @binding(2) var<storage, read> dout: array<f32>;         // (M,N)
@group(0) @binding(3) var<storage, read_write> dweight: array<f32>; // (K,N)

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
  let N = params.N;
  let K = params.K;
  // Both blocks as they lie: a thread reads 4 consecutive columns of one token's row and stores one vec4.
  for (var e = lindex; e < TILE_DEPTH * INP_STRIDE4; e += THREADS) {
    let d = e / INP_STRIDE4;
    let k = row0 + (e % INP_STRIDE4) * 4u;
    var v = vec4f();
    if (!partial || m0 + d < M) {
      let base = (m0 + d) * K;
      v = vec4f(inp[base + min(k, K - 1u)], inp[base + min(k + 1u, K - 1u)],
                inp[base + min(k + 2u, K - 1u)], inp[base + min(k + 3u, K - 1u)]);
    }
    inp_tile[e] = v;
  }
  for (var e = lindex; e < TILE_DEPTH * DOUT_STRIDE4; e += THREADS) {
    let d = e / DOUT_STRIDE4;
    let n = col0 + (e % DOUT_STRIDE4) * 4u;
    var v = vec4f();
    if (!partial || m0 + d < M) {
      let base = (m0 + d) * N;
      v = vec4f(dout[base + min(n, N - 1u)], dout[base + min(n + 1u, N - 1u)],
                dout[base + min(n + 2u, N - 1u)], dout[base + min(n + 3u, N - 1u)]);
    }
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

// Adds the chunk to rows row..row+3, columns col..col+3 of dweight; only elements inside (K, N).
fn store_chunk(chunk: mat4x4f, row: u32, col: u32) {
  let N = params.N;
  let K = params.K;
  for (var i = 0u; i < 4u; i++) {
    for (var j = 0u; j < 4u; j++) {
      if (row + i < K && col + j < N) { dweight[(row + i) * N + col + j] += chunk[i][j]; }
    }
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
  let col_a = col0 + lid.x * 4u;  // first columns of the thread's two column bands
  let col_b = col_a + COL_BAND4 * 4u;
  store_chunk(acc00, row_a, col_a);
  if (COL_BANDS > 1u) { store_chunk(acc01, row_a, col_b); }
  if (ROW_BANDS > 1u) { store_chunk(acc10, row_b, col_a); }
  if (ROW_BANDS > 1u && COL_BANDS > 1u) { store_chunk(acc11, row_b, col_b); }
}
