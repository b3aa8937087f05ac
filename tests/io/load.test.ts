import { describe, expect, it } from 'vitest';
import { TunelabError } from '../../src/engine/errors.ts';
import { parseSafetensors } from '../../src/engine/io/safetensors.ts';
import { TINY, modelConfig } from '../../src/engine/model/config.ts';
import { createModelDirectory } from '../../src/engine/model/init.ts';
import {
  checkTokenizerJson,
  endOfTextId,
  fetchSource,
  loadModel,
  memorySource,
  tokenizerVocabSize,
  type TokenizerJson,
} from '../../src/engine/model/load.ts';
import { byteLevelTokenizerJson } from '../../src/engine/tokenizer/byte-level.ts';

const CONFIG = modelConfig({ nLayer: 1, nHead: 2, nEmbd: 8, nPositions: 16, vocabSize: 257, bosTokenId: 256, eosTokenId: 256 });

function modelFiles(dtype: 'f32' | 'f16' = 'f32'): Record<string, Uint8Array> {
  const tokenizerJson = checkTokenizerJson(byteLevelTokenizerJson());
  return { ...createModelDirectory({ config: CONFIG, seed: 9, dtype, tokenizerJson, tokenizerDescription: 'bytes' }).files };
}

/** A copy of a checkpoint with one element of one tensor overwritten by raw bits (a flipped exponent, say). */
function withElementBits(checkpoint: Uint8Array, tensor: string, element: number, bits: number): Uint8Array {
  const copy = checkpoint.slice();
  const file = parseSafetensors(copy);
  const info = file.tensors.get(tensor)!;
  const view = new DataView(file.data.buffer, file.data.byteOffset);
  if (info.dtype === 'F32') view.setUint32(info.begin + 4 * element, bits, true);
  else view.setUint16(info.begin + 2 * element, bits, true);
  return copy;
}

async function expectBadModel(promise: Promise<unknown>, pattern: RegExp): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, `expected a refusal matching ${pattern}`).toBeInstanceOf(TunelabError);
  expect((error as TunelabError).code).toBe('bad-model');
  expect((error as TunelabError).message).toMatch(pattern);
}

describe('loadModel', () => {
  it('loads a model directory made by createModelDirectory', async () => {
    const files = modelFiles();
    const made = createModelDirectory({
      config: CONFIG,
      seed: 9,
      tokenizerJson: checkTokenizerJson(byteLevelTokenizerJson()),
      tokenizerDescription: 'bytes',
    });
    const model = await loadModel(memorySource(files, 'test model'));
    expect(model.config).toEqual(CONFIG);
    expect(Array.from(model.weights.data)).toEqual(Array.from(made.parameters.data));
    expect(model.tokenizerJson.model.type).toBe('BPE');
    expect(model.checkpointMetadata.format).toBe('pt');
    expect(model.configJson.architectures).toEqual(['GPT2LMHeadModel']);
    expect(model.warnings).toEqual([]);
  });

  for (const name of ['config.json', 'model.safetensors', 'tokenizer.json']) {
    it(`names a missing ${name} and the source`, async () => {
      const files = modelFiles();
      delete files[name];
      await expectBadModel(loadModel(memorySource(files, 'directory models/x')), new RegExp(`directory models/x has no ${name.replace('.', '\\.')}`));
    });
  }

  it('reports broken JSON in config.json and tokenizer.json', async () => {
    const files = modelFiles();
    await expectBadModel(loadModel(memorySource({ ...files, 'config.json': '{"model_type": ' })), /config\.json in .* is not valid JSON/);
    await expectBadModel(loadModel(memorySource({ ...files, 'tokenizer.json': 'nope' })), /tokenizer\.json in .* is not valid JSON/);
    await expectBadModel(loadModel(memorySource({ ...files, 'tokenizer.json': '{"version": "1.0"}' })), /tokenizer\.json has no "model" section/);
    await expectBadModel(loadModel(memorySource({ ...files, 'config.json': new Uint8Array([0xff, 0xfe]) })), /not UTF-8/);
  });

  it('reports an unsupported model_type with the source', async () => {
    const files = modelFiles();
    const config = { ...JSON.parse(new TextDecoder().decode(files['config.json'])), model_type: 'bert' };
    await expectBadModel(loadModel(memorySource({ ...files, 'config.json': JSON.stringify(config) }, 'dir m')), /model_type "bert".*\(in dir m\)/);
  });

  it('reports a truncated checkpoint, naming the file', async () => {
    const files = modelFiles();
    const cut = files['model.safetensors'].subarray(0, files['model.safetensors'].length - 10);
    await expectBadModel(loadModel(memorySource({ ...files, 'model.safetensors': cut }, 'dir m')), /model\.safetensors in dir m: safetensors: tensor "[^"]+": data_offsets .* point outside the data area/);
    await expectBadModel(loadModel(memorySource({ ...files, 'model.safetensors': cut.subarray(0, 100) }, 'dir m')), /model\.safetensors in dir m: .*truncated/);
  });

  it('reports a checkpoint that does not match config.json', async () => {
    const files = modelFiles();
    const bigger = { ...JSON.parse(new TextDecoder().decode(files['config.json'])), n_layer: 2 };
    await expectBadModel(loadModel(memorySource({ ...files, 'config.json': JSON.stringify(bigger) })), /no tensor h\.1\.ln_1\.weight/);
  });

  it('refuses a tokenizer whose ids do not fit the vocabulary', async () => {
    const files = modelFiles();
    const config = { ...JSON.parse(new TextDecoder().decode(files['config.json'])) };
    const tokenizer = byteLevelTokenizerJson() as TokenizerJson;
    tokenizer.added_tokens = [...(tokenizer.added_tokens as object[]), { id: 300, content: '<x>', special: true }];
    await expectBadModel(
      loadModel(memorySource({ ...files, 'config.json': JSON.stringify(config), 'tokenizer.json': JSON.stringify(tokenizer) })),
      /token ids up to 300, but config\.json's vocab_size is 257/,
    );
  });

  it('refuses NaN or infinite weights (bit flips in a download), naming the file, the tensor and the element', async () => {
    for (const [dtype, bits, shown] of [
      ['f32', 0x7fc00000, 'NaN'],
      ['f32', 0xff800000, '-Infinity'],
      ['f16', 0x7c00, 'Infinity'],
      ['f16', 0x7e01, 'NaN'],
    ] as const) {
      const files = modelFiles(dtype);
      const checkpoint = withElementBits(files['model.safetensors'], 'h.0.attn.c_attn.weight', 5, bits);
      await expectBadModel(
        loadModel(memorySource({ ...files, 'model.safetensors': checkpoint })),
        new RegExp(`^model\\.safetensors in in-memory model: .*tensor "h\\.0\\.attn\\.c_attn\\.weight" holds ${shown} at element 5 of 192`),
      );
    }
    // The same bits in a finite pattern load: the check is for non-finite values only.
    const files = modelFiles('f16');
    const finite = withElementBits(files['model.safetensors'], 'h.0.attn.c_attn.weight', 5, 0x7bff);
    expect((await loadModel(memorySource({ ...files, 'model.safetensors': finite }))).weights.data).toContain(65504);
  });

  it('refuses a tokenizer.json whose ids are not token ids before anything is sized by them', async () => {
    const files = modelFiles();
    const tokenizer = byteLevelTokenizerJson() as TokenizerJson & { model: { vocab: Record<string, unknown> } };
    tokenizer.model.vocab.extra = [20_000_000];
    const started = performance.now();
    await expectBadModel(
      loadModel(memorySource({ ...files, 'tokenizer.json': JSON.stringify(tokenizer) })),
      /tokenizer\.json: model\.vocab gives "extra" the id \[20000000\]; token ids must be whole numbers from 0 to 16777215/,
    );
    expect(performance.now() - started).toBeLessThan(2000);
  });

  it('fetchSource treats 404 as missing and other failures as errors', async () => {
    const files = modelFiles();
    const fakeFetch = (async (url: string | URL | Request) => {
      const name = String(url).split('/').pop()!;
      if (name === 'tokenizer.json') return new Response('server down', { status: 500 });
      const body = files[name];
      return body ? new Response(new Uint8Array(body)) : new Response('', { status: 404 });
    }) as typeof fetch;
    const source = fetchSource('https://example.test/models/tiny', fakeFetch);
    expect(await source.read('nothing.json')).toBeNull();
    expect(Array.from((await source.read('config.json'))!)).toEqual(Array.from(files['config.json']));
    await expectBadModel(loadModel(source), /could not fetch https:\/\/example\.test\/models\/tiny\/tokenizer\.json: HTTP 500/);
  });
});

describe('tokenizer.json helpers', () => {
  it('sizes vocabularies and finds end of text', () => {
    const bytes = checkTokenizerJson(byteLevelTokenizerJson());
    expect(tokenizerVocabSize(bytes)).toBe(257);
    expect(endOfTextId(bytes)).toBe(256);
    const unigram = checkTokenizerJson({ model: { type: 'Unigram', vocab: [['a', 0], ['b', -1], ['</s>', 0]] }, added_tokens: [{ id: 2, content: '</s>', special: true }] });
    expect(tokenizerVocabSize(unigram)).toBe(3);
    expect(endOfTextId(unigram)).toBe(2);
    expect(tokenizerVocabSize(checkTokenizerJson({ model: { type: 'Custom' } }))).toBeUndefined();
    // Ids that are not token ids are refused by both, naming the entry, rather than skipped or taken as sizes.
    const badAdded = { model: { vocab: { a: 0 } }, added_tokens: [{ id: 'Ġ t', content: '<|endoftext|>', special: true }] };
    expect(() => checkTokenizerJson(badAdded, 'x/tokenizer.json')).toThrow(/^x\/tokenizer\.json: added_tokens\[0\] has the id "Ġ t"/);
    expect(() => tokenizerVocabSize(badAdded as unknown as TokenizerJson)).toThrow(TunelabError);
    expect(() => checkTokenizerJson({ model: { vocab: { a: '20000000' } } })).toThrow(/model\.vocab gives "a" the id "20000000"/);
    expect(tokenizerVocabSize(checkTokenizerJson({ model: { vocab: { a: 2 ** 24 - 1 } } }))).toBe(2 ** 24);
    // endOfTextId never hands back an id that is not one, even for JSON that skipped the check.
    expect(endOfTextId({ model: {}, added_tokens: [{ id: 1.5, content: '<|endoftext|>' }] } as TokenizerJson)).toBeUndefined();
    expect(TINY.vocabSize).toBe(257);
  });
});
