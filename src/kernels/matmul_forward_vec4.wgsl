// Linear layer forward, vec4 loads: out (M,N) = inp (M,K) · weight (K,N) [+ bias (N)], for K and N multiples of 4
// (the host checks; matmul_forward.wgsl is the scalar fallback). Kernel part only: registry.ts joins it with
// lib/matmul_tiles.wgsl (see its header: TILE_ROWS × TILE_COLS output block per workgroup, TILE_DEPTH steps,
// THREAD_ROWS × THREAD_COLS outputs per thread in 4×4 chunks, edges clamped, only the last depth tile masked), which
// reduces over K; here every global access is 16 bytes wide:
// - inp is read along K: a thread takes the same 4 depths of 4 consecutive rows (4 vec4), transposes that 4×4 block
//   in registers and stores it as 4 vec4 into the (TILE_DEPTH, TILE_ROWS + 4) a_tile, whose padding keeps those
//   stores conflict-free; that is a (TILE_ROWS/4)·(TILE_DEPTH/4)-thread job, and every thread loads one vec4 of
//   weight;
// - weight is read as vec4 along N and stored as it lies in b_tile; out and bias are written and read as vec4 along N.
// K % 4 = 0 also means a partial depth tile holds whole vec4, so the depth mask works per vec4.

struct Params { M: u32, N: u32, K: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> inp: array<vec4f>;     // (M,K/4)
@group(0) @binding(2) var<storage, read> weight: array<vec4f>;  // (K,N/4)
@group(0) @binding(3) var<storage, read> bias: array<vec4f>;    // (N/4), read only when HAS_BIAS
@group(0) @binding(4) var<storage, read_write> out: array<vec4f>; // (M,N/4)
// @epilogue: out's store; registry.ts's `_gelu` variant swaps in lib/gelu_epilogue.wgsl's, which also stores gelu(v).
fn store_out4(i: u32, v: vec4f) { out[i] = v; }
// @end-epilogue

override HAS_BIAS: bool = false;
override DEPTH4 = TILE_DEPTH / 4u;
override A_STRIDE4 = TILE_ROWS / 4u + 1u;  // (TILE_ROWS + 4) floats: padding against bank conflicts
override B_STRIDE4 = TILE_COLS / 4u;

fn reduction_length() -> u32 { return params.K; }

// inp block, transposed: job e reads the same 4 depths of 4 consecutive rows (4 vec4; consecutive jobs take
// consecutive depth quads of the same rows); its stash transposes the 4×4 block in registers and stores 4 whole vec4.
override A_JOBS = TILE_ROWS / 4u * DEPTH4;
alias AStaged = mat4x4f;  // columns: 4 rows' vec4 of depths 4q..4q+3

fn fetch_a(row0: u32, k0: u32, e: u32, partial: bool) -> mat4x4f {
  let M = params.M;
  let K4 = params.K / 4u;
  let q = e % DEPTH4;
  var block = mat4x4f();
  if (!partial || k0 / 4u + q < K4) {
    let row = row0 + (e / DEPTH4) * 4u;
    let kq = k0 / 4u + q;
    block = mat4x4f(inp[min(row, M - 1u) * K4 + kq], inp[min(row + 1u, M - 1u) * K4 + kq],
                    inp[min(row + 2u, M - 1u) * K4 + kq], inp[min(row + 3u, M - 1u) * K4 + kq]);
  }
  return block;
}

fn stash_a(e: u32, block: mat4x4f, base: u32) {
  let quad = e / DEPTH4;
  let q = e % DEPTH4;
  let depths = transpose(block);  // column i: depth 4q + i of the 4 rows
  for (var i = 0u; i < 4u; i++) { a_tile[base + (q * 4u + i) * A_STRIDE4 + quad] = depths[i]; }
}

// weight block as it lies, one vec4 per job.
override B_JOBS = TILE_DEPTH * B_STRIDE4;
alias BStaged = vec4f;

fn fetch_b(col0: u32, k0: u32, e: u32, partial: bool) -> vec4f {
  let N4 = params.N / 4u;
  let d = e / B_STRIDE4;
  let col4 = min(col0 / 4u + e % B_STRIDE4, N4 - 1u);
  var v = vec4f();
  if (!partial || k0 + d < params.K) { v = weight[(k0 + d) * N4 + col4]; }
  return v;
}

fn stash_b(e: u32, v: vec4f, base: u32) { b_tile[base + e] = v; }

// Rows row..row+3 of out at columns col..col+3, one quad (+ bias); only rows inside M and a quad inside N are stored.
fn store_chunk(chunk: mat4x4f, row: u32, col: u32) {
  let col4 = col / 4u;  // col is a multiple of 4
  let N4 = params.N / 4u;
  if (col4 >= N4) { return; }
  var bias4 = vec4f();
  if (HAS_BIAS) { bias4 = bias[col4]; }
  for (var i = 0u; i < 4u; i++) {
    if (row + i < params.M) { store_out4(split_index * params.M * N4 + (row + i) * N4 + col4, chunk[i] + bias4); }
  }
}
