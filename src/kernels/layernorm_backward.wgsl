// LayerNorm backward, the row-wise part: dinp (N,C) = or += rstd·(g − mean(g) − norm·mean(g·norm)), where
// norm = (inp − mean)·rstd and g = dout·weight. One workgroup per row with a tree reduction of both means at once.
// dweight and dbias (sums over rows) are left to layernorm_backward_params + layernorm_backward_params_reduce.

struct Params { N: u32, C: u32, accumulate: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> dout: array<f32>;    // (N,C)
@group(0) @binding(2) var<storage, read> inp: array<f32>;     // (N,C)
@group(0) @binding(3) var<storage, read> weight: array<f32>;  // (C)
@group(0) @binding(4) var<storage, read> mean: array<f32>;    // (N)
@group(0) @binding(5) var<storage, read> rstd: array<f32>;    // (N)
@group(0) @binding(6) var<storage, read_write> dinp: array<f32>;  // (N,C); accumulate 0 assigns, 1 adds

// Threads per row; a power of two (the tree reduction halves it).
override WG: u32 = 256;

var<workgroup> partial: array<vec2f, WG>;

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) groups: vec3u,
  @builtin(local_invocation_index) lane: u32,
) {
  let n = wid.x + wid.y * groups.x;
  if (n >= params.N) { return; }
  let C = params.C;
  let row = n * C;
  let m = mean[n];
  let s = rstd[n];

  // (Σ g, Σ g·norm) over this thread's columns.
  var sums = vec2f(0.0);
  for (var c = lane; c < C; c += WG) {
    let norm = (inp[row + c] - m) * s;
    let g = dout[row + c] * weight[c];
    sums += vec2f(g, g * norm);
  }
  partial[lane] = sums;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
    if (lane < stride) { partial[lane] += partial[lane + stride]; }
    workgroupBarrier();
  }
  let means = partial[0] / f32(C);

  for (var c = lane; c < C; c += WG) {
    let norm = (inp[row + c] - m) * s;
    let g = dout[row + c] * weight[c];
    var d = s * (g - means.x - norm * means.y);
    if (params.accumulate != 0u) { d += dinp[row + c]; }
    dinp[row + c] = d;
  }
}
