// Attention of a single-sequence decoding step, with the KV-cache append fused in: the step's row sits at position
// p = state[1]; each head writes its k and v into the cache at p, then attends to positions 0..p with
// softmax(q·kᵀ/√HS). One workgroup per head (they touch disjoint parts of the cache):
// 1. k, v of the row into the cache; q (pre-scaled) into workgroup memory; a storage barrier publishes the writes;
// 2. one score per key, WG keys at a time (each thread reads its key's row as HS/4 vec4), kept in workgroup memory
//    (p < MAX_T), then the max and the sum of exp(score − max) by trees;
// 3. the output: HS/4 threads per key slice, WG/(HS/4) slices summing p·v over keys ≡ slice, then a tree over the
//    slices; neighbouring threads read neighbouring 16 bytes of a value row.
// qkv (3C) [q | k | v]; cache (2,NH,maxT,HS), K then V (kv_cache_write.wgsl's layout with B = 1); out (C).
// HS must be a multiple of 4 and HS/4 divide WG.

struct Params { C: u32, NH: u32, HS: u32, maxT: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> state: array<u32>;       // [1] the row's position
@group(0) @binding(2) var<storage, read> qkv: array<f32>;         // (3C)
@group(0) @binding(3) var<storage, read_write> cache: array<vec4f>; // (2,NH,maxT,HS/4)
@group(0) @binding(4) var<storage, read_write> out: array<vec4f>; // (C/4)

override WG: u32 = 256;       // a power of two
override MAX_T: u32 = 1024;   // score capacity: the model's context
override HS4_MAX: u32 = 16;   // HS/4 capacity

var<workgroup> q_row: array<vec4f, HS4_MAX>;
var<workgroup> scores: array<f32, MAX_T>;
var<workgroup> scalars: array<f32, WG>;
var<workgroup> slices: array<vec4f, WG>;

fn workgroup_reduce(lane: u32, value: f32, is_max: bool) -> f32 {
  scalars[lane] = value;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
    if (lane < stride) {
      let other = scalars[lane + stride];
      scalars[lane] = select(scalars[lane] + other, max(scalars[lane], other), is_max);
    }
    workgroupBarrier();
  }
  let result = scalars[0];
  workgroupBarrier();
  return result;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lane: u32) {
  let C = params.C;
  let HS = params.HS;
  let HS4 = HS / 4u;
  let h = wid.x;
  let p = min(state[1], params.maxT - 1u);
  let head = h * params.maxT * HS4;                 // (h, 0) of the K half, in vec4
  let v_half = params.NH * params.maxT * HS4;       // K half → V half
  let scale = inverseSqrt(f32(HS));

  if (lane < HS4) {
    let c = h * HS + lane * 4u;
    cache[head + p * HS4 + lane] = vec4f(qkv[C + c], qkv[C + c + 1u], qkv[C + c + 2u], qkv[C + c + 3u]);
    cache[v_half + head + p * HS4 + lane] = vec4f(qkv[2u * C + c], qkv[2u * C + c + 1u], qkv[2u * C + c + 2u], qkv[2u * C + c + 3u]);
    q_row[lane] = vec4f(qkv[c], qkv[c + 1u], qkv[c + 2u], qkv[c + 3u]) * scale;
  }
  storageBarrier();
  workgroupBarrier();

  let keys = p + 1u;
  var local_max = -3.0e38;
  for (var j = lane; j < keys; j += WG) {
    var s = 0.0;
    for (var d = 0u; d < HS4; d++) { s += dot(q_row[d], cache[head + j * HS4 + d]); }
    scores[j] = s;
    local_max = max(local_max, s);
  }
  let row_max = workgroup_reduce(lane, local_max, true);
  var local_sum = 0.0;
  for (var j = lane; j < keys; j += WG) {
    let e = exp(scores[j] - row_max);
    scores[j] = e;
    local_sum += e;
  }
  let row_sum = workgroup_reduce(lane, local_sum, false);  // its barriers also publish the exp'd scores

  let d4 = lane % HS4;
  let slice = lane / HS4;
  let slice_count = WG / HS4;
  var acc = vec4f();
  for (var j = slice; j < keys; j += slice_count) { acc = fma(vec4f(scores[j]), cache[v_half + head + j * HS4 + d4], acc); }
  slices[lane] = acc;
  workgroupBarrier();
  for (var stride = slice_count / 2u; stride > 0u; stride = stride / 2u) {
    if (slice < stride) { slices[lane] += slices[lane + stride * HS4]; }
    workgroupBarrier();
  }
  if (lane < HS4) { out[h * HS4 + lane] = slices[lane] / row_sum; }
}
