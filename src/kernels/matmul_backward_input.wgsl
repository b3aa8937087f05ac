// Linear layer backward, input gradient, scalar loads: dinp (M,K) = or += dout (M,N) · weightᵀ, weight (K,N) read in
// place (no transpose pass). `accumulate` = 1 adds to dinp, for an input whose gradient also arrives by another path.
// The fallback for N not a multiple of 4 (matmul_backward_input_vec4.wgsl otherwise).
// Kernel part only: registry.ts joins it with lib/matmul_tiles.wgsl (see its header), which computes a TILE_ROWS ×
// TILE_COLS block of dinp per workgroup, reducing over N. Both operands are contiguous along the reduction N, so
// both blocks land transposed (depth-major, rows padded to TILE_ROWS + 4 and TILE_COLS + 4 floats against bank
// conflicts): a thread reads one n of 4 consecutive rows (neighbouring threads take neighbouring n) and stores them
// as one vec4. a_tile holds dout, b_tile weightᵀ.

struct Params { M: u32, N: u32, K: u32, accumulate: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> dout: array<f32>;      // (M,N)
@group(0) @binding(2) var<storage, read> weight: array<f32>;    // (K,N)
@group(0) @binding(3) var<storage, read_write> dinp: array<f32>; // (M,K)

override A_STRIDE4 = TILE_ROWS / 4u + 1u;  // (TILE_DEPTH, TILE_ROWS + 4): dout transposed
override B_STRIDE4 = TILE_COLS / 4u + 1u;  // (TILE_DEPTH, TILE_COLS + 4): weightᵀ block

fn reduction_length() -> u32 { return params.N; }

// Both blocks transposed: job e reads one n of 4 consecutive rows (consecutive jobs: consecutive n) and stores them as
// one vec4 of the depth-major tile.
override A_JOBS = TILE_ROWS / 4u * TILE_DEPTH;
override B_JOBS = TILE_COLS / 4u * TILE_DEPTH;
alias AStaged = vec4f;
alias BStaged = vec4f;

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

fn fetch_b(col0: u32, n0: u32, e: u32, partial: bool) -> vec4f {
  let N = params.N;
  let K = params.K;
  let d = e % TILE_DEPTH;
  var v = vec4f();
  if (!partial || n0 + d < N) {
    let k = col0 + (e / TILE_DEPTH) * 4u;
    let n = n0 + d;
    v = vec4f(weight[min(k, K - 1u) * N + n], weight[min(k + 1u, K - 1u) * N + n],
              weight[min(k + 2u, K - 1u) * N + n], weight[min(k + 3u, K - 1u) * N + n]);
  }
  return v;
}

fn stash_b(e: u32, v: vec4f, base: u32) { b_tile[base + (e % TILE_DEPTH) * B_STRIDE4 + e / TILE_DEPTH] = v; }

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
