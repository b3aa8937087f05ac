// The greedy choice of a decoding step, on the GPU, and the step's bookkeeping, so that several steps can run in one
// submit with no readback between them: the token is the index of the largest logit (the lowest index on ties,
// as the CPU's argmax), reduced from decode_head.wgsl's per-workgroup bests. One workgroup; thread 0 then writes
// the token where the next step's embedding reads it, appends it to `tokens`, and advances the position.
//
// state (u32): [0] the token the next step feeds, [1] its position, [2] tokens appended so far.

struct Params { groups: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> best: array<vec2<u32>>;    // (groups): (bits of the max, index)
@group(0) @binding(2) var<storage, read_write> state: array<u32>;   // (4)
@group(0) @binding(3) var<storage, read_write> tokens: array<u32>;  // (chunk)

override WG: u32 = 256;  // a power of two

var<workgroup> top_value: array<f32, WG>;
var<workgroup> top_index: array<u32, WG>;

// Whether candidate (v, i) beats (w, j): larger, or equal with a lower index.
fn beats(v: f32, i: u32, w: f32, j: u32) -> bool {
  return v > w || (v == w && i < j);
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lane: u32) {
  var value = -3.4e38;
  var index = 0xffffffffu;
  for (var g = lane; g < params.groups; g += WG) {
    let candidate = best[g];
    let v = bitcast<f32>(candidate.x);
    if (beats(v, candidate.y, value, index)) {
      value = v;
      index = candidate.y;
    }
  }
  top_value[lane] = value;
  top_index[lane] = index;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
    if (lane < stride && beats(top_value[lane + stride], top_index[lane + stride], top_value[lane], top_index[lane])) {
      top_value[lane] = top_value[lane + stride];
      top_index[lane] = top_index[lane + stride];
    }
    workgroupBarrier();
  }
  if (lane == 0u) {
    // Every logit NaN or −∞ leaves no winner: token 0, rather than an index past the vocabulary.
    let token = select(top_index[0], 0u, top_index[0] == 0xffffffffu);
    state[0] = token;
    state[1] = state[1] + 1u;
    tokens[state[2]] = token;
    state[2] = state[2] + 1u;
  }
}
