// LoRA backward, gradient of the saved down-projection: du (M,R) = scale · dout (M,N) · b (N,R).
// Same skinny shape as lora_forward_down: a workgroup owns ROWS rows of du (all R columns) and reduces over N in
// TILE_DEPTH steps; each thread owns up to OUTS_PER_THREAD (row, r) outputs (ROWS·R ≤ WG·OUTS_PER_THREAD).
// du is scratch for lora_backward_a and lora_backward_x, so it is assigned.

struct Params { M: u32, N: u32, R: u32, scale: f32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> dout: array<f32>;   // (M,N)
@group(0) @binding(2) var<storage, read> b: array<f32>;      // (N,R)
@group(0) @binding(3) var<storage, read_write> du: array<f32>; // (M,R)

override ROWS: u32 = 32;
override TILE_DEPTH: u32 = 32;
override WG: u32 = 256;

const MAX_R = 64u;
const OUTS_PER_THREAD = 8u;

var<workgroup> dout_tile: array<f32, TILE_DEPTH * ROWS>; // (TILE_DEPTH, ROWS): transposed
var<workgroup> b_tile: array<f32, TILE_DEPTH * MAX_R>;   // (TILE_DEPTH, MAX_R): b's rows as they lie

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let M = params.M;
  let N = params.N;
  let R = params.R;
  let row0 = (wid.x + wid.y * groups.x) * ROWS;
  let outputs = ROWS * R;

  var acc: array<f32, OUTS_PER_THREAD>;
  for (var n0 = 0u; n0 < N; n0 += TILE_DEPTH) {
    for (var e = lid; e < ROWS * TILE_DEPTH; e += WG) {
      let row = row0 + e / TILE_DEPTH;
      let n = n0 + e % TILE_DEPTH;
      var v = 0.0;
      if (row < M && n < N) { v = dout[row * N + n]; }
      dout_tile[(e % TILE_DEPTH) * ROWS + e / TILE_DEPTH] = v;
    }
    // b is (N,R): a block of TILE_DEPTH rows is contiguous in memory.
    for (var e = lid; e < TILE_DEPTH * R; e += WG) {
      let d = e / R;
      let r = e % R;
      var v = 0.0;
      if (n0 + d < N) { v = b[(n0 + d) * R + r]; }
      b_tile[d * MAX_R + r] = v;
    }
    workgroupBarrier();
    for (var j = 0u; j < OUTS_PER_THREAD; j++) {
      let o = lid + j * WG;
      if (o < outputs) {
        let row = o / R;
        let r = o % R;
        var sum = 0.0;
        for (var d = 0u; d < TILE_DEPTH; d++) { sum = fma(dout_tile[d * ROWS + row], b_tile[d * MAX_R + r], sum); }
        acc[j] += sum;
      }
    }
    workgroupBarrier();
  }

  for (var j = 0u; j < OUTS_PER_THREAD; j++) {
    let o = lid + j * WG;
    if (o < outputs && row0 + o / R < M) { du[row0 * R + o] = params.scale * acc[j]; }
  }
}
