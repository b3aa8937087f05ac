// Linear layer backward, input gradient: dinp (M,K) = or += dout (M,N) · weightᵀ, weight (K,N) read in place (no
// transpose pass). `accumulate` = 1 adds to dinp, for an input whose gradient also arrives by another path.
// Same tiling as matmul_forward (TILE_ROWS × TILE_COLS block of dinp per workgroup, 4×4 outputs per thread); the
// reduction runs over N in TILE_DEPTH steps.

struct Params { M: u32, N: u32, K: u32, accumulate: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> dout: array<f32>;      // (M,N)
@group(0) @binding(2) var<storage, read> weight: array<f32>;    // (K,N)
@group(0) @binding(3) var<storage, read_write> dinp: array<f32>; // (M,K)

override TILE_ROWS: u32 = 64;  // rows of dinp (M), multiple of 4
override TILE_COLS: u32 = 64;  // columns of dinp (K), multiple of 4
override TILE_DEPTH: u32 = 16; // reduction (N)

const THREAD_ROWS = 4u;
const THREAD_COLS = 4u;
override WG_COLS = TILE_COLS / THREAD_COLS;  // derived; not set by the wrapper
override WG_ROWS = TILE_ROWS / THREAD_ROWS;

var<workgroup> dout_tile: array<f32, TILE_DEPTH * TILE_ROWS>;    // (TILE_DEPTH, TILE_ROWS)
var<workgroup> weight_tile: array<f32, TILE_DEPTH * TILE_COLS>;  // (TILE_DEPTH, TILE_COLS) = weightᵀ block

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
  for (var n0 = 0u; n0 < N; n0 += TILE_DEPTH) {
    // Both operands are contiguous along N, so consecutive threads read consecutive n.
    for (var e = lindex; e < TILE_ROWS * TILE_DEPTH; e += threads) {
      let r = e / TILE_DEPTH;
      let d = e % TILE_DEPTH;
      var v = 0.0;
      if (row0 + r < M && n0 + d < N) { v = dout[(row0 + r) * N + n0 + d]; }
      dout_tile[d * TILE_ROWS + r] = v;
    }
    for (var e = lindex; e < TILE_COLS * TILE_DEPTH; e += threads) {
      let c = e / TILE_DEPTH;
      let d = e % TILE_DEPTH;
      var v = 0.0;
      if (col0 + c < K && n0 + d < N) { v = weight[(col0 + c) * N + n0 + d]; }
      weight_tile[d * TILE_COLS + c] = v;
    }
    workgroupBarrier();
    for (var d = 0u; d < TILE_DEPTH; d++) {
      var w: vec4f;
      for (var j = 0u; j < THREAD_COLS; j++) { w[j] = weight_tile[d * TILE_COLS + lid.x + j * WG_COLS]; }
      for (var i = 0u; i < THREAD_ROWS; i++) {
        acc[i] = fma(vec4f(dout_tile[d * TILE_ROWS + lid.y + i * WG_ROWS]), w, acc[i]);
      }
    }
    workgroupBarrier();
  }

  for (var i = 0u; i < THREAD_ROWS; i++) {
    let row = row0 + lid.y + i * WG_ROWS;
    for (var j = 0u; j < THREAD_COLS; j++) {
      let col = col0 + lid.x + j * WG_COLS;
      if (row < M && col < K) {
        let idx = row * K + col;
        if (params.accumulate != 0u) {
          dinp[idx] += acc[i][j];
        } else {
          dinp[idx] = acc[i][j];
        }
      }
    }
  }
}
