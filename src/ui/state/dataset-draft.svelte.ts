// The data the learner is preparing: the editor's text, its format, an optional separate validation file, and the
// validation report for them, kept live. Every change schedules a check in the engine worker (debounced); answers
// to requests that were replaced while in flight are dropped by request id, so the report always belongs to the
// newest text. The text, format and validation file survive a reload (localStorage, saved shortly after each change
// and when the page is hidden).

import type { DataReport, FormatChoice } from '../../engine/data/index.ts';
import type { DataValidation, DataValidationRequest, Failure, Outcome } from '../../workers/protocol.ts';
import { debounce, readStored, writeStored } from './persist.ts';
import { STARTER_DATASETS } from '../datasets/index.ts';

/** What the check needs besides the text: the batch size and split from the settings, and which model counts. */
export interface DataCheckOptions {
  batchSize: number;
  validationFraction: number;
  seed: number;
  /** Changes when another model loads (its tokenizer and context change the counts); null before any model. */
  modelGeneration: number | null;
}

export interface ValidationFile {
  name: string;
  text: string;
}

/** The formats a learner can choose, with the words the selector shows. */
export const FORMAT_OPTIONS: readonly { value: FormatChoice; label: string }[] = [
  { value: 'auto', label: 'Detect automatically' },
  { value: 'jsonl', label: 'JSON Lines (one example per line)' },
  { value: 'json', label: 'JSON list [ … ]' },
  { value: 'csv', label: 'CSV (prompt and completion columns)' },
  { value: 'tsv', label: 'TSV (tab-separated columns)' },
  { value: 'text', label: 'Plain text (continue writing)' },
  { value: 'chat', label: 'Chat messages (JSONL or JSON)' },
  { value: 'completion', label: 'Prompt / completion (JSONL or JSON)' },
];

const KEYS = { text: 'data.text.v1', format: 'data.format.v1', validation: 'data.validation.v1' } as const;

/** Wait this long after the last keystroke before checking, so typing stays smooth. */
const CHECK_DELAY_MS = 200;
const SAVE_DELAY_MS = 300;

function isFormat(value: unknown): value is FormatChoice {
  return FORMAT_OPTIONS.some((option) => option.value === value);
}

function isValidationFile(value: unknown): value is ValidationFile {
  const v = value as Partial<ValidationFile> | null;
  return typeof v === 'object' && v !== null && typeof v.name === 'string' && typeof v.text === 'string';
}

export class DatasetDraft {
  /** The training data as typed, pasted or loaded. */
  text = $state('');
  format = $state<FormatChoice>('auto');
  /** A separate validation file; when present the validation fraction is not used. */
  validationFile = $state.raw<ValidationFile | null>(null);

  /** The newest answer from the worker (its report describes `validation.requestId`'s text). */
  validation = $state.raw<DataValidation | undefined>(undefined);
  /** The worker could not check the data at all (not: the data has errors). */
  failure = $state.raw<Failure | undefined>(undefined);
  /** A check is scheduled or in flight, so the report may be about an older text. */
  checking = $state(false);
  /** Why the text could not be saved for the next visit, or null. */
  saveProblem = $state<string | null>(null);
  /** The text before the last wholesale replacement (starter dataset, opened file, clear), for Undo. */
  undoable = $state.raw<{ text: string; what: string } | null>(null);

  readonly report: DataReport | undefined = $derived(this.validation?.report);
  /** The starter dataset the editor holds unchanged, if any. */
  readonly starterId: string | null = $derived(STARTER_DATASETS.find((d) => d.text === this.text)?.id ?? null);

  private readonly validate: (request: DataValidationRequest) => Promise<Outcome<DataValidation>>;
  private readonly options: () => DataCheckOptions;
  private latestRequest = 0;
  private readonly checkSoon = debounce(() => void this.checkNow(), CHECK_DELAY_MS);
  private readonly saveSoon = debounce(() => this.save(), SAVE_DELAY_MS);

  /**
   * `validate` runs a check in the worker; `options` reads the settings the check depends on (it is read inside an
   * effect, so changing any of them re-checks).
   */
  constructor(
    validate: (request: DataValidationRequest) => Promise<Outcome<DataValidation>>,
    options: () => DataCheckOptions,
  ) {
    this.validate = validate;
    this.options = options;
    const text = readStored(KEYS.text);
    const format = readStored(KEYS.format);
    const validationFile = readStored(KEYS.validation);
    // A first visit starts with the first starter dataset, so there is something to train on at once.
    this.text = typeof text === 'string' ? text : STARTER_DATASETS[0].text;
    if (isFormat(format)) this.format = format;
    if (isValidationFile(validationFile)) this.validationFile = validationFile;
  }

  /** Replaces the whole text (a starter dataset, an opened file), keeping the old text for Undo. */
  replaceText(text: string, what: string): void {
    if (text === this.text) return;
    this.undoable = this.text.trim() ? { text: this.text, what } : null;
    this.text = text;
  }

  undo(): void {
    if (!this.undoable) return;
    this.text = this.undoable.text;
    this.undoable = null;
  }

  /** Starts checking and saving on every change; returns the function that stops both. */
  start(): () => void {
    const stopEffects = $effect.root(() => {
      $effect(() => {
        // Everything a check depends on is read here, so a change to any of them schedules one.
        void this.text;
        void this.format;
        void this.validationFile;
        const options = this.options();
        void [options.batchSize, options.validationFraction, options.seed, options.modelGeneration];
        this.checking = true;
        this.checkSoon.schedule();
      });
      $effect(() => {
        void this.text;
        void this.format;
        void this.validationFile;
        this.saveSoon.schedule();
      });
    });
    // A reload or a closed tab must not lose the last keystrokes.
    const saveNow = () => this.saveSoon.flush();
    addEventListener('pagehide', saveNow);
    return () => {
      stopEffects();
      this.checkSoon.cancel();
      saveNow();
      removeEventListener('pagehide', saveNow);
    };
  }

  /** Checks the current text now; an answer that arrives after a newer request was sent is dropped. */
  async checkNow(): Promise<void> {
    this.checkSoon.cancel();
    const requestId = ++this.latestRequest;
    const options = this.options();
    this.checking = true;
    const outcome = await this.validate({
      requestId,
      train: this.text,
      ...(this.validationFile ? { validation: this.validationFile.text } : {}),
      format: this.format,
      batchSize: options.batchSize,
      validationFraction: options.validationFraction,
      seed: options.seed,
    });
    if (requestId !== this.latestRequest) return;
    if (outcome.ok) {
      this.validation = outcome.value;
      this.failure = undefined;
    } else {
      this.failure = outcome.failure;
    }
    this.checking = false;
  }

  /** Saves text, format and validation file; on a full or blocked store says so and keeps working. */
  save(): void {
    const problems: string[] = [];
    for (const [key, value] of [
      [KEYS.format, this.format],
      [KEYS.validation, this.validationFile],
      [KEYS.text, this.text],
    ] as const) {
      const result = writeStored(key, value);
      if (!result.ok) problems.push(result.reason);
    }
    this.saveProblem = problems.length ? problems[0] : null;
  }
}
