// Linear layer backward, weight gradient, scalar loads: dweight (K,N) += inpᵀ · dout, inp (M,K) read in place (no
// transpose pass). Parameter gradients accumulate. The fallback for K or N not a multiple of 4
// (matmul_backward_weight_vec4.wgsl otherwise). The bias gradient is a separate kernel (matmul_backward_bias) so this
// one needs no optional writable binding.
// Kernel part only: registry.ts joins it with lib/matmul_tiles.wgsl (see its header), which computes a TILE_ROWS ×
// TILE_COLS block of dweight per workgroup, reducing over the M tokens. Both operands are contiguous along their
// output dimension (inp along K, dout along N), so both blocks are copied as they lie (depth-major already): a thread
// reads 4 consecutive elements of one row and stores one vec4. a_tile holds inp, b_tile dout.

struct Params { M: u32, N: u32, K: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> inp: array<f32>;          // (M,K)
@group(0) @binding(2) var<storage, read> dout: array<f32>;         // (M,N)
@group(0) @binding(3) var<storage, read_write> dweight: array<f32>; // (K,N)

override A_STRIDE4 = TILE_ROWS / 4u;  // (TILE_DEPTH, TILE_ROWS): inp block
override B_STRIDE4 = TILE_COLS / 4u;  // (TILE_DEPTH, TILE_COLS): dout block

fn reduction_length() -> u32 { return params.M; }

// Both blocks as they lie: job e reads 4 consecutive columns of one token's row and stores one vec4.
override A_JOBS = TILE_DEPTH * A_STRIDE4;
override B_JOBS = TILE_DEPTH * B_STRIDE4;
alias AStaged = vec4f;
alias BStaged = vec4f;

fn fetch_a(row0: u32, m0: u32, e: u32, partial: bool) -> vec4f {
  let K = params.K;
  let d = e / A_STRIDE4;
  let k = row0 + (e % A_STRIDE4) * 4u;
  var v = vec4f();
  if (!partial || m0 + d < params.M) {
    let base = (m0 + d) * K;
    v = vec4f(inp[base + min(k, K - 1u)], inp[base + min(k + 1u, K - 1u)],
              inp[base + min(k + 2u, K - 1u)], inp[base + min(k + 3u, K - 1u)]);
  }
  return v;
}

fn stash_a(e: u32, v: vec4f, base: u32) { a_tile[base + e] = v; }

fn fetch_b(col0: u32, m0: u32, e: u32, partial: bool) -> vec4f {
  let N = params.N;
  let d = e / B_STRIDE4;
  let n = col0 + (e % B_STRIDE4) * 4u;
  var v = vec4f();
  if (!partial || m0 + d < params.M) {
    let base = (m0 + d) * N;
    v = vec4f(dout[base + min(n, N - 1u)], dout[base + min(n + 1u, N - 1u)],
              dout[base + min(n + 2u, N - 1u)], dout[base + min(n + 3u, N - 1u)]);
  }
  return v;
}

fn stash_b(e: u32, v: vec4f, base: u32) { b_tile[base + e] = v; }

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
