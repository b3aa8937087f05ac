// Fuzz test of sharded checkpoints from the Hub: model.safetensors.index.json (parseShardIndex) and the joining of
// its shards (mergeSafetensorsShards), over thousands of seeded damaged indexes and shards. Each ends in a joined
// file that parses and holds exactly the indexed tensors, or a TunelabError('bad-model'), quickly.

import { describe, expect, it } from 'vitest';
import { mergeSafetensorsShards, parseShardIndex } from '../../src/engine/hub/shards.ts';
import { parseSafetensors, writeSafetensors } from '../../src/engine/io/safetensors.ts';
import type { Rng } from '../../src/engine/random.ts';
import {
  encodeUtf8,
  expectEachResultOrTunelabError,
  fuzz,
  mutateBytes,
  mutateJson,
  mutateText,
  pick,
  preview,
  randomJson,
  summary,
  withDeepValue,
} from './helpers.ts';
import { HANG_MS } from './helpers.ts';

const values = (n: number, offset: number) => Float32Array.from({ length: n }, (_, i) => (i + offset) / 8);

const SHARD_FILES: Record<string, Uint8Array> = {
  'model-00001-of-00002.safetensors': writeSafetensors(
    [
      { name: 'wte.weight', shape: [5, 2], data: values(10, 0) },
      { name: 'h.0.attn.c_attn.weight', shape: [2, 6], data: values(12, 10) },
    ],
    { metadata: { format: 'pt' } },
  ),
  'model-00002-of-00002.safetensors': writeSafetensors([{ name: 'ln_f.weight', shape: [2], data: values(2, 30) }], { dtype: 'F16' }),
};

const INDEX = {
  metadata: { total_size: 96 },
  weight_map: {
    'wte.weight': 'model-00001-of-00002.safetensors',
    'h.0.attn.c_attn.weight': 'model-00001-of-00002.safetensors',
    'ln_f.weight': 'model-00002-of-00002.safetensors',
  },
};

const KEYS = ['weight_map', 'metadata', 'total_size', 'wte.weight', 'h.0.attn.c_attn.weight', 'ln_f.weight', 'model-00001-of-00002.safetensors'];
const VALUES = [
  'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model-00003-of-00002.safetensors',
  '../model-00001-of-00002.safetensors', '/model.safetensors', '.hidden.safetensors', 'model.safetensors', 'model.bin',
  'sub/model.safetensors', 'C:\\model.safetensors', 'model-00001-of-00002.safetensors\n',
];

interface ShardInput {
  index: Uint8Array;
  /** The shards a download would fetch for that index (by the names it lists), some damaged or missing. */
  shards: { name: string; bytes: Uint8Array }[];
}

function generate(rng: Rng): ShardInput {
  const text = JSON.stringify(INDEX);
  let index: Uint8Array;
  switch (rng.int(6)) {
    case 0:
      index = encodeUtf8(mutateText(rng, text));
      break;
    case 1:
      index = mutateBytes(rng, encodeUtf8(text));
      break;
    case 2:
      index = encodeUtf8(JSON.stringify(randomJson(rng, KEYS, VALUES)));
      break;
    case 3:
      index = encodeUtf8(text);
      break;
    default:
      index = encodeUtf8(JSON.stringify(mutateJson(rng, INDEX, KEYS, VALUES)));
  }
  // The shards: the two real ones under their own names, then damaged, renamed, duplicated or left out.
  let shards = Object.entries(SHARD_FILES).map(([name, bytes]) => ({ name, bytes }));
  for (let r = rng.int(3); r > 0; r--) {
    const at = rng.int(shards.length + 1);
    switch (rng.int(5)) {
      case 0:
        if (shards[at]) shards[at] = { ...shards[at], bytes: mutateBytes(rng, shards[at].bytes) };
        break;
      case 1:
        if (shards[at]) shards[at] = { ...shards[at], name: pick(rng, VALUES) as string };
        break;
      case 2:
        shards.splice(at, 1);
        break;
      case 3:
        shards.push(pick(rng, Object.entries(SHARD_FILES).map(([name, bytes]) => ({ name, bytes }))));
        break;
      default:
        shards = [...shards].reverse();
    }
  }
  return { index, shards };
}

/** What the Hub loader does: read the index, fetch its shards, join them, and read the joined file. */
function readSharded(input: ShardInput): Uint8Array {
  const { weightMap } = parseShardIndex(input.index);
  const joined = mergeSafetensorsShards(input.shards, weightMap);
  return joined;
}

const CASES = 15_000;

describe('fuzz: sharded checkpoints', () => {
  it('the base index and shards join (so the fuzzer starts from working files)', () => {
    const joined = parseSafetensors(readSharded({ index: encodeUtf8(JSON.stringify(INDEX)), shards: Object.entries(SHARD_FILES).map(([name, bytes]) => ({ name, bytes })) }));
    expect([...joined.tensors.keys()].sort()).toEqual(Object.keys(INDEX.weight_map).sort());
  });

  it(`parseShardIndex and mergeSafetensorsShards give a valid joined file or a bad-model TunelabError (${CASES} seeded inputs)`, async () => {
    const outcome = await fuzz<ShardInput>({
      seed: 4404,
      cases: CASES,
      generate,
      parse: readSharded,
      show: (input) => `index: ${preview(input.index, 400)}\nshards: ${input.shards.map((s) => `${s.name} (${s.bytes.length} bytes)`).join(', ')}`,
      check(result, input) {
        const joined = parseSafetensors(result as Uint8Array);
        const { weightMap } = parseShardIndex(input.index);
        expect([...joined.tensors.keys()].sort()).toEqual([...weightMap.keys()].sort());
      },
    });
    console.log(summary('sharded checkpoint', outcome));
    expect(outcome.accepted).toBeGreaterThan(300);
    expect(outcome.refused).toBeGreaterThan(2000);
    expect(outcome.refusals.size).toBeGreaterThan(12);
    expect(outcome.slowestMs).toBeLessThan(HANG_MS);
  });

  it('an index nested thousands deep ends in a result or a TunelabError, not a stack overflow', async () => {
    const shards = Object.entries(SHARD_FILES).map(([name, bytes]) => ({ name, bytes }));
    await expectEachResultOrTunelabError(
      [['weight_map'], ['weight_map', 'wte.weight'], ['metadata']].flatMap((path) =>
        [false, true].map((asObject) => ({
          label: `${path.join('.')} nested 10000 deep (${asObject ? 'objects' : 'arrays'})`,
          call: () => mergeSafetensorsShards(shards, parseShardIndex(encodeUtf8(withDeepValue(INDEX, path, 10_000, asObject))).weightMap),
        })),
      ),
    );
  });
});
