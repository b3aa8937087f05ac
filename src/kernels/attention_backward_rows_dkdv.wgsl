// Attention backward, register-blocked, pass 2 of 2: dk and dv for every key row, rebuilding the probabilities from
// the forward's lse and using the delta that pass 1 (attention_backward_rows_dq.wgsl) saved:
//   P = exp(q·k/√HS − lse), dP = dout·vᵀ, dS = P ⊙ (dP − delta), dk = dSᵀ·q/√HS, dv = Pᵀ·dout.
//
// qkv (B,T,3C) [q | k | v], head h in columns h·HS..(h+1)·HS of each; dout (B,T,C); lse, delta (B,NH,T);
// dqkv (B,T,3C): this pass assigns its k and v columns. HS = 4·HS4.
// Workgroup: KEY_ROWS key rows × SPLIT parts. Thread (j, part) = (lid % KEY_ROWS, lid / KEY_ROWS) keeps k, v, dk and
// dv of its key restricted to part's PART4 = HS4/SPLIT vec4 columns in registers. The threads of a subgroup share a
// part, so each query or dout vec4 they read from workgroup memory is a broadcast. Per streamed tile of TILE_QUERIES
// queries (with their dout, lse and delta), each thread forms partial dot products k·q and v·dout over its columns,
// the parts of a key swap them through workgroup memory and add them in part order, then each thread adds P·dout and
// dS·q over its own columns. Fixed order everywhere: deterministic, no atomics.
// Grid: (B·NH, ceil(T/KEY_ROWS)); y counts key blocks from the first, which see the most queries.

struct Params {
  T: u32,
  C: u32,
  NH: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> qkv: array<vec4f>;
@group(0) @binding(2) var<storage, read> dout: array<vec4f>;
@group(0) @binding(3) var<storage, read> lse: array<f32>;
@group(0) @binding(4) var<storage, read> delta: array<f32>;
@group(0) @binding(5) var<storage, read_write> dqkv: array<vec4f>;

override KEY_ROWS: u32 = 32;      // key rows per workgroup
override SPLIT: u32 = 4;         // threads per key row, each owning HS4/SPLIT vec4 columns
override TILE_QUERIES: u32 = 8;  // queries per streamed tile
override HS4: u32 = 16;          // head size / 4; a multiple of SPLIT
override PART4: u32 = HS4 / SPLIT;

// Register capacity per thread (private arrays need constant sizes); loops run to PART4.
const PART4_CAP: u32 = 16u;

var<workgroup> qg_tile: array<vec4f, 2 * TILE_QUERIES * HS4>;          // (TILE_QUERIES,HS) q/√HS, then dout
var<workgroup> row_stats: array<vec2f, TILE_QUERIES>;                  // (lse, delta) of each query
var<workgroup> partials: array<vec2f, TILE_QUERIES * SPLIT * KEY_ROWS>; // (TILE_QUERIES,SPLIT,KEY_ROWS)

@compute @workgroup_size(KEY_ROWS * SPLIT)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let T = params.T;
  let C4 = params.C / 4u;
  let bh = wid.x;
  let b = bh / params.NH;
  let h = bh % params.NH;
  let k0 = wid.y * KEY_ROWS;
  let j = lid % KEY_ROWS;
  let part = lid / KEY_ROWS;
  let key = k0 + j;
  let col0 = h * HS4 + part * PART4; // first vec4 column of this thread's share within a C-wide row
  let scale = inverseSqrt(f32(4u * HS4));

  // Keys past T are padding: zeros; every query they could pair with is past T too, so they add nothing anywhere.
  var k: array<vec4f, PART4_CAP>;
  var v: array<vec4f, PART4_CAP>;
  var dk: array<vec4f, PART4_CAP>;
  var dv: array<vec4f, PART4_CAP>;
  for (var c = 0u; c < PART4; c++) {
    k[c] = vec4f(0.0);
    v[c] = vec4f(0.0);
    dk[c] = vec4f(0.0);
    dv[c] = vec4f(0.0);
  }
  if (key < T) {
    let base = (b * T + key) * 3u * C4 + C4 + col0;
    for (var c = 0u; c < PART4; c++) {
      k[c] = qkv[base + c];
      v[c] = qkv[base + C4 + c];
    }
  }

  // Queries k0 .. T − 1 see some key of the block; tiles start on a TILE_QUERIES boundary at or before k0.
  let first_tile = k0 / TILE_QUERIES;
  let tiles = (T + TILE_QUERIES - 1u) / TILE_QUERIES;
  for (var tile = first_tile; tile < tiles; tile++) {
    let t0 = tile * TILE_QUERIES;
    // The previous tile's reads of qg_tile, row_stats and partials are done before they are overwritten.
    workgroupBarrier();
    for (var e = lid; e < TILE_QUERIES * HS4; e += KEY_ROWS * SPLIT) {
      let t = t0 + e / HS4;
      var qv = vec4f(0.0);
      var gv = vec4f(0.0);
      if (t < T) {
        qv = qkv[(b * T + t) * 3u * C4 + h * HS4 + e % HS4] * scale;
        gv = dout[(b * T + t) * C4 + h * HS4 + e % HS4];
      }
      qg_tile[e] = qv;
      qg_tile[TILE_QUERIES * HS4 + e] = gv;
    }
    for (var i = lid; i < TILE_QUERIES; i += KEY_ROWS * SPLIT) {
      let t = t0 + i;
      var stats = vec2f(0.0);
      if (t < T) { stats = vec2f(lse[bh * T + t], delta[bh * T + t]); }
      row_stats[i] = stats;
    }
    workgroupBarrier();

    for (var i = 0u; i < TILE_QUERIES; i++) {
      let q_row = i * HS4 + part * PART4;
      let g_row = (TILE_QUERIES + i) * HS4 + part * PART4;
      var score = vec4f(0.0);
      var dprob = vec4f(0.0);
      for (var c = 0u; c < PART4; c++) {
        let qv = qg_tile[q_row + c];
        let gv = qg_tile[g_row + c];
        score = fma(k[c], qv, score);
        dprob = fma(v[c], gv, dprob);
      }
      partials[(i * SPLIT + part) * KEY_ROWS + j] = vec2f((score.x + score.y) + (score.z + score.w), (dprob.x + dprob.y) + (dprob.z + dprob.w));
    }
    workgroupBarrier();

    for (var i = 0u; i < TILE_QUERIES; i++) {
      var sums = vec2f(0.0);
      for (var p = 0u; p < SPLIT; p++) { sums += partials[(i * SPLIT + p) * KEY_ROWS + j]; }
      let stats = row_stats[i];
      // key ≤ query < T: padding queries (and so padding keys) drop out.
      let visible = key <= t0 + i && t0 + i < T;
      let prob = select(0.0, exp(sums.x - stats.x), visible);
      let dscore = prob * (sums.y - stats.y);
      let q_row = i * HS4 + part * PART4;
      let g_row = (TILE_QUERIES + i) * HS4 + part * PART4;
      for (var c = 0u; c < PART4; c++) {
        let qv = qg_tile[q_row + c]; // already carries 1/√HS
        let gv = qg_tile[g_row + c];
        dv[c] = fma(vec4f(prob), gv, dv[c]);
        dk[c] = fma(vec4f(dscore), qv, dk[c]);
      }
    }
  }

  if (key < T) {
    let base = (b * T + key) * 3u * C4 + C4 + col0;
    for (var c = 0u; c < PART4; c++) {
      dqkv[base + c] = dk[c];
      dqkv[base + C4 + c] = dv[c];
    }
  }
}
