// KV cache append for generation: copies k and v of the `count` real rows of a pass (positions offset..offset+count−1
// of each sequence) from c_attn's output into the cache, head-major so that attention_decode reads each head's keys
// as contiguous rows. Padding rows (count ≤ i < Tq) are not cached. One thread per (row, channel).
//
// qkv (B,Tq,3C) [q | k | v], each C = NH·HS wide. cache (2,B,NH,maxT,HS): K in the first half, V in the second.

struct Params {
  B: u32,
  Tq: u32,
  count: u32,
  offset: u32,
  C: u32,
  NH: u32,
  HS: u32,
  maxT: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read_write> cache: array<f32>;

override WG: u32 = 256;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let C = params.C;
  let HS = params.HS;
  let idx = gid.x + gid.y * groups.x * WG;
  let row = idx / C;          // b·Tq + i
  let c = idx - row * C;
  let b = row / params.Tq;
  let i = row - b * params.Tq;
  let t = params.offset + i;  // the row's position in its sequence
  if (b >= params.B || i >= params.count || t >= params.maxT) { return; }
  let h = c / HS;
  let d = c - h * HS;
  let at = ((b * params.NH + h) * params.maxT + t) * HS + d;
  let half = params.B * params.maxT * C;
  let src = row * 3u * C + c;
  cache[at] = qkv[src + C];
  cache[half + at] = qkv[src + 2u * C];
}
