// Linear layer forward, scalar loads: out (M,N) = inp (M,K) · weight (K,N) [+ bias (N)], weight in GPT-2 Conv1D
// [in,out] layout. The fallback for K or N not a multiple of 4; matmul_forward_vec4.wgsl is the same kernel with
// 16-byte global loads and stores, and the host picks between them (ops/matmul.ts), never per element.
//
// Tiling, shared by all six tiled matmul kernels (forward, backward input, backward weight × scalar, vec4 loads);
// the three layouts differ only in how they fill the tiles and in their store:
// - A workgroup owns a TILE_ROWS × TILE_COLS block of the output (default 128 × 128) and walks the reduction (K here)
//   TILE_DEPTH at a time (default 8). Each step stages the two operand blocks in workgroup memory, both depth-major,
//   (d, row) and (d, col), as arrays of vec4, so the inner loop reads 4 consecutive rows or columns in one access.
// - Each thread keeps a THREAD_ROWS × THREAD_COLS block of outputs in registers (default 8 × 8: 16 × 16 = 256
//   threads), as up to 2 × 2 chunks of 4 × 4: rows ty·4 + {0..3} of each of THREAD_ROWS/4 row bands (tile halves),
//   columns tx·4 + {0..3} of each of THREAD_COLS/4 column bands. Per depth step it reads THREAD_ROWS/4 +
//   THREAD_COLS/4 vec4 from workgroup memory for THREAD_ROWS·THREAD_COLS multiply-adds, so arithmetic, not workgroup
//   memory, is the limit; neighbouring tx read neighbouring 16 bytes (no bank conflicts) and write neighbouring
//   columns (coalesced stores). The chunks are four mat4x4f, updated as values (an outer product per chunk), and the
//   band branches test override constants only: every pipeline is straight-line code whose accumulators stay in
//   registers without relying on a compiler to unroll loops over an indexed array.
// - Why 128 × 128 × 8, 8 × 8 per thread: the classic f32 SGEMM shape on desktop GPUs; 64 accumulators fit in
//   registers on NVIDIA, AMD, Apple and Intel (SIMD8), and the two tiles take 8.3 KB, so several workgroups share a
//   compute unit and hide each other's barriers. The host gives smaller outputs smaller tiles (64 × 64 with 4 × 4
//   per thread, 16 × 64 and 4 × 128 for few rows), because 128 × 128 tiles would leave most of a large GPU idle.
// - Tiles are written only as whole vec4 (a thread gathers 4 values, or transposes a 4 × 4 block of loaded vec4 in
//   registers, then stores once): a store to one component of a shared vec4 is a read-modify-write of the whole vec4
//   on some backends (Tint's FXC/HLSL output), which would race with the neighbouring thread's component.
// - A block read along the depth (inp here) lands transposed, with a row stride of TILE_ROWS + 4 floats so that the
//   stores of neighbouring threads hit distinct banks.
// - Only edges are guarded: rows past M and columns past N read the last valid row or column (clamped addresses;
//   their results are never stored); depths past K exist only in the last, partial depth tile, whose loads alone are
//   masked (`partial` is a constant at each call, so full tiles compile without checks). Stores check row < M,
//   col < N.

struct Params { M: u32, N: u32, K: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> inp: array<f32>;     // (M,K)
@group(0) @binding(2) var<storage, read> weight: array<f32>;  // (K,N)
@group(0) @binding(3) var<storage, read> bias: array<f32>;    // (N), read only when HAS_BIAS
@group(0) @binding(4) var<storage, read_write> out: array<f32>; // (M,N)

override TILE_ROWS: u32 = 128;  // multiple of THREAD_ROWS
override TILE_COLS: u32 = 128;  // multiple of THREAD_COLS
override TILE_DEPTH: u32 = 8;   // multiple of 4
override THREAD_ROWS: u32 = 8;  // 4 or 8
override THREAD_COLS: u32 = 8;  // 4 or 8
override HAS_BIAS: bool = false;

// Derived; not set by the wrapper.
override WG_COLS = TILE_COLS / THREAD_COLS;
override WG_ROWS = TILE_ROWS / THREAD_ROWS;
override THREADS = WG_COLS * WG_ROWS;
override ROW_BANDS = THREAD_ROWS / 4u;
override COL_BANDS = THREAD_COLS / 4u;
override ROW_BAND4 = TILE_ROWS / ROW_BANDS / 4u;  // vec4 between a thread's row chunks
override COL_BAND4 = TILE_COLS / COL_BANDS / 4u;
override INP_STRIDE4 = TILE_ROWS / 4u + 1u;       // (TILE_ROWS + 4) floats: padding against bank conflicts
override WEIGHT_STRIDE4 = TILE_COLS / 4u;

var<workgroup> inp_tile: array<vec4f, TILE_DEPTH * INP_STRIDE4>;       // (TILE_DEPTH, TILE_ROWS + 4): inp transposed
var<workgroup> weight_tile: array<vec4f, TILE_DEPTH * WEIGHT_STRIDE4>; // (TILE_DEPTH, TILE_COLS)

// A thread's outputs as up to 2 × 2 chunks of 4×4, acc<row band><column band>; column i of a chunk holds its row i.
// Named matrices rather than an indexed array, so no compiler has to unroll loops to keep them in registers.
var<private> acc00: mat4x4f;
var<private> acc01: mat4x4f;
var<private> acc10: mat4x4f;
var<private> acc11: mat4x4f;

// chunk + a ⊗ b: 4 rows a, 4 columns b.
fn outer(chunk: mat4x4f, a: vec4f, b: vec4f) -> mat4x4f {
  return mat4x4f(fma(vec4f(a.x), b, chunk[0]), fma(vec4f(a.y), b, chunk[1]),
                 fma(vec4f(a.z), b, chunk[2]), fma(vec4f(a.w), b, chunk[3]));
}

fn load_tiles(row0: u32, col0: u32, k0: u32, lindex: u32, partial: bool) {
  let M = params.M;
  let N = params.N;
  let K = params.K;
  // inp block, transposed: a thread reads one k of 4 consecutive rows (consecutive threads: consecutive k, so each
  // row is read in contiguous runs) and stores them as one vec4 of the depth-major tile.
  for (var e = lindex; e < TILE_ROWS / 4u * TILE_DEPTH; e += THREADS) {
    let quad = e / TILE_DEPTH;
    let d = e % TILE_DEPTH;
    var v = vec4f();
    if (!partial || k0 + d < K) {
      let row = row0 + quad * 4u;
      let k = k0 + d;
      v = vec4f(inp[min(row, M - 1u) * K + k], inp[min(row + 1u, M - 1u) * K + k],
                inp[min(row + 2u, M - 1u) * K + k], inp[min(row + 3u, M - 1u) * K + k]);
    }
    inp_tile[d * INP_STRIDE4 + quad] = v;
  }
  // weight block as it lies: a thread reads 4 consecutive columns of one weight row.
  for (var e = lindex; e < TILE_DEPTH * WEIGHT_STRIDE4; e += THREADS) {
    let d = e / WEIGHT_STRIDE4;
    let col = col0 + (e % WEIGHT_STRIDE4) * 4u;
    var v = vec4f();
    if (!partial || k0 + d < K) {
      let base = (k0 + d) * N;
      v = vec4f(weight[base + min(col, N - 1u)], weight[base + min(col + 1u, N - 1u)],
                weight[base + min(col + 2u, N - 1u)], weight[base + min(col + 3u, N - 1u)]);
    }
    weight_tile[e] = v;
  }
}

// The band branches test override constants only, so each pipeline compiles to straight-line code.
fn multiply_tiles(tx: u32, ty: u32) {
  for (var d = 0u; d < TILE_DEPTH; d++) {
    let a0 = inp_tile[d * INP_STRIDE4 + ty];
    let b0 = weight_tile[d * WEIGHT_STRIDE4 + tx];
    acc00 = outer(acc00, a0, b0);
    if (COL_BANDS > 1u) {
      let b1 = weight_tile[d * WEIGHT_STRIDE4 + COL_BAND4 + tx];
      acc01 = outer(acc01, a0, b1);
      if (ROW_BANDS > 1u) {
        let a1 = inp_tile[d * INP_STRIDE4 + ROW_BAND4 + ty];
        acc10 = outer(acc10, a1, b0);
        acc11 = outer(acc11, a1, b1);
      }
    } else if (ROW_BANDS > 1u) {
      let a1 = inp_tile[d * INP_STRIDE4 + ROW_BAND4 + ty];
      acc10 = outer(acc10, a1, b0);
    }
  }
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
        out[(row + i) * N + col + j] = v;
      }
    }
  }
}

@compute @workgroup_size(WG_COLS, WG_ROWS)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(local_invocation_index) lindex: u32) {
  let K = params.K;
  let row0 = wid.y * TILE_ROWS;
  let col0 = wid.x * TILE_COLS;

  var k0 = 0u;
  for (; k0 + TILE_DEPTH <= K; k0 += TILE_DEPTH) {
    load_tiles(row0, col0, k0, lindex, false);
    workgroupBarrier();
    multiply_tiles(lid.x, lid.y);
    workgroupBarrier();
  }
  if (k0 < K) {
    load_tiles(row0, col0, k0, lindex, true);  // depths past K are zeros
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
