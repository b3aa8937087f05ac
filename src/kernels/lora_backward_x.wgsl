// LoRA backward, input gradient: dinp (M,K) += (du (M,R) · a (R,K)) ⊙ keep/(1-p), added onto the base layer's dinp.
// Same shape as lora_forward_up: a workgroup owns a TILE_ROWS × TILE_COLS block of dinp, one column per thread and
// ROWS_PER_THREAD rows in registers; du and a are staged in R_CHUNK slices. The dropout mask is recomputed from
// (seed, element index) exactly as lora_forward_down drew it.

struct Params { M: u32, K: u32, R: u32, seed: u32, drop_threshold: u32, keep_scale: f32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> du: array<f32>;         // (M,R)
@group(0) @binding(2) var<storage, read> a: array<f32>;          // (R,K)
@group(0) @binding(3) var<storage, read_write> dinp: array<f32>; // (M,K)

override TILE_COLS: u32 = 64;  // threads along K
override WG_ROWS: u32 = 4;     // threads along M
override R_CHUNK: u32 = 16;

const ROWS_PER_THREAD = 8u;
override TILE_ROWS = WG_ROWS * ROWS_PER_THREAD;  // derived; not set by the wrapper

var<workgroup> du_tile: array<f32, R_CHUNK * TILE_ROWS>; // (R_CHUNK, TILE_ROWS): transposed
var<workgroup> a_tile: array<f32, R_CHUNK * TILE_COLS>;  // (R_CHUNK, TILE_COLS): a's rows as they lie

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

@compute @workgroup_size(TILE_COLS, WG_ROWS)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(local_invocation_index) lindex: u32) {
  let M = params.M;
  let K = params.K;
  let R = params.R;
  let row0 = wid.y * TILE_ROWS;
  let col0 = wid.x * TILE_COLS;
  let threads = TILE_COLS * WG_ROWS;

  var acc: array<f32, ROWS_PER_THREAD>;
  for (var r0 = 0u; r0 < R; r0 += R_CHUNK) {
    for (var e = lindex; e < TILE_ROWS * R_CHUNK; e += threads) {
      let row = e / R_CHUNK;
      let rr = e % R_CHUNK;
      var v = 0.0;
      if (row0 + row < M && r0 + rr < R) { v = du[(row0 + row) * R + r0 + rr]; }
      du_tile[rr * TILE_ROWS + row] = v;
    }
    for (var e = lindex; e < R_CHUNK * TILE_COLS; e += threads) {
      let rr = e / TILE_COLS;
      let c = e % TILE_COLS;
      var v = 0.0;
      if (r0 + rr < R && col0 + c < K) { v = a[(r0 + rr) * K + col0 + c]; }
      a_tile[e] = v;
    }
    workgroupBarrier();
    let depth = min(R_CHUNK, R - r0);
    for (var rr = 0u; rr < depth; rr++) {
      let w = a_tile[rr * TILE_COLS + lid.x];
      for (var i = 0u; i < ROWS_PER_THREAD; i++) {
        acc[i] = fma(du_tile[rr * TILE_ROWS + lid.y + i * WG_ROWS], w, acc[i]);
      }
    }
    workgroupBarrier();
  }

  let col = col0 + lid.x;
  for (var i = 0u; i < ROWS_PER_THREAD; i++) {
    let row = row0 + lid.y + i * WG_ROWS;
    if (row < M && col < K) {
      let index = row * K + col;
      if (keep(index)) { dinp[index] += acc[i] * params.keep_scale; }
    }
  }
}
