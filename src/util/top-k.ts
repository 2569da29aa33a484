// The best entries of a row of scores in the order a stable descending sort gives them (equal scores: lower index
// first; NaN ranks last), found in linear time plus a sort of the k chosen.

/** Indices of the `k` largest of `values` (k clamped to its length), best first. */
export function topIndices(values: ArrayLike<number>, k: number): Int32Array {
  const n = values.length;
  k = Math.max(0, Math.min(Math.floor(k), n));
  const keys = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const v = values[i]!;
    keys[i] = v === v ? v : -Infinity;
  }
  if (k <= 16) return insertionTop(keys, k);
  const byRank = (a: number, b: number) => keys[b]! - keys[a]! || a - b;
  if (k * 4 >= n)
    return Int32Array.from({ length: n }, (_, i) => i)
      .sort(byRank)
      .slice(0, k);
  const threshold = kthLargest(Float64Array.from(keys), k);
  const chosen = new Int32Array(k);
  let m = 0;
  for (let i = 0; i < n && m < k; i++) if (keys[i]! > threshold) chosen[m++] = i;
  for (let i = 0; i < n && m < k; i++) if (keys[i] === threshold) chosen[m++] = i;
  return chosen.sort(byRank);
}

/** A few best: one pass keeping them sorted (a later equal value never passes an earlier one). */
function insertionTop(keys: Float64Array, k: number): Int32Array {
  const ids = new Int32Array(k);
  const best = new Float64Array(k);
  let m = 0;
  for (let i = 0; i < keys.length; i++) {
    const v = keys[i]!;
    if (m === k && !(v > best[k - 1]!)) continue;
    let j = m < k ? m++ : k - 1;
    for (; j > 0 && v > best[j - 1]!; j--) {
      best[j] = best[j - 1]!;
      ids[j] = ids[j - 1]!;
    }
    best[j] = v;
    ids[j] = i;
  }
  return ids;
}

/** topIndices of each row of `values` [rows, cols], and those values: [rows * k] each. */
export function topKRows(
  values: Float32Array,
  rows: number,
  cols: number,
  k: number,
): { ids: Int32Array; values: Float32Array } {
  const out = { ids: new Int32Array(rows * k), values: new Float32Array(rows * k) };
  for (let r = 0; r < rows; r++) {
    const row = values.subarray(r * cols, (r + 1) * cols);
    const ids = topIndices(row, k);
    out.ids.set(ids, r * k);
    for (let i = 0; i < ids.length; i++) out.values[r * k + i] = row[ids[i]!]!;
  }
  return out;
}

/** The k-th largest value of `a` (1-based; reorders `a`): quickselect with a median-of-three pivot. */
function kthLargest(a: Float64Array, k: number): number {
  const target = k - 1;
  let lo = 0;
  let hi = a.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const x = a[lo]!,
      y = a[mid]!,
      z = a[hi]!;
    const pivot = x > y ? (y > z ? y : x > z ? z : x) : x > z ? x : y > z ? z : y;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i]! > pivot) i++;
      while (a[j]! < pivot) j--;
      if (i <= j) {
        const t = a[i]!;
        a[i++] = a[j]!;
        a[j--] = t;
      }
    }
    if (target <= j) hi = j;
    else if (target >= i) lo = i;
    else return pivot; // between the two halves every value equals the pivot
  }
  return a[target]!;
}
