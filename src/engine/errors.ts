// Typed errors a user can cause or meet. Each carries a message a learner can act on; `code` is stable for tests and UI.

export type TunelabErrorCode =
  | 'no-webgpu'
  | 'no-adapter'
  | 'device-lost'
  | 'gpu-validation'
  | 'kernel-compile'
  | 'out-of-memory'
  | 'too-large'
  | 'bad-model'
  | 'bad-data'
  | 'diverged'
  | 'cancelled';

export class TunelabError extends Error {
  readonly code: TunelabErrorCode;
  constructor(code: TunelabErrorCode, message: string) {
    super(message);
    this.name = 'TunelabError';
    this.code = code;
  }
}
