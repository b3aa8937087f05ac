// Linear layer forward, scalar loads: out (M,N) = inp (M,K) · weight (K,N) [+ bias (N)], weight in GPT-2 Conv1D
// [in,out] layout. The fallback for K or N not a multiple of 4; matmul_forward_vec4.wgsl is the same kernel with
// 16-byte global loads and stores, and the host picks between them (ops/matmul.ts), never per element.
// Kernel part only: registry.ts joins it with lib/matmul_tiles.wgsl (tiling, accumulators, multiply, `main`), which
// reduces over K with a_tile = inp block transposed, b_tile = weight block as it lies.

struct Params { M: u32, N: u32, K: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> inp: array<f32>;     // (M,K)
@group(0) @binding(2) var<storage, read> weight: array<f32>;  // (K,N)
@group(0) @binding(3) var<storage, read> bias: array<f32>;    // (N), read only when HAS_BIAS
@group(0) @binding(4) var<storage, read_write> out: array<f32>; // (M,N)
// @epilogue: out's store; registry.ts's `_gelu` variant swaps in lib/gelu_epilogue.wgsl's, which also stores gelu(v).
fn store_out(i: u32, v: f32) { out[i] = v; }
// @end-epilogue

override HAS_BIAS: bool = false;
override A_STRIDE4 = TILE_ROWS / 4u + 1u;  // (TILE_ROWS + 4) floats: padding against bank conflicts
override B_STRIDE4 = TILE_COLS / 4u;

fn reduction_length() -> u32 { return params.K; }

// inp block, transposed: job e reads one k of 4 consecutive rows (consecutive jobs: consecutive k, so each row is
// read in contiguous runs) and stores them as one vec4 of the depth-major tile.
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

// weight block as it lies: job e reads 4 consecutive columns of one weight row.
override B_JOBS = TILE_DEPTH * B_STRIDE4;
alias BStaged = vec4f;

fn fetch_b(col0: u32, k0: u32, e: u32, partial: bool) -> vec4f {
  let N = params.N;
  let d = e / B_STRIDE4;
  let col = col0 + (e % B_STRIDE4) * 4u;
  var v = vec4f();
  if (!partial || k0 + d < params.K) {
    let base = (k0 + d) * N;
    v = vec4f(weight[base + min(col, N - 1u)], weight[base + min(col + 1u, N - 1u)],
              weight[base + min(col + 2u, N - 1u)], weight[base + min(col + 3u, N - 1u)]);
  }
  return v;
}

fn stash_b(e: u32, v: vec4f, base: u32) { b_tile[base + e] = v; }

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
