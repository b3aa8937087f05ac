// Reference causal multi-head self-attention, in double precision, written straight from the math (the whole T×T
// probability matrix of each head is formed; no online softmax). Forward and backward side by side.
//
// qkv (B,T,3C) is GPT-2's c_attn output: along the last axis [q | k | v], each C = NH·HS wide; head h uses columns
// h·HS..(h+1)·HS of each. out (B,T,C) concatenates the heads the same way. Scores are q·k/√HS, and position t
// attends to positions 0..t only.

export interface AttentionShape {
  B: number;
  T: number;
  C: number;
  NH: number;
}

/** The scaled scores q(t)·k(s)/√HS (T,T) of head h of batch b, −∞ where s > t (the causal mask). */
function maskedScores(qkv: Float64Array, b: number, h: number, { T, C, NH }: AttentionShape): Float64Array {
  const HS = C / NH;
  const scores = new Float64Array(T * T).fill(-Infinity);
  for (let t = 0; t < T; t++) {
    for (let s = 0; s <= t; s++) {
      const q = (b * T + t) * 3 * C + h * HS;
      const k = (b * T + s) * 3 * C + C + h * HS;
      let dot = 0;
      for (let d = 0; d < HS; d++) dot += qkv[q + d] * qkv[k + d];
      scores[t * T + s] = dot / Math.sqrt(HS);
    }
  }
  return scores;
}

/** log Σ_s exp(scores(t,s)) of row t, shifted by the row maximum so that exp cannot overflow. */
function logSumExp(scores: Float64Array, t: number, T: number): number {
  const row = scores.subarray(t * T, (t + 1) * T);
  const max = Math.max(...row);
  let sum = 0;
  for (const x of row) sum += Math.exp(x - max);
  return max + Math.log(sum);
}

/** The softmax probabilities P (T,T) of head h of batch b; row t is zero past column t. */
function probabilities(qkv: Float64Array, b: number, h: number, shape: AttentionShape): Float64Array {
  const T = shape.T;
  const scores = maskedScores(qkv, b, h, shape);
  const probs = new Float64Array(T * T);
  for (let t = 0; t < T; t++) {
    const lse = logSumExp(scores, t, T);
    for (let s = 0; s < T; s++) probs[t * T + s] = Math.exp(scores[t * T + s] - lse);
  }
  return probs;
}

/**
 * out (B,T,C) = softmax(mask(q·kᵀ/√HS))·v per head. lse (B,NH,T), when given, receives log Σ_s exp(score(t,s)) over
 * the unmasked scores of each row: what a flash-attention backward needs to rebuild the probabilities.
 */
export function attentionForward(out: Float64Array, lse: Float64Array | null, qkv: Float64Array, shape: AttentionShape): void {
  const { B, T, C, NH } = shape;
  const HS = C / NH;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < NH; h++) {
      const probs = probabilities(qkv, b, h, shape);
      for (let t = 0; t < T; t++) {
        for (let d = 0; d < HS; d++) {
          let acc = 0;
          for (let s = 0; s <= t; s++) acc += probs[t * T + s] * qkv[(b * T + s) * 3 * C + 2 * C + h * HS + d];
          out[(b * T + t) * C + h * HS + d] = acc;
        }
      }
      if (lse) {
        const scores = maskedScores(qkv, b, h, shape);
        for (let t = 0; t < T; t++) lse[(b * NH + h) * T + t] = logSumExp(scores, t, T);
      }
    }
  }
}

/**
 * dqkv (B,T,3C) = gradient of Σ out·dout with respect to qkv; assigned, not accumulated. With P the probabilities
 * of a head, O = P·V and S the scaled scores:
 *   dV = Pᵀ·dO,   dP = dO·Vᵀ,   dS = P ⊙ (dP − rowsum(dP ⊙ P)),   dQ = dS·K/√HS,   dK = dSᵀ·Q/√HS.
 */
export function attentionBackward(dqkv: Float64Array, dout: Float64Array, qkv: Float64Array, shape: AttentionShape): void {
  const { B, T, C, NH } = shape;
  const HS = C / NH;
  const scale = 1 / Math.sqrt(HS);
  dqkv.fill(0);
  const qAt = (b: number, t: number, h: number) => (b * T + t) * 3 * C + h * HS;
  const kAt = (b: number, t: number, h: number) => qAt(b, t, h) + C;
  const vAt = (b: number, t: number, h: number) => qAt(b, t, h) + 2 * C;
  const oAt = (b: number, t: number, h: number) => (b * T + t) * C + h * HS;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < NH; h++) {
      const probs = probabilities(qkv, b, h, shape);
      for (let t = 0; t < T; t++) {
        // dP(t,s) = dO(t)·V(s) for the attended positions s ≤ t.
        const dprobs = new Float64Array(t + 1);
        for (let s = 0; s <= t; s++) {
          for (let d = 0; d < HS; d++) dprobs[s] += dout[oAt(b, t, h) + d] * qkv[vAt(b, s, h) + d];
        }
        let rowDot = 0;
        for (let s = 0; s <= t; s++) rowDot += dprobs[s] * probs[t * T + s];
        for (let s = 0; s <= t; s++) {
          const p = probs[t * T + s];
          const dscore = p * (dprobs[s] - rowDot);
          for (let d = 0; d < HS; d++) {
            dqkv[vAt(b, s, h) + d] += p * dout[oAt(b, t, h) + d];
            dqkv[qAt(b, t, h) + d] += dscore * scale * qkv[kAt(b, s, h) + d];
            dqkv[kAt(b, s, h) + d] += dscore * scale * qkv[qAt(b, t, h) + d];
          }
        }
      }
    }
  }
}
