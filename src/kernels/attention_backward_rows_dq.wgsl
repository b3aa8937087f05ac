// Attention backward, register-blocked, pass 1 of 2: dq for every query row, and delta = rowsum(dout ⊙ out) that
// pass 2 (attention_backward_rows_dkdv.wgsl) needs. Probabilities are rebuilt from the forward's lse:
//   P = exp(q·k/√HS − lse), dP = dout·vᵀ, dS = P ⊙ (dP − delta), dq = dS·k/√HS.
// (attention_backward.wgsl is the general fallback for head sizes that are not 4·n ≤ 64.)
//
// qkv (B,T,3C) [q | k | v], head h in columns h·HS..(h+1)·HS of each; dout, out (B,T,C); lse, delta (B,NH,T);
// dqkv (B,T,3C): this pass assigns its q columns. HS = 4·HS4.
// Workgroup: ROWS query rows × SPLIT parts. Thread (r, part) = (lid % ROWS, lid / ROWS) keeps q, dout and dq of its
// row restricted to part's PART4 = HS4/SPLIT vec4 columns in registers (splitting the row keeps registers few enough
// for many threads per core). The threads of a subgroup share a part, so each key or value vec4 they read from
// workgroup memory is a broadcast. Per streamed tile of TILE_KEYS keys, each thread forms partial dot products q·k
// and dout·v over its columns for every key, the parts of a row swap them through workgroup memory and add them in
// part order (so all parts hold identical scores), then each thread adds dS·k over its own columns. Fixed order
// everywhere: deterministic, no atomics.
// Grid: (B·NH, ceil(T/ROWS)); y counts query blocks from the last, so the longest (most keys) start first.

struct Params {
  T: u32,
  C: u32,
  NH: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> qkv: array<vec4f>;
@group(0) @binding(2) var<storage, read> dout: array<vec4f>;
@group(0) @binding(3) var<storage, read> out: array<vec4f>;
@group(0) @binding(4) var<storage, read> lse: array<f32>;
@group(0) @binding(5) var<storage, read_write> delta: array<f32>;
@group(0) @binding(6) var<storage, read_write> dqkv: array<vec4f>;

override ROWS: u32 = 32;       // query rows per workgroup
override SPLIT: u32 = 4;       // threads per query row, each owning HS4/SPLIT vec4 columns
override TILE_KEYS: u32 = 8;   // keys per streamed tile
override HS4: u32 = 16;        // head size / 4; a multiple of SPLIT
override PART4: u32 = HS4 / SPLIT;

// Register capacity per thread (private arrays need constant sizes); loops run to PART4.
const PART4_CAP: u32 = 16u;

var<workgroup> kv_tile: array<vec4f, 2 * TILE_KEYS * HS4>;      // (TILE_KEYS,HS) keys, then values
var<workgroup> partials: array<vec2f, TILE_KEYS * SPLIT * ROWS>; // (TILE_KEYS,SPLIT,ROWS): partial (q·k, dout·v)

@compute @workgroup_size(ROWS * SPLIT)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u, @builtin(local_invocation_index) lid: u32) {
  let T = params.T;
  let C4 = params.C / 4u;
  let bh = wid.x;
  let b = bh / params.NH;
  let h = bh % params.NH;
  let q0 = (groups.y - 1u - wid.y) * ROWS;
  let r = lid % ROWS;
  let part = lid / ROWS;
  let t = q0 + r;
  let col0 = h * HS4 + part * PART4; // first vec4 column of this thread's share within a C-wide row
  let scale = inverseSqrt(f32(4u * HS4));

  // Rows past T are padding: zeros everywhere, so their (finite) dS is never used and nothing of them is stored.
  var q: array<vec4f, PART4_CAP>;
  var g: array<vec4f, PART4_CAP>;
  var dq: array<vec4f, PART4_CAP>;
  var row_lse = 0.0;
  var row_delta = 0.0;
  for (var c = 0u; c < PART4; c++) {
    q[c] = vec4f(0.0);
    g[c] = vec4f(0.0);
    dq[c] = vec4f(0.0);
  }
  if (t < T) {
    for (var c = 0u; c < PART4; c++) {
      q[c] = qkv[(b * T + t) * 3u * C4 + col0 + c] * scale;
      g[c] = dout[(b * T + t) * C4 + col0 + c];
    }
    row_lse = lse[bh * T + t];
    // Every part sums the whole row in the same order, so all parts (and pass 2) see the same delta.
    let row_base = (b * T + t) * C4 + h * HS4;
    var acc = vec4f(0.0);
    for (var c = 0u; c < HS4; c++) { acc = fma(dout[row_base + c], out[row_base + c], acc); }
    row_delta = (acc.x + acc.y) + (acc.z + acc.w);
    if (part == 0u) { delta[bh * T + t] = row_delta; }
  }

  // Keys 0 .. min(q0 + ROWS, T) − 1 are visible to some row of the block.
  let tiles = (min(q0 + ROWS, T) + TILE_KEYS - 1u) / TILE_KEYS;
  for (var tile = 0u; tile < tiles; tile++) {
    let k0 = tile * TILE_KEYS;
    // The previous tile's reads of kv_tile and partials are done before they are overwritten.
    workgroupBarrier();
    for (var e = lid; e < TILE_KEYS * HS4; e += ROWS * SPLIT) {
      let key = k0 + e / HS4;
      var k = vec4f(0.0);
      var v = vec4f(0.0);
      if (key < T) {
        let base = (b * T + key) * 3u * C4 + C4 + h * HS4 + e % HS4;
        k = qkv[base];
        v = qkv[base + C4];
      }
      kv_tile[e] = k;
      kv_tile[TILE_KEYS * HS4 + e] = v;
    }
    workgroupBarrier();

    for (var u = 0u; u < TILE_KEYS; u++) {
      let k_row = u * HS4 + part * PART4;
      let v_row = (TILE_KEYS + u) * HS4 + part * PART4;
      var score = vec4f(0.0);
      var dprob = vec4f(0.0);
      for (var c = 0u; c < PART4; c++) {
        let k = kv_tile[k_row + c];
        let v = kv_tile[v_row + c];
        score = fma(q[c], k, score);
        dprob = fma(g[c], v, dprob);
      }
      partials[(u * SPLIT + part) * ROWS + r] = vec2f((score.x + score.y) + (score.z + score.w), (dprob.x + dprob.y) + (dprob.z + dprob.w));
    }
    workgroupBarrier();

    for (var u = 0u; u < TILE_KEYS; u++) {
      var sums = vec2f(0.0);
      for (var p = 0u; p < SPLIT; p++) { sums += partials[(u * SPLIT + p) * ROWS + r]; }
      // key ≤ t excludes padding keys too (t < T for every row that is stored).
      let prob = select(0.0, exp(sums.x - row_lse), k0 + u <= t);
      let dscore = prob * (sums.y - row_delta);
      let k_row = u * HS4 + part * PART4;
      for (var c = 0u; c < PART4; c++) { dq[c] = fma(vec4f(dscore), kv_tile[k_row + c], dq[c]); }
    }
  }

  if (t < T) {
    let dq_base = (b * T + t) * 3u * C4 + col0;
    for (var c = 0u; c < PART4; c++) { dqkv[dq_base + c] = dq[c] * scale; }
  }
}
