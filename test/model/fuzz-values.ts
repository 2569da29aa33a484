// Shared pieces of the parsers' fuzz tests: hostile JSON values, and the property every parser keeps.
import assert from "node:assert/strict";
import fc from "fast-check";
import { LayerwiseError } from "../../src/errors.js";

/** Seeded, and few enough runs that the suite stays fast; a failure prints its seed and path to replay it. */
export const fuzzRuns = { seed: 230023, numRuns: 300 } as const;

/** fc.assert with `fuzzRuns`; a failure's message carries the error the property raised (fast-check keeps it as `cause`). */
export async function fuzz<T>(property: fc.IAsyncPropertyWithHooks<T> | fc.IAsyncProperty<T>): Promise<void> {
  try {
    await fc.assert(property, fuzzRuns);
  } catch (e) {
    const cause = (e as { cause?: unknown }).cause;
    throw new Error(
      `${(e as Error).message}\ncaused by: ${cause instanceof Error ? (cause.stack ?? cause.message) : String(cause)}`.slice(
        0,
        4000,
      ),
    );
  }
}

/** Numbers a config or header has no business holding, beside plain ones. */
export const awkwardNumber: fc.Arbitrary<number> = fc.oneof(
  fc.integer({ min: -4, max: 70 }),
  fc.constantFrom(
    0,
    -0,
    1,
    2,
    3,
    32,
    4096,
    2 ** 24,
    2 ** 24 + 1,
    2 ** 31,
    2 ** 32,
    2 ** 53 - 1,
    2 ** 53,
    2 ** 64,
    1e9,
    1e300,
    -1,
    -1e9,
    0.5,
    1e-300,
  ),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
);

/** Keys that reach the prototype chain when looked up carelessly. */
export const prototypeKey = fc.constantFrom(
  "constructor",
  "__proto__",
  "toString",
  "hasOwnProperty",
  "valueOf",
  "prototype",
);

/**
 * A value too big to print (fast-check prints counterexamples, and recursion through a 200k-deep array overflows):
 * generated as a recipe with a short name, made real by `real` inside the property.
 */
export class Huge {
  constructor(
    readonly label: string,
    /** Its JSON text (JSON.stringify itself overflows on such depths). */
    readonly text: () => string,
  ) {}

  [fc.toStringMethod](): string {
    return this.label;
  }
}

/** The value itself (a Huge made real). */
export const real = (v: unknown): unknown => (v instanceof Huge ? JSON.parse(v.text()) : v);

/** JSON text of `v`, Huge values included (written out as their text). */
export function jsonText(v: unknown): string {
  const huge: Huge[] = [];
  const text = JSON.stringify(v, (_key, x: unknown) => (x instanceof Huge ? `\u0000huge${huge.push(x) - 1}\u0000` : x));
  return text.replace(/"\\u0000huge(\d+)\\u0000"/g, (_m, i: string) => huge[Number(i)]!.text());
}

/** Any JSON value, biased to awkward numbers, prototype keys, long and deep arrays (as Huge: pass it through `real`). */
export const awkwardJson: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: awkwardNumber },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  { weight: 1, arbitrary: prototypeKey },
  { weight: 1, arbitrary: fc.string({ maxLength: 20 }) },
  { weight: 1, arbitrary: fc.constantFrom(null, true, false, [], {}, "") },
  { weight: 1, arbitrary: fc.array(awkwardNumber, { maxLength: 8 }) },
  {
    weight: 1,
    arbitrary: fc
      .integer({ min: 1000, max: 200_000 })
      .map((n) => new Huge(`${n}-deep array`, () => "[".repeat(n) + "]".repeat(n))),
  },
  {
    weight: 1,
    arbitrary: fc
      .integer({ min: 1000, max: 100_000 })
      .map((n) => new Huge(`${n} ones`, () => `[${new Array<number>(n).fill(1).join(",")}]`)),
  },
);

/** Runs `f`: success, or a LayerwiseError with a code and a message of sane length; anything else fails the property. */
export async function cleanOutcome<T>(f: () => T | Promise<T>): Promise<T | undefined> {
  try {
    return await f();
  } catch (e) {
    if (!(e instanceof LayerwiseError)) throw new Error(`not a LayerwiseError: ${(e as Error)?.stack ?? String(e)}`);
    assert.match(e.code, /^[A-Z][A-Z0-9_]+$/);
    assert.ok(e.message.length < 2000, `a ${e.message.length}-character message: ${e.message.slice(0, 300)}...`);
    return undefined;
  }
}

/** A generous bound on the heap, checked after each property: nothing a hostile input says is allocated. */
export function assertHeapBounded(): void {
  const used = process.memoryUsage().heapUsed;
  assert.ok(used < 1.5 * 2 ** 30, `heap holds ${(used / 2 ** 20).toFixed(0)} MiB after the fuzz runs`);
}
