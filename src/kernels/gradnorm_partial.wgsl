// First half of the global gradient norm: the sum of squares of one gradient tensor (n), one partial per workgroup,
// written to partials[slot + workgroup]. No float atomics: each workgroup covers a fixed strided set of elements and
// sums them in a fixed order, and gradnorm_finalize adds the partials in a fixed order, so the norm is bit-for-bit
// the same every run. Dispatched 1D with a group count the wrapper derives from n alone.

struct Params {
  n: u32,
  slot: u32, // this tensor's first partial
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> grad: array<f32>;           // (n)
@group(0) @binding(2) var<storage, read_write> partials: array<f32>; // (all tensors' groups)

override WG: u32 = 256; // a power of two (tree reduction)

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) groups: vec3u,
  @builtin(local_invocation_index) tid: u32,
) {
  let stride = groups.x * WG;
  var sumOfSquares = 0.0;
  for (var i = wid.x * WG + tid; i < params.n; i += stride) {
    let g = grad[i];
    sumOfSquares += g * g;
  }
  partial[tid] = sumOfSquares;
  workgroupBarrier();
  for (var half = WG / 2u; half > 0u; half >>= 1u) {
    if (tid < half) { partial[tid] += partial[tid + half]; }
    workgroupBarrier();
  }
  if (tid == 0u) { partials[params.slot + wid.x] = partial[0]; }
}
