// Linear layer backward, weight gradient, vec4 loads: dweight (K,N) += inpᵀ · dout, for K and N multiples of 4 (the
// host checks; matmul_backward_weight.wgsl is the scalar fallback). Parameter gradients accumulate.
// Kernel part only: registry.ts joins it with lib/matmul_tiles.wgsl (see its header), which reduces over the M
// tokens. Both operands are contiguous along their output dimension, so inp is read as vec4 along K and dout as vec4
// along N, and both are stored into the depth-major tiles as they lie (one 16-byte load and store per thread and
// block row); dweight is read-modified-written as vec4 along N. a_tile holds inp, b_tile dout.

struct Params { M: u32, N: u32, K: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> inp: array<vec4f>;          // (M,K/4)
@group(0) @binding(2) var<storage, read> dout: array<vec4f>;         // (M,N/4)
@group(0) @binding(3) var<storage, read_write> dweight: array<vec4f>; // (K,N/4)

override A_STRIDE4 = TILE_ROWS / 4u;  // (TILE_DEPTH, TILE_ROWS): inp block
override B_STRIDE4 = TILE_COLS / 4u;  // (TILE_DEPTH, TILE_COLS): dout block

fn reduction_length() -> u32 { return params.M; }

// Both blocks as they lie: job e is one vec4 of one token's row.
override A_JOBS = TILE_DEPTH * A_STRIDE4;
override B_JOBS = TILE_DEPTH * B_STRIDE4;
alias AStaged = vec4f;
alias BStaged = vec4f;

fn fetch_a(row0: u32, m0: u32, e: u32, partial: bool) -> vec4f {
  let K4 = params.K / 4u;
  let d = e / A_STRIDE4;
  let k4 = min(row0 / 4u + e % A_STRIDE4, K4 - 1u);
  var v = vec4f();
  if (!partial || m0 + d < params.M) { v = inp[(m0 + d) * K4 + k4]; }
  return v;
}

fn stash_a(e: u32, v: vec4f, base: u32) { a_tile[base + e] = v; }

fn fetch_b(col0: u32, m0: u32, e: u32, partial: bool) -> vec4f {
  let N4 = params.N / 4u;
  let d = e / B_STRIDE4;
  let n4 = min(col0 / 4u + e % B_STRIDE4, N4 - 1u);
  var v = vec4f();
  if (!partial || m0 + d < params.M) { v = dout[(m0 + d) * N4 + n4]; }
  return v;
}

fn stash_b(e: u32, v: vec4f, base: u32) { b_tile[base + e] = v; }

// Adds the chunk to rows row..row+3 of dweight at columns col..col+3, one quad; only rows inside K and a quad
// inside N.
fn store_chunk(chunk: mat4x4f, row: u32, col: u32) {
  let col4 = col / 4u;  // col is a multiple of 4
  let N4 = params.N / 4u;
  if (col4 >= N4) { return; }
  for (var i = 0u; i < 4u; i++) {
    if (row + i < params.K) { dweight[(row + i) * N4 + col4] += chunk[i]; }
  }
}
