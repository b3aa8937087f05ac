// AdamW update of one parameter tensor of n values (decoupled weight decay, bias-corrected moments, as PyTorch):
//   g = grad·clipScale[0];  m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²
//   param −= lr·( (m / bc1) / (sqrt(v / bc2) + eps) + weightDecay·param )       bc_k = 1 − β_k^t
// The clip scale comes from a storage buffer written earlier in the same step by gradnorm_finalize, so clipping
// needs no readback. A clip scale of 0 (gradnorm_finalize's mark for a non-finite gradient norm) skips the step:
// param, m and v keep their bits, and only the gradient is cleared (when zeroGrad).
// t counts the updates that happened, as PyTorch's step count does when GradScaler skips optimizer.step(): it is
// stepCount[0] + 1, a count on the GPU that adamw_count advances after the step's updates unless the step was
// skipped, so the CPU never has to know whether a step happened. bc_k = −expm1(t·ln β_k), from ln β_k computed on
// the CPU in double precision, without the cancellation of 1 − exp(…) for the small t·ln β of early steps.
// zeroGrad = 1 clears the gradient after use: parameter gradients accumulate, and this saves a separate clear.

struct Params {
  n: u32,
  lr: f32,
  beta1: f32,
  beta2: f32,
  eps: f32,
  weightDecay: f32,
  logBeta1: f32,        // ln β1 (a large negative number for β1 = 0)
  logBeta2: f32,        // ln β2
  zeroGrad: u32,        // 1 = grad ← 0 after the update
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;  // (n)
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;   // (n)
@group(0) @binding(3) var<storage, read_write> m: array<f32>;      // (n) first moment
@group(0) @binding(4) var<storage, read_write> v: array<f32>;      // (n) second moment
@group(0) @binding(5) var<storage, read> clipScale: array<f32>;    // [0] = global gradient clip factor
@group(0) @binding(6) var<storage, read> stepCount: array<f32>;    // [0] = updates done before this one (a whole number)

override WG: u32 = 256;

// 1 − β^t = −expm1(x) for x = t·ln β ≤ 0. Near 0 (early steps: 1 − 0.999 = 0.001) by its Taylor series, whose
// first omitted term is below 2e-8 relative for |x| < 0.5; further out 1 − exp(x) ≥ 0.39 loses nothing.
fn biasCorrection(logBeta: f32, t: f32) -> f32 {
  let x = t * logBeta;
  if (x > -0.5) {
    return -x * (1.0 + x / 2.0 * (1.0 + x / 3.0 * (1.0 + x / 4.0 * (1.0 + x / 5.0 * (1.0 + x / 6.0 * (1.0 + x / 7.0 * (1.0 + x / 8.0)))))));
  }
  return 1.0 - exp(x);
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let i = gid.x + gid.y * groups.x * WG;
  if (i >= params.n) { return; }
  let scale = clipScale[0];
  // Scale 0 = the gradient norm was not finite: skip the step, leaving the weights and both moments as they were
  // (grad·0 would still be NaN for a NaN or infinite gradient, and the moments would move the weights anyway).
  if (scale == 0.0) {
    if (params.zeroGrad != 0u) { grad[i] = 0.0; }
    return;
  }
  let g = grad[i] * scale;
  let m1 = params.beta1 * m[i] + (1.0 - params.beta1) * g;
  let v1 = params.beta2 * v[i] + (1.0 - params.beta2) * g * g;
  m[i] = m1;
  v[i] = v1;
  let t = stepCount[0] + 1.0;
  let mHat = m1 / biasCorrection(params.logBeta1, t);
  let vHat = v1 / biasCorrection(params.logBeta2, t);
  let p = param[i];
  param[i] = p - params.lr * (mHat / (sqrt(vHat) + params.eps) + params.weightDecay * p);
  if (params.zeroGrad != 0u) { grad[i] = 0.0; }
}
