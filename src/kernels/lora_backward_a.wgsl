// LoRA backward, gradient of A: da (R,K) += duᵀ (R,M) · dropout(inp) (M,K). Parameter gradients accumulate.
// Small output, long reduction: a workgroup owns COLS columns of da (all R rows) and walks the M tokens in M_CHUNK
// steps, staging the dropped-out inp block (mask recomputed from seed and index, as in lora_forward_down) and the
// matching du rows; each thread owns up to OUTS_PER_THREAD (r, k) outputs (COLS·MAX_R = WG·OUTS_PER_THREAD).

struct Params { M: u32, K: u32, R: u32, seed: u32, drop_threshold: u32, keep_scale: f32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> du: array<f32>;      // (M,R)
@group(0) @binding(2) var<storage, read> inp: array<f32>;     // (M,K)
@group(0) @binding(3) var<storage, read_write> da: array<f32>; // (R,K)

override COLS: u32 = 64;
override M_CHUNK: u32 = 16;
override WG: u32 = 256;
// Split over the tokens (SPLIT_M > 1): workgroup z sums only its share of M (whole M_CHUNK steps) and writes it to
// slab z of the output binding, which is then a (SPLIT_M, R, K) scratch; matmul_split_reduce.wgsl adds the slabs
// into the gradient. For a GPU with many more cores than this output has column groups.
override SPLIT_M: u32 = 1;

const MAX_R = 64u;
const OUTS_PER_THREAD = 16u;

var<workgroup> inp_tile: array<f32, M_CHUNK * COLS>; // (M_CHUNK, COLS), dropout applied
var<workgroup> du_tile: array<f32, M_CHUNK * MAX_R>; // (M_CHUNK, MAX_R)

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
  let col0 = (wid.x + wid.y * groups.x) * COLS;
  let outputs = COLS * R;

  var acc: array<f32, OUTS_PER_THREAD>;
  let share = ((M + SPLIT_M - 1u) / SPLIT_M + M_CHUNK - 1u) / M_CHUNK * M_CHUNK;
  let m_end = min(M, (wid.z + 1u) * share);
  for (var m0 = min(M, wid.z * share); m0 < m_end; m0 += M_CHUNK) {
    for (var e = lid; e < M_CHUNK * COLS; e += WG) {
      let m = m0 + e / COLS;
      let k = col0 + e % COLS;
      var v = 0.0;
      if (m < m_end && k < K) {
        let index = m * K + k;
        if (keep(index)) { v = inp[index] * params.keep_scale; }
      }
      inp_tile[e] = v;
    }
    for (var e = lid; e < M_CHUNK * R; e += WG) {
      let mm = e / R;
      let r = e % R;
      var v = 0.0;
      if (m0 + mm < m_end) { v = du[(m0 + mm) * R + r]; }
      du_tile[mm * MAX_R + r] = v;
    }
    workgroupBarrier();
    // Output o is da row o / COLS, column col0 + o % COLS: consecutive threads read consecutive inp_tile entries.
    for (var j = 0u; j < OUTS_PER_THREAD; j++) {
      let o = lid + j * WG;
      if (o < outputs) {
        let r = o / COLS;
        let c = o % COLS;
        var sum = 0.0;
        for (var mm = 0u; mm < M_CHUNK; mm++) { sum = fma(du_tile[mm * MAX_R + r], inp_tile[mm * COLS + c], sum); }
        acc[j] += sum;
      }
    }
    workgroupBarrier();
  }

  for (var j = 0u; j < OUTS_PER_THREAD; j++) {
    let o = lid + j * WG;
    let k = col0 + o % COLS;
    if (o < outputs && k < K) {
      if (SPLIT_M > 1u) { da[wid.z * R * K + (o / COLS) * K + k] = acc[j]; } else { da[(o / COLS) * K + k] += acc[j]; }
    }
  }
}
