// The training run as the UI sees it: its phase (idle, starting, running, pausing, paused, cancelling, and how it
// ended), the run's shape, the metric history (every step and evaluation, appended as the worker's batched updates
// arrive), the probe snapshots, and why it failed. The run itself happens in the engine worker; `start` hands it the
// request and a callback for updates, and pause/resume/cancel are separate calls that act between steps.
//
// Checkpoints: every few steps the worker sends one, and `onCheckpoint` (the app: the Runs store) keeps it before the
// run goes on. `continueRun` starts an interrupted run again from its checkpoint, with its history up to there. When
// the GPU device is lost the worker starts again from the last checkpoint on a new device: the steps after it are
// dropped here (they come again, with the same values) and `notice` says what happened.

import type { EvalEvent, StepEvent } from '../../engine/train/metrics.ts';
import type {
  Failure,
  Outcome,
  ProbeSnapshot,
  RunRecord,
  RunSettings,
  TrainingRequest,
  TrainingResult,
  TrainingUpdate,
  ResumeState,
} from '../../workers/protocol.ts';
import { starterDataset } from '../datasets/index.ts';
import type { DatasetDraft } from './dataset-draft.svelte.ts';
import type { TrainSettings } from './train-settings.svelte.ts';

export type TrainingPhase =
  | 'idle'
  | 'starting'
  | 'running'
  | 'pausing'
  | 'paused'
  | 'resuming'
  | 'cancelling'
  | 'finished'
  | 'cancelled'
  | 'failed';

/** The worker calls a session needs (in the app: the trainer worker's, through Comlink). */
export interface TrainingBackend {
  /** `onUpdate` returns a promise for a checkpoint: the worker waits until it is kept. */
  start(request: TrainingRequest, onUpdate: (update: TrainingUpdate) => void | Promise<void>): Promise<Outcome<TrainingResult>>;
  pause(): Promise<Outcome<boolean>>;
  resume(): Promise<Outcome<boolean>>;
  cancel(): Promise<Outcome<boolean>>;
}

export type RunShape = Extract<TrainingUpdate, { type: 'started' }>;
export type CheckpointUpdate = Extract<TrainingUpdate, { type: 'checkpoint' }>;

/**
 * The request for a run on what the Data panel and the settings hold now. A starter dataset brings its own probe
 * prompts (questions that are not in the data); other data is probed with its first validation prompts. Probes are
 * regenerated at every evaluation.
 */
export function trainingRequest(draft: DatasetDraft, settings: TrainSettings, now = new Date()): TrainingRequest {
  const starter = draft.starterId ? starterDataset(draft.starterId) : undefined;
  const when = now.toLocaleString('en-GB', { day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit' });
  return {
    runId: crypto.randomUUID(),
    name: `${starter?.title ?? 'Custom data'}, ${when}`,
    settings: $state.snapshot(settings.values) as RunSettings,
    data: {
      train: draft.text,
      ...(draft.validationFile ? { validation: draft.validationFile.text } : {}),
      format: draft.format,
    },
    probePrompts: starter ? [...starter.probePrompts] : [],
    probeEvery: settings.values.evalEvery,
  };
}

const ACTIVE: readonly TrainingPhase[] = ['starting', 'running', 'pausing', 'paused', 'resuming', 'cancelling'];

export class TrainingSession {
  phase = $state<TrainingPhase>('idle');
  /** The run's shape once it started (steps, batch, trainable parameters, probe prompts). */
  run = $state.raw<RunShape | null>(null);
  /** Every optimizer step's metrics, in order. */
  steps = $state.raw<StepEvent[]>([]);
  /** Every evaluation on the validation examples (step 0 = before training). */
  evals = $state.raw<EvalEvent[]>([]);
  probes = $state.raw<ProbeSnapshot[]>([]);
  failure = $state.raw<Failure | null>(null);
  /** The finished or cancelled run's record (for the Runs list). */
  record = $state.raw<RunRecord | null>(null);
  /** Whether the last run left an adapter for the playground. */
  hasAdapter = $state(false);
  /** The run going now (or last): its id and the request it was started with. */
  request = $state.raw<TrainingRequest | null>(null);
  /** The step of the last checkpoint kept, or null before the first. */
  checkpointStep = $state<number | null>(null);
  /** Why the last checkpoint could not be kept (storage full …), or null. */
  checkpointProblem = $state<string | null>(null);
  /** What happened to the GPU, while it matters ("lost at step 12 …", "continues on a new device …"), or ''. */
  notice = $state('');

  readonly isActive: boolean = $derived(ACTIVE.includes(this.phase));
  readonly lastStep: StepEvent | undefined = $derived(this.steps.at(-1));
  readonly lastEval: EvalEvent | undefined = $derived(this.evals.at(-1));
  /** Optimizer steps done (0 before the first reports). */
  readonly stepsDone: number = $derived(this.lastStep?.step ?? 0);
  readonly totalSteps: number = $derived(this.run?.totalSteps ?? 0);
  /** 0..1 */
  readonly progress: number = $derived(this.totalSteps > 0 ? this.stepsDone / this.totalSteps : 0);

  readonly canStart: boolean = $derived(!this.isActive);
  readonly canPause: boolean = $derived(this.phase === 'running');
  readonly canResume: boolean = $derived(this.phase === 'paused');
  readonly canCancel: boolean = $derived(['running', 'pausing', 'paused', 'resuming'].includes(this.phase));

  /**
   * Called whenever a run ends, finished, cancelled or failed (the app then saves it in the Runs list);
   * `adapterLeft` says whether this run left an adapter for the playground.
   */
  onRunEnded: ((adapterLeft: boolean) => void) | undefined;
  /**
   * Keeps a checkpoint (the app: in IndexedDB, with the run's record so far); the run waits for it. Resolves to null
   * when kept, or to why not (the run goes on; the checkpoint before stays).
   */
  onCheckpoint: ((update: CheckpointUpdate, request: TrainingRequest) => Promise<string | null>) | undefined;

  private readonly backend: TrainingBackend;

  constructor(backend: TrainingBackend) {
    this.backend = backend;
  }

  /** Starts a run; resolves when it ends. The previous run's numbers are cleared at once. */
  async start(request: TrainingRequest): Promise<void> {
    if (!this.canStart) return;
    this.phase = 'starting';
    this.run = null;
    const resume: ResumeState | undefined = request.resume;
    this.steps = (resume?.metrics.filter((e): e is StepEvent => e.type === 'step') ?? []);
    this.evals = (resume?.metrics.filter((e): e is EvalEvent => e.type === 'eval') ?? []);
    this.probes = resume ? [...resume.probes] : [];
    this.failure = null;
    this.record = null;
    this.request = { ...request, resume: undefined };
    this.checkpointStep = resume ? this.steps.at(-1)?.step ?? 0 : null;
    this.checkpointProblem = null;
    this.notice = '';
    // A resumed run's history up to its checkpoint is shown at once; the worker sends only what comes after.
    const outcome = await this.backend.start(request, (update) => this.apply(update));
    if (outcome.ok) {
      this.record = outcome.value.record;
      this.hasAdapter = outcome.value.hasAdapter || this.hasAdapter;
      this.phase = outcome.value.status;
    } else {
      this.failure = outcome.failure;
      this.phase = 'failed';
    }
    this.onRunEnded?.(outcome.ok && outcome.value.hasAdapter);
  }

  async pause(): Promise<void> {
    if (!this.canPause) return;
    this.phase = 'pausing';
    const outcome = await this.backend.pause();
    // Nothing to pause (the run ended meanwhile): the phase is the end's.
    if ((!outcome.ok || !outcome.value) && this.phase === 'pausing') this.phase = 'running';
  }

  async resume(): Promise<void> {
    if (!this.canResume) return;
    this.phase = 'resuming';
    const outcome = await this.backend.resume();
    if ((!outcome.ok || !outcome.value) && this.phase === 'resuming') this.phase = 'paused';
  }

  async cancel(): Promise<void> {
    if (!this.canCancel) return;
    this.phase = 'cancelling';
    await this.backend.cancel();
  }

  private async keepCheckpoint(update: CheckpointUpdate): Promise<void> {
    if (!this.onCheckpoint || !this.request) return;
    const problem = await this.onCheckpoint(update, this.request);
    if (problem === null) this.checkpointStep = update.step;
    this.checkpointProblem = problem;
  }

  /** One update from the worker; a promise for a checkpoint (settles once it is kept or failed to be). */
  apply(update: TrainingUpdate): void | Promise<void> {
    switch (update.type) {
      case 'started':
        this.run = update;
        if (this.phase === 'starting') this.phase = 'running';
        if (update.resumedFrom > 0) this.notice = `Resumed from the checkpoint at step ${update.resumedFrom}.`;
        break;
      case 'checkpoint':
        return this.keepCheckpoint(update);
      case 'device-lost':
        this.steps = this.steps.filter((e) => e.step <= update.resumeStep);
        this.evals = this.evals.filter((e) => e.step <= update.resumeStep);
        this.probes = this.probes.filter((p) => p.step <= update.resumeStep);
        this.notice = update.message;
        break;
      case 'recovered':
        // Both sentences stay: what happened, and that the run goes on.
        this.notice = this.notice ? `${this.notice} ${update.message}` : update.message;
        break;
      case 'metrics': {
        const steps = update.events.filter((e): e is StepEvent => e.type === 'step');
        const evals = update.events.filter((e): e is EvalEvent => e.type === 'eval');
        if (steps.length) this.steps = [...this.steps, ...steps];
        if (evals.length) this.evals = [...this.evals, ...evals];
        break;
      }
      case 'probe':
        this.probes = [...this.probes, update.snapshot];
        break;
      case 'paused':
        if (this.phase !== 'cancelling') this.phase = 'paused';
        break;
      case 'resumed':
        if (this.phase !== 'cancelling') this.phase = 'running';
        break;
    }
  }
}
