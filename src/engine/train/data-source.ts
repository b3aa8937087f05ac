// What the Trainer and the ResilientTrainer read of their data: the batch shape, the length of an epoch, training
// batches by micro-step and the fixed validation batches. DataBatcher (fine-tuning examples) and TokenBlockBatcher
// (pretraining token streams) both have this shape; the trainers depend on nothing else of either.
import type { Batch } from '../data/batches.ts';

export interface TrainingData {
  /** B: rows per micro-batch; must equal the TrainConfig's batchSize. */
  readonly batchSize: number;
  /** T: positions per row. */
  readonly sequenceLength: number;
  /** Micro-batches per epoch (> 0 for a run that can train). */
  readonly stepsPerEpoch: number;
  /** Rows the validation batches hold; 0 = no validation (no evaluation run is built). */
  readonly validationRows: number;
  /** A batch's worth of zeroed (B*T) arrays, to refill with trainBatch. */
  createBatch(): Batch;
  /**
   * Fills `out` with the training batch of micro-step `step` (0-based). It must depend only on `step` (and the
   * data's own seed): a restored checkpoint relies on drawing the same batches again.
   */
  trainBatch(step: number, out: Batch): Batch;
  /** The fixed validation batches, the same ones every call, so evaluations compare across steps. */
  validationBatches(): Batch[];
}
