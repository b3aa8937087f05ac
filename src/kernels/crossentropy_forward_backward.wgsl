// Fused softmax + cross-entropy over the vocabulary, forward and backward in one kernel, for a chunk of N token rows
// (the classifier runs chunk by chunk so a 50257-wide vocabulary fits in memory). One workgroup per row.
//   loss[t]    = mask·(lse − logit[target])        lse = max + log Σ exp(logit − max)   (per token)
//   correct[t] = mask·[argmax logit == target]                                          (per token, for accuracy)
//   dlogits    = (softmax − onehot(target))·mask·dlossScale                             (N, V)
// dlogits are written IN PLACE over the logits: the (N, V) chunk is the largest activation of the model and the
// logits have no other consumer once the loss is known. With writeGradient = 0 (evaluation) the logits stay as
// they were. Rows are `rowStride` (≥ V) apart; padding columns [V, rowStride) get dlogits 0 so a padded classifier
// backward adds nothing for them. Per-token buffers are batch-wide and indexed from `rowOffset` (t = rowOffset + r),
// so every chunk binds the same targets/mask/loss/correct. dlossScale = 1 / Σ mask over the whole batch, so the
// chunks together give the gradient of the batch's mean loss. Targets of tokens with mask ≠ 0 must be < V.

struct Params {
  rows: u32,          // N, rows in this chunk
  vocab: u32,         // V
  rowStride: u32,     // elements from one row of logits to the next
  rowOffset: u32,     // first token of the chunk in the per-token buffers
  dlossScale: f32,
  writeGradient: u32, // 1 = overwrite logits with dlogits, 0 = leave them
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> logits: array<f32>; // (N, rowStride): logits in, dlogits out
@group(0) @binding(2) var<storage, read> targets: array<u32>;      // (rowOffset + N)
@group(0) @binding(3) var<storage, read> mask: array<f32>;         // (rowOffset + N)
@group(0) @binding(4) var<storage, read_write> loss: array<f32>;   // (rowOffset + N)
@group(0) @binding(5) var<storage, read_write> correct: array<f32>; // (rowOffset + N)

override WG: u32 = 256; // threads per row; a power of two (tree reduction)

// Below every finite logit we expect, yet finite, so merging two empty partials (max LOWEST, sum 0) gives
// 0·exp(0) = 0 rather than the NaN that −inf − (−inf) would.
const LOWEST: f32 = -3.0e38;

var<workgroup> partMax: array<f32, WG>;
var<workgroup> partSum: array<f32, WG>; // Σ exp(logit − partMax)
var<workgroup> partArg: array<u32, WG>; // column of partMax (the first one on ties)
var<workgroup> rowWeight: f32;

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) groups: vec3u,
  @builtin(local_invocation_index) tid: u32,
) {
  let row = wid.x + wid.y * groups.x;
  if (row >= params.rows) { return; } // the same for the whole workgroup
  let token = params.rowOffset + row;
  let base = row * params.rowStride;
  let V = params.vocab;

  // Masked-out tokens (prompt, padding: often most of a fine-tuning batch) skip the softmax entirely.
  if (tid == 0u) { rowWeight = mask[token]; }
  let weight = workgroupUniformLoad(&rowWeight);
  if (weight == 0.0) {
    if (params.writeGradient != 0u) {
      for (var c = tid; c < params.rowStride; c += WG) { logits[base + c] = 0.0; }
    }
    if (tid == 0u) {
      loss[token] = 0.0;
      correct[token] = 0.0;
    }
    return;
  }

  // Online softmax: each thread keeps a running max, its argmax and Σ exp(x − max) over its strided columns,
  // rescaling the sum whenever the max grows. One read of the row instead of two.
  var runMax = LOWEST;
  var runSum = 0.0;
  var runArg = 0u;
  for (var c = tid; c < V; c += WG) {
    let x = logits[base + c];
    if (x > runMax) {
      runSum = runSum * exp(runMax - x) + 1.0;
      runMax = x;
      runArg = c;
    } else {
      runSum += exp(x - runMax);
    }
  }
  partMax[tid] = runMax;
  partSum[tid] = runSum;
  partArg[tid] = runArg;
  workgroupBarrier();
  for (var half = WG / 2u; half > 0u; half >>= 1u) {
    if (tid < half) {
      let otherMax = partMax[tid + half];
      let otherSum = partSum[tid + half];
      let otherArg = partArg[tid + half];
      let merged = max(runMax, otherMax);
      runSum = runSum * exp(runMax - merged) + otherSum * exp(otherMax - merged);
      if (otherMax > runMax || (otherMax == runMax && otherArg < runArg)) { runArg = otherArg; }
      runMax = merged;
      partMax[tid] = runMax;
      partSum[tid] = runSum;
      partArg[tid] = runArg;
    }
    workgroupBarrier();
  }
  let rowMax = partMax[0];
  let sumExp = partSum[0];
  let targetId = targets[token];
  let targetLogit = logits[base + targetId];
  // Every thread has read the target's logit before any thread overwrites the row with dlogits.
  workgroupBarrier();

  if (tid == 0u) {
    // (max − logit) first: both are large near each other, log Σ is small, so no precision is lost to lse's size.
    loss[token] = weight * ((rowMax - targetLogit) + log(sumExp));
    correct[token] = select(0.0, weight, partArg[0] == targetId);
  }
  if (params.writeGradient != 0u) {
    let scale = weight * params.dlossScale;
    let inverseSum = 1.0 / sumExp;
    for (var c = tid; c < V; c += WG) {
      let probability = exp(logits[base + c] - rowMax) * inverseSum;
      logits[base + c] = (probability - select(0.0, 1.0, c == targetId)) * scale;
    }
    for (var c = V + tid; c < params.rowStride; c += WG) { logits[base + c] = 0.0; }
  }
}
