/**
 * How `ringrun bench` shows numbers to people: sizes in binary units, and a bar for busbw on a log
 * scale, so that rows from 4 B (microseconds, ~0 GB/s) to 64 MiB fit one column. Pure functions.
 */

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/** `4 B`, `64 KiB`, `1.5 MiB`, `3.99 MiB`: whole numbers as they are, others to 3 significant digits. */
export function humanBytes(bytes: number): string {
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  const text = Number.isInteger(v) ? String(v) : v.toPrecision(3).replace(/\.?0+$/, '');
  return `${text} ${UNITS[u]}`;
}

/** The scale of the bar: one decade of GB/s per BAR_DECADE cells, from BAR_MIN_GBS up. */
export const BAR_MIN_GBS = 0.01;
export const BAR_DECADE = 6;
export const BAR_DECADES = 4;
const EIGHTHS = ['', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];

/** A bar whose length grows with log10(busbw): empty at 0.01 GB/s, 24 cells at 100 GB/s. */
export function busbwBar(gbs: number): string {
  if (!(gbs > BAR_MIN_GBS)) return '';
  const cells = Math.min(BAR_DECADE * BAR_DECADES, Math.log10(gbs / BAR_MIN_GBS) * BAR_DECADE);
  const whole = Math.floor(cells);
  return '█'.repeat(whole) + EIGHTHS[Math.floor((cells - whole) * 8)];
}

/** The header of the bar column: where each decade starts. */
export function busbwBarScale(): string {
  let s = '';
  for (let d = 0; d < BAR_DECADES; d++) s += `|${String(BAR_MIN_GBS * 10 ** d)}`.padEnd(BAR_DECADE);
  return `${s}|${BAR_MIN_GBS * 10 ** BAR_DECADES} GB/s`;
}
