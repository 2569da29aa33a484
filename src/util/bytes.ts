// Human byte sizes: parse "8GB", "256KB", "1.5GiB", "100k" and print them back.
import { UsageError } from "../errors.js";

const units: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1e3,
  kb: 1e3,
  kib: 1024,
  m: 1e6,
  mb: 1e6,
  mib: 1024 ** 2,
  g: 1e9,
  gb: 1e9,
  gib: 1024 ** 3,
  t: 1e12,
  tb: 1e12,
  tib: 1024 ** 4,
};

/** Parses a byte size; decimal units (KB = 1000) unless the binary form (KiB) is written. */
export function parseBytes(text: string, what = "size"): number {
  const m = /^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = m ? units[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) {
    throw new UsageError(
      "BAD_SIZE",
      `${what}: cannot read "${text}" as a byte size`,
      'write it like "8GB", "512MiB" or "0"',
    );
  }
  return Math.round(Number(m[1]) * unit);
}

/** Parses a token count such as "100k", "32768" or "1.5M" (k = 1000 as users write context sizes). */
export function parseCount(text: string, what = "count"): number {
  const m = /^\s*([0-9]*\.?[0-9]+)\s*([kKmM]?)\s*$/.exec(text);
  if (!m)
    throw new UsageError("BAD_COUNT", `${what}: cannot read "${text}" as a number`, 'write it like "8192" or "100k"');
  const scale = m[2] === "" ? 1 : m[2]!.toLowerCase() === "k" ? 1000 : 1e6;
  return Math.round(Number(m[1]) * scale);
}

export function formatBytes(n: number): string {
  const abs = Math.abs(n);
  if (abs < 1024) return `${n} B`;
  const names = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < names.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${names[i]}`;
}
