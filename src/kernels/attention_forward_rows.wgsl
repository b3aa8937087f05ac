// Causal multi-head self-attention forward, register-blocked: each thread keeps one query row and its running output
// in registers, so a key or value read from workgroup memory is one broadcast vec4 shared by a whole row group, not a
// per-score reload (attention_forward.wgsl is the general fallback for head sizes that are not 4·n ≤ 64).
//
// qkv (B,T,3C) [q | k | v], head h in columns h·HS..(h+1)·HS of each; out (B,T,C); lse (B,NH,T) = log Σ exp(score).
// HS = 4·HS4 and C are multiples of 4, so every row is read and written as vec4s.
// Workgroup: ROWS query rows × LANES lanes. Thread (r, lane) = (lid % ROWS, lid / ROWS): lanes split every streamed
// tile of LANES·KEYS_PER_LANE keys, lane g taking keys g·KEYS_PER_LANE.. of it, each with its own online softmax
// (running max, sum, output); the lanes of a row are merged once at the end, in lane order (deterministic).
// Grid: (B·NH, ceil(T/ROWS)); y counts query blocks from the last, so the longest (most keys) start first.

struct Params {
  T: u32,
  C: u32,
  NH: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> qkv: array<vec4f>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4f>;
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;

override ROWS: u32 = 32;          // query rows per workgroup
override LANES: u32 = 4;          // threads per query row
override KEYS_PER_LANE: u32 = 4;  // keys per lane per tile, ≤ KEYS_CAP
override HS4: u32 = 16;           // head size / 4, ≤ HS4_CAP
override TILE_KEYS: u32 = LANES * KEYS_PER_LANE;

// Register capacities (private arrays need constant sizes); loops run to the overrides, so unused slots vanish.
const HS4_CAP: u32 = 16u;
const KEYS_CAP: u32 = 8u;
// A finite "minus infinity": it seeds running maxima and marks masked scores; exp(NEG_BIG − finite) = 0.
const NEG_BIG: f32 = -3.0e38;

// (TILE_KEYS,HS) keys, then (TILE_KEYS,HS) values. After the key loop: the merged output, (HS4,ROWS) vec4s.
var<workgroup> kv_tile: array<vec4f, 2 * TILE_KEYS * HS4>;
var<workgroup> lane_stats: array<vec2f, ROWS * LANES>; // (LANES,ROWS): running max and sum of each lane

@compute @workgroup_size(ROWS * LANES)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u, @builtin(local_invocation_index) lid: u32) {
  let T = params.T;
  let C4 = params.C / 4u;
  let bh = wid.x;
  let b = bh / params.NH;
  let h = bh % params.NH;
  let q0 = (groups.y - 1u - wid.y) * ROWS;
  let r = lid % ROWS;
  let lane = lid / ROWS;
  let t = q0 + r;

  // Rows past T are padding: q = 0 gives finite scores against real keys; they are computed but never stored.
  var q: array<vec4f, HS4_CAP>;
  let scale = inverseSqrt(f32(4u * HS4));
  if (t < T) {
    let q_base = (b * T + t) * 3u * C4 + h * HS4;
    for (var c = 0u; c < HS4; c++) { q[c] = qkv[q_base + c] * scale; }
  } else {
    for (var c = 0u; c < HS4; c++) { q[c] = vec4f(0.0); }
  }
  var o: array<vec4f, HS4_CAP>;
  for (var c = 0u; c < HS4; c++) { o[c] = vec4f(0.0); }
  var row_max = NEG_BIG;
  var row_sum = 0.0;

  // Keys 0 .. min(q0 + ROWS, T) − 1 are visible to some row of the block.
  let tiles = (min(q0 + ROWS, T) + TILE_KEYS - 1u) / TILE_KEYS;
  for (var tile = 0u; tile < tiles; tile++) {
    let k0 = tile * TILE_KEYS;
    // The previous tile's reads are done before it is overwritten.
    workgroupBarrier();
    for (var e = lid; e < TILE_KEYS * HS4; e += ROWS * LANES) {
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

    let first = lane * KEYS_PER_LANE;
    // A lane whose first key is past the row sees nothing in this tile (no barrier inside, so this may diverge).
    if (k0 + first <= t) {
      var scores: array<f32, KEYS_CAP>;
      var tile_max = NEG_BIG;
      for (var u = 0u; u < KEYS_PER_LANE; u++) {
        let key_row = (first + u) * HS4;
        var acc = vec4f(0.0);
        for (var c = 0u; c < HS4; c++) { acc = fma(q[c], kv_tile[key_row + c], acc); }
        let score = select(NEG_BIG, (acc.x + acc.y) + (acc.z + acc.w), k0 + first + u <= t);
        scores[u] = score;
        tile_max = max(tile_max, score);
      }
      // tile_max is a real score (the lane's first key is visible), so new_max is finite.
      let new_max = max(row_max, tile_max);
      let rescale = exp(row_max - new_max);
      row_sum *= rescale;
      for (var c = 0u; c < HS4; c++) { o[c] *= rescale; }
      for (var u = 0u; u < KEYS_PER_LANE; u++) {
        let p = exp(scores[u] - new_max);
        row_sum += p;
        let value_row = (TILE_KEYS + first + u) * HS4;
        for (var c = 0u; c < HS4; c++) { o[c] = fma(vec4f(p), kv_tile[value_row + c], o[c]); }
      }
      row_max = new_max;
    }
  }

  // Merge the lanes of each row: out = Σ_g exp(max_g − M)·o_g / Σ_g exp(max_g − M)·sum_g with M = max_g max_g.
  workgroupBarrier();
  lane_stats[lane * ROWS + r] = vec2f(row_max, row_sum);
  workgroupBarrier();
  var merged_max = NEG_BIG;
  for (var g = 0u; g < LANES; g++) { merged_max = max(merged_max, lane_stats[g * ROWS + r].x); }
  // merged_sum > 0: the lane that holds merged_max has a sum ≥ 1 (the term of its maximum is exp(0)).
  var merged_sum = 0.0;
  for (var g = 0u; g < LANES; g++) {
    let stats = lane_stats[g * ROWS + r];
    merged_sum += stats.y * exp(stats.x - merged_max);
  }
  let weight = exp(row_max - merged_max) / merged_sum;
  // Lanes add their share into kv_tile in lane order; element (c, r) is kv_tile[c·ROWS + r] (conflict-free).
  for (var g = 0u; g < LANES; g++) {
    if (lane == g) {
      for (var c = 0u; c < HS4; c++) {
        var sum = weight * o[c];
        if (g > 0u) { sum += kv_tile[c * ROWS + r]; }
        kv_tile[c * ROWS + r] = sum;
      }
    }
    workgroupBarrier();
  }
  if (lane == 0u && t < T) { lse[bh * T + t] = merged_max + log(merged_sum); }
  // Consecutive threads store consecutive vec4s of a row.
  for (var e = lid; e < ROWS * HS4; e += ROWS * LANES) {
    let row = e / HS4;
    let c = e % HS4;
    if (q0 + row < T) { out[(b * T + q0 + row) * C4 + h * HS4 + c] = kv_tile[c * ROWS + row]; }
  }
}
