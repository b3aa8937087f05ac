// The table part of decode_embed.wgsl for a wte stored as f16 pairs along C (ops/matmul-f16.ts `packF16`, rows of
// ceil(C/2) words, even c in the low half): registry.ts puts it in place of that kernel's `@wte` part.
@group(0) @binding(2) var<storage, read> wte: array<u32>;       // (V,ceil(C/2))
fn wte_at(v: u32, c: u32) -> f32 { return unpack2x16float(wte[v * ((params.C + 1u) / 2u) + c / 2u])[c % 2u]; }
