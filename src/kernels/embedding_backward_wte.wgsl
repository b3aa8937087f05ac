// Token embedding backward: dwte[v] += Σ dout[p] over the positions p whose token is v. Deterministic and free of
// atomics: the CPU groups positions by token ("segments", see buildTokenSegments in engine/ops/embedding.ts), and
// one workgroup owns one unique token, so no two workgroups write the same row; each thread sums its columns over
// the segment's positions in their fixed order.

struct Params { segments: u32, C: u32, V: u32 }  // segments = capacity of the segment tensors (B·T)

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> dout: array<f32>;       // (B,T,C)
@group(0) @binding(2) var<storage, read> tokens: array<u32>;     // (segments) token id of each segment
@group(0) @binding(3) var<storage, read> offsets: array<u32>;    // (segments + 1) segment s = positions[offsets[s]..offsets[s+1])
@group(0) @binding(4) var<storage, read> positions: array<u32>;  // (B·T) flat positions b·T + t, grouped by token
@group(0) @binding(5) var<storage, read_write> dwte: array<f32>; // (V,C)

override WG: u32 = 256;

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) groups: vec3u,
  @builtin(local_invocation_index) lane: u32,
) {
  let s = wid.x + wid.y * groups.x;
  if (s >= params.segments) { return; }
  let start = offsets[s];
  let end = offsets[s + 1u];
  // Unused trailing segments are empty; they must not touch dwte (their token id is a placeholder).
  if (start >= end) { return; }
  let C = params.C;
  let token = min(tokens[s], params.V - 1u);
  for (var c = lane; c < C; c += WG) {
    var sum = 0.0;
    for (var p = start; p < end; p++) { sum += dout[positions[p] * C + c]; }
    dwte[token * C + c] += sum;
  }
}
