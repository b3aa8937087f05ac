// The tied classifier of a single-sequence decoding step, with ln_f fused in front and the first half of the greedy
// choice behind: logits (V) = layernorm(x; ln_weight, ln_bias) (C) · wteᵀ, wte (V,C) row-major, and for each
// workgroup the largest of its logits and its index (the lowest on ties), which decode_select.wgsl reduces.
//
// Each row of wte is one logit's contiguous weights, so a workgroup owns ROWS rows and LANES threads per row read a
// row's vec4 at LANES apart (a warp reads whole 2 × 256-byte runs); the lanes' partial dots meet in a tree. ln_f(x)
// is recomputed by every workgroup into workgroup memory (C reads from cache against ROWS·C of wte). C must be a
// multiple of 4; rows past V read the last row (clamped) and are not stored.

struct Params { V: u32, C: u32, eps: f32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;           // (C) the last residual
// @wte: the table binding and its quad reader; registry.ts swaps this part for decode_head_f16w.wgsl's.
@group(0) @binding(2) var<storage, read> wte: array<vec4f>;       // (V,C/4)
fn wte_quad(v: u32, q: u32) -> vec4f { return wte[v * (params.C / 4u) + q]; }
// @end-wte
@group(0) @binding(3) var<storage, read> ln_weight: array<f32>;   // (C)
@group(0) @binding(4) var<storage, read> ln_bias: array<f32>;     // (C)
@group(0) @binding(5) var<storage, read_write> logits: array<f32>; // (V)
@group(0) @binding(6) var<storage, read_write> best: array<vec2<u32>>; // (workgroups): (bits of the max, index)

override ROWS: u32 = 16;    // logits per workgroup
override LANES: u32 = 16;   // threads per logit; ROWS · LANES threads, a power of two
override XS4: u32 = 192;    // C / 4, set by the host

override THREADS = ROWS * LANES;

var<workgroup> xs: array<vec4f, XS4>;          // ln_f(x)
override SUM_THREADS = THREADS;  // lib/workgroup_sum.wgsl's tree; its sum_scratch also holds the kernel's own trees

@compute @workgroup_size(LANES, ROWS)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u,
        @builtin(local_invocation_id) lid: vec3u, @builtin(local_invocation_index) lane: u32) {
  let C = params.C;
  let C4 = C / 4u;
  let group = wid.x + wid.y * groups.x;  // grid folded into 2D when V is large
  if (group * ROWS >= params.V) { return; } // a folded grid's spare workgroups (uniform per workgroup)

  var sum = 0.0;
  for (var c = lane; c < C; c += THREADS) { sum += x[c]; }
  let mean = workgroup_sum(lane, sum) / f32(C);
  var squares = 0.0;
  for (var c = lane; c < C; c += THREADS) {
    let d = x[c] - mean;
    squares += d * d;
  }
  let rstd = inverseSqrt(workgroup_sum(lane, squares) / f32(C) + params.eps);
  for (var q = lane; q < C4; q += THREADS) {
    let c = q * 4u;
    let v = vec4f(x[c], x[c + 1u], x[c + 2u], x[c + 3u]);
    let w = vec4f(ln_weight[c], ln_weight[c + 1u], ln_weight[c + 2u], ln_weight[c + 3u]);
    let b = vec4f(ln_bias[c], ln_bias[c + 1u], ln_bias[c + 2u], ln_bias[c + 3u]);
    xs[q] = (v - mean) * rstd * w + b;
  }
  workgroupBarrier();

  let row = group * ROWS + lid.y;
  let v = min(row, params.V - 1u);
  var acc0 = 0.0;
  var acc1 = 0.0;
  var q = lid.x;
  for (; q + LANES < C4; q += 2u * LANES) {
    let w0 = wte_quad(v, q);
    let w1 = wte_quad(v, q + LANES);
    acc0 += dot(xs[q], w0);
    acc1 += dot(xs[q + LANES], w1);
  }
  if (q < C4) { acc0 += dot(xs[q], wte_quad(v, q)); }
  sum_scratch[lane] = acc0 + acc1;
  workgroupBarrier();
  for (var stride = LANES / 2u; stride > 0u; stride = stride / 2u) {
    if (lid.x < stride) { sum_scratch[lane] += sum_scratch[lane + stride]; }
    workgroupBarrier();
  }
  if (lid.x == 0u && row < params.V) { logits[row] = sum_scratch[lane]; }
  if (lane == 0u) {
    // Rows in order, strict >, so the lowest index wins a tie (the CPU's argmax does the same).
    var top = sum_scratch[0];
    var at = group * ROWS;
    for (var r = 1u; r < ROWS; r++) {
      if (group * ROWS + r < params.V && sum_scratch[r * LANES] > top) {
        top = sum_scratch[r * LANES];
        at = group * ROWS + r;
      }
    }
    best[group] = vec2<u32>(bitcast<u32>(top), at);
  }
}
