// LoRA backward, gradient of B: db (N,R) += scale · doutᵀ (N,M) · u (M,R). Parameter gradients accumulate.
// Small output, long reduction: a workgroup owns COLS rows of db (all R columns) and walks the M tokens in M_CHUNK
// steps, staging a dout block and the matching u rows in workgroup memory; each thread owns up to OUTS_PER_THREAD
// (n, r) outputs (COLS·MAX_R = WG·OUTS_PER_THREAD, so any R ≤ 64 fits).

struct Params { M: u32, N: u32, R: u32, scale: f32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> dout: array<f32>;   // (M,N)
@group(0) @binding(2) var<storage, read> u: array<f32>;      // (M,R)
@group(0) @binding(3) var<storage, read_write> db: array<f32>; // (N,R)

override COLS: u32 = 64;
override M_CHUNK: u32 = 16;
override WG: u32 = 256;
// Split over the tokens (SPLIT_M > 1): workgroup z sums only its share of M (whole M_CHUNK steps) and writes it to
// slab z of the output binding, which is then a (SPLIT_M, N, R) scratch; matmul_split_reduce.wgsl adds the slabs
// into the gradient. For a GPU with many more cores than this output has column groups.
override SPLIT_M: u32 = 1;

const MAX_R = 64u;
const OUTS_PER_THREAD = 16u;

var<workgroup> dout_tile: array<f32, M_CHUNK * COLS>; // (M_CHUNK, COLS)
var<workgroup> u_tile: array<f32, M_CHUNK * MAX_R>;   // (M_CHUNK, MAX_R)

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let M = params.M;
  let N = params.N;
  let R = params.R;
  let col0 = (wid.x + wid.y * groups.x) * COLS;
  let outputs = COLS * R;

  var acc: array<f32, OUTS_PER_THREAD>;
  let share = ((M + SPLIT_M - 1u) / SPLIT_M + M_CHUNK - 1u) / M_CHUNK * M_CHUNK;
  let m_end = min(M, (wid.z + 1u) * share);
  for (var m0 = min(M, wid.z * share); m0 < m_end; m0 += M_CHUNK) {
    for (var e = lid; e < M_CHUNK * COLS; e += WG) {
      let mm = e / COLS;
      let c = e % COLS;
      var v = 0.0;
      if (m0 + mm < m_end && col0 + c < N) { v = dout[(m0 + mm) * N + col0 + c]; }
      dout_tile[e] = v;
    }
    for (var e = lid; e < M_CHUNK * R; e += WG) {
      let mm = e / R;
      let r = e % R;
      var v = 0.0;
      if (m0 + mm < m_end) { v = u[(m0 + mm) * R + r]; }
      u_tile[mm * MAX_R + r] = v;
    }
    workgroupBarrier();
    // Output o is db row col0 + o / R, column o % R: consecutive threads read consecutive u_tile entries.
    for (var j = 0u; j < OUTS_PER_THREAD; j++) {
      let o = lid + j * WG;
      if (o < outputs) {
        let c = o / R;
        let r = o % R;
        var sum = 0.0;
        for (var mm = 0u; mm < M_CHUNK; mm++) { sum = fma(dout_tile[mm * COLS + c], u_tile[mm * MAX_R + r], sum); }
        acc[j] += sum;
      }
    }
    workgroupBarrier();
  }

  for (var j = 0u; j < OUTS_PER_THREAD; j++) {
    let o = lid + j * WG;
    if (o < outputs && col0 + o / R < N) {
      if (SPLIT_M > 1u) { db[wid.z * N * R + col0 * R + o] = params.scale * acc[j]; } else { db[col0 * R + o] += params.scale * acc[j]; }
    }
  }
}
