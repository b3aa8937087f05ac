// LayerNorm forward over the last axis: out (N,C) = (inp − mean)·rstd·weight + bias, saving mean (N) and rstd (N).
// One workgroup per row; the row is read in a strided loop and summed with a tree reduction in workgroup memory,
// first for the mean, then for the squared deviations (two passes, so the variance suffers no cancellation).

struct Params { N: u32, C: u32, eps: f32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> inp: array<f32>;     // (N,C)
@group(0) @binding(2) var<storage, read> weight: array<f32>;  // (C)
@group(0) @binding(3) var<storage, read> bias: array<f32>;    // (C)
@group(0) @binding(4) var<storage, read_write> out: array<f32>;   // (N,C)
@group(0) @binding(5) var<storage, read_write> mean: array<f32>;  // (N)
@group(0) @binding(6) var<storage, read_write> rstd: array<f32>;  // (N)

// Threads per row; a power of two (the tree reduction halves it).
override WG: u32 = 256;

override SUM_THREADS = WG;  // lib/workgroup_sum.wgsl's tree

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) groups: vec3u,
  @builtin(local_invocation_index) lane: u32,
) {
  // The grid may be folded into 2D when N exceeds the per-dimension limit; the test is uniform per workgroup.
  let n = wid.x + wid.y * groups.x;
  if (n >= params.N) { return; }
  let C = params.C;
  let row = n * C;

  var sum = 0.0;
  for (var c = lane; c < C; c += WG) { sum += inp[row + c]; }
  let m = workgroup_sum(lane, sum) / f32(C);

  var squares = 0.0;
  for (var c = lane; c < C; c += WG) {
    let d = inp[row + c] - m;
    squares += d * d;
  }
  let s = inverseSqrt(workgroup_sum(lane, squares) / f32(C) + params.eps);

  for (var c = lane; c < C; c += WG) {
    out[row + c] = (inp[row + c] - m) * s * weight[c] + bias[c];
  }
  if (lane == 0u) {
    mean[n] = m;
    rstd[n] = s;
  }
}
