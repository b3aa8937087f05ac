// The table part of decode_head.wgsl for a tied wte stored as f16 (ops/matmul-f16.ts `packF16` with rows of C: row v
// holds C/2 words when C is a multiple of 4, so its quad q is the vec2<u32> at v·C/4 + q): registry.ts puts it in
// place of that kernel's `@wte` part. Unpacked with core WGSL's unpack2x16float; the dot stays f32.
@group(0) @binding(2) var<storage, read> wte: array<vec2<u32>>;   // (V,C/4): f16 quads
fn wte_quad(v: u32, q: u32) -> vec4f {
  let words = wte[v * (params.C / 4u) + q];
  return vec4f(unpack2x16float(words.x), unpack2x16float(words.y));
}
