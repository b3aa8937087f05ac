// Batch metrics from the per-token outputs of crossentropy_forward_backward, summed on the GPU into a 4-float result
// the trainer copies out and reads a step late (no mapAsync inside a step):
//   result[0] = Σ loss·dlossScale   mean loss over the masked tokens
//   result[1] = Σ loss              (each loss is already mask-weighted)
//   result[2] = Σ correct           correct argmax predictions among masked tokens
//   result[3] = Σ mask              tokens that count
// One workgroup, fixed-order sums (strided per thread, then a tree), so the result is deterministic.
// accumulate = 1 adds into the result instead of assigning (validation over several batches).

struct Params {
  count: u32,      // tokens in the batch (B*T)
  dlossScale: f32,
  accumulate: u32, // 0 = assign, 1 = add
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> loss: array<f32>;         // (B*T)
@group(0) @binding(2) var<storage, read> correct: array<f32>;      // (B*T)
@group(0) @binding(3) var<storage, read> mask: array<f32>;         // (B*T)
@group(0) @binding(4) var<storage, read_write> result: array<f32>; // (4)

override WG: u32 = 256; // a power of two (tree reduction)

var<workgroup> partial: array<vec3f, WG>; // (Σ loss, Σ correct, Σ mask)

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) tid: u32) {
  var sums = vec3f(0.0);
  for (var i = tid; i < params.count; i += WG) {
    sums += vec3f(loss[i], correct[i], mask[i]);
  }
  partial[tid] = sums;
  workgroupBarrier();
  for (var half = WG / 2u; half > 0u; half >>= 1u) {
    if (tid < half) { partial[tid] += partial[tid + half]; }
    workgroupBarrier();
  }
  if (tid == 0u) {
    let total = partial[0];
    let metrics = vec4f(total.x * params.dlossScale, total.x, total.y, total.z);
    let previous = select(vec4f(0.0), vec4f(result[0], result[1], result[2], result[3]), params.accumulate != 0u);
    let updated = previous + metrics;
    result[0] = updated.x;
    result[1] = updated.y;
    result[2] = updated.z;
    result[3] = updated.w;
  }
}
