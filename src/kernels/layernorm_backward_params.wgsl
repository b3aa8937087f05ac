// LayerNorm backward, first half of dweight/dbias: deterministic partial sums over blocks of ROWS rows, no atomics.
// Workgroup (x, y) covers columns [x·WG, x·WG + WG) of row block y; each thread sums its column over the block's rows
// in order and writes scratch[y] = (Σ dout·norm (C), Σ dout (C)). layernorm_backward_params_reduce adds the blocks.

struct Params { N: u32, C: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> dout: array<f32>;  // (N,C)
@group(0) @binding(2) var<storage, read> inp: array<f32>;   // (N,C)
@group(0) @binding(3) var<storage, read> mean: array<f32>;  // (N)
@group(0) @binding(4) var<storage, read> rstd: array<f32>;  // (N)
@group(0) @binding(5) var<storage, read_write> scratch: array<f32>;  // (ceil(N/ROWS), 2, C)

override WG: u32 = 256;
// Rows summed by one thread; the wrapper sizes scratch with the same value.
override ROWS: u32 = 32;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lane: u32) {
  let C = params.C;
  let c = wid.x * WG + lane;
  if (c >= C) { return; }
  let block = wid.y;
  let first = block * ROWS;
  let last = min(first + ROWS, params.N);

  var dweight = 0.0;
  var dbias = 0.0;
  for (var n = first; n < last; n++) {
    let g = dout[n * C + c];
    dweight += g * (inp[n * C + c] - mean[n]) * rstd[n];
    dbias += g;
  }
  scratch[block * 2u * C + c] = dweight;
  scratch[block * 2u * C + C + c] = dbias;
}
