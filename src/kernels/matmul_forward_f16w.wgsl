// Linear layer forward with a frozen weight stored as f16: out (M,N) = inp (M,K) · weight (K,N) [+ bias (N)], weight
// in GPT-2 Conv1D [in,out] layout, packed two f16 per u32 by ops/matmul-f16.ts `packF16`: row k holds NP = ceil(N/2)
// words, column n lies in word k·NP + n/2, even n in the low half; odd N pads each row's last word with a +0 half.
// unpack2x16float is core WGSL, so this runs on every device, with or without shader-f16: half the weight's memory
// and bandwidth, f32 arithmetic (accuracy is that of the f16-rounded weight, nothing else changes).
// Same tiling as matmul_forward.wgsl (see its header: TILE_ROWS × TILE_COLS output block per workgroup, TILE_DEPTH
// steps, THREAD_ROWS × THREAD_COLS outputs per thread in 4×4 chunks, edges clamped, only the last depth tile masked)
// with scalar inp loads. The weight block is read as it lies: a thread takes 4 columns of one weight row, 2 words
// (tile columns start at multiples of 4, so the pair starts on an even word), and unpacks them into one vec4 of the
// f32 tile; the multiply is the scalar kernel's, unchanged. Words past the row's end are clamped to its last word
// (those columns are never stored), so every read stays inside row k.

struct Params { M: u32, N: u32, K: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> inp: array<f32>;     // (M,K)
@group(0) @binding(2) var<storage, read> weight: array<u32>;  // (K,ceil(N/2)): f16 pairs along N
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
var<workgroup> weight_tile: array<vec4f, TILE_DEPTH * WEIGHT_STRIDE4>; // (TILE_DEPTH, TILE_COLS), unpacked to f32

// A thread's outputs as up to 2 × 2 chunks of 4×4, acc<row band><column band>; column i of a chunk holds its row i.
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
  let K = params.K;
  let NP = (params.N + 1u) / 2u;  // words per weight row
  // inp block, transposed: a thread reads one k of 4 consecutive rows and stores them as one vec4.
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
  // weight block as it lies: columns 4c..4c+3 of one row are words 2c and 2c + 1.
  for (var e = lindex; e < TILE_DEPTH * WEIGHT_STRIDE4; e += THREADS) {
    let d = e / WEIGHT_STRIDE4;
    let word = (col0 / 4u + e % WEIGHT_STRIDE4) * 2u;
    var v = vec4f();
    if (!partial || k0 + d < K) {
      let base = (k0 + d) * NP;
      v = vec4f(unpack2x16float(weight[base + min(word, NP - 1u)]),
                unpack2x16float(weight[base + min(word + 1u, NP - 1u)]));
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
