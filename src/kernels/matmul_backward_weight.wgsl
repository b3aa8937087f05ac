// Linear layer backward, weight gradient: dweight (K,N) += inpᵀ · dout, inp (M,K) read in place (no transpose pass).
// Parameter gradients accumulate. Same tiling as matmul_forward (TILE_ROWS × TILE_COLS block of dweight per
// workgroup, 4×4 outputs per thread); the reduction runs over the M tokens in TILE_DEPTH steps.
// The bias gradient is a separate kernel (matmul_backward_bias) so this one needs no optional writable binding.

struct Params { M: u32, N: u32, K: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> inp: array<f32>;          // (M,K)
@group(0) @binding(2) var<storage, read> dout: array<f32>;         // (M,N)
@group(0) @binding(3) var<storage, read_write> dweight: array<f32>; // (K,N)

override TILE_ROWS: u32 = 64;  // rows of dweight (K), multiple of 4
override TILE_COLS: u32 = 64;  // columns of dweight (N), multiple of 4
override TILE_DEPTH: u32 = 16; // reduction (M)

const THREAD_ROWS = 4u;
const THREAD_COLS = 4u;
override WG_COLS = TILE_COLS / THREAD_COLS;  // derived; not set by the wrapper
override WG_ROWS = TILE_ROWS / THREAD_ROWS;

var<workgroup> inp_tile: array<f32, TILE_DEPTH * TILE_ROWS>;   // (TILE_DEPTH, TILE_ROWS) = inpᵀ block, transposed
var<workgroup> dout_tile: array<f32, TILE_DEPTH * TILE_COLS>;  // (TILE_DEPTH, TILE_COLS)

@compute @workgroup_size(WG_COLS, WG_ROWS)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(local_invocation_index) lindex: u32) {
  let M = params.M;
  let N = params.N;
  let K = params.K;
  let row0 = wid.y * TILE_ROWS;
  let col0 = wid.x * TILE_COLS;
  let threads = WG_COLS * WG_ROWS;

  var acc: array<vec4f, THREAD_ROWS>;
  for (var m0 = 0u; m0 < M; m0 += TILE_DEPTH) {
    // Both operands are contiguous along their output dimension, so the tiles are copied as they lie.
    for (var e = lindex; e < TILE_DEPTH * TILE_ROWS; e += threads) {
      let d = e / TILE_ROWS;
      let r = e % TILE_ROWS;
      var v = 0.0;
      if (m0 + d < M && row0 + r < K) { v = inp[(m0 + d) * K + row0 + r]; }
      inp_tile[e] = v;
    }
    for (var e = lindex; e < TILE_DEPTH * TILE_COLS; e += threads) {
      let d = e / TILE_COLS;
      let c = e % TILE_COLS;
      var v = 0.0;
      if (m0 + d < M && col0 + c < N) { v = dout[(m0 + d) * N + col0 + c]; }
      dout_tile[e] = v;
    }
    workgroupBarrier();
    for (var d = 0u; d < TILE_DEPTH; d++) {
      var g: vec4f;
      for (var j = 0u; j < THREAD_COLS; j++) { g[j] = dout_tile[d * TILE_COLS + lid.x + j * WG_COLS]; }
      for (var i = 0u; i < THREAD_ROWS; i++) {
        acc[i] = fma(vec4f(inp_tile[d * TILE_ROWS + lid.y + i * WG_ROWS]), g, acc[i]);
      }
    }
    workgroupBarrier();
  }

  for (var i = 0u; i < THREAD_ROWS; i++) {
    let row = row0 + lid.y + i * WG_ROWS;
    for (var j = 0u; j < THREAD_COLS; j++) {
      let col = col0 + lid.x + j * WG_COLS;
      if (row < K && col < N) { dweight[row * N + col] += acc[i][j]; }
    }
  }
}
