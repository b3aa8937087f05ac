// Linear layer backward, input gradient, with a frozen weight stored as f16: dinp (M,K) = or += dout (M,N) · weightᵀ,
// weight (K,N) read in place, packed two f16 per u32 as in matmul_forward_f16w.wgsl (row k: NP = ceil(N/2) words,
// column n in word k·NP + n/2, even n in the low half, odd N padded). `accumulate` = 1 adds to dinp. With wte (V,C)
// as the weight (K = V, N = C) this is also the tied LM head, logits = lnf · wteᵀ.
// Kernel part only: registry.ts joins it with lib/matmul_tiles.wgsl (see its header), which reduces over N; the dout
// loads and the store are matmul_backward_input.wgsl's (one n of 4 consecutive rows per thread, stored transposed as
// one vec4). The weight block lands transposed too: a thread reads one word, the depth pair (n, n+1), of 4
// consecutive weight rows (TILE_DEPTH and the depth tile's start are even, so pairs never straddle a tile), unpacks
// them and stores the two depths as two whole vec4. Weight rows past K are clamped (never stored); in the last,
// partial depth tile a pair past N is zero and so is the odd N's padding half, so a weight holding Inf or NaN there
// cannot leak into real outputs.

struct Params { M: u32, N: u32, K: u32, accumulate: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> dout: array<f32>;      // (M,N)
@group(0) @binding(2) var<storage, read> weight: array<u32>;    // (K,ceil(N/2)): f16 pairs along N
@group(0) @binding(3) var<storage, read_write> dinp: array<f32>; // (M,K)

override DEPTH2 = TILE_DEPTH / 2u;         // depth pairs (words) per tile row
override A_STRIDE4 = TILE_ROWS / 4u + 1u;  // (TILE_DEPTH, TILE_ROWS + 4): dout transposed
override B_STRIDE4 = TILE_COLS / 4u + 1u;  // (TILE_DEPTH, TILE_COLS + 4): weightᵀ, f32

fn reduction_length() -> u32 { return params.N; }

// dout block, transposed: job e reads one n of 4 consecutive rows and stores them as one vec4.
override A_JOBS = TILE_ROWS / 4u * TILE_DEPTH;
alias AStaged = vec4f;

fn fetch_a(row0: u32, n0: u32, e: u32, partial: bool) -> vec4f {
  let M = params.M;
  let N = params.N;
  let d = e % TILE_DEPTH;
  var v = vec4f();
  if (!partial || n0 + d < N) {
    let row = row0 + (e / TILE_DEPTH) * 4u;
    let n = n0 + d;
    v = vec4f(dout[min(row, M - 1u) * N + n], dout[min(row + 1u, M - 1u) * N + n],
              dout[min(row + 2u, M - 1u) * N + n], dout[min(row + 3u, M - 1u) * N + n]);
  }
  return v;
}

fn stash_a(e: u32, v: vec4f, base: u32) { a_tile[base + (e % TILE_DEPTH) * A_STRIDE4 + e / TILE_DEPTH] = v; }

// weightᵀ block: job e (quad, p) reads word p of the tile, depths 2p (low half) and 2p + 1 (high half), of weight
// rows k..k+3, keeping the 4 packed words (a pair past N is 0, a half past N is cleared to +0); its stash unpacks
// them and stores depth 2p and depth 2p + 1 as two whole vec4.
override B_JOBS = TILE_COLS / 4u * DEPTH2;
alias BStaged = vec4u;

fn fetch_b(col0: u32, n0: u32, e: u32, partial: bool) -> vec4u {
  let N = params.N;
  let K = params.K;
  let NP = (N + 1u) / 2u;  // words per weight row
  let n = n0 + 2u * (e % DEPTH2);
  var words = vec4u();
  if (!partial || n < N) {
    let k = col0 + (e / DEPTH2) * 4u;
    let word = n / 2u;
    words = vec4u(weight[min(k, K - 1u) * NP + word], weight[min(k + 1u, K - 1u) * NP + word],
                  weight[min(k + 2u, K - 1u) * NP + word], weight[min(k + 3u, K - 1u) * NP + word]);
    if (partial && n + 1u >= N) { words &= vec4u(0xffffu); }
  }
  return words;
}

fn stash_b(e: u32, words: vec4u, base: u32) {
  let quad = e / DEPTH2;
  let p = e % DEPTH2;
  let w0 = unpack2x16float(words.x);
  let w1 = unpack2x16float(words.y);
  let w2 = unpack2x16float(words.z);
  let w3 = unpack2x16float(words.w);
  b_tile[base + 2u * p * B_STRIDE4 + quad] = vec4f(w0.x, w1.x, w2.x, w3.x);         // depth 2p of rows k..k+3
  b_tile[base + (2u * p + 1u) * B_STRIDE4 + quad] = vec4f(w0.y, w1.y, w2.y, w3.y);  // depth 2p + 1
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
