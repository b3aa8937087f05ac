// Token + position embedding of a single-sequence decoding step whose token and position live on the GPU (state,
// written by the host before a step or by decode_select.wgsl after the previous one): out (C) = wte[token] +
// wpe[position]. One thread per channel.

struct Params { C: u32, V: u32, maxT: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> state: array<u32>;     // [0] token, [1] position
// @wte: the table binding and its reader; registry.ts swaps this part for decode_embed_f16w.wgsl's.
@group(0) @binding(2) var<storage, read> wte: array<f32>;       // (V,C)
fn wte_at(v: u32, c: u32) -> f32 { return wte[v * params.C + c]; }
// @end-wte
@group(0) @binding(3) var<storage, read> wpe: array<f32>;       // (maxT,C)
@group(0) @binding(4) var<storage, read_write> out: array<f32>; // (C)

override WG: u32 = 256;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let c = gid.x;
  if (c >= params.C) { return; }
  // Clamped so that a bad state cannot read outside the tables; the host validates what it writes.
  let token = min(state[0], params.V - 1u);
  let position = min(state[1], params.maxT - 1u);
  out[c] = wte_at(token, c) + wpe[position * params.C + c];
}
