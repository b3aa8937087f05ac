// Number formatting shared by the panels: byte sizes in binary units (GPU limits are powers of two), counts,
// percentages and plurals.

const BYTE_UNITS = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'] as const;

/** 134217728 → "128 MiB", 4294967292 → "4 GiB" (rounded to at most one decimal). */
export function formatBytes(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < BYTE_UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  const rounded = unit === 0 ? String(value) : String(Math.round(value * 10) / 10);
  return `${rounded} ${BYTE_UNITS[unit]}`;
}

/** 4294967292 → "4,294,967,292 bytes", for a tooltip beside the rounded figure. */
export function formatExactBytes(bytes: number): string {
  return `${bytes.toLocaleString('en-US')} bytes`;
}

/** 124736 → "124,736". */
export function formatCount(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

/** 63.28 → "63.3": at most one decimal, none for whole numbers. */
export function formatMean(n: number): string {
  return String(Math.round(n * 10) / 10);
}

/** 0.1 → "10%", 0.125 → "12.5%". */
export function formatPercent(fraction: number): string {
  return `${Math.round(fraction * 1000) / 10}%`;
}

/** "1 example", "3 examples". */
export function plural(n: number, singular: string, pluralForm = `${singular}s`): string {
  return `${formatCount(n)} ${n === 1 ? singular : pluralForm}`;
}
