// A sampled token of a decoding step, chosen on the GPU, with the same bookkeeping as decode_select.wgsl (so sampled
// steps can also follow each other in one submit), drawn as sampling.ts defines it: repetition penalty, temperature,
// top-k (ties with the k-th kept; 0 keeps every token), top-p, then one draw.
//
// One workgroup of WG threads over the V logits:
// 1. The penalized, scaled scores s_i = penalize(logit_i) / T (penalize divides a positive logit by the penalty, or
//    multiplies a negative one, for tokens marked in `presence`: the prompt and everything generated).
// 2. The k-th largest score, exactly, by a radix select on order-preserving u32 keys: four passes of an 8-bit
//    histogram (workgroup atomics) over the scores whose higher bits match the prefix chosen so far.
// 3. With top-p < 1: the kept tokens (at most CAP of them) are gathered, sorted likeliest first (lower id first on
//    ties) by a bitonic sort, and cut after the smallest prefix whose probability reaches p. More than CAP kept (only
//    with top-k 0 or > CAP, or hundreds of exact ties) skips the cut, which the host avoids (gpuSamplingSupport).
// 4. The draw by the Gumbel-max trick: argmax over the survivors of s_i + g_i, g_i = −log(−log u_i) with u_i uniform
//    from a hash of (seed, position, i), which is an exact sample of their renormalized softmax; then the token is
//    marked in `presence`.
// The stream of draws is a function of the seed and the positions: the same seed, model and prompt give the same
// text (not the same text as the CPU sampler, which draws from its own generator).
//
// state (u32): [0] the token the next step feeds, [1] its position, [2] tokens appended so far.

struct Params { V: u32, top_k: u32, inv_temperature: f32, seed: u32, top_p: f32, penalty: f32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;        // (V)
@group(0) @binding(2) var<storage, read_write> state: array<u32>;   // (4)
@group(0) @binding(3) var<storage, read_write> tokens: array<u32>;  // (chunk)
@group(0) @binding(4) var<storage, read_write> presence: array<u32>; // (ceil(V/32)) bit i: token i is in the context

override WG: u32 = 256;  // a power of two
const CAP = 512u;        // most tokens top-p sorts: a power of two, ≥ WG

var<workgroup> histogram: array<atomic<u32>, 256>;
var<workgroup> prefix: u32;       // the k-th largest key's bits found so far
var<workgroup> remaining: u32;    // its rank among the keys that share the prefix
var<workgroup> keep_all: bool;    // fewer than top_k logits: every token stays
var<workgroup> top_score: array<f32, WG>;
var<workgroup> top_index: array<u32, WG>;
var<workgroup> kept_count: atomic<u32>;
var<workgroup> kept_score: array<f32, CAP>;  // top-p: the kept tokens, sorted likeliest first
var<workgroup> kept_index: array<u32, CAP>;
var<workgroup> kept_total: u32;               // top-p: kept tokens (may exceed CAP)
var<workgroup> nucleus: u32;                  // top-p: how many of the sorted tokens survive the cut

// −∞ (a runtime value: a constant expression may not be infinite).
fn neg_inf() -> f32 {
  var bits = 0xff800000u;
  return bitcast<f32>(bits);
}

// A u32 that orders as the f32 does (−∞ < … < −0 < +0 < … < +∞); NaN orders below everything.
fn order_key(x: f32) -> u32 {
  if (x != x) { return 0u; }
  let bits = bitcast<u32>(x);
  return select(bits | 0x80000000u, ~bits, (bits & 0x80000000u) != 0u);
}

// Token i's score: its logit, penalized when it is in the context, divided by the temperature.
fn score(i: u32) -> f32 {
  var logit = logits[i];
  if (params.penalty != 1.0 && (presence[i / 32u] & (1u << (i % 32u))) != 0u) {
    logit = select(logit * params.penalty, logit / params.penalty, logit > 0.0);
  }
  return logit * params.inv_temperature;
}

// Whether sorted entry (v, i) comes before (w, j): likelier, or as likely with a lower id.
fn before(v: f32, i: u32, w: f32, j: u32) -> bool {
  return v > w || (v == w && i < j);
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
        let key = order_key(score(i));
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

  // 3. Top-p: gather the kept tokens, sort them, find the cut.
  let use_top_p = params.top_p < 1.0;
  if (use_top_p) {
    if (lane == 0u) { atomicStore(&kept_count, 0u); }
    for (var j = lane; j < CAP; j += WG) {
      kept_score[j] = neg_inf();  // padding sorts last: after any kept −∞ (lower ids first on ties)
      kept_index[j] = 0xffffffffu;
    }
    workgroupBarrier();
    for (var i = lane; i < V; i += WG) {
      let s = score(i);
      if (order_key(s) >= threshold && s == s) {
        let slot = atomicAdd(&kept_count, 1u);
        if (slot < CAP) {
          kept_score[slot] = s;
          kept_index[slot] = i;
        }
      }
    }
    workgroupBarrier();
    // Bitonic sort of CAP entries, likeliest first; each thread owns the pairs j ≡ lane (mod WG).
    for (var size = 2u; size <= CAP; size *= 2u) {
      for (var stride = size / 2u; stride > 0u; stride /= 2u) {
        for (var j = lane; j < CAP; j += WG) {
          let partner = j ^ stride;
          if (partner > j) {
            let first_half = (j & size) == 0u;
            let swap = select(before(kept_score[partner], kept_index[partner], kept_score[j], kept_index[j]),
                              before(kept_score[j], kept_index[j], kept_score[partner], kept_index[partner]),
                              !first_half);
            if (swap) {
              let s = kept_score[j];
              let i = kept_index[j];
              kept_score[j] = kept_score[partner];
              kept_index[j] = kept_index[partner];
              kept_score[partner] = s;
              kept_index[partner] = i;
            }
          }
        }
        workgroupBarrier();
      }
    }
    if (lane == 0u) {
      let count = atomicLoad(&kept_count);
      kept_total = count;
      var n = count;
      if (count <= CAP) {
        // Probabilities relative to the likeliest; a token stays while the likelier ones hold less than p.
        var total = 0.0;
        for (var j = 0u; j < count; j++) { total += exp(kept_score[j] - kept_score[0]); }
        var mass = 0.0;
        n = 0u;
        for (; n < count && mass < params.top_p; n++) { mass += exp(kept_score[n] - kept_score[0]) / total; }
      }
      nucleus = n;
    }
  }
  let survivors = select(0u, workgroupUniformLoad(&nucleus), use_top_p);
  let sorted = use_top_p && workgroupUniformLoad(&kept_total) <= CAP;

  // 4. Gumbel-max over the survivors.
  let position = state[1];
  var best = neg_inf();
  var at = 0xffffffffu;
  if (sorted) {
    for (var j = lane; j < survivors; j += WG) {
      let i = kept_index[j];
      let value = kept_score[j] + gumbel(position, i);
      if (value > best || (value == best && i < at)) {
        best = value;
        at = i;
      }
    }
  } else {
    for (var i = lane; i < V; i += WG) {
      let s = score(i);
      if (order_key(s) >= threshold && s == s) {
        let value = s + gumbel(position, i);
        if (value > best || (value == best && i < at)) {
          best = value;
          at = i;
        }
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
    presence[token / 32u] = presence[token / 32u] | (1u << (token % 32u));
  }
}
