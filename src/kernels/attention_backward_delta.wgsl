// Attention backward, step 1: delta = rowsum(dout ⊙ out) for every (b, h, t) row. It is the Σ_s P(t,s)·dP(t,s) term of
// the softmax backward (dS = P ⊙ (dP − delta)), obtained from the saved output without rebuilding any probabilities.
//
// dout (B,T,C), out (B,T,C), head h in columns h·HS..(h+1)·HS; delta (B,NH,T). One thread per row, 2D-folded grid.

struct Params {
  rows: u32, // B·NH·T
  T: u32,
  C: u32,
  NH: u32,
  HS: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> delta: array<f32>;

override WG: u32 = 64;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let row = gid.x + gid.y * groups.x * WG;
  if (row >= params.rows) { return; }
  let T = params.T;
  let bh = row / T;
  let t = row % T;
  let b = bh / params.NH;
  let h = bh % params.NH;
  let base = (b * T + t) * params.C + h * params.HS;
  var sum = 0.0;
  for (var d = 0u; d < params.HS; d++) { sum += dout[base + d] * out[base + d]; }
  delta[row] = sum;
}
