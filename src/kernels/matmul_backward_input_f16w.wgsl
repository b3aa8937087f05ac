// Linear layer backward, input gradient, with a frozen weight stored as f16: dinp (M,K) = or += dout (M,N) · weightᵀ,
// weight (K,N) read in place, packed two f16 per u32 as in matmul_forward_f16w.wgsl (row k: NP = ceil(N/2) words,
// column n in word k·NP + n/2, even n in the low half, odd N padded). `accumulate` = 1 adds to dinp. With wte (V,C)
// as the weight (K = V, N = C) this is also the tied LM head, logits = lnf · wteᵀ.
// Same tiling as matmul_forward.wgsl (see its header) and the same dout loads as matmul_backward_input.wgsl (one n of
// 4 consecutive rows per thread, stored transposed as one vec4). The weight block lands transposed too: a thread
// reads one word, the depth pair (n, n+1), of 4 consecutive weight rows (TILE_DEPTH and the depth tile's start are
// even, so pairs never straddle a tile), unpacks them and stores the two depths as two whole vec4. Weight rows past K
// are clamped (never stored); in the last, partial depth tile a pair past N is zero and so is the odd N's padding
// half, so a weight holding Inf or NaN there cannot leak into real outputs.

struct Params { M: u32, N: u32, K: u32, accumulate: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> dout: array<f32>;      // (M,N)
@group(0) @binding(2) var<storage, read> weight: array<u32>;    // (K,ceil(N/2)): f16 pairs along N
@group(0) @binding(3) var<storage, read_write> dinp: array<f32>; // (M,K)

override TILE_ROWS: u32 = 128;  // rows of dinp (M), multiple of THREAD_ROWS
override TILE_COLS: u32 = 128;  // columns of dinp (K), multiple of THREAD_COLS
override TILE_DEPTH: u32 = 8;   // reduction (N), multiple of 4
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
override DEPTH2 = TILE_DEPTH / 2u;                // depth pairs (words) per tile row
override DOUT_STRIDE4 = TILE_ROWS / 4u + 1u;
override WEIGHT_STRIDE4 = TILE_COLS / 4u + 1u;

var<workgroup> dout_tile: array<vec4f, TILE_DEPTH * DOUT_STRIDE4>;     // (TILE_DEPTH, TILE_ROWS + 4): dout transposed
var<workgroup> weight_tile: array<vec4f, TILE_DEPTH * WEIGHT_STRIDE4>; // (TILE_DEPTH, TILE_COLS + 4): weightᵀ, f32

// A thread's outputs as up to 2 × 2 chunks of 4×4, acc<row band><column band>; column i of a chunk holds its row i.
var<private> acc00: mat4x4f;
var<private> acc01: mat4x4f;
var<private> acc10: mat4x4f;
var<private> acc11: mat4x4f;

// chunk + a ⊗ b: 4 rows a, 4 columns b.
fn outer(chunk: mat4x4f, a: vec4f, b: vec4f) -> mat4x4f {
  return mat4x4f(fma(vec4f(a.x), b, chunk[0]), fma(vec4f(a.y), b, chunk[1]),
                 fma(vec4f(a.z), b, chunk[2]), fma(vec4f(a.w), b, chunk[3]));
}

fn load_tiles(row0: u32, col0: u32, n0: u32, lindex: u32, partial: bool) {
  let M = params.M;
  let N = params.N;
  let K = params.K;
  let NP = (N + 1u) / 2u;  // words per weight row
  for (var e = lindex; e < TILE_ROWS / 4u * TILE_DEPTH; e += THREADS) {
    let quad = e / TILE_DEPTH;
    let d = e % TILE_DEPTH;
    var v = vec4f();
    if (!partial || n0 + d < N) {
      let row = row0 + quad * 4u;
      let n = n0 + d;
      v = vec4f(dout[min(row, M - 1u) * N + n], dout[min(row + 1u, M - 1u) * N + n],
                dout[min(row + 2u, M - 1u) * N + n], dout[min(row + 3u, M - 1u) * N + n]);
    }
    dout_tile[d * DOUT_STRIDE4 + quad] = v;
  }
  // weightᵀ block: word p of the tile holds depths 2p (low half) and 2p + 1 (high half) of one weight row.
  for (var e = lindex; e < TILE_COLS / 4u * DEPTH2; e += THREADS) {
    let quad = e / DEPTH2;
    let p = e % DEPTH2;
    var even = vec4f();  // depth 2p of weight rows k..k+3
    var odd = vec4f();   // depth 2p + 1
    let n = n0 + 2u * p;
    if (!partial || n < N) {
      let k = col0 + quad * 4u;
      let word = n / 2u;
      let w0 = unpack2x16float(weight[min(k, K - 1u) * NP + word]);
      let w1 = unpack2x16float(weight[min(k + 1u, K - 1u) * NP + word]);
      let w2 = unpack2x16float(weight[min(k + 2u, K - 1u) * NP + word]);
      let w3 = unpack2x16float(weight[min(k + 3u, K - 1u) * NP + word]);
      even = vec4f(w0.x, w1.x, w2.x, w3.x);
      if (!partial || n + 1u < N) { odd = vec4f(w0.y, w1.y, w2.y, w3.y); }
    }
    weight_tile[2u * p * WEIGHT_STRIDE4 + quad] = even;
    weight_tile[(2u * p + 1u) * WEIGHT_STRIDE4 + quad] = odd;
  }
}

// The band branches test override constants only, so each pipeline compiles to straight-line code.
fn multiply_tiles(tx: u32, ty: u32) {
  for (var d = 0u; d < TILE_DEPTH; d++) {
    let a0 = dout_tile[d * DOUT_STRIDE4 + ty];
    let b0 = weight_tile[d * WEIGHT_STRIDE4 + tx];
    acc00 = outer(acc00, a0, b0);
    if (COL_BANDS > 1u) {
      let b1 = weight_tile[d * WEIGHT_STRIDE4 + COL_BAND4 + tx];
      acc01 = outer(acc01, a0, b1);
      if (ROW_BANDS > 1u) {
        let a1 = dout_tile[d * DOUT_STRIDE4 + ROW_BAND4 + ty];
        acc10 = outer(acc10, a1, b0);
        acc11 = outer(acc11, a1, b1);
      }
    } else if (ROW_BANDS > 1u) {
      let a1 = dout_tile[d * DOUT_STRIDE4 + ROW_BAND4 + ty];
      acc10 = outer(acc10, a1, b0);
    }
  }
}

// Rows row..row+3, columns col..col+3 of dinp, assigned or added (`accumulate`); only elements inside (M, K).
fn store_chunk(chunk: mat4x4f, row: u32, col: u32) {
  let M = params.M;
  let K = params.K;
  let add = params.accumulate != 0u;
  for (var i = 0u; i < 4u; i++) {
    for (var j = 0u; j < 4u; j++) {
      if (row + i < M && col + j < K) {
        let idx = (row + i) * K + col + j;
        if (add) { dinp[idx] += chunk[i][j]; } else { dinp[idx] = chunk[i][j]; }
      }
    }
  }
}

@compute @workgroup_size(WG_COLS, WG_ROWS)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(local_invocation_index) lindex: u32) {
  let N = params.N;
  let row0 = wid.y * TILE_ROWS;
  let col0 = wid.x * TILE_COLS;

  var n0 = 0u;
  for (; n0 + TILE_DEPTH <= N; n0 += TILE_DEPTH) {
    load_tiles(row0, col0, n0, lindex, false);
    workgroupBarrier();
    multiply_tiles(lid.x, lid.y);
    workgroupBarrier();
  }
  if (n0 < N) {
    load_tiles(row0, col0, n0, lindex, true);  // depths past N are zeros
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
