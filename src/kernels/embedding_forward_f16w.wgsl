// Token + position embedding with the token table stored as f16: out[b,t,c] = wte[ids[b,t], c] + wpe[t, c].
// wte is packed two f16 per u32 by ops/matmul-f16.ts `packF16` with rows of C: row v holds CP = ceil(C/2) words,
// column c lies in word v·CP + c/2, even c in the low half (odd C pads each row's last word with a +0 half).
// unpack2x16float is core WGSL, so no shader-f16 is needed; the sum is f32. One thread per output element.

struct Params { n: u32, T: u32, C: u32, V: u32 }  // n = B·T·C

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;   // (B,T) token ids
@group(0) @binding(2) var<storage, read> wte: array<u32>;   // (V,ceil(C/2)): f16 pairs along C
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
  let pair = unpack2x16float(wte[token * ((C + 1u) / 2u) + c / 2u]);
  out[i] = pair[c % 2u] + wpe[t * C + c];
}
