// A sampled token of a decoding step, chosen on the GPU, with the same bookkeeping as decode_select.wgsl (so sampled
// steps can also follow each other in one submit): the next token is drawn from softmax(logits / T) restricted to
// the top_k largest logits (and any tied with the k-th; top_k = 0 keeps every token), as sampling.ts defines it
// with top-p = 1 and no repetition penalty.
//
// One workgroup of WG threads over the V logits:
// 1. The k-th largest logit, exactly, by a radix select on order-preserving u32 keys: four passes of an 8-bit
//    histogram (workgroup atomics) over the logits whose higher bits match the prefix chosen so far.
// 2. The draw by the Gumbel-max trick: argmax over the kept i of logit_i / T + g_i, g_i = −log(−log u_i) with u_i
//    uniform from a hash of (seed, position, i), which is an exact sample of that softmax. One pass, then a tree.
// The stream of draws is a function of the seed and the positions: the same seed, model and prompt give the same
// text (not the same text as the CPU sampler, which draws from its own generator).
//
// state (u32): [0] the token the next step feeds, [1] its position, [2] tokens appended so far.

struct Params { V: u32, top_k: u32, inv_temperature: f32, seed: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;        // (V)
@group(0) @binding(2) var<storage, read_write> state: array<u32>;   // (4)
@group(0) @binding(3) var<storage, read_write> tokens: array<u32>;  // (chunk)

override WG: u32 = 256;  // a power of two

var<workgroup> histogram: array<atomic<u32>, 256>;
var<workgroup> prefix: u32;       // the k-th largest key's bits found so far
var<workgroup> remaining: u32;    // its rank among the keys that share the prefix
var<workgroup> keep_all: bool;    // fewer than top_k logits: every token stays
var<workgroup> top_score: array<f32, WG>;
var<workgroup> top_index: array<u32, WG>;

// A u32 that orders as the f32 does (−∞ < … < −0 < +0 < … < +∞); NaN orders below everything.
fn order_key(x: f32) -> u32 {
  if (x != x) { return 0u; }
  let bits = bitcast<u32>(x);
  return select(bits | 0x80000000u, ~bits, (bits & 0x80000000u) != 0u);
}

fn pcg_hash(v: u32) -> u32 {
  let state = v * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}

// Standard Gumbel noise for token i at `position`: 24 random bits as u in (0, 1).
fn gumbel(position: u32, i: u32) -> f32 {
  let h = pcg_hash(pcg_hash(pcg_hash(params.seed) ^ position) + i);
  let u = (f32(h >> 8u) + 0.5) * (1.0 / 16777216.0);
  return -log(-log(u));
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lane: u32) {
  let V = params.V;
  let k = params.top_k;
  if (lane == 0u) {
    prefix = 0u;
    remaining = k;
    keep_all = k == 0u || k >= V;
  }
  workgroupBarrier();

  // 1. Radix select of the k-th largest key, 8 bits a pass from the top.
  for (var round = 0u; round < 4u; round++) {
    let shift = 24u - 8u * round;
    for (var b = lane; b < 256u; b += WG) { atomicStore(&histogram[b], 0u); }
    workgroupBarrier();
    let known = prefix;
    let mask = select(0u, 0xffffffffu << (shift + 8u), round > 0u);
    if (!workgroupUniformLoad(&keep_all)) {
      for (var i = lane; i < V; i += WG) {
        let key = order_key(logits[i]);
        if ((key & mask) == known) { atomicAdd(&histogram[(key >> shift) & 255u], 1u); }
      }
    }
    workgroupBarrier();
    if (lane == 0u && !keep_all) {
      // From the largest bin down: the bin holding the remaining-th largest key among those with the prefix.
      var seen = 0u;
      var bin = 255i;
      for (; bin >= 0; bin--) {
        let count = atomicLoad(&histogram[bin]);
        if (seen + count >= remaining) { break; }
        seen += count;
      }
      prefix = known | (u32(max(bin, 0)) << shift);
      remaining -= seen;
    }
    workgroupBarrier();
  }
  let threshold = select(workgroupUniformLoad(&prefix), 0u, workgroupUniformLoad(&keep_all));

  // 2. Gumbel-max over the kept tokens.
  let position = state[1];
  var best = -3.4e38;
  var at = 0xffffffffu;
  for (var i = lane; i < V; i += WG) {
    let logit = logits[i];
    if (order_key(logit) >= threshold && logit == logit) {
      let score = logit * params.inv_temperature + gumbel(position, i);
      if (score > best) {
        best = score;
        at = i;
      }
    }
  }
  top_score[lane] = best;
  top_index[lane] = at;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
    if (lane < stride) {
      let other = top_score[lane + stride];
      let other_at = top_index[lane + stride];
      if (other > top_score[lane] || (other == top_score[lane] && other_at < top_index[lane])) {
        top_score[lane] = other;
        top_index[lane] = other_at;
      }
    }
    workgroupBarrier();
  }
  if (lane == 0u) {
    // No finite, kept logit at all: token 0 rather than an index past the vocabulary.
    let token = select(top_index[0], 0u, top_index[0] == 0xffffffffu);
    state[0] = token;
    state[1] = position + 1u;
    tokens[state[2]] = token;
    state[2] = state[2] + 1u;
  }
}
