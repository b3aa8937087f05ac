// Linear layer backward, input gradient, vec4 loads: dinp (M,K) = or += dout (M,N) · weightᵀ, for N a multiple of 4
// (the host checks; matmul_backward_input.wgsl is the scalar fallback). K may be anything, so this also serves the
// tied LM head, logits (rows, V) = lnf (rows, C) · wteᵀ with K = V = 50257.
// Same tiling as matmul_forward.wgsl (see its header). Both operands are contiguous along the reduction N: a thread
// reads the same 4 n of 4 consecutive rows as 4 vec4, transposes that 4×4 block in registers and stores it as 4 vec4
// into a depth-major tile padded by 4 floats per depth row, so those stores stay conflict-free. dinp is written
// with scalar stores because K need not be a multiple of 4; they happen once per output, after the whole reduction.

struct Params { M: u32, N: u32, K: u32, accumulate: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> dout: array<vec4f>;    // (M,N/4)
@group(0) @binding(2) var<storage, read> weight: array<vec4f>;  // (K,N/4)
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
override DEPTH4 = TILE_DEPTH / 4u;
override DOUT_STRIDE4 = TILE_ROWS / 4u + 1u;
override WEIGHT_STRIDE4 = TILE_COLS / 4u + 1u;

var<workgroup> dout_tile: array<vec4f, TILE_DEPTH * DOUT_STRIDE4>;     // (TILE_DEPTH, TILE_ROWS + 4): dout transposed
var<workgroup> weight_tile: array<vec4f, TILE_DEPTH * WEIGHT_STRIDE4>; // (TILE_DEPTH, TILE_COLS + 4): weightᵀ block

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

fn load_tiles(row0: u32, col0: u32, n0: u32, lindex: u32, partial: bool) {
  let M = params.M;
  let K = params.K;
  let N4 = params.N / 4u;
  let nq0 = n0 / 4u;
  // Both blocks transposed: a thread reads the same 4 depths of 4 consecutive rows (4 vec4; consecutive threads take
  // consecutive depth quads of the same rows), transposes the 4×4 block in registers and stores 4 whole vec4.
  for (var e = lindex; e < TILE_ROWS / 4u * DEPTH4; e += THREADS) {
    let quad = e / DEPTH4;
    let q = e % DEPTH4;
    var block = mat4x4f();  // columns: 4 rows' vec4 of depths 4q..4q+3
    if (!partial || nq0 + q < N4) {
      let row = row0 + quad * 4u;
      let nq = nq0 + q;
      block = mat4x4f(dout[min(row, M - 1u) * N4 + nq], dout[min(row + 1u, M - 1u) * N4 + nq],
                      dout[min(row + 2u, M - 1u) * N4 + nq], dout[min(row + 3u, M - 1u) * N4 + nq]);
    }
    let depths = transpose(block);  // column i: depth 4q + i of the 4 rows
    for (var i = 0u; i < 4u; i++) { dout_tile[(q * 4u + i) * DOUT_STRIDE4 + quad] = depths[i]; }
  }
  for (var e = lindex; e < TILE_COLS / 4u * DEPTH4; e += THREADS) {
    let quad = e / DEPTH4;
    let q = e % DEPTH4;
    var block = mat4x4f();  // columns: 4 weight rows' vec4 of depths 4q..4q+3
    if (!partial || nq0 + q < N4) {
      let k = col0 + quad * 4u;
      let nq = nq0 + q;
      block = mat4x4f(weight[min(k, K - 1u) * N4 + nq], weight[min(k + 1u, K - 1u) * N4 + nq],
                      weight[min(k + 2u, K - 1u) * N4 + nq], weight[min(k + 3u, K - 1u) * N4 + nq]);
    }
    let depths = transpose(block);
    for (var i = 0u; i < 4u; i++) { weight_tile[(q * 4u + i) * WEIGHT_STRIDE4 + quad] = depths[i]; }
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
