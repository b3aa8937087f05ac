// LayerNorm backward, second half of dweight/dbias: dweight (C) += Σ_blocks scratch[block, 0, c] and
// dbias (C) += Σ_blocks scratch[block, 1, c], summed in block order so the result is the same on every run.

struct Params { C: u32, blocks: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> scratch: array<f32>;  // (blocks, 2, C) from layernorm_backward_params
@group(0) @binding(2) var<storage, read_write> dweight: array<f32>;  // (C)
@group(0) @binding(3) var<storage, read_write> dbias: array<f32>;    // (C)

override WG: u32 = 256;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let C = params.C;
  let c = gid.x;
  if (c >= C) { return; }
  var dw = 0.0;
  var db = 0.0;
  for (var block = 0u; block < params.blocks; block++) {
    dw += scratch[block * 2u * C + c];
    db += scratch[block * 2u * C + C + c];
  }
  dweight[c] += dw;
  dbias[c] += db;
}
