// `tunelab generate`: text from a model directory, optionally with a LoRA adapter (PEFT files), streamed to stdout
// token by token as it is made (or one JSON object with --json). Decoding is the engine's Generator: one prefill of
// the prompt into a KV cache, then one single-position pass per new token. A model or adapter that `tunelab train`
// made is prompted through the chat template it was trained with (recorded in its training_config.json), so the
// question arrives as it did in training; any other model continues the prompt as plain text. Ctrl-C stops the
// generation after the current token.

import { answerFromGenerated, encodeGenerationPrompt, type ChatTemplate, type GenerationInput } from '../engine/data/index.ts';
import { Generator } from '../engine/generate/generator.ts';
import { samplingOptions, type SamplingOptions } from '../engine/generate/sampling.ts';
import type { LoraAdapter } from '../engine/model/lora.ts';
import {
  checkAdapterDirectory,
  loadCliAdapter,
  loadCliModel,
  MODEL_OPTION_HELP,
  modelDirOrDefault,
  parseNumber,
  parseWhole,
  recordedTemplate,
  runCommand,
  UsageError,
  withCliGpu,
  type OptionValues,
} from './common.ts';

const USAGE = `usage: tunelab generate [--model DIR] [--adapter DIR] --prompt TEXT [options]

${MODEL_OPTION_HELP}
  --adapter DIR               a LoRA adapter (adapter_config.json + adapter_model.safetensors)
  --f16-weights               keep the frozen weight matrices as f16 on the GPU (half their memory; f32 math)
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

const OPTIONS = {
  model: { type: 'string' },
  adapter: { type: 'string' },
  'f16-weights': { type: 'boolean', default: false },
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
} as const;

/** The sampling options given on the command line, on top of sampling.ts's defaults. */
function sampling(values: OptionValues): SamplingOptions {
  const s = (name: string) => values[name] as string | undefined;
  const given: Partial<SamplingOptions> = {};
  const set = <K extends keyof SamplingOptions>(key: K, value: SamplingOptions[K] | undefined) => {
    if (value !== undefined) given[key] = value;
  };
  set('maxNewTokens', parseWhole(s('max-new-tokens'), 'max-new-tokens', 1));
  set('temperature', parseNumber(s('temperature'), 'temperature', (v) => v >= 0, 'a number ≥ 0'));
  set('topK', parseWhole(s('top-k'), 'top-k'));
  set('topP', parseNumber(s('top-p'), 'top-p', (v) => v > 0 && v <= 1, 'a number in (0, 1]'));
  set('repetitionPenalty', parseNumber(s('repetition-penalty'), 'repetition-penalty', (v) => v > 0, 'a positive number'));
  set('seed', parseNumber(s('seed'), 'seed', (v) => Number.isSafeInteger(v), 'a whole number'));
  if (values.stop) set('stopStrings', values.stop as string[]);
  try {
    return samplingOptions(given);
  } catch (error) {
    if (error instanceof RangeError) throw new UsageError(error.message);
    throw error;
  }
}

/**
 * Writes the answer as it grows. The Generator hands over a growing prefix of the text (held back where a stop
 * string or a character may still be incomplete); a chat answer also starts with the template's text before
 * {content} (a space), which is not part of the answer and is not shown.
 */
export function answerStream(leading: string, write: (text: string) => void): (text: string) => void {
  let shown = 0;
  return (text) => {
    let start = shown;
    // Skip the leading text while the answer agrees with it; an answer that does not start with it is shown whole.
    if (shown === 0 && leading) {
      const cut = Math.min(leading.length, text.length);
      if (text.slice(0, cut) !== leading.slice(0, cut)) leading = '';
      else if (cut < leading.length) return;
      else start = leading.length;
    }
    if (text.length > start) write(text.slice(start));
    shown = Math.max(shown, text.length, start);
  };
}

export function generate(args: string[]): Promise<number> {
  return runCommand({ name: 'generate', usage: USAGE, options: OPTIONS }, args, async (values) => {
    if (values.prompt === undefined) throw new UsageError('--prompt TEXT is required');
    const options = sampling(values);
    const modelDir = modelDirOrDefault(values.model as string | undefined, 'generate');
    const adapterDir = values.adapter as string | undefined;
    if (adapterDir) await checkAdapterDirectory(adapterDir);
    return withCliGpu(async (gpu) => {
      const warn = (message: string) => process.stderr.write(`tunelab generate: warning: ${message}\n`);
      const { tokenizer, model, template: modelTemplate } = await loadCliModel(gpu, modelDir, { frozenWeights: values['f16-weights'] ? 'f16' : 'f32' });
      let adapter: LoraAdapter | undefined;
      let generator: Generator | undefined;
      const stop = new AbortController();
      const onSigint = () => stop.abort();
      try {
        adapter = adapterDir ? await loadCliAdapter(gpu, model.config, adapterDir, warn) : undefined;
        const template: ChatTemplate | undefined = (adapterDir ? await recordedTemplate(adapterDir) : undefined) ?? modelTemplate;
        const prompt = values.prompt as string;
        const chat = template !== undefined && !values.raw;
        const input: GenerationInput = chat ? { kind: 'completion', prompt } : { kind: 'text', text: prompt };
        const promptIds = chat ? encodeGenerationPrompt(input, tokenizer, template) : tokenizer.encode(prompt);
        // Raw completions carry their own text, so nothing is cut from them.
        const templated = chat && !template.rawCompletions;
        const leading = templated ? template.assistant.split('{content}')[0] : '';
        const stream = values.json ? undefined : answerStream(leading, (text) => process.stdout.write(text));

        generator = await Generator.create(gpu, model, { tokenizer, adapter });
        process.once('SIGINT', onSigint);
        const result = await generator.generate(promptIds, options, stream && ((_token, text) => stream(text)), stop.signal);
        const answer = templated ? answerFromGenerated(result.text, template, tokenizer.endOfText) : result.text;
        if (values.json) {
          process.stdout.write(
            JSON.stringify({
              prompt,
              promptKind: input.kind,
              text: answer,
              reason: result.stopReason,
              promptTokens: result.promptTokens,
              newTokens: result.ids.length,
              tokensPerSecond: result.tokensPerSecond,
            }) + '\n',
          );
        } else {
          process.stdout.write('\n');
          process.stderr.write(
            `tunelab generate: ${result.ids.length} tokens, stopped by ${result.stopReason}, ${result.tokensPerSecond.toFixed(1)} tok/s\n`,
          );
        }
        return 0;
      } finally {
        process.off('SIGINT', onSigint);
        generator?.destroy();
        adapter?.destroy();
        model.destroy();
      }
    });
  });
}
