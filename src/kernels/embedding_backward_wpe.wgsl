// Position embedding backward: dwpe[t, c] += Σ_b dout[b, t, c]. One thread per (t, c), summing the batch in order,
// so the result is deterministic without atomics.

struct Params { B: u32, T: u32, C: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> dout: array<f32>;        // (B,T,C)
@group(0) @binding(2) var<storage, read_write> dwpe: array<f32>;  // (maxT,C), rows [0, T) updated

override WG: u32 = 256;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let i = gid.x + gid.y * groups.x * WG;  // t·C + c
  let TC = params.T * params.C;
  if (i >= TC) { return; }
  var sum = 0.0;
  for (var b = 0u; b < params.B; b++) { sum += dout[b * TC + i]; }
  dwpe[i] += sum;
}
