// The weight part of matmul_forward_rows.wgsl for a frozen weight stored as f16 (ops/matmul-f16.ts `packF16`, pairs
// along N): registry.ts puts it in place of that kernel's `@weight` part. A column quad of row k is two words, read
// as one vec2<u32> and unpacked to f32 (core WGSL, no shader-f16): decoding reads half the bytes.
@group(0) @binding(2) var<storage, read> weight: array<vec2<u32>>;  // (K,N/4): f16 quads
fn weight_quad(k: u32, col4: u32) -> vec4f {
  let words = weight[k * (params.N / 4u) + col4];
  return vec4f(unpack2x16float(words.x), unpack2x16float(words.y));
}
