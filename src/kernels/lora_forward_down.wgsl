// LoRA forward, down-projection: u (M,R) = dropout(inp) (M,K) · aᵀ, a (R,K). u is saved for the backward pass.
// Skinny product (R ≤ 64): a workgroup owns ROWS rows of u (all R columns) and reduces over K in TILE_DEPTH steps,
// staging the dropped-out inp block and the matching a block in workgroup memory; each thread owns up to
// OUTS_PER_THREAD (row, r) outputs (the wrapper picks ROWS so that ROWS·R ≤ WG·OUTS_PER_THREAD).
// Dropout needs no mask buffer: keep() is a pure function of (seed, element index), recomputed in the backward pass.

struct Params { M: u32, K: u32, R: u32, seed: u32, drop_threshold: u32, keep_scale: f32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> inp: array<f32>;    // (M,K)
@group(0) @binding(2) var<storage, read> a: array<f32>;      // (R,K)
@group(0) @binding(3) var<storage, read_write> u: array<f32>; // (M,R)

override ROWS: u32 = 32;
override TILE_DEPTH: u32 = 32;
override WG: u32 = 256;

const MAX_R = 64u;
const OUTS_PER_THREAD = 8u;

var<workgroup> inp_tile: array<f32, TILE_DEPTH * ROWS>;  // (TILE_DEPTH, ROWS): transposed, dropout applied
var<workgroup> a_tile: array<f32, TILE_DEPTH * MAX_R>;   // (TILE_DEPTH, MAX_R): transposed

// Dropout keep test; the definition is shared with src/engine/reference/lora.ts (loraKeep): element `index` of inp
// is kept when pcg(pcg(index) + seed) >= drop_threshold, drop_threshold = floor(p·2^32), so p = 0 keeps everything.
fn pcg_hash(v: u32) -> u32 {
  let state = v * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}

fn keep(index: u32) -> bool {
  return pcg_hash(pcg_hash(index) + params.seed) >= params.drop_threshold;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let M = params.M;
  let K = params.K;
  let R = params.R;
  let row0 = (wid.x + wid.y * groups.x) * ROWS;
  let outputs = ROWS * R;

  var acc: array<f32, OUTS_PER_THREAD>;
  for (var k0 = 0u; k0 < K; k0 += TILE_DEPTH) {
    for (var e = lid; e < ROWS * TILE_DEPTH; e += WG) {
      let row = row0 + e / TILE_DEPTH;
      let k = k0 + e % TILE_DEPTH;
      var v = 0.0;
      if (row < M && k < K) {
        let index = row * K + k;
        if (keep(index)) { v = inp[index] * params.keep_scale; }
      }
      inp_tile[(e % TILE_DEPTH) * ROWS + e / TILE_DEPTH] = v;
    }
    for (var e = lid; e < R * TILE_DEPTH; e += WG) {
      let r = e / TILE_DEPTH;
      let k = k0 + e % TILE_DEPTH;
      var v = 0.0;
      if (k < K) { v = a[r * K + k]; }
      a_tile[(e % TILE_DEPTH) * MAX_R + r] = v;
    }
    workgroupBarrier();
    for (var j = 0u; j < OUTS_PER_THREAD; j++) {
      let o = lid + j * WG;
      if (o < outputs) {
        let row = o / R;
        let r = o % R;
        var sum = 0.0;
        for (var d = 0u; d < TILE_DEPTH; d++) { sum = fma(inp_tile[d * ROWS + row], a_tile[d * MAX_R + r], sum); }
        acc[j] += sum;
      }
    }
    workgroupBarrier();
  }

  for (var j = 0u; j < OUTS_PER_THREAD; j++) {
    let o = lid + j * WG;
    if (o < outputs && row0 + o / R < M) { u[row0 * R + o] = acc[j]; }
  }
}
