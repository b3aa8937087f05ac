// Sharded checkpoints: model.safetensors.index.json ({"weight_map": {tensor name: shard file}}) and the shards it names
// (model-00001-of-00002.safetensors, ...). The loader reads one model.safetensors, so the shards are joined into one
// valid safetensors file: the tensors' raw bytes copied unchanged, one header listing them all.

import { describeValue, shortText } from '../describe.ts';
import { TunelabError } from '../errors.ts';
import { parseSafetensors, type SafetensorsFile } from '../io/safetensors.ts';

function bad(message: string): TunelabError {
  return new TunelabError('bad-model', `sharded checkpoint: ${message}`);
}

/** The shard files an index names, in their first appearance order, and the tensor → shard map. */
export function parseShardIndex(bytes: Uint8Array): { shards: string[]; weightMap: Map<string, string> } {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (error) {
    throw bad(`model.safetensors.index.json is not valid JSON (${error instanceof Error ? error.message : String(error)})`);
  }
  const map = (json as { weight_map?: unknown } | null)?.weight_map;
  if (typeof map !== 'object' || map === null || Array.isArray(map)) {
    throw bad('model.safetensors.index.json has no "weight_map" object');
  }
  const weightMap = new Map<string, string>();
  const shards: string[] = [];
  for (const [tensor, file] of Object.entries(map)) {
    // Shards sit beside the index; a path that climbs out or is absolute is not a shard, nor is a name no file system
    // allows (over 255 characters).
    if (typeof file !== 'string' || !/^[\w.-]+\.safetensors$/.test(file) || file.startsWith('.') || file.length > 255) {
      throw bad(
        `weight_map gives tensor ${describeValue(tensor, 120)} the file ${describeValue(file)}, which is not a .safetensors file name`,
      );
    }
    weightMap.set(tensor, file);
    if (!shards.includes(file)) shards.push(file);
  }
  if (shards.length === 0) throw bad('model.safetensors.index.json lists no tensors');
  return { shards, weightMap };
}

/**
 * One safetensors file holding every tensor of the shards (each shard checked by the strict parser first). Throws
 * when a tensor is in two shards, or when `weightMap` is given and a shard holds a tensor the index does not place
 * there or the index lists a tensor no shard has. Metadata is the first shard's.
 */
export function mergeSafetensorsShards(
  shards: readonly { name: string; bytes: Uint8Array }[],
  weightMap?: ReadonlyMap<string, string>,
): Uint8Array {
  const parsed: { name: string; file: SafetensorsFile }[] = shards.map(({ name, bytes }) => {
    try {
      return { name, file: parseSafetensors(bytes) };
    } catch (error) {
      throw bad(`${shortText(name)}: ${error instanceof Error ? error.message : describeValue(error)}`);
    }
  });
  const seen = new Map<string, string>();
  const entries: string[] = [];
  let offset = 0;
  for (const { name, file } of parsed) {
    for (const info of file.tensors.values()) {
      const before = seen.get(info.name);
      if (before !== undefined) {
        throw bad(`tensor ${describeValue(info.name, 120)} is in both ${shortText(before)} and ${shortText(name)}`);
      }
      if (weightMap && weightMap.get(info.name) !== name) {
        throw bad(
          `${shortText(name)} holds ${describeValue(info.name, 120)}, which model.safetensors.index.json places in ` +
            `${shortText(weightMap.get(info.name) ?? 'no shard')}`,
        );
      }
      seen.set(info.name, name);
      const length = info.end - info.begin;
      // Keys in data order, written by hand: JSON.stringify of an object would move integer-like names first.
      entries.push(
        `${JSON.stringify(info.name)}:${JSON.stringify({ dtype: info.dtype, shape: info.shape, data_offsets: [offset, offset + length] })}`,
      );
      offset += length;
    }
  }
  if (weightMap) {
    const missing = [...weightMap.keys()].filter((t) => !seen.has(t));
    if (missing.length) throw bad(`the index lists ${missing.length} tensor(s) no shard has, such as ${describeValue(missing[0], 120)}`);
  }
  const metadata = parsed[0]?.file.metadata ?? {};
  if (Object.keys(metadata).length) entries.unshift(`"__metadata__":${JSON.stringify(metadata)}`);
  let header = `{${entries.join(',')}}`;
  const encoder = new TextEncoder();
  header += ' '.repeat((8 - (encoder.encode(header).length % 8)) % 8); // 8-byte aligned data, as writers do
  const headerBytes = encoder.encode(header);

  const out = new Uint8Array(8 + headerBytes.length + offset);
  const view = new DataView(out.buffer);
  view.setUint32(0, headerBytes.length % 2 ** 32, true);
  view.setUint32(4, Math.floor(headerBytes.length / 2 ** 32), true);
  out.set(headerBytes, 8);
  let position = 8 + headerBytes.length;
  for (const { file } of parsed) {
    for (const info of file.tensors.values()) {
      out.set(file.data.subarray(info.begin, info.end), position);
      position += info.end - info.begin;
    }
  }
  return out;
}
