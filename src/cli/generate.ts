// `tunelab generate`: text from a model directory, optionally with a LoRA adapter, streamed to stdout as it is made
// (or one JSON object with --json). A model or adapter that `tunelab train` made is prompted through the chat template
// it was trained with (recorded in its training_config.json), so the question arrives as it did in training; any other
// model continues the prompt as plain text.
//
// Decoding runs an inference run of B=1 over the text so far for every new token (no KV cache yet: each token costs a
// full forward pass over at most the model's context), and reads back only the last position's logits.

import { parseArgs } from 'node:util';
import { encodeGenerationPrompt, answerFromGenerated, type ChatTemplate, type GenerationInput } from '../engine/data/index.ts';
import type { GpuContext } from '../engine/gpu/context.ts';
import { checkStop, sampleNextToken, samplingOptions, stopCriteria, streamableLength, type SamplingOptions, type StopReason } from '../engine/generate/sampling.ts';
import { Gpt2Run, type Gpt2Model } from '../engine/model/gpt2.ts';
import type { LoraAdapter } from '../engine/model/lora.ts';
import { Rng } from '../engine/random.ts';
import type { Tokenizer } from '../engine/tokenizer/index.ts';
import { checkAdapterDirectory, loadCliAdapter, loadCliModel, parseNumber, recordedTemplate, UsageError, wholeAtLeast, withCliGpu } from './train.ts';

const USAGE = `usage: tunelab generate --model DIR [--adapter DIR] --prompt TEXT [options]

  --model DIR                 model directory (config.json, model.safetensors, tokenizer.json)
  --adapter DIR               a LoRA adapter (adapter_config.json + adapter_model.safetensors)
  --prompt TEXT               the question (or, with --raw, the text to continue)
  --raw                       continue the prompt as plain text, even for a model trained with a chat template
  --max-new-tokens N          (default 64)
  --temperature X             0 = greedy (default 1)
  --top-k N                   0 = no limit (default 50)
  --top-p X                   nucleus sampling, 1 = off (default 1)
  --repetition-penalty X      1 = off (default 1)
  --seed N                    sampling seed (default 0)
  --stop TEXT                 stop when the text contains TEXT (may be repeated)
  --json                      print one JSON object instead of streaming the text
`;

export interface GenerationResult {
  /** The generated text (the answer for a chat prompt). */
  text: string;
  /** Generated token ids (the end-of-text token not included). */
  tokens: number[];
  reason: StopReason;
  promptTokens: number;
  tokensPerSecond: number;
}

/**
 * Generates from `promptIds` token by token. `onText` receives text as it becomes final (a tail that may still turn
 * into a stop string, or an unfinished UTF-8 character, is held back).
 */
export async function generateTokens(
  gpu: GpuContext,
  model: Gpt2Model,
  adapter: LoraAdapter | undefined,
  tokenizer: Tokenizer,
  promptIds: readonly number[],
  options: SamplingOptions,
  onText?: (text: string) => void,
): Promise<GenerationResult> {
  const context = model.config.nPositions;
  const V = model.config.vocabSize;
  if (promptIds.length === 0) throw new UsageError('the prompt is empty');
  // One shape for the whole generation: room for the prompt and the new tokens, at most the context.
  const T = Math.min(context, promptIds.length + options.maxNewTokens);
  const run = await Gpt2Run.create(gpu, model, { batchSize: 1, sequenceLength: T, mode: { kind: 'inference' }, keepLogits: true, adapter });
  const logits = run.view('logits');
  const rng = new Rng(options.seed);
  const criteria = stopCriteria(options, tokenizer.endOfTextId);
  const all = [...promptIds];
  const generated: number[] = [];
  let shown = 0;
  let text = '';
  let reason: StopReason = 'max-new-tokens';
  const started = performance.now();
  try {
    const window = new Uint32Array(T);
    for (;;) {
      // The last T tokens (older ones slide out once the context is full); positions after them are padding that
      // causal attention keeps from influencing the last real position.
      const visible = all.slice(-T);
      window.fill(tokenizer.endOfTextId);
      window.set(visible);
      run.setBatch({ ids: window });
      await run.step();
      const row = await readRow(gpu, logits, (visible.length - 1) * V, V);
      const token = sampleNextToken(row, all, options, rng);
      all.push(token);
      const isEnd = token === tokenizer.endOfTextId;
      if (!isEnd) generated.push(token);
      text = tokenizer.decode(generated);
      const stop = checkStop({ lastToken: token, newTokenCount: all.length - promptIds.length, text }, criteria);
      if (stop) {
        reason = stop.reason;
        text = stop.text;
        break;
      }
      if (onText) {
        let ready = streamableLength(text, options.stopStrings);
        while (ready > shown && text[ready - 1] === '\uFFFD') ready--; // an unfinished multi-byte character
        if (ready > shown) {
          onText(text.slice(shown, ready));
          shown = ready;
        }
      }
    }
  } finally {
    run.destroy();
  }
  if (onText && text.length > shown) onText(text.slice(shown));
  const seconds = (performance.now() - started) / 1000;
  return { text, tokens: generated, reason, promptTokens: promptIds.length, tokensPerSecond: generated.length / Math.max(seconds, 1e-9) };
}

/** Logits (V) of one position, reading back only an aligned range around it. */
async function readRow(gpu: GpuContext, logits: ReturnType<Gpt2Run['view']>, first: number, V: number): Promise<Float32Array> {
  const alignedStart = Math.floor(first / 64) * 64;
  const length = Math.min(logits.length - alignedStart, first - alignedStart + V);
  const values = await gpu.read(gpu.view(logits, alignedStart, length, 'logits.row'));
  return values.subarray(first - alignedStart, first - alignedStart + V);
}

export async function generate(args: string[]): Promise<number> {
  let values: Record<string, string | boolean | string[] | undefined>;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        model: { type: 'string' },
        adapter: { type: 'string' },
        prompt: { type: 'string' },
        raw: { type: 'boolean', default: false },
        'max-new-tokens': { type: 'string' },
        temperature: { type: 'string' },
        'top-k': { type: 'string' },
        'top-p': { type: 'string' },
        'repetition-penalty': { type: 'string' },
        seed: { type: 'string' },
        stop: { type: 'string', multiple: true },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    process.stderr.write(`tunelab generate: ${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  let options: SamplingOptions;
  try {
    if (!values.model) throw new UsageError('--model DIR is required');
    if (values.prompt === undefined) throw new UsageError('--prompt TEXT is required');
    const s = (name: string) => values[name] as string | undefined;
    const overrides: Partial<SamplingOptions> = {};
    const set = <K extends keyof SamplingOptions>(key: K, value: SamplingOptions[K] | undefined) => {
      if (value !== undefined) overrides[key] = value;
    };
    set('maxNewTokens', parseNumber(s('max-new-tokens'), 'max-new-tokens', wholeAtLeast(1), 'a whole number ≥ 1'));
    set('temperature', parseNumber(s('temperature'), 'temperature', (v) => v >= 0, 'a number ≥ 0'));
    set('topK', parseNumber(s('top-k'), 'top-k', wholeAtLeast(0), 'a whole number'));
    set('topP', parseNumber(s('top-p'), 'top-p', (v) => v > 0 && v <= 1, 'a number in (0, 1]'));
    set('repetitionPenalty', parseNumber(s('repetition-penalty'), 'repetition-penalty', (v) => v > 0, 'a positive number'));
    set('seed', parseNumber(s('seed'), 'seed', (v) => Number.isSafeInteger(v), 'a whole number'));
    if (values.stop) set('stopStrings', values.stop as string[]);
    options = samplingOptions(overrides);
  } catch (error) {
    if (!(error instanceof UsageError || error instanceof RangeError)) throw error;
    process.stderr.write(`tunelab generate: ${error.message}\n\n${USAGE}`);
    return 2;
  }

  if (values.adapter) await checkAdapterDirectory(values.adapter as string);
  return withCliGpu(async (gpu) => {
    const modelDir = values.model as string;
    const adapterDir = values.adapter as string | undefined;
    const { tokenizer, model, template: modelTemplate } = await loadCliModel(gpu, modelDir);
    const adapter = adapterDir ? await loadCliAdapter(gpu, model.config, adapterDir) : undefined;
    const template: ChatTemplate | undefined = (adapterDir ? await recordedTemplate(adapterDir) : undefined) ?? modelTemplate;
    const prompt = values.prompt as string;
    const chat = template !== undefined && !values.raw;
    const input: GenerationInput = chat ? { kind: 'completion', prompt } : { kind: 'text', text: prompt };
    const promptIds = chat ? encodeGenerationPrompt(input, tokenizer, template) : tokenizer.encode(prompt);
    // A chat answer starts with the template's text before {content} (a space); it is not part of the answer. Raw
    // completions carry their own text, so nothing is cut from them.
    const templated = chat && !template.rawCompletions;
    let leading = templated ? template.assistant.split('{content}')[0] : '';
    const stream = values.json
      ? undefined
      : (text: string) => {
          if (leading) {
            const cut = Math.min(leading.length, text.length);
            if (text.slice(0, cut) === leading.slice(0, cut)) {
              text = text.slice(cut);
              leading = leading.slice(cut);
            } else leading = '';
          }
          process.stdout.write(text);
        };
    const result = await generateTokens(gpu, model, adapter, tokenizer, promptIds, options, stream);
    const answer = templated ? answerFromGenerated(result.text, template, tokenizer.endOfText) : result.text;
    if (values.json) {
      process.stdout.write(
        JSON.stringify({
          prompt,
          promptKind: input.kind,
          text: answer,
          reason: result.reason,
          promptTokens: result.promptTokens,
          newTokens: result.tokens.length,
          tokensPerSecond: result.tokensPerSecond,
        }) + '\n',
      );
    } else {
      process.stdout.write('\n');
      process.stderr.write(`tunelab generate: ${result.tokens.length} tokens, stopped by ${result.reason}, ${result.tokensPerSecond.toFixed(1)} tok/s\n`);
    }
    adapter?.destroy();
    model.destroy();
    return 0;
  });
}
