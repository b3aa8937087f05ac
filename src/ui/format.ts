// Number formatting shared by the panels: byte sizes in binary units, as GPU limits are powers of two.

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
