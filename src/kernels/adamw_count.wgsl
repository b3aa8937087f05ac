// Advances AdamW's step count on the GPU after a step's updates (adamw_update reads it as t − 1): by one when the
// step happened, not at all when gradnorm_finalize marked it skipped (clip scale 0, a non-finite gradient norm), as
// PyTorch's count stays put when GradScaler skips optimizer.step(). One invocation; no readback, no CPU branch.
// The count is an f32 holding a whole number: exact up to 2^24 steps, far beyond any run here.

@group(0) @binding(1) var<storage, read> clipScale: array<f32>;         // [0] = this step's clip scale, 0 = skipped
@group(0) @binding(2) var<storage, read_write> stepCount: array<f32>;   // [0] = updates done

@compute @workgroup_size(1)
fn main() {
  if (clipScale[0] != 0.0) { stepCount[0] = stepCount[0] + 1.0; }
}
