// Joining sharded safetensors checkpoints: the joined file parses and holds every tensor bit for bit (F16 kept as
// F16), and an index or shards that do not agree are refused with a message naming the tensor or file, quoted short
// however damaged the value.

import { describe, expect, it } from 'vitest';
import { TunelabError } from '../../src/engine/errors.ts';
import { mergeSafetensorsShards, parseShardIndex } from '../../src/engine/hub/shards.ts';
import { parseSafetensors, readTensorF32, writeSafetensors } from '../../src/engine/io/safetensors.ts';

const encode = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));
const values = (n: number, offset: number) => Float32Array.from({ length: n }, (_, i) => (i + offset) / 8);

const shardA = writeSafetensors(
  [
    { name: 'h.0.attn.c_attn.weight', shape: [2, 3], data: values(6, 0) },
    { name: '10.weight', shape: [3], data: values(3, 10) },
  ],
  { metadata: { format: 'pt' } },
);
const shardB = writeSafetensors([{ name: 'wte.weight', shape: [5, 2], data: values(10, 20) }], { dtype: 'F16' });
const weightMap = new Map([
  ['h.0.attn.c_attn.weight', 'a.safetensors'],
  ['10.weight', 'a.safetensors'],
  ['wte.weight', 'b.safetensors'],
]);

describe('mergeSafetensorsShards', () => {
  it('joins shards into one valid file with every tensor unchanged', () => {
    const joined = parseSafetensors(mergeSafetensorsShards([{ name: 'a.safetensors', bytes: shardA }, { name: 'b.safetensors', bytes: shardB }], weightMap));
    expect([...joined.tensors.keys()].sort()).toEqual([...weightMap.keys()].sort());
    expect(joined.metadata).toEqual({ format: 'pt' });
    expect(joined.tensors.get('wte.weight')!.dtype).toBe('F16');
    expect(readTensorF32(joined, 'h.0.attn.c_attn.weight')).toEqual(values(6, 0));
    expect(readTensorF32(joined, '10.weight')).toEqual(values(3, 10));
    expect(readTensorF32(joined, 'wte.weight')).toEqual(values(10, 20)); // eighths are exact in f16
  });

  it('refuses shards that disagree with each other or with the index', () => {
    const a = { name: 'a.safetensors', bytes: shardA };
    expect(() => mergeSafetensorsShards([a, { name: 'c.safetensors', bytes: shardA }])).toThrow(/tensor "[^"]+" is in both a\.safetensors and c\.safetensors/);
    expect(() => mergeSafetensorsShards([a], weightMap)).toThrow(/the index lists 1 tensor\(s\) no shard has, such as "wte\.weight"/);
    expect(() => mergeSafetensorsShards([{ name: 'b.safetensors', bytes: shardA }], weightMap)).toThrow(/places in a\.safetensors/);
    expect(() => mergeSafetensorsShards([{ name: 'a.safetensors', bytes: shardA.subarray(0, 20) }])).toThrow(TunelabError);
  });
});

describe('parseShardIndex', () => {
  it('lists the shards in order of first appearance', () => {
    const index = parseShardIndex(encode({ metadata: {}, weight_map: { x: 'm-2.safetensors', y: 'm-1.safetensors', z: 'm-2.safetensors' } }));
    expect(index.shards).toEqual(['m-2.safetensors', 'm-1.safetensors']);
    expect(index.weightMap.get('y')).toBe('m-1.safetensors');
  });

  it('refuses an index that is not one, or that points outside its folder', () => {
    expect(() => parseShardIndex(new TextEncoder().encode('{'))).toThrow(/not valid JSON/);
    expect(() => parseShardIndex(encode({ metadata: {} }))).toThrow(/no "weight_map"/);
    expect(() => parseShardIndex(encode({ weight_map: {} }))).toThrow(/lists no tensors/);
    expect(() => parseShardIndex(encode({ weight_map: { x: '../secret.safetensors' } }))).toThrow(/not a \.safetensors file name/);
    expect(() => parseShardIndex(encode({ weight_map: { x: 'pytorch_model-1.bin' } }))).toThrow(/not a \.safetensors file name/);
    // No file system allows a 256-character name.
    expect(() => parseShardIndex(encode({ weight_map: { x: `${'m'.repeat(244)}.safetensors` } }))).toThrow(/not a \.safetensors file name/);
    expect(parseShardIndex(encode({ weight_map: { x: `${'m'.repeat(243)}.safetensors` } })).shards).toHaveLength(1);
  });

  it('quotes damaged values short: nested 10000 deep, 8000 characters long or objects', () => {
    const refusal = (index: unknown): string => {
      try {
        parseShardIndex(typeof index === 'string' ? new TextEncoder().encode(index) : encode(index));
      } catch (error) {
        expect(error).toBeInstanceOf(TunelabError);
        return (error as Error).message;
      }
      throw new Error('expected a refusal');
    };
    expect(refusal(`{"weight_map":{"x":${'['.repeat(10_000)}1${']'.repeat(10_000)}}}`)).toBe(
      'sharded checkpoint: weight_map gives tensor "x" the file [[[[…]]]], which is not a .safetensors file name',
    );
    expect(refusal({ weight_map: { x: { file: 'a.safetensors' } } })).toMatch(/the file \{"file":"a\.safetensors"\}, which/);
    const long = refusal({ weight_map: { ['t'.repeat(8000)]: '../'.repeat(3000) } });
    expect(long).toMatch(/^sharded checkpoint: weight_map gives tensor "t+… the file "(\.\.\/)+\.*…, which is not/);
    expect(long.length).toBeLessThan(300);
  });

  it('cuts long shard and tensor names in messages about shards that disagree with the index', () => {
    const shardName = `${'m'.repeat(240)}.safetensors`;
    const longTensor = writeSafetensors([{ name: 'w'.repeat(5000), shape: [1], data: [1] }]);
    const message = (() => {
      try {
        mergeSafetensorsShards([{ name: shardName, bytes: longTensor }], new Map([['w'.repeat(5000), 'other.safetensors']]));
      } catch (error) {
        return (error as Error).message;
      }
      return '';
    })();
    expect(message).toMatch(/^sharded checkpoint: m+… holds "w+…, which model\.safetensors\.index\.json places in other\.safetensors$/);
    expect(message.length).toBeLessThan(300);
  });
});
