// Causal multi-head attention of Tq new query rows against the KV cache, for generation: row i of a pass sits at
// position offset+i and attends to cached positions 0..offset+i (the pass's own K/V are cached first by
// kv_cache_write). Prefill runs it with Tq = the prompt chunk, each generated token with Tq = 1.
//
// One workgroup per (query row, sequence·head): its WG threads stream the keys in blocks of WG, one key per thread,
// with an online softmax (running max and sum, as in attention_forward), so any cache length works with fixed
// workgroup memory. Padding rows (i ≥ count) write zeros.
//
// qkv (B,Tq,3C): only q is read (columns h·HS..(h+1)·HS of the first C). cache (2,B,NH,maxT,HS): K then V.
// out (B,Tq,C), heads side by side. Grid: (Tq, B·NH).

struct Params {
  B: u32,
  Tq: u32,
  count: u32,
  offset: u32,
  C: u32,
  NH: u32,
  HS: u32,
  maxT: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> cache: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

override WG: u32 = 64;     // keys per block = threads; a power of two (tree reductions halve it)
override HS_MAX: u32 = 64; // head size capacity of the tiles; the wrapper sets it to HS

// A finite "minus infinity": masked scores never enter the max, so it only seeds the running max.
const NEG_BIG: f32 = -3.0e38;

var<workgroup> q_row: array<f32, HS_MAX>;  // (HS), pre-scaled by 1/√HS
var<workgroup> o_acc: array<f32, HS_MAX>;  // (HS) unnormalized output; element d owned by thread d mod WG
var<workgroup> probs: array<f32, WG>;      // exp(score − running max) of the block's keys
var<workgroup> partial: array<f32, WG>;    // tree-reduction scratch

// Max (is_max) or sum of `value` over the workgroup; every thread gets the result. Call from uniform control flow.
fn workgroup_reduce(lane: u32, value: f32, is_max: bool) -> f32 {
  partial[lane] = value;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
    if (lane < stride) {
      let other = partial[lane + stride];
      partial[lane] = select(partial[lane] + other, max(partial[lane], other), is_max);
    }
    workgroupBarrier();
  }
  let result = partial[0];
  // Nobody may overwrite partial[0] for the next reduction before every thread has read it.
  workgroupBarrier();
  return result;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lane: u32) {
  let C = params.C;
  let HS = params.HS;
  let i = wid.x;
  let bh = wid.y;
  let b = bh / params.NH;
  let h = bh - b * params.NH;
  let out_row = (b * params.Tq + i) * C + h * HS;
  // Uniform per workgroup, so returning here keeps the barriers below in uniform control flow.
  if (b >= params.B || i >= params.Tq) { return; }
  if (i >= params.count) {
    for (var d = lane; d < HS; d += WG) { out[out_row + d] = 0.0; }
    return;
  }

  let scale = inverseSqrt(f32(HS));
  for (var d = lane; d < HS; d += WG) {
    q_row[d] = qkv[(b * params.Tq + i) * 3u * C + h * HS + d] * scale;
    o_acc[d] = 0.0;
  }
  workgroupBarrier();

  let keys = min(params.offset + i + 1u, params.maxT);  // positions 0..offset+i
  let head_base = bh * params.maxT * HS;                // (b,h) row block of the K half
  let v_base = params.B * params.maxT * C + head_base;  // the same block of the V half
  var row_max = NEG_BIG;
  var row_sum = 0.0;
  for (var k0 = 0u; k0 < keys; k0 += WG) {
    let key = k0 + lane;
    let visible = key < keys;
    var score = NEG_BIG;
    if (visible) {
      var dot = 0.0;
      for (var d = 0u; d < HS; d++) { dot += q_row[d] * cache[head_base + key * HS + d]; }
      score = dot;
    }
    let new_max = max(row_max, workgroup_reduce(lane, score, true));
    let p = select(0.0, exp(score - new_max), visible);
    probs[lane] = p;
    let block_sum = workgroup_reduce(lane, p, false);  // its barriers also publish probs
    let rescale = exp(row_max - new_max);
    row_sum = row_sum * rescale + block_sum;
    row_max = new_max;
    let block_keys = min(WG, keys - k0);
    for (var d = lane; d < HS; d += WG) {
      var acc = o_acc[d] * rescale;
      for (var j = 0u; j < block_keys; j++) { acc += probs[j] * cache[v_base + (k0 + j) * HS + d]; }
      o_acc[d] = acc;
    }
    // The next block overwrites probs.
    workgroupBarrier();
  }

  let inv_sum = 1.0 / row_sum;
  for (var d = lane; d < HS; d += WG) { out[out_row + d] = o_acc[d] * inv_sum; }
}
