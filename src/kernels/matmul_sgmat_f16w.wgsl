// Linear-layer product with a frozen f16 weight on the matrix units (tensor cores), through Chromium's experimental
// subgroup matrices: out (R,Cc) = or += act (R,D) · B [+ bias (Cc)], B (D,Cc) taken from a packed f16 weight
// (ops/matmul-f16.ts `packF16`: two f16 per u32, even index in the low half) in one of two layouts:
//   TRANSPOSED = false: weight (D,Cc) packed along Cc, B = weight   (Conv1D forward; the tied head's dlnf = dlogits·wte)
//   TRANSPOSED = true:  weight (Cc,D) packed along D,  B = weightᵀ  (backward input dinp = dout·Wᵀ; logits = lnf·wteᵀ)
// The activation is rounded to f16 on its way into workgroup memory, products accumulate in f32 (16×16×16 f16→f32
// matrix configs): the accuracy of an f16 operand, about 1e-3 relative, unlike the f32 kernels. Only for devices whose
// adapter lists that config with 32-wide subgroups (ops/matmul-f16.ts checks); every other device keeps the f32 ones.
//
// A workgroup owns a BM×BN block of out, BM = 32·WG_SM and BN = 32·WG_SN, with WG_SM×WG_SN subgroups of 32 invocations;
// subgroup s owns the 32×32 block at (s / WG_SN, s % WG_SN) as 2×2 result matrices. Per BK-deep slice, every invocation
// helps stage the activation block (BM,BK) and the B block (row-major (BK,BN), or (BN,BK) holding Bᵀ when TRANSPOSED, so
// the packed words are read along their rows) as f16, zero outside (R,D,Cc); then each subgroup multiplies its 2×2
// blocks over BK/16 steps. At the end each subgroup stores one result matrix at a time into its 16×16 f32 staging
// slot, and all invocations write the staged blocks out, guarded, with the bias and accumulate.

enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;
// Subgroup matrix calls need subgroup-uniform control flow and operands; the analysis only proves workgroup
// uniformity, and the offsets below depend on subgroup_id (uniform within a subgroup, which is what the calls need).
diagnostic(off, chromium_experimental.subgroup_matrix_uniformity);

struct Params {
  R: u32,          // rows of act and out
  Cc: u32,         // columns of out
  D: u32,          // reduction depth
  accumulate: u32, // 1: out += product
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> act: array<f32>;      // (R,D)
@group(0) @binding(2) var<storage, read> weight: array<u32>;   // packed f16, see above
@group(0) @binding(3) var<storage, read> bias: array<f32>;     // (Cc), read only when HAS_BIAS
@group(0) @binding(4) var<storage, read_write> out: array<f32>; // (R,Cc)
// @epilogue: out's store; registry.ts's `_gelu` variants swap in lib/gelu_epilogue.wgsl's, which also stores gelu(v).
fn store_out(i: u32, v: f32) { out[i] = v; }
// @end-epilogue

// The tiles are constants, not overrides: subgroupMatrixLoad/Store take workgroup arrays of constant size only.
// registry.ts `matmulSgmatF16W(tiles)` puts `const WG_SM`, `WG_SN` (subgroups along rows, columns) and `BK` (depth per
// staged slice, a multiple of 16) here, one kernel per tile shape:
// @tiles
override HAS_BIAS: bool = false;
override TRANSPOSED: bool = false;
// Split-K as in lib/matmul_tiles.wgsl: workgroup z reduces its share of the depths (whole BK slices) into slab z of
// `out`, a (SPLIT_K, R, Cc) scratch that matmul_split_reduce.wgsl sums (no bias or accumulate then).
override SPLIT_K: u32 = 1;
const SUBGROUPS = WG_SM * WG_SN;
const THREADS = SUBGROUPS * 32u;
const BM = WG_SM * 32u;
const BN = WG_SN * 32u;

var<workgroup> a_sh: array<f16, BM * BK>;         // (BM,BK)
var<workgroup> b_sh: array<f16, BK * BN>;         // (BK,BN), or (BN,BK) when TRANSPOSED
var<workgroup> stage: array<f32, SUBGROUPS * 256u>; // one 16×16 f32 slot per subgroup

alias Left = subgroup_matrix_left<f16, 16, 16>;
alias Right = subgroup_matrix_right<f16, 16, 16>;
alias Result = subgroup_matrix_result<f32, 16, 16>;

fn stage_slice(row0: u32, col0: u32, k0: u32, li: u32) {
  let R = params.R;
  let Cc = params.Cc;
  let D = params.D;
  for (var e = li; e < BM * BK; e += THREADS) {
    let r = row0 + e / BK;
    let k = k0 + e % BK;
    var v = 0.0;
    if (r < R && k < D) { v = act[r * D + k]; }
    a_sh[e] = f16(v);
  }
  // B words: two f16 along the packed axis; BN and BK are even and tiles start at even indices, so pairs never split.
  if (TRANSPOSED) {
    let words = (D + 1u) / 2u; // per weight row (one output column)
    for (var e = li; e < BN * BK / 2u; e += THREADS) {
      let n = e / (BK / 2u);
      let k = 2u * (e % (BK / 2u));
      var h = vec2<f16>();
      if (col0 + n < Cc && k0 + k < D) { h = bitcast<vec2<f16>>(weight[(col0 + n) * words + (k0 + k) / 2u]); }
      b_sh[n * BK + k] = h.x;
      b_sh[n * BK + k + 1u] = h.y;
    }
  } else {
    let words = (Cc + 1u) / 2u; // per weight row (one depth)
    for (var e = li; e < BK * BN / 2u; e += THREADS) {
      let k = e / (BN / 2u);
      let n = 2u * (e % (BN / 2u));
      var h = vec2<f16>();
      if (k0 + k < D && col0 + n < Cc) { h = bitcast<vec2<f16>>(weight[(k0 + k) * words + (col0 + n) / 2u]); }
      b_sh[k * BN + n] = h.x;
      b_sh[k * BN + n + 1u] = h.y;
    }
  }
}

fn load_right(n: u32, k: u32) -> Right {
  if (TRANSPOSED) { return subgroupMatrixLoad<Right>(&b_sh, n * BK + k, true, BK); }
  return subgroupMatrixLoad<Right>(&b_sh, k * BN + n, false, BN);
}

// Writes subgroup slot s (the result matrix at block row/col offsets (bm, bn) inside that subgroup's 32×32 block).
fn write_staged(row0: u32, col0: u32, bm: u32, bn: u32, li: u32, slab: u32) {
  let R = params.R;
  let Cc = params.Cc;
  for (var e = li; e < SUBGROUPS * 256u; e += THREADS) {
    let s = e / 256u;
    let r = row0 + (s / WG_SN) * 32u + bm + (e % 256u) / 16u;
    let c = col0 + (s % WG_SN) * 32u + bn + e % 16u;
    if (r < R && c < Cc) {
      var v = stage[e];
      if (HAS_BIAS) { v += bias[c]; }
      if (params.accumulate != 0u) { v += out[slab + r * Cc + c]; }
      store_out(slab + r * Cc + c, v);
    }
  }
}

@compute @workgroup_size(THREADS)
fn main(
  @builtin(workgroup_id) wg: vec3u,
  @builtin(local_invocation_index) li: u32,
  @builtin(subgroup_id) sg: u32,
) {
  let row0 = wg.y * BM;
  let col0 = wg.x * BN;
  let sm = (sg / WG_SN) * 32u; // this subgroup's rows inside the block
  let sn = (sg % WG_SN) * 32u; // and columns
  var c00 = Result();
  var c01 = Result();
  var c10 = Result();
  var c11 = Result();
  let share = ((params.D + SPLIT_K - 1u) / SPLIT_K + BK - 1u) / BK * BK;
  let k_end = min(params.D, (wg.z + 1u) * share);
  for (var k0 = wg.z * share; k0 < k_end; k0 += BK) {
    stage_slice(row0, col0, k0, li);
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk += 16u) {
      let a0 = subgroupMatrixLoad<Left>(&a_sh, sm * BK + kk, false, BK);
      let a1 = subgroupMatrixLoad<Left>(&a_sh, (sm + 16u) * BK + kk, false, BK);
      let b0 = load_right(sn, kk);
      let b1 = load_right(sn + 16u, kk);
      c00 = subgroupMatrixMultiplyAccumulate(a0, b0, c00);
      c01 = subgroupMatrixMultiplyAccumulate(a0, b1, c01);
      c10 = subgroupMatrixMultiplyAccumulate(a1, b0, c10);
      c11 = subgroupMatrixMultiplyAccumulate(a1, b1, c11);
    }
    workgroupBarrier();
  }
  let slot = sg * 256u;
  let slab = wg.z * params.R * params.Cc;
  subgroupMatrixStore(&stage, slot, c00, false, 16u);
  workgroupBarrier();
  write_staged(row0, col0, 0u, 0u, li, slab);
  workgroupBarrier();
  subgroupMatrixStore(&stage, slot, c01, false, 16u);
  workgroupBarrier();
  write_staged(row0, col0, 0u, 16u, li, slab);
  workgroupBarrier();
  subgroupMatrixStore(&stage, slot, c10, false, 16u);
  workgroupBarrier();
  write_staged(row0, col0, 16u, 0u, li, slab);
  workgroupBarrier();
  subgroupMatrixStore(&stage, slot, c11, false, 16u);
  workgroupBarrier();
  write_staged(row0, col0, 16u, 16u, li, slab);
}
