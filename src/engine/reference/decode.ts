// Reference KV-cache attention for generation, in double precision, written straight from the math: the K/V scatter
// of new positions into a cache, and causal attention of Tq new query rows against every cached position up to
// their own. Inference only (generation never differentiates), so there is no backward.
//
// qkv (B,Tq,3C) is c_attn's output for Tq new positions offset..offset+Tq−1 of each sequence: [q | k | v], each
// C = NH·HS wide. The cache (2,B,NH,maxT,HS) holds K (first half) and V (second half) of every position so far.
// Only the first `count` of the Tq rows are real; the rest are padding (they are not cached, and their output is 0).

export interface DecodeShape {
  B: number;
  /** Query rows per sequence in this pass (new positions, padding included). */
  Tq: number;
  /** Real rows among the Tq: 1..Tq. */
  count: number;
  /** Position of the first new row: the number of positions already cached. */
  offset: number;
  C: number;
  NH: number;
  /** Positions the cache holds per sequence (the model's context). */
  maxT: number;
}

/** Index of element d of position t, head h, sequence b in the K half of the cache; V adds B·NH·maxT·HS. */
function cacheIndex(b: number, h: number, t: number, d: number, { NH, maxT, C }: DecodeShape): number {
  const HS = C / NH;
  return ((b * NH + h) * maxT + t) * HS + d;
}

/** cache[K or V, b, h, offset+i, :] = k or v of row (b,i), for the `count` real rows. */
export function kvCacheWrite(cache: Float64Array, qkv: Float64Array, shape: DecodeShape): void {
  const { B, Tq, count, offset, C, NH, maxT } = shape;
  const HS = C / NH;
  const half = B * maxT * C;
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < count; i++) {
      const row = (b * Tq + i) * 3 * C;
      for (let h = 0; h < NH; h++) {
        for (let d = 0; d < HS; d++) {
          const at = cacheIndex(b, h, offset + i, d, shape);
          cache[at] = qkv[row + C + h * HS + d];
          cache[half + at] = qkv[row + 2 * C + h * HS + d];
        }
      }
    }
  }
}

/**
 * out (B,Tq,C): row (b,i) = Σ_s softmax_s(q·k(s)/√HS)·v(s) over cached positions s = 0..offset+i, per head; padding
 * rows (i ≥ count) are 0. The cache must already hold the pass's own K/V (kvCacheWrite first).
 */
export function attentionDecode(out: Float64Array, qkv: Float64Array, cache: Float64Array, shape: DecodeShape): void {
  const { B, Tq, count, offset, C, NH, maxT } = shape;
  const HS = C / NH;
  const half = B * maxT * C;
  out.fill(0, 0, B * Tq * C);
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < count; i++) {
      const keys = offset + i + 1;
      for (let h = 0; h < NH; h++) {
        const q = (b * Tq + i) * 3 * C + h * HS;
        const scores = new Float64Array(keys);
        for (let s = 0; s < keys; s++) {
          let dot = 0;
          for (let d = 0; d < HS; d++) dot += qkv[q + d] * cache[cacheIndex(b, h, s, d, shape)];
          scores[s] = dot / Math.sqrt(HS);
        }
        const max = Math.max(...scores);
        let sum = 0;
        for (let s = 0; s < keys; s++) sum += Math.exp(scores[s] - max);
        for (let d = 0; d < HS; d++) {
          let acc = 0;
          for (let s = 0; s < keys; s++) acc += (Math.exp(scores[s] - max) / sum) * cache[half + cacheIndex(b, h, s, d, shape)];
          out[(b * Tq + i) * C + h * HS + d] = acc;
        }
      }
    }
  }
}
