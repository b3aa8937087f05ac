// Linear layer forward with a frozen weight stored as f16: out (M,N) = inp (M,K) · weight (K,N) [+ bias (N)], weight
// in GPT-2 Conv1D [in,out] layout, packed two f16 per u32 by ops/matmul-f16.ts `packF16`: row k holds NP = ceil(N/2)
// words, column n lies in word k·NP + n/2, even n in the low half; odd N pads each row's last word with a +0 half.
// unpack2x16float is core WGSL, so this runs on every device, with or without shader-f16: half the weight's memory
// and bandwidth, f32 arithmetic (accuracy is that of the f16-rounded weight, nothing else changes).
// Kernel part only: registry.ts joins it with lib/matmul_tiles.wgsl (see its header), which reduces over K; the inp
// loads and the store are matmul_forward.wgsl's. The weight block is read as it lies: a thread takes 4 columns of one
// weight row, 2 words (tile columns start at multiples of 4, so the pair starts on an even word), and unpacks them
// into one vec4 of the f32 b_tile; the multiply is the shared one, unchanged. Words past the row's end are clamped
// to its last word (those columns are never stored), so every read stays inside row k.

struct Params { M: u32, N: u32, K: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> inp: array<f32>;     // (M,K)
@group(0) @binding(2) var<storage, read> weight: array<u32>;  // (K,ceil(N/2)): f16 pairs along N
@group(0) @binding(3) var<storage, read> bias: array<f32>;    // (N), read only when HAS_BIAS
@group(0) @binding(4) var<storage, read_write> out: array<f32>; // (M,N)
// @epilogue: out's store; registry.ts's `_gelu` variant swaps in lib/gelu_epilogue.wgsl's, which also stores gelu(v).
fn store_out(i: u32, v: f32) { out[i] = v; }
// @end-epilogue

override HAS_BIAS: bool = false;
override A_STRIDE4 = TILE_ROWS / 4u + 1u;  // (TILE_DEPTH, TILE_ROWS + 4): inp transposed
override B_STRIDE4 = TILE_COLS / 4u;       // (TILE_DEPTH, TILE_COLS): weight unpacked to f32

fn reduction_length() -> u32 { return params.K; }

// inp block, transposed: job e reads one k of 4 consecutive rows and stores them as one vec4.
override A_JOBS = TILE_ROWS / 4u * TILE_DEPTH;
alias AStaged = vec4f;

fn fetch_a(row0: u32, k0: u32, e: u32, partial: bool) -> vec4f {
  let M = params.M;
  let K = params.K;
  let d = e % TILE_DEPTH;
  var v = vec4f();
  if (!partial || k0 + d < K) {
    let row = row0 + (e / TILE_DEPTH) * 4u;
    let k = k0 + d;
    v = vec4f(inp[min(row, M - 1u) * K + k], inp[min(row + 1u, M - 1u) * K + k],
              inp[min(row + 2u, M - 1u) * K + k], inp[min(row + 3u, M - 1u) * K + k]);
  }
  return v;
}

fn stash_a(e: u32, v: vec4f, base: u32) { a_tile[base + (e % TILE_DEPTH) * A_STRIDE4 + e / TILE_DEPTH] = v; }

// weight block as it lies: columns 4c..4c+3 of one row are words 2c and 2c + 1. A job keeps the two packed words
// (half the registers of the unpacked vec4; masked words are 0, two +0 halves) and its stash unpacks them.
override B_JOBS = TILE_DEPTH * B_STRIDE4;
alias BStaged = vec2u;

fn fetch_b(col0: u32, k0: u32, e: u32, partial: bool) -> vec2u {
  let NP = (params.N + 1u) / 2u;  // words per weight row
  let d = e / B_STRIDE4;
  let word = (col0 / 4u + e % B_STRIDE4) * 2u;
  var words = vec2u();
  if (!partial || k0 + d < params.K) {
    let base = (k0 + d) * NP;
    words = vec2u(weight[base + min(word, NP - 1u)], weight[base + min(word + 1u, NP - 1u)]);
  }
  return words;
}

fn stash_b(e: u32, words: vec2u, base: u32) {
  b_tile[base + e] = vec4f(unpack2x16float(words.x), unpack2x16float(words.y));
}

// Rows row..row+3, columns col..col+3 of out (+ bias); only elements inside (M, N) are stored.
fn store_chunk(chunk: mat4x4f, row: u32, col: u32) {
  let M = params.M;
  let N = params.N;
  for (var i = 0u; i < 4u; i++) {
    for (var j = 0u; j < 4u; j++) {
      if (row + i < M && col + j < N) {
        var v = chunk[i][j];
        if (HAS_BIAS) { v += bias[col + j]; }
        store_out(split_index * M * N + (row + i) * N + col + j, v);
      }
    }
  }
}
