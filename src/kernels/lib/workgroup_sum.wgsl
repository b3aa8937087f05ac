// A sum over a workgroup by a tree in workgroup memory, shared by layernorm_forward, residual_layernorm_forward,
// decode_linear and decode_head. Not a kernel on its own: WGSL has no #include, so registry.ts `withWorkgroupSum`
// appends this file to each of them. The kernel declares `override SUM_THREADS` (its threads per workgroup, a power of
// two); `sum_scratch` is also free for the kernel's own trees between calls.

var<workgroup> sum_scratch: array<f32, SUM_THREADS>;

// Sum of `value` over the workgroup; every thread gets the total. Must be called from uniform control flow.
fn workgroup_sum(lane: u32, value: f32) -> f32 {
  sum_scratch[lane] = value;
  workgroupBarrier();
  for (var stride = SUM_THREADS / 2u; stride > 0u; stride = stride / 2u) {
    if (lane < stride) { sum_scratch[lane] += sum_scratch[lane + stride]; }
    workgroupBarrier();
  }
  let total = sum_scratch[0];
  // Nobody may overwrite sum_scratch[0] for the next reduction before every thread has read it.
  workgroupBarrier();
  return total;
}
