// Shared test helpers: temp folders, the stories260K model, tiny checkpoints, running the CLI.
import { execFile } from "node:child_process";
import { cp, mkdtemp, open as fsOpen, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after } from "node:test";
import { bundledModelDir } from "../src/model/bundled.js";
import { makeTestModel, type MakeTestModelOptions } from "../src/testmodel/write.js";
import { CpuBackend } from "../src/backend/cpu/index.js";
import assert from "node:assert/strict";
import { fromF32, type FloatDType } from "../src/backend/dtype.js";
import type { Backend, Tensor } from "../src/backend/ops.js";
import type { FileIo } from "../src/model/disk-reader.js";
import { LayerwiseError } from "../src/errors.js";

export const repoRoot = fileURLToPath(new URL("../../", import.meta.url));
export const fixturesDir = join(repoRoot, "test", "fixtures");
/** The bundled stories260K (models/stories260K) and its transformers logits (tools/golden/stories260k_verify_hf.py). */
export const storiesDir = bundledModelDir;
export const storiesGolden = join(fixturesDir, "stories260K", "transformers-logits.json");
export const cliPath = join(repoRoot, "dist", "src", "cli", "main.js");

/** A temp folder removed when the test file ends. */
export async function tempDir(prefix = "lw-test-"): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A private copy of stories260K (tests never touch the bundled original). */
export async function storiesCopy(): Promise<string> {
  const dir = join(await tempDir("lw-stories-"), "stories260K");
  await cp(storiesDir, dir, { recursive: true });
  return dir;
}

export async function tinyModel(o: Partial<MakeTestModelOptions> & { preset: string }): Promise<string> {
  const out = join(await tempDir("lw-tiny-"), o.preset);
  await makeTestModel({ dtype: "f32", ...o, out });
  return out;
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], o: { input?: string; env?: Record<string, string> } = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [cliPath, ...args],
      { env: { ...process.env, ...o.env }, maxBuffer: 64 << 20 },
      (err, stdout, stderr) => {
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
      },
    );
    if (o.input !== undefined) child.stdin!.end(o.input);
  });
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`lengths differ: ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

export interface BackendCase {
  name: "cpu" | "cuda";
  create: () => Promise<Backend>;
  /** Relative error allowed for f32 math, and for math that goes through 16-bit weights, activations or KV. */
  tolF32: number;
  tol16: number;
}

/** The CPU backend always; CUDA too when LAYERWISE_TEST_CUDA is set (npm run test:cuda on a GPU machine). */
export const backendCases: BackendCase[] = [
  { name: "cpu", create: async () => new CpuBackend(), tolF32: 1e-6, tol16: 1e-6 },
];
if (process.env.LAYERWISE_TEST_CUDA) {
  const { createCudaBackend } = await import("../src/backend/cuda/index.js");
  backendCases.push({ name: "cuda", create: createCudaBackend, tolF32: 2e-3, tol16: 1.5e-2 });
}

/**
 * A device budget written for the CPU backend, on a backend that also holds a context (CUDA) and rounds small
 * allocations up (the plan counts that).
 */
export function deviceBudget(backend: Backend, bytes: number): number {
  return backend.name === "cpu" ? bytes : backend.deviceOverheadBytes + Math.round(1.5 * bytes);
}

/** A new tensor of `dtype` holding `values` (rounded to it). */
export async function uploadValues(
  b: Backend,
  shape: number[],
  values: Float32Array,
  dtype: FloatDType = "f32",
): Promise<Tensor> {
  const t = b.alloc(shape, dtype);
  await b.upload(t, fromF32(values, dtype));
  return t;
}

/** ||got - want|| / ||want||, after checking every value is finite. */
export function relErr(got: Float32Array, want: ArrayLike<number>): number {
  assert.equal(got.length, want.length);
  let num = 0;
  let den = 0;
  for (let i = 0; i < got.length; i++) {
    assert.ok(Number.isFinite(got[i]), `value ${i} is ${got[i]}`);
    num += (got[i]! - want[i]!) ** 2;
    den += want[i]! ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-30));
}

/** A FileIo whose file handles read through `read(original, args)`: to delay or fail the engine's reads in a test. */
export function fileIoWithRead(
  read: (original: (...args: unknown[]) => Promise<unknown>, args: unknown[]) => Promise<unknown>,
): FileIo {
  return {
    async open(path) {
      const fh = await fsOpen(path, "r");
      return new Proxy(fh, {
        get(target, prop) {
          const v = Reflect.get(target, prop);
          if (prop === "read")
            return (...args: unknown[]) => read((v as (...a: unknown[]) => Promise<unknown>).bind(target), args);
          return typeof v === "function" ? v.bind(target) : v;
        },
      });
    },
  };
}

/** Asserts that `p` rejects with a LayerwiseError of class `kind` whose code is `code` and message matches `message`. */
export async function rejectsWith(
  p: Promise<unknown>,
  code: string,
  message: RegExp,
  kind: abstract new (...args: never[]) => LayerwiseError = LayerwiseError,
): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof kind, `not a ${kind.name}: ${(e as Error)?.stack ?? e}`);
    assert.equal(e.code, code, e.message);
    assert.match(e.message, message);
    return true;
  });
}
