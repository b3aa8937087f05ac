// Causal multi-head self-attention forward, flash-attention style: one workgroup owns BQ query rows of one (b, h)
// and streams the keys/values in blocks of BK through workgroup memory, keeping a running max and sum per row
// (online softmax), so the T×T score matrix never exists in global memory. It also saves lse = log Σ exp(score) per
// row for the backward pass.
//
// qkv (B,T,3C): along the last axis [q | k | v], each C = NH·HS wide; head h uses columns h·HS..(h+1)·HS of each.
// out (B,T,C), heads concatenated the same way. lse (B,NH,T). Grid: (ceil(T/BQ), B·NH).
// Thread (i, j) = (local_index / BK, local_index % BK) scores query row i against key column j of the block, then
// owns the output columns d ≡ j (mod BK) of row i.

struct Params {
  T: u32,
  C: u32,
  NH: u32,
  HS: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;

override BQ: u32 = 16;     // query rows per workgroup
override BK: u32 = 16;     // keys per streamed block
override HS_MAX: u32 = 64; // row capacity of the tiles; the wrapper sets it to HS

// A finite "minus infinity": masked scores never enter the max, so it only seeds the running max.
const NEG_BIG: f32 = -3.0e38;

var<workgroup> q_tile: array<f32, BQ * HS_MAX>;   // (BQ,HS), pre-scaled by 1/√HS
var<workgroup> k_tile: array<f32, BK * HS_MAX>;   // (BK,HS)
var<workgroup> v_tile: array<f32, BK * HS_MAX>;   // (BK,HS)
var<workgroup> o_acc: array<f32, BQ * HS_MAX>;    // (BQ,HS) unnormalized output; element (i,d) owned by one thread
var<workgroup> score_tile: array<f32, BQ * BK>;  // (BQ,BK)
var<workgroup> prob_tile: array<f32, BQ * BK>;   // (BQ,BK) exp(score − running max)

@compute @workgroup_size(BQ * BK)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let T = params.T;
  let C = params.C;
  let HS = params.HS;
  let bh = wid.y;
  let b = bh / params.NH;
  let h = bh % params.NH;
  let q0 = wid.x * BQ;
  let i = lid / BK;
  let j = lid % BK;
  let t = q0 + i;
  let scale = inverseSqrt(f32(HS));

  // Rows past T are padding: loaded as zeros, computed like any row (they attend to real keys, so no NaN), never stored.
  for (var e = lid; e < BQ * HS; e += BQ * BK) {
    let row = q0 + e / HS;
    var value = 0.0;
    if (row < T) { value = qkv[(b * T + row) * 3u * C + h * HS + e % HS] * scale; }
    q_tile[(e / HS) * HS_MAX + e % HS] = value;
    o_acc[(e / HS) * HS_MAX + e % HS] = 0.0;
  }

  var row_max = NEG_BIG;
  var row_sum = 0.0;
  // Keys 0 .. min(q0 + BQ, T) − 1 can be attended by some row of this block.
  let key_end = min(q0 + BQ, T);
  let blocks = (key_end + BK - 1u) / BK;
  for (var kb = 0u; kb < blocks; kb++) {
    let k0 = kb * BK;
    for (var e = lid; e < BK * HS; e += BQ * BK) {
      let key = k0 + e / HS;
      var kv = 0.0;
      var vv = 0.0;
      if (key < T) {
        let base = (b * T + key) * 3u * C + h * HS + e % HS;
        kv = qkv[base + C];
        vv = qkv[base + 2u * C];
      }
      k_tile[(e / HS) * HS_MAX + e % HS] = kv;
      v_tile[(e / HS) * HS_MAX + e % HS] = vv;
    }
    workgroupBarrier();

    let key = k0 + j;
    let visible = key <= t && key < T;
    var score = NEG_BIG;
    if (visible) {
      var dot = 0.0;
      for (var d = 0u; d < HS; d++) { dot += q_tile[i * HS_MAX + d] * k_tile[j * HS_MAX + d]; }
      score = dot;
    }
    score_tile[i * BK + j] = score;
    workgroupBarrier();

    var block_max = NEG_BIG;
    for (var jj = 0u; jj < BK; jj++) { block_max = max(block_max, score_tile[i * BK + jj]); }
    let new_max = max(row_max, block_max);
    prob_tile[i * BK + j] = select(0.0, exp(score - new_max), visible);
    workgroupBarrier();

    // Every thread of row i folds the block into the same running statistics, in the same order.
    var block_sum = 0.0;
    for (var jj = 0u; jj < BK; jj++) { block_sum += prob_tile[i * BK + jj]; }
    let rescale = exp(row_max - new_max);
    row_sum = row_sum * rescale + block_sum;
    row_max = new_max;
    for (var d = j; d < HS; d += BK) {
      var acc = o_acc[i * HS_MAX + d] * rescale;
      for (var jj = 0u; jj < BK; jj++) { acc += prob_tile[i * BK + jj] * v_tile[jj * HS_MAX + d]; }
      o_acc[i * HS_MAX + d] = acc;
    }
    // The next block overwrites k_tile, v_tile, score_tile and prob_tile.
    workgroupBarrier();
  }

  if (t < T) {
    let inv_sum = 1.0 / row_sum;
    for (var d = j; d < HS; d += BK) {
      out[(b * T + t) * C + h * HS + d] = o_acc[i * HS_MAX + d] * inv_sum;
    }
    if (j == 0u) { lse[bh * T + t] = row_max + log(row_sum); }
  }
}
