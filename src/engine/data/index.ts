// Public entry of the data module: what the trainer, the worker, the app and the CLI use.
//
//   const prepared = prepareDataset({ train: text }, tokenizer, { context, batchSize, packing, validationFraction, seed });
//   prepared.report            -> errors / warnings / stats to show (formatIssue for one-line messages)
//   prepared.batcher.validationBatches()        -> fixed validation batches
//   prepared.batcher.trainBatch(step, reusable) -> {inputIds, targets, lossMask, lossTokens, rows}, (B*T) each
//   encodeGenerationPrompt(input, tokenizer, template) -> ids to generate from, exactly as in training
export { prepareDataset, validateDataset, resolveDatasetOptions, splitIndices, exampleKeys, FEW_EXAMPLES } from './prepare.ts';
export type { DatasetOptions, ResolvedDatasetOptions, DataInput, DataReport, DataStats, PreparedDataset } from './prepare.ts';
export { DataBatcher, type Batch, type BatchOptions } from './batches.ts';
export { parseDataFile, formatLabel, FORMAT_CHOICES, PROMPT_COLUMNS, COMPLETION_COLUMNS } from './parse.ts';
export type { Container, DataFormat, FormatChoice, ParsedFile, ParseOptions } from './parse.ts';
export { ERROR_CODES, WARNING_CODES, formatIssue, isErrorCode } from './issues.ts';
export type { DataIssue, DataSourceName, ErrorCode, WarningCode, IssueCode } from './issues.ts';
export { ROLES } from './examples.ts';
export type { ChatMessage, ChatExample, CompletionExample, TextExample, Example, ExampleKind, ExampleOrigin, Role } from './examples.ts';
export {
  DEFAULT_CHAT_TEMPLATE,
  resolveTemplate,
  exampleSegments,
  generationSegments,
  encodeSegments,
  renderSegments,
  encodeGenerationPrompt,
  renderGenerationPrompt,
  answerFromGenerated,
} from './template.ts';
export type { ChatTemplate, TrainOn, Segment, GenerationInput, EncodedSegments } from './template.ts';
export { tokenizeExample, textBlocks, windowLength, type TokenSequence } from './tokenize.ts';
export { decodeDataBytes, LineIndex } from './text.ts';
