// The models that ship with the app (public/models/<name>/) and which one a visit starts with: the pretrained base
// model, unless the page's address names another bundled one with `?model=NAME` (the end-to-end tests start with
// `?model=tiny`, a small random model that loads and trains in seconds on a software GPU). Only names from the fixed
// list below are accepted, never a path or a URL, so the address cannot make the page fetch anything else.

/** Every bundled model by folder name, with one line on what it is for. */
export const BUNDLED_MODELS = {
  'tunelab-base': 'the pretrained base model (10M parameters, English prose), the default',
  tiny: 'a tiny model with random weights, for tests',
} as const;

export type BundledModelName = keyof typeof BUNDLED_MODELS;

export const DEFAULT_BUNDLED_MODEL: BundledModelName = 'tunelab-base';

/** The query parameter that picks a bundled model: `?model=tiny`. */
export const BUNDLED_MODEL_PARAMETER = 'model';

export interface BundledModel {
  name: BundledModelName;
  /** Relative to the page (the app is served from any sub-path). */
  path: `models/${BundledModelName}/`;
}

export interface BundledModelChoice extends BundledModel {
  /** Why the model the address asked for was not used; absent when it was (or none was asked for). */
  notice?: string;
}

function isBundledName(name: string): name is BundledModelName {
  return Object.hasOwn(BUNDLED_MODELS, name);
}

export function bundledModel(name: BundledModelName): BundledModel {
  return { name, path: `models/${name}/` };
}

/**
 * The bundled model a page at `search` (location.search, "?model=tiny&…") starts with: the one `?model=` names when
 * that is a bundled model's name, else the default, with a notice saying why when the address asked for something else.
 */
export function chooseBundledModel(search: string): BundledModelChoice {
  const requested = new URLSearchParams(search).get(BUNDLED_MODEL_PARAMETER);
  if (requested === null) return bundledModel(DEFAULT_BUNDLED_MODEL);
  if (isBundledName(requested)) return bundledModel(requested);
  const known = Object.keys(BUNDLED_MODELS).join(', ');
  // The name is the user's text: shown as text (never HTML), and shortened so an address full of junk stays readable.
  const shown = requested.length > 60 ? `${requested.slice(0, 60)}…` : requested;
  return {
    ...bundledModel(DEFAULT_BUNDLED_MODEL),
    notice:
      `The page address asks for a built-in model named “${shown}”, and there is none. ` +
      `?${BUNDLED_MODEL_PARAMETER}= takes one of: ${known}. The default model, ${DEFAULT_BUNDLED_MODEL}, is loaded instead.`,
  };
}
