// Which bundled model a visit starts with (src/ui/state/bundled-models.ts): the default, or the one `?model=` names,
// and only names from the fixed list: anything else (paths, URLs, unknown names) gives the default and a notice.

import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { BUNDLED_MODELS, chooseBundledModel, DEFAULT_BUNDLED_MODEL } from '../../src/ui/state/bundled-models.ts';

describe('chooseBundledModel', () => {
  it('starts with tunelab-base when the address names no model', () => {
    expect(DEFAULT_BUNDLED_MODEL).toBe('tunelab-base');
    expect(chooseBundledModel('')).toEqual({ name: 'tunelab-base', path: 'models/tunelab-base/' });
    expect(chooseBundledModel('?other=1')).toEqual({ name: 'tunelab-base', path: 'models/tunelab-base/' });
  });

  it('takes any bundled model by name, and each one is a folder under public/models/', () => {
    expect(chooseBundledModel('?model=tiny')).toEqual({ name: 'tiny', path: 'models/tiny/' });
    expect(chooseBundledModel('?x=1&model=tunelab-base')).toEqual({ name: 'tunelab-base', path: 'models/tunelab-base/' });
    for (const name of Object.keys(BUNDLED_MODELS)) {
      for (const file of ['config.json', 'model.safetensors', 'tokenizer.json', 'MODEL_CARD.md']) {
        expect(existsSync(new URL(`../../public/models/${name}/${file}`, import.meta.url)), `${name}/${file}`).toBe(true);
      }
    }
  });

  it('refuses paths, URLs and unknown names: the default model, and a notice naming what was asked and what exists', () => {
    const asked = ['../tiny', 'tiny/', '/models/tiny', 'https://example.com/models/tiny/', 'TINY', 'toString', '__proto__', ''];
    for (const name of asked) {
      const choice = chooseBundledModel(`?model=${encodeURIComponent(name)}`);
      expect(choice.name, name).toBe('tunelab-base');
      expect(choice.path, name).toBe('models/tunelab-base/');
      expect(choice.notice, name).toBe(
        `The page address asks for a built-in model named “${name}”, and there is none. ?model= takes one of: ` +
          'tunelab-base, tiny. The default model, tunelab-base, is loaded instead.',
      );
    }
    // A long value is cut in the message.
    const long = chooseBundledModel(`?model=${'x'.repeat(500)}`).notice!;
    expect(long).toContain(`“${'x'.repeat(60)}…”`);
    expect(long.length).toBeLessThan(250);
  });
});
