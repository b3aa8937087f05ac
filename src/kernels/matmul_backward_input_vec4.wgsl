// Linear layer backward, input gradient, vec4 loads: dinp (M,K) = or += dout (M,N) · weightᵀ, for N a multiple of 4
// (the host checks; matmul_backward_input.wgsl is the scalar fallback). K may be anything, so this also serves the
// tied LM head, logits (rows, V) = lnf (rows, C) · wteᵀ with K = V = 50257.
// Kernel part only: registry.ts joins it with lib/matmul_tiles.wgsl (see its header), which reduces over N. Both
// operands are contiguous along the reduction N: a thread reads the same 4 n of 4 consecutive rows as 4 vec4,
// transposes that 4×4 block in registers and stores it as 4 vec4 into a depth-major tile padded by 4 floats per
// depth row, so those stores stay conflict-free. dinp is written with scalar stores because K need not be a multiple
// of 4; they happen once per output, after the whole reduction. a_tile holds dout, b_tile weightᵀ.

struct Params { M: u32, N: u32, K: u32, accumulate: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> dout: array<vec4f>;    // (M,N/4)
@group(0) @binding(2) var<storage, read> weight: array<vec4f>;  // (K,N/4)
@group(0) @binding(3) var<storage, read_write> dinp: array<f32>; // (M,K)

override DEPTH4 = TILE_DEPTH / 4u;
override A_STRIDE4 = TILE_ROWS / 4u + 1u;  // (TILE_DEPTH, TILE_ROWS + 4): dout transposed
override B_STRIDE4 = TILE_COLS / 4u + 1u;  // (TILE_DEPTH, TILE_COLS + 4): weightᵀ block

fn reduction_length() -> u32 { return params.N; }

// Both blocks transposed: job e reads the same 4 depths of 4 consecutive rows (4 vec4; consecutive jobs take
// consecutive depth quads of the same rows); its stash transposes the 4×4 block in registers and stores 4 whole vec4.
override A_JOBS = TILE_ROWS / 4u * DEPTH4;
override B_JOBS = TILE_COLS / 4u * DEPTH4;
alias AStaged = mat4x4f;  // columns: 4 dout rows' vec4 of depths 4q..4q+3
alias BStaged = mat4x4f;  // columns: 4 weight rows' vec4 of depths 4q..4q+3

fn fetch_a(row0: u32, n0: u32, e: u32, partial: bool) -> mat4x4f {
  let M = params.M;
  let N4 = params.N / 4u;
  let q = e % DEPTH4;
  var block = mat4x4f();
  if (!partial || n0 / 4u + q < N4) {
    let row = row0 + (e / DEPTH4) * 4u;
    let nq = n0 / 4u + q;
    block = mat4x4f(dout[min(row, M - 1u) * N4 + nq], dout[min(row + 1u, M - 1u) * N4 + nq],
                    dout[min(row + 2u, M - 1u) * N4 + nq], dout[min(row + 3u, M - 1u) * N4 + nq]);
  }
  return block;
}

fn stash_a(e: u32, block: mat4x4f, base: u32) {
  let quad = e / DEPTH4;
  let q = e % DEPTH4;
  let depths = transpose(block);  // column i: depth 4q + i of the 4 rows
  for (var i = 0u; i < 4u; i++) { a_tile[base + (q * 4u + i) * A_STRIDE4 + quad] = depths[i]; }
}

fn fetch_b(col0: u32, n0: u32, e: u32, partial: bool) -> mat4x4f {
  let K = params.K;
  let N4 = params.N / 4u;
  let q = e % DEPTH4;
  var block = mat4x4f();
  if (!partial || n0 / 4u + q < N4) {
    let k = col0 + (e / DEPTH4) * 4u;
    let nq = n0 / 4u + q;
    block = mat4x4f(weight[min(k, K - 1u) * N4 + nq], weight[min(k + 1u, K - 1u) * N4 + nq],
                    weight[min(k + 2u, K - 1u) * N4 + nq], weight[min(k + 3u, K - 1u) * N4 + nq]);
  }
  return block;
}

fn stash_b(e: u32, block: mat4x4f, base: u32) {
  let quad = e / DEPTH4;
  let q = e % DEPTH4;
  let depths = transpose(block);
  for (var i = 0u; i < 4u; i++) { b_tile[base + (q * 4u + i) * B_STRIDE4 + quad] = depths[i]; }
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
