// Token + position embedding: out[b,t,c] = wte[ids[b,t], c] + wpe[t, c]. One thread per output element.

struct Params { n: u32, T: u32, C: u32, V: u32 }  // n = B·T·C

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;   // (B,T) token ids
@group(0) @binding(2) var<storage, read> wte: array<f32>;   // (V,C)
@group(0) @binding(3) var<storage, read> wpe: array<f32>;   // (maxT,C), maxT ≥ T
@group(0) @binding(4) var<storage, read_write> out: array<f32>;  // (B,T,C)

override WG: u32 = 256;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let i = gid.x + gid.y * groups.x * WG;
  if (i >= params.n) { return; }
  let C = params.C;
  let bt = i / C;
  let c = i - bt * C;
  let t = bt % params.T;
  // Clamped so that a bad id cannot read outside wte; the CPU side validates ids against V.
  let token = min(ids[bt], params.V - 1u);
  out[i] = wte[token * C + c] + wpe[t * C + c];
}
