// The GELU epilogue of the forward matmul kernels (GPT-2's c_fc: fch = ln2·W + b, then fchGelu = gelu(fch)). Not a
// kernel, and not valid WGSL as a whole: registry.ts `withGeluEpilogue` cuts parts out of it by their markers. Each
// forward kernel stores its outputs through a one-line `store_out` (f32) or `store_out4` (vec4f) between
// `// @epilogue` and `// @end-epilogue`; a `_gelu` variant gets, in its place, the matching store part below (a fifth
// storage binding `activated`, out's shape, and a store that writes both; three lines, like the part it replaces, so
// compile errors keep the kernel file's line numbers), and the `gelu` part at its end. The pre-activation `out` is
// still stored because gelu_backward reads it.
// The formula is gelu_forward.wgsl's, operation for operation (tanh through exp(−2|u|), which cannot overflow), so the
// fused kernels give the separate gelu_forward dispatch's values; tests/fused-epilogues.test.ts compares them bit for
// bit.

// @gelu
const GELU_SQRT_2_OVER_PI: f32 = 0.7978845608028654;
const GELU_CUBIC: f32 = 0.044715;

// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
fn gelu(x: f32) -> f32 {
  let u = GELU_SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x);
  let e = exp(-2.0 * abs(u));
  let magnitude = (1.0 - e) / (1.0 + e);
  let t = select(magnitude, -magnitude, u < 0.0);
  return 0.5 * x * (1.0 + t);
}
// @end-gelu

// @store-f32
// GELU epilogue (lib/gelu_epilogue.wgsl): activated = gelu(out), out's shape; the store writes both.
@group(0) @binding(5) var<storage, read_write> activated: array<f32>;
fn store_out(i: u32, v: f32) { out[i] = v; activated[i] = gelu(v); }
// @end-store-f32

// @store-vec4
// GELU epilogue (lib/gelu_epilogue.wgsl): activated = gelu(out), out's shape; the store writes both.
@group(0) @binding(5) var<storage, read_write> activated: array<vec4f>;
fn store_out4(i: u32, v: vec4f) { out[i] = v; activated[i] = vec4f(gelu(v.x), gelu(v.y), gelu(v.z), gelu(v.w)); }
// @end-store-vec4
