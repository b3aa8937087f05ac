// Attention backward, step 2: dq, dk, dv, recomputing the probabilities P = exp(q·k/√HS − lse) block by block from
// the saved lse, so the T×T matrices never exist in global memory. With dP = dout·vᵀ and dS = P ⊙ (dP − delta):
//   dq = dS·k/√HS (sum over keys),   dk = dSᵀ·q/√HS and dv = Pᵀ·dout (sums over queries).
// Each sum is owned by one workgroup and accumulated in a fixed order, so the result is deterministic (no atomics):
// the first ceil(T/BQ) workgroups of a (b, h) each own a query block and stream key blocks to build dq; the rest
// each own a key block and stream query blocks to build dk and dv. Both roles score a (BQ,BK) tile the same way.
//
// qkv (B,T,3C) [q | k | v], head h in columns h·HS..(h+1)·HS of each; dout (B,T,C); lse, delta (B,NH,T);
// dqkv (B,T,3C) is assigned (every element is written exactly once). Grid: (ceil(T/BQ) + ceil(T/BK), B·NH).

struct Params {
  T: u32,
  C: u32,
  NH: u32,
  HS: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read> lse: array<f32>;
@group(0) @binding(4) var<storage, read> delta: array<f32>;
@group(0) @binding(5) var<storage, read_write> dqkv: array<f32>;

override BQ: u32 = 16;     // queries per block
override BK: u32 = 16;     // keys per block
override HS_MAX: u32 = 64; // row capacity of the tiles; the wrapper sets it to HS

var<workgroup> q_tile: array<f32, BQ * HS_MAX>;    // (BQ,HS), pre-scaled by 1/√HS
var<workgroup> dout_tile: array<f32, BQ * HS_MAX>; // (BQ,HS)
var<workgroup> lse_tile: array<f32, BQ>;
var<workgroup> delta_tile: array<f32, BQ>;
var<workgroup> k_tile: array<f32, BK * HS_MAX>;    // (BK,HS)
var<workgroup> v_tile: array<f32, BK * HS_MAX>;    // (BK,HS)
var<workgroup> prob_tile: array<f32, BQ * BK>;     // (BQ,BK) P
var<workgroup> dscore_tile: array<f32, BQ * BK>;   // (BQ,BK) dS
// Per-thread accumulators: dq (BQ,HS) in the query role; dk and dv (BK,HS) in the key role. Each element has one owner.
var<workgroup> acc_a: array<f32, max(BQ, BK) * HS_MAX>;
var<workgroup> acc_b: array<f32, BK * HS_MAX>;

struct Head {
  b: u32,
  h: u32,
  bh: u32,
}

/** Loads queries q0..q0+BQ−1 with their dout, lse and delta; rows past T are zeros (their P and dS come out 0). */
fn load_query_block(head: Head, q0: u32, lid: u32) {
  let T = params.T;
  let C = params.C;
  let HS = params.HS;
  let scale = inverseSqrt(f32(HS));
  for (var e = lid; e < BQ * HS; e += BQ * BK) {
    let t = q0 + e / HS;
    var qv = 0.0;
    var gv = 0.0;
    if (t < T) {
      qv = qkv[(head.b * T + t) * 3u * C + head.h * HS + e % HS] * scale;
      gv = dout[(head.b * T + t) * C + head.h * HS + e % HS];
    }
    q_tile[(e / HS) * HS_MAX + e % HS] = qv;
    dout_tile[(e / HS) * HS_MAX + e % HS] = gv;
  }
  if (lid < BQ) {
    let t = q0 + lid;
    var l = 0.0;
    var dl = 0.0;
    if (t < T) {
      l = lse[head.bh * T + t];
      dl = delta[head.bh * T + t];
    }
    lse_tile[lid] = l;
    delta_tile[lid] = dl;
  }
}

/** Loads the keys and values k0..k0+BK−1; rows past T are zeros. */
fn load_key_block(head: Head, k0: u32, lid: u32) {
  let T = params.T;
  let C = params.C;
  let HS = params.HS;
  for (var e = lid; e < BK * HS; e += BQ * BK) {
    let key = k0 + e / HS;
    var kv = 0.0;
    var vv = 0.0;
    if (key < T) {
      let base = (head.b * T + key) * 3u * C + C + head.h * HS + e % HS;
      kv = qkv[base];
      vv = qkv[base + C];
    }
    k_tile[(e / HS) * HS_MAX + e % HS] = kv;
    v_tile[(e / HS) * HS_MAX + e % HS] = vv;
  }
}

/** Thread (i, j) = (lid / BK, lid % BK) fills P and dS for query q0+i against key k0+j; zero where masked. */
fn score_tile(q0: u32, k0: u32, lid: u32) {
  let i = lid / BK;
  let j = lid % BK;
  var score = 0.0;
  var dprob = 0.0;
  for (var d = 0u; d < params.HS; d++) {
    score += q_tile[i * HS_MAX + d] * k_tile[j * HS_MAX + d];
    dprob += dout_tile[i * HS_MAX + d] * v_tile[j * HS_MAX + d];
  }
  // key ≤ t < T; padded rows and columns also fail it, so their (finite) garbage never enters a sum.
  let visible = k0 + j <= q0 + i && q0 + i < params.T;
  let prob = select(0.0, exp(score - lse_tile[i]), visible);
  prob_tile[i * BK + j] = prob;
  dscore_tile[i * BK + j] = prob * (dprob - delta_tile[i]);
}

/** dq for queries q0..q0+BQ−1: thread (i, lid % BK) owns columns d ≡ lid (mod BK) of row i. */
fn query_role(head: Head, q0: u32, lid: u32) {
  let T = params.T;
  let C = params.C;
  let HS = params.HS;
  let i = lid / BK;
  load_query_block(head, q0, lid);
  for (var d = lid % BK; d < HS; d += BK) { acc_a[i * HS_MAX + d] = 0.0; }
  // Keys 0 .. min(q0 + BQ, T) − 1 are visible to some row of the block.
  let blocks = (min(q0 + BQ, T) + BK - 1u) / BK;
  for (var kb = 0u; kb < blocks; kb++) {
    load_key_block(head, kb * BK, lid);
    workgroupBarrier();
    score_tile(q0, kb * BK, lid);
    workgroupBarrier();
    for (var d = lid % BK; d < HS; d += BK) {
      var acc = acc_a[i * HS_MAX + d];
      for (var jj = 0u; jj < BK; jj++) { acc += dscore_tile[i * BK + jj] * k_tile[jj * HS_MAX + d]; }
      acc_a[i * HS_MAX + d] = acc;
    }
    // The next block overwrites k_tile, v_tile and the score tiles.
    workgroupBarrier();
  }
  let t = q0 + i;
  if (t < T) {
    let scale = inverseSqrt(f32(HS));
    for (var d = lid % BK; d < HS; d += BK) {
      dqkv[(head.b * T + t) * 3u * C + head.h * HS + d] = acc_a[i * HS_MAX + d] * scale;
    }
  }
}

/** dk and dv for keys k0..k0+BK−1: thread (lid / BQ, lid % BQ) owns columns d ≡ lid (mod BQ) of key row lid / BQ. */
fn key_role(head: Head, k0: u32, lid: u32) {
  let T = params.T;
  let C = params.C;
  let HS = params.HS;
  let j = lid / BQ;
  load_key_block(head, k0, lid);
  for (var d = lid % BQ; d < HS; d += BQ) {
    acc_a[j * HS_MAX + d] = 0.0;
    acc_b[j * HS_MAX + d] = 0.0;
  }
  // Queries k0 .. T − 1 see some key of the block.
  let query_blocks = (T + BQ - 1u) / BQ;
  for (var qb = k0 / BQ; qb < query_blocks; qb++) {
    load_query_block(head, qb * BQ, lid);
    workgroupBarrier();
    score_tile(qb * BQ, k0, lid);
    workgroupBarrier();
    for (var d = lid % BQ; d < HS; d += BQ) {
      var dk = acc_a[j * HS_MAX + d];
      var dv = acc_b[j * HS_MAX + d];
      for (var ii = 0u; ii < BQ; ii++) {
        dk += dscore_tile[ii * BK + j] * q_tile[ii * HS_MAX + d]; // q_tile already carries 1/√HS
        dv += prob_tile[ii * BK + j] * dout_tile[ii * HS_MAX + d];
      }
      acc_a[j * HS_MAX + d] = dk;
      acc_b[j * HS_MAX + d] = dv;
    }
    // The next block overwrites the query tiles and the score tiles.
    workgroupBarrier();
  }
  let key = k0 + j;
  if (key < T) {
    for (var d = lid % BQ; d < HS; d += BQ) {
      let base = (head.b * T + key) * 3u * C + C + head.h * HS + d;
      dqkv[base] = acc_a[j * HS_MAX + d];
      dqkv[base + C] = acc_b[j * HS_MAX + d];
    }
  }
}

@compute @workgroup_size(BQ * BK)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let head = Head(wid.y / params.NH, wid.y % params.NH, wid.y);
  let query_blocks = (params.T + BQ - 1u) / BQ;
  // The branch depends only on the workgroup id and uniforms, so the barriers inside stay in uniform control flow.
  if (wid.x < query_blocks) {
    query_role(head, wid.x * BQ, lid);
  } else {
    key_role(head, (wid.x - query_blocks) * BK, lid);
  }
}
