// The typed shape of a kernel: its WGSL source, its bindings in @binding order, its uniforms and override constants.
//
// Conventions every .wgsl file in this folder follows:
//   @group(0) @binding(0) var<uniform> params: Params;   // only when `uniforms` is non-empty; all fields 4 bytes
//   @group(0) @binding(1..) storage buffers, in the order of `bindings`
//   entry point `main`; tile and workgroup sizes are `override` constants with defaults in the WGSL.
// Shapes go in uniforms (they change per call without recompiling); tiles go in overrides (they key the pipeline).

export type BindingAccess = 'read' | 'read_write';
export type UniformType = 'u32' | 'i32' | 'f32';

export interface KernelSpec<B extends string = string, U extends string = string> {
  /** Op and direction, same as the file name: 'layernorm_forward'. */
  readonly name: string;
  readonly source: string;
  readonly bindings: readonly { readonly name: B; readonly access: BindingAccess }[];
  readonly uniforms: readonly { readonly name: U; readonly type: UniformType }[];
  /** Override constants the kernel declares, with the defaults the wrapper uses. */
  readonly overrides?: Readonly<Record<string, number>>;
}

export type BindingNames<S> = S extends KernelSpec<infer B, string> ? B : never;
export type UniformNames<S> = S extends KernelSpec<string, infer U> ? U : never;

export function defineKernel<const B extends string, const U extends string>(spec: KernelSpec<B, U>): KernelSpec<B, U> {
  return spec;
}
