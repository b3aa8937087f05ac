// The end of a split-K matmul (lib/matmul_tiles.wgsl, SPLIT_K > 1): out (n) = or += Σ_z partial (z, n), the splits'
// partial products summed in a fixed order (deterministic). One thread per output element, 2D-folded grid.

struct Params {
  n: u32,          // output elements (rows·cols)
  splits: u32,
  accumulate: u32, // 1: add to out
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> partial: array<f32>;   // (splits, n)
@group(0) @binding(2) var<storage, read_write> out: array<f32>; // (n)

override WG: u32 = 256;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let i = gid.x + gid.y * groups.x * WG;
  if (i >= params.n) { return; }
  var sum = 0.0;
  for (var z = 0u; z < params.splits; z++) { sum += partial[z * params.n + i]; }
  if (params.accumulate != 0u) { sum += out[i]; }
  out[i] = sum;
}
