// Second half of the global gradient norm: adds the `count` partial sums of squares in a fixed order (one
// workgroup) and writes
//   result[0] = clipScale = min(1, maxNorm / (norm + 1e-6)), or 1 when maxNorm ≤ 0 (clipping off); 0 if norm is not finite
//   result[1] = norm = sqrt(Σ partials)
// clipScale sits first so adamw_update can bind this buffer as its clip scale. A non-finite norm (overflow or NaN in
// some gradient) gives clipScale 0 whether clipping is on or not, and adamw_update skips the step on a scale of 0:
// the bad gradient never reaches the weights or the moments. The trainer reads the norm a step late for its metrics.

struct Params {
  count: u32,   // partials to add
  maxNorm: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> partials: array<f32>;     // (count)
@group(0) @binding(2) var<storage, read_write> result: array<f32>; // (2) [clipScale, norm]

override WG: u32 = 256; // a power of two (tree reduction)

var<workgroup> partial: array<f32, WG>;

// Checked on the bits: WGSL lets compilers assume floats are finite, so x != x or x > max may be folded away.
fn isFinite(x: f32) -> bool {
  return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) tid: u32) {
  var total = 0.0;
  for (var i = tid; i < params.count; i += WG) { total += partials[i]; }
  partial[tid] = total;
  workgroupBarrier();
  for (var half = WG / 2u; half > 0u; half >>= 1u) {
    if (tid < half) { partial[tid] += partial[tid + half]; }
    workgroupBarrier();
  }
  if (tid == 0u) {
    let norm = sqrt(partial[0]);
    var scale = 1.0;
    if (params.maxNorm > 0.0) { scale = min(1.0, params.maxNorm / (norm + 1e-6)); }
    // A non-finite norm gives 0 whether clipping is on or not: adamw_update then skips the step.
    result[0] = select(0.0, scale, isFinite(norm));
    result[1] = norm;
  }
}
