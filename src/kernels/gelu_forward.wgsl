// GELU forward, tanh form (Hugging Face `gelu_new`, GPT-2): out (N) = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
// `out` and `inp` must be different buffers (WebGPU forbids binding one buffer as read and read_write together).

struct Params { n: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> inp: array<f32>;        // (N)
@group(0) @binding(2) var<storage, read_write> out: array<f32>;  // (N)

override WG: u32 = 256;

const SQRT_2_OVER_PI: f32 = 0.7978845608028654;
const CUBIC: f32 = 0.044715;

// tanh through exp(−2|u|), which lies in [0, 1] for every finite u (and is 0 for huge |u|), so it cannot overflow.
// Some drivers evaluate the builtin tanh as (e^{2u} − 1)/(e^{2u} + 1), which is inf/inf = NaN for u ≳ 45.
fn stable_tanh(u: f32) -> f32 {
  let e = exp(-2.0 * abs(u));
  let t = (1.0 - e) / (1.0 + e);
  return select(t, -t, u < 0.0);
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let i = gid.x + gid.y * groups.x * WG;
  if (i >= params.n) { return; }
  let x = inp[i];
  let t = stable_tanh(SQRT_2_OVER_PI * (x + CUBIC * x * x * x));
  out[i] = 0.5 * x * (1.0 + t);
}
