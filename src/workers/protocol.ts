// The shapes that cross the worker boundary. Every coarse call returns an `Outcome`: errors are values, not thrown,
// because Comlink keeps only an Error's name and message and the UI needs the stable `code` to choose what to show.

import type { TunelabErrorCode } from '../engine/errors.ts';

/** Codes the engine raises, plus the two failures only the worker boundary can produce. */
export type FailureCode = TunelabErrorCode | 'worker-failed' | 'internal';

export interface Failure {
  code: FailureCode;
  /** A sentence a learner can act on. */
  message: string;
}

export type Outcome<T> = { ok: true; value: T } | { ok: false; failure: Failure };
