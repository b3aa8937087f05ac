// Linear layer forward for few rows (M ≤ 8: a decoding step, or a short prefill): out (M,N) = inp (M,K) · weight
// (K,N) [+ bias (N)], for N a multiple of 4 (the host checks and otherwise uses the tiled kernels).
// With so few rows the work is reading weight once, and a tiled kernel owns too few outputs to keep a GPU busy
// (M = 1, N = 768 is 192 threads of 4 × 4 outputs). Here a workgroup owns every row and 4·COL_THREADS columns and
// splits K over DEPTH_SLICES threads per column quad (default 8 × 32 = 256 threads for 32 columns):
// - thread (c, z) walks k = z, z + DEPTH_SLICES, …, reading one vec4 of weight per k (a warp covers whole 128-byte
//   weight rows) and the inp values of that k (one address across the warp, served by the cache), and keeps the
//   rows' partial sums in registers: one vec4 for ROWS = 1, else one or two mat4x4f (4 rows each) updated as
//   values, so no compiler needs to unroll a loop to keep them in registers;
// - the DEPTH_SLICES partial sums of each output quad are added in workgroup memory, one row at a time, and the
//   z = 0 threads add the bias and store.
// ROWS (1, 4 or 8) is M rounded up, so three pipelines at most; rows past M read row M − 1 and are not stored.
// Columns past N read the last column quad (clamped) and are not stored. No depth tile, so no tail to mask.

struct Params { M: u32, N: u32, K: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> inp: array<f32>;       // (M,K)
// @weight: the weight binding and its quad reader; registry.ts swaps this part for matmul_forward_rows_f16w.wgsl's.
@group(0) @binding(2) var<storage, read> weight: array<vec4f>;  // (K,N/4)
fn weight_quad(k: u32, col4: u32) -> vec4f { return weight[k * (params.N / 4u) + col4]; }
// @end-weight
@group(0) @binding(3) var<storage, read> bias: array<vec4f>;    // (N/4), read only when HAS_BIAS
@group(0) @binding(4) var<storage, read_write> out: array<vec4f>; // (M,N/4)
// @epilogue: out's store; registry.ts's `_gelu` variants swap in lib/gelu_epilogue.wgsl's, which also stores gelu(v).
fn store_out4(i: u32, v: vec4f) { out[i] = v; }
// @end-epilogue

override ROWS: u32 = 1;            // 1, 4 or 8, at least M
override COL_THREADS: u32 = 8;     // column quads per workgroup
override DEPTH_SLICES: u32 = 32;   // threads sharing one column quad's reduction
override HAS_BIAS: bool = false;

var<workgroup> partial: array<vec4f, COL_THREADS * DEPTH_SLICES>;  // (DEPTH_SLICES, COL_THREADS)

// chunk + a ⊗ w: 4 rows a, 4 columns w.
fn outer(chunk: mat4x4f, a: vec4f, w: vec4f) -> mat4x4f {
  return mat4x4f(fma(vec4f(a.x), w, chunk[0]), fma(vec4f(a.y), w, chunk[1]),
                 fma(vec4f(a.z), w, chunk[2]), fma(vec4f(a.w), w, chunk[3]));
}

// inp[row..row+3][k], rows clamped to M - 1.
fn inp_rows(row: u32, k: u32) -> vec4f {
  let last = params.M - 1u;
  let K = params.K;
  return vec4f(inp[min(row, last) * K + k], inp[min(row + 1u, last) * K + k],
               inp[min(row + 2u, last) * K + k], inp[min(row + 3u, last) * K + k]);
}

@compute @workgroup_size(COL_THREADS, DEPTH_SLICES)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u,
        @builtin(local_invocation_id) lid: vec3u) {
  let M = params.M;
  let K = params.K;
  let N4 = params.N / 4u;
  let col4 = (wid.x + wid.y * groups.x) * COL_THREADS + lid.x;  // grid folded into 2D when wide
  let weight_col4 = min(col4, N4 - 1u);

  var one_row = vec4f();     // ROWS = 1
  var rows_lo = mat4x4f();   // rows 0..3 (column i: row i)
  var rows_hi = mat4x4f();   // rows 4..7
  for (var k = lid.y; k < K; k += DEPTH_SLICES) {
    let w = weight_quad(k, weight_col4);
    if (ROWS == 1u) {
      one_row = fma(vec4f(inp[k]), w, one_row);
    } else {
      rows_lo = outer(rows_lo, inp_rows(0u, k), w);
      if (ROWS > 4u) { rows_hi = outer(rows_hi, inp_rows(4u, k), w); }
    }
  }

  for (var r = 0u; r < ROWS; r++) {
    var mine = one_row;
    if (ROWS > 1u) { mine = select(rows_hi[r % 4u], rows_lo[r % 4u], r < 4u); }
    partial[lid.y * COL_THREADS + lid.x] = mine;
    workgroupBarrier();
    if (lid.y == 0u) {
      var sum = partial[lid.x];
      for (var z = 1u; z < DEPTH_SLICES; z++) { sum += partial[z * COL_THREADS + lid.x]; }
      if (r < M && col4 < N4) {
        if (HAS_BIAS) { sum += bias[col4]; }
        store_out4(r * N4 + col4, sum);
      }
    }
    workgroupBarrier();
  }
}
