// One linear layer of a single-sequence decoding step (one row), with what surrounds it in a GPT-2 block fused in,
// so a generated token costs five dispatches per layer instead of about fourteen:
//   x' = LN ? layernorm(x; ln_weight, ln_bias) : x                       (K)   prologue, recomputed per workgroup
//   y  = x' · weight + bias [+ lora_scale · (x' · lora_aᵀ) · lora_bᵀ]   (N)
//   out = y | gelu(y) | out + y                                           (EPILOGUE 0 | 1 | 2: the residual add)
// (registry.ts appends lib/workgroup_sum.wgsl and lib/gelu_epilogue.wgsl's gelu, gelu_forward.wgsl's arithmetic.)
// weight (K,N) in Conv1D [in,out] layout, N a multiple of 4; lora_a (R,K), lora_b (N,R) as ops/lora.ts keeps them.
//
// The work is reading weight once (K·N values for 2·K·N flops), so the layout serves memory parallelism: a
// workgroup owns COL_QUADS column quads (4·COL_QUADS columns) and splits K over SLICES threads each, so N = 768
// already gives 96 workgroups of 256 threads; thread (q, z) reads the vec4 at rows k = z, z + SLICES, … four rows
// per iteration before using any (four loads in flight), and the slices' partial sums meet in a tree in workgroup
// memory. Neighbouring threads read neighbouring 16 bytes of a weight row (COL_QUADS = 2: whole 32-byte sectors).
// The layernorm prologue stages x' in workgroup memory (K ≤ XS_LEN floats; without it x is read from memory, where
// every thread of a slice reads the same value); every workgroup recomputes it, which costs K reads from cache
// against K·4·COL_QUADS of weight. The LoRA down-projection u = x' · lora_aᵀ (R ≤ 64
// values) is recomputed per workgroup the same way: R groups of LORA_GROUP threads, one tree each.
// Columns past N read the last quad (clamped) and are not stored. The epilogue runs on the z = 0 threads only.

struct Params { K: u32, N: u32, R: u32, eps: f32, lora_scale: f32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // (K)
// @weight: the weight binding and its quad reader; registry.ts swaps this part for decode_linear_f16w.wgsl's.
@group(0) @binding(2) var<storage, read> weight: array<vec4f>;   // (K,N/4)
fn weight_quad(k: u32, col4: u32) -> vec4f { return weight[k * (params.N / 4u) + col4]; }
// @end-weight
@group(0) @binding(3) var<storage, read> bias: array<vec4f>;     // (N/4)
@group(0) @binding(4) var<storage, read_write> out: array<vec4f>; // (N/4)
@group(0) @binding(5) var<storage, read> ln_weight: array<f32>;  // (K), read only when LN
@group(0) @binding(6) var<storage, read> ln_bias: array<f32>;    // (K), read only when LN
@group(0) @binding(7) var<storage, read> lora_a: array<f32>;     // (R,K), read only when HAS_LORA
@group(0) @binding(8) var<storage, read> lora_b: array<f32>;     // (N,R), read only when HAS_LORA

override COL_QUADS: u32 = 2;   // column quads per workgroup
override SLICES: u32 = 128;    // threads sharing one quad's reduction over K; a power of two
override LN: bool = false;
override EPILOGUE: u32 = 0;    // 0 store, 1 GELU (tanh form, as gelu_forward.wgsl), 2 add to out
override HAS_LORA: bool = false;
override LORA_GROUP: u32 = 32; // threads per LoRA rank in the down-projection: 256 / (R rounded up to a power of 2)
override XS_LEN: u32 = 4;      // x' capacity in workgroup memory: K when LN, else a token 4

override THREADS = COL_QUADS * SLICES;

var<workgroup> xs: array<f32, XS_LEN>;              // x' when staged
var<workgroup> partial: array<vec4f, THREADS>;      // (SLICES, COL_QUADS) partial sums
override SUM_THREADS = THREADS;  // lib/workgroup_sum.wgsl's tree; its sum_scratch also holds the kernel's own trees
var<workgroup> lora_u: array<f32, 64>;              // u = x' · lora_aᵀ

fn x_at(k: u32) -> f32 {
  if (LN) { return xs[k]; }
  return x[k];
}

@compute @workgroup_size(COL_QUADS, SLICES)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(local_invocation_index) lane: u32) {
  let K = params.K;
  let N4 = params.N / 4u;
  let col4 = wid.x * COL_QUADS + lid.x;
  let weight_col4 = min(col4, N4 - 1u);

  if (LN) {
    for (var k = lane; k < K; k += THREADS) { xs[k] = x[k]; }
    // Two passes over the staged row, as layernorm_forward.wgsl: mean, then squared deviations.
    var sum = 0.0;
    for (var k = lane; k < K; k += THREADS) { sum += xs[k]; }
    let mean = workgroup_sum(lane, sum) / f32(K);
    var squares = 0.0;
    for (var k = lane; k < K; k += THREADS) {
      let d = xs[k] - mean;
      squares += d * d;
    }
    let rstd = inverseSqrt(workgroup_sum(lane, squares) / f32(K) + params.eps);
    for (var k = lane; k < K; k += THREADS) { xs[k] = (xs[k] - mean) * rstd * ln_weight[k] + ln_bias[k]; }
  }
  if (LN) { workgroupBarrier(); }
  if (HAS_LORA) {
    // Rank r = lane / LORA_GROUP sums x'[k]·a[r,k] over k ≡ g (mod LORA_GROUP), then a tree within the group.
    let r = lane / LORA_GROUP;
    let g = lane % LORA_GROUP;
    var dot = 0.0;
    if (r < params.R) {
      for (var k = g; k < K; k += LORA_GROUP) { dot += x_at(k) * lora_a[r * K + k]; }
    }
    sum_scratch[lane] = dot;
    workgroupBarrier();
    for (var stride = LORA_GROUP / 2u; stride > 0u; stride = stride / 2u) {
      if (g < stride) { sum_scratch[lane] += sum_scratch[lane + stride]; }
      workgroupBarrier();
    }
    if (g == 0u && r < params.R) { lora_u[r] = sum_scratch[lane]; }
    workgroupBarrier();
  }

  // Four independent rows per iteration, loaded before they are used, then the tail.
  var acc0 = vec4f();
  var acc1 = vec4f();
  var k = lid.y;
  let step = SLICES;
  for (; k + 3u * step < K; k += 4u * step) {
    let w0 = weight_quad(k, weight_col4);
    let w1 = weight_quad(k + step, weight_col4);
    let w2 = weight_quad(k + 2u * step, weight_col4);
    let w3 = weight_quad(k + 3u * step, weight_col4);
    acc0 = fma(vec4f(x_at(k)), w0, acc0);
    acc1 = fma(vec4f(x_at(k + step)), w1, acc1);
    acc0 = fma(vec4f(x_at(k + 2u * step)), w2, acc0);
    acc1 = fma(vec4f(x_at(k + 3u * step)), w3, acc1);
  }
  for (; k < K; k += step) { acc0 = fma(vec4f(x_at(k)), weight_quad(k, weight_col4), acc0); }

  partial[lid.y * COL_QUADS + lid.x] = acc0 + acc1;
  workgroupBarrier();
  for (var stride = SLICES / 2u; stride > 0u; stride = stride / 2u) {
    if (lid.y < stride) { partial[lid.y * COL_QUADS + lid.x] += partial[(lid.y + stride) * COL_QUADS + lid.x]; }
    workgroupBarrier();
  }
  if (lid.y != 0u || col4 >= N4) { return; }

  var y = partial[lid.x] + bias[col4];
  if (HAS_LORA) {
    let R = params.R;
    let n = col4 * 4u;
    var up = vec4f();
    for (var r = 0u; r < R; r++) {
      up = fma(vec4f(lora_u[r]), vec4f(lora_b[n * R + r], lora_b[(n + 1u) * R + r],
                                       lora_b[(n + 2u) * R + r], lora_b[(n + 3u) * R + r]), up);
    }
    y = fma(vec4f(params.lora_scale), up, y);
  }
  if (EPILOGUE == 1u) { y = vec4f(gelu(y.x), gelu(y.y), gelu(y.z), gelu(y.w)); }  // gelu: lib/gelu_epilogue.wgsl
  if (EPILOGUE == 2u) { y += out[col4]; }
  out[col4] = y;
}
