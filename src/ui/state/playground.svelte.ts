// The playground: one prompt, answered by the base model (left) and by the fine-tuned model (right, the current LoRA
// adapter, which can be switched off) side by side, both streaming at once from two generators in the worker. The
// prompt, its style and the sampling controls survive a reload. Stop ends both generations after their current token.

import type {
  AdapterInfo,
  Failure,
  GenerateRequest,
  GenerationDone,
  GenerationStopReason,
  GenerationUpdate,
  Outcome,
  PlaygroundSampling,
  PromptStyle,
} from '../../workers/protocol.ts';
import { STARTER_DATASETS } from '../datasets/index.ts';
import { readStored, writeStored } from './persist.ts';

export interface SamplingSpec {
  key: keyof PlaygroundSampling;
  label: string;
  /** One line: what it does and which way to turn it. */
  explanation: string;
  integer: boolean;
  min: number;
  max: number;
  minExclusive?: boolean;
  step: number | 'any';
}

export const SAMPLING_SETTINGS: readonly SamplingSpec[] = [
  {
    key: 'temperature',
    label: 'Temperature',
    explanation: 'Lower is more predictable, higher more varied; 0 always picks the likeliest token.',
    integer: false,
    min: 0,
    max: 5,
    step: 'any',
  },
  {
    key: 'topK',
    label: 'Top-k',
    explanation: 'Choose only among the k likeliest tokens; 0 = no limit.',
    integer: true,
    min: 0,
    max: 100_000,
    step: 1,
  },
  {
    key: 'topP',
    label: 'Top-p',
    explanation: 'Choose among the likeliest tokens that together reach this probability; 1 = all.',
    integer: false,
    min: 0,
    minExclusive: true,
    max: 1,
    step: 'any',
  },
  {
    key: 'maxNewTokens',
    label: 'Max new tokens',
    explanation: 'The longest answer, in tokens; generation also stops at the end-of-text token.',
    integer: true,
    min: 1,
    max: 4096,
    step: 1,
  },
  {
    key: 'repetitionPenalty',
    label: 'Repetition penalty',
    explanation: 'Above 1 makes tokens already used less likely, against loops; 1 = off.',
    integer: false,
    min: 0,
    minExclusive: true,
    max: 10,
    step: 'any',
  },
  {
    key: 'seed',
    label: 'Seed',
    explanation: 'The same seed, prompt and settings give the same answer; both columns use it.',
    integer: true,
    min: 0,
    max: 2_147_483_647,
    step: 1,
  },
];

/** Defaults for a small model: a little sharper than plain sampling, a mild repetition penalty. */
export const DEFAULT_SAMPLING: Readonly<PlaygroundSampling> = Object.freeze({
  temperature: 0.7,
  topK: 50,
  topP: 0.95,
  repetitionPenalty: 1.1,
  seed: 0,
  maxNewTokens: 64,
});

export const PROMPT_STYLES: readonly { value: PromptStyle; label: string; explanation: string }[] = [
  { value: 'chat', label: 'Question', explanation: 'Asked as "User: …" and answered after "Assistant:", as in training.' },
  { value: 'text', label: 'Continue text', explanation: 'The model continues the text as it is (for plain-text data).' },
];

export type ColumnPhase = 'idle' | 'running' | 'done' | 'failed';

/** What one column shows. */
export interface ColumnState {
  phase: ColumnPhase;
  text: string;
  tokens: number;
  stopReason: GenerationStopReason | null;
  tokensPerSecond: number | null;
  failure: Failure | null;
  /** The adapter the answer was made with (right column), null for the base model. */
  adapter: AdapterInfo | null;
}

const EMPTY_COLUMN: ColumnState = Object.freeze({
  phase: 'idle',
  text: '',
  tokens: 0,
  stopReason: null,
  tokensPerSecond: null,
  failure: null,
  adapter: null,
}) as ColumnState;

const STORAGE_KEY = 'playground.v1';

/** A first visit starts with a question for the first starter dataset (which the data editor also starts with). */
export const DEFAULT_PROMPT = STARTER_DATASETS[0].probePrompts[0];

type SamplingForm = Record<keyof PlaygroundSampling, number | null>;

function checkNumber(spec: SamplingSpec, value: number | null): string | null {
  if (value === null || !Number.isFinite(value)) return 'enter a number';
  if (spec.integer && !Number.isInteger(value)) return 'enter a whole number';
  if (spec.minExclusive ? value <= spec.min : value < spec.min) {
    return spec.minExclusive ? `must be more than ${spec.min}` : `must be at least ${spec.min}`;
  }
  if (value > spec.max) return `must be at most ${spec.max}`;
  return null;
}

export interface PlaygroundDependencies {
  generate: (request: GenerateRequest, onUpdate: (update: GenerationUpdate) => void) => Promise<Outcome<GenerationDone>>;
  stop: (id: number) => Promise<unknown>;
  adapterStatus: () => Promise<Outcome<AdapterInfo | null>>;
}

export class Playground {
  prompt = $state(DEFAULT_PROMPT);
  style = $state<PromptStyle>('chat');
  sampling = $state<SamplingForm>({ ...DEFAULT_SAMPLING });
  /** The right column uses the adapter; off, it shows what the same generator says without it. */
  useAdapter = $state(true);

  /** The adapter the right column would use now (null: none yet). */
  adapter = $state.raw<AdapterInfo | null>(null);
  left = $state.raw<ColumnState>(EMPTY_COLUMN);
  right = $state.raw<ColumnState>(EMPTY_COLUMN);
  /** Why the settings could not be saved for the next visit, or null. */
  saveProblem = $state<string | null>(null);
  /** Counts Generate presses, so that a test (or a screen reader hint) can tell one answer from the next. */
  generations = $state(0);

  readonly problems: Partial<Record<keyof PlaygroundSampling, string>> = $derived.by(() => {
    const found: Partial<Record<keyof PlaygroundSampling, string>> = {};
    for (const spec of SAMPLING_SETTINGS) {
      const problem = checkNumber(spec, this.sampling[spec.key]);
      if (problem) found[spec.key] = problem;
    }
    return found;
  });
  readonly running: boolean = $derived(this.left.phase === 'running' || this.right.phase === 'running');
  readonly canGenerate: boolean = $derived(
    !this.running && this.prompt.trim() !== '' && Object.keys(this.problems).length === 0,
  );

  private readonly deps: PlaygroundDependencies;
  private nextId = 1;
  /** Generation ids in flight, for Stop. */
  private active = new Set<number>();

  constructor(deps: PlaygroundDependencies, stored: unknown = readStored(STORAGE_KEY)) {
    this.deps = deps;
    this.restore(stored);
  }

  private restore(stored: unknown): void {
    if (typeof stored !== 'object' || stored === null) return;
    const s = stored as Record<string, unknown>;
    if (typeof s.prompt === 'string') this.prompt = s.prompt;
    if (s.style === 'chat' || s.style === 'text') this.style = s.style;
    if (typeof s.useAdapter === 'boolean') this.useAdapter = s.useAdapter;
    const sampling = s.sampling as Record<string, unknown> | undefined;
    if (typeof sampling === 'object' && sampling !== null) {
      for (const spec of SAMPLING_SETTINGS) {
        const value = sampling[spec.key];
        if (typeof value === 'number' && checkNumber(spec, value) === null) this.sampling[spec.key] = value;
      }
    }
  }

  resetSampling(): void {
    this.sampling = { ...DEFAULT_SAMPLING };
  }

  get samplingIsDefault(): boolean {
    return SAMPLING_SETTINGS.every((spec) => this.sampling[spec.key] === DEFAULT_SAMPLING[spec.key]);
  }

  /** Saves prompt and settings on every change; returns the function that stops it. */
  autosave(): () => void {
    return $effect.root(() => {
      $effect(() => {
        const result = writeStored(STORAGE_KEY, {
          prompt: this.prompt,
          style: this.style,
          useAdapter: this.useAdapter,
          sampling: $state.snapshot(this.sampling),
        });
        this.saveProblem = result.ok ? null : result.reason;
      });
    });
  }

  /** Asks the worker which adapter the right column would use (after a run ends, an import, a model change). */
  async refreshAdapter(): Promise<void> {
    const outcome = await this.deps.adapterStatus();
    if (outcome.ok) this.adapter = outcome.value;
  }

  /** Sets the adapter directly when the caller already knows it (an import just returned it). */
  adapterChanged(adapter: AdapterInfo | null): void {
    this.adapter = adapter;
  }

  /** Both columns answer the prompt; the right one only when there is an adapter. */
  async generate(): Promise<void> {
    if (!this.canGenerate) return;
    this.generations++;
    // Running at once, so that a second press cannot start another pair while the adapter is being looked up.
    this.left = { ...EMPTY_COLUMN, phase: 'running' };
    await this.refreshAdapter();
    const sampling = $state.snapshot(this.sampling) as PlaygroundSampling;
    const base = { prompt: this.prompt, style: this.style, sampling };
    const runs = [this.run('left', { ...base, useAdapter: false })];
    if (this.adapter) runs.push(this.run('right', { ...base, useAdapter: this.useAdapter }));
    else this.right = EMPTY_COLUMN;
    await Promise.all(runs);
  }

  private async run(slot: 'left' | 'right', request: Omit<GenerateRequest, 'id' | 'slot'>): Promise<void> {
    const id = this.nextId++;
    const set = (column: ColumnState) => {
      if (slot === 'left') this.left = column;
      else this.right = column;
    };
    const current = () => (slot === 'left' ? this.left : this.right);
    set({ ...EMPTY_COLUMN, phase: 'running', adapter: request.useAdapter ? this.adapter : null });
    this.active.add(id);
    const outcome = await this.deps.generate({ ...request, id, slot }, (update) => {
      if (update.id !== id || current().phase !== 'running') return;
      set({ ...current(), text: update.text, tokens: update.tokens });
    });
    this.active.delete(id);
    if (outcome.ok) {
      const done = outcome.value;
      set({
        phase: 'done',
        text: done.text,
        tokens: done.tokens,
        stopReason: done.stopReason,
        tokensPerSecond: done.tokensPerSecond,
        failure: null,
        adapter: done.adapter,
      });
      if (slot === 'right') this.adapter = done.adapter ?? this.adapter;
    } else {
      set({ ...current(), phase: 'failed', failure: outcome.failure });
    }
  }

  /** Ends both generations after their current token; what was generated stays. */
  stop(): void {
    for (const id of this.active) void this.deps.stop(id);
  }
}
