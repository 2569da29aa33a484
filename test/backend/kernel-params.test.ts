// The table of kernel parameters (src/backend/cuda/kernel-params.ts) against the CUDA sources: every
// `extern "C" __global__` signature in kernels/*.cu, with the macros that instantiate them per type or size expanded
// (a small preprocessor below), name for name and kind for kind; and the kernels each .cu declares against the entries
// of its committed PTX, parameter by parameter. No GPU needed.
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import {
  kernelSignatures,
  maxRowBlocks,
  orderedArgs,
  signatureOf,
  type KernelSignature,
  type ParamKind,
} from "../../src/backend/cuda/kernel-params.js";
import { repoRoot } from "../helpers.js";

const kernelDir = join(repoRoot, "kernels");

interface Macro {
  readonly params: readonly string[];
  readonly body: string;
}

interface Param {
  readonly name: string;
  readonly kind: ParamKind;
}

/** Source with line continuations joined and comments gone (string literals kept as they are). */
function clean(source: string): string {
  let out = "";
  for (let i = 0; i < source.length;) {
    const c = source[i]!;
    if (c === '"' || c === "'") {
      let j = i + 1;
      while (j < source.length && source[j] !== c) j += source[j] === "\\" ? 2 : 1;
      out += source.slice(i, j + 1);
      i = j + 1;
    } else if (source.startsWith("//", i)) {
      while (i < source.length && source[i] !== "\n") i++;
    } else if (source.startsWith("/*", i)) {
      i = source.indexOf("*/", i) + 2;
      out += " ";
    } else {
      out += c;
      i++;
    }
  }
  return out.replace(/\\\r?\n/g, " ");
}

/** A file's text with its own and its includes' #defines collected (later files may not redefine a name differently). */
function preprocess(
  file: string,
  macros = new Map<string, Macro>(),
  objects = new Map<string, string>(),
  seen = new Set<string>(),
): string {
  if (seen.has(file)) return "";
  seen.add(file);
  const lines: string[] = [];
  for (const line of clean(readFileSync(join(kernelDir, file), "utf8")).split("\n")) {
    const include = /^\s*#\s*include\s+"([^"]+)"/.exec(line);
    if (include) preprocess(include[1]!, macros, objects, seen);
    const fn = /^\s*#\s*define\s+(\w+)\(([^)]*)\)\s?(.*)$/.exec(line);
    const object = /^\s*#\s*define\s+(\w+)\s+(.*)$/.exec(line);
    if (fn) macros.set(fn[1]!, { params: fn[2]!.split(",").map((p) => p.trim()), body: fn[3]! });
    else if (object) objects.set(object[1]!, object[2]!.trim());
    if (!/^\s*#/.test(line)) lines.push(line);
  }
  return lines.join("\n");
}

/** Index of the parenthesis closing the one at `open`, skipping string literals. */
function closing(text: string, open: number): number {
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    const c = text[i]!;
    if (c === '"') {
      for (i++; text[i] !== '"'; i++) if (text[i] === "\\") i++;
    } else if (c === "(") depth++;
    else if (c === ")" && --depth === 0) return i;
  }
  throw new Error(`unbalanced parenthesis at ${open}`);
}

/** Splits a macro call's arguments at the commas outside parentheses. */
function splitArgs(text: string): string[] {
  const args: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    if (text[i] === "(") depth++;
    else if (text[i] === ")") depth--;
    else if (text[i] === "," && depth === 0) (args.push(text.slice(start, i).trim()), (start = i + 1));
  }
  return [...args, text.slice(start).trim()];
}

/** The macros that declare kernels: their body has `extern "C"`, calls such a macro, or calls one of its parameters. */
function kernelMacros(macros: Map<string, Macro>): Set<string> {
  const set = new Set<string>();
  for (let grew = true; grew;) {
    grew = false;
    for (const [name, m] of macros) {
      if (set.has(name)) continue;
      const calls = [...m.body.matchAll(/\b(\w+)\s*\(/g)].map((c) => c[1]!);
      if (m.body.includes('extern "C"') || calls.some((c) => set.has(c) || m.params.includes(c)))
        (set.add(name), (grew = true));
    }
  }
  return set;
}

/** `text` with every call of the kernel-declaring macros expanded (arguments substituted, `##` pasted, rescanned). */
function expand(text: string, macros: Map<string, Macro>, names: Set<string>): string {
  const call = new RegExp(`\\b(${[...names].join("|")})\\s*\\(`, "g");
  let out = "";
  let at = 0;
  for (let m = call.exec(text); m; m = call.exec(text)) {
    const macro = macros.get(m[1]!)!;
    const open = m.index + m[0].length - 1;
    const close = closing(text, open);
    const args = splitArgs(text.slice(open + 1, close));
    assert.equal(args.length, macro.params.length, `${m[1]} takes ${macro.params.length} arguments`);
    const byParam = new Map(macro.params.map((p, i) => [p, args[i]!]));
    const body = macro.body
      .replace(new RegExp(`\\b(${macro.params.join("|")})\\b`, "g"), (p) => byParam.get(p)!)
      .replace(/\s*##\s*/g, "");
    out += text.slice(at, m.index) + expand(body, macros, names);
    at = close + 1;
    call.lastIndex = at;
  }
  return out + text.slice(at);
}

function kindOf(type: string): ParamKind {
  if (/\bRowBlocks\b/.test(type)) return "ptrs";
  if (/\bTensorMap\b/.test(type)) return "tensorMap";
  if (type.includes("*")) return "ptr";
  const bare = type
    .replace(/\bconst\b/g, "")
    .replace(/\s+/g, " ")
    .trim();
  const kind = ({ int: "i32", "long long": "i64", float: "f32" } as Record<string, ParamKind>)[bare];
  if (!kind) throw new Error(`kernel parameter type ${type}: add its kind to ParamKind and to this test`);
  return kind;
}

const camel = (name: string) => name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

/** Each kernel a .cu file declares, with its parameters, in declaration order. */
function declaredKernels(file: string): Map<string, Param[]> {
  const macros = new Map<string, Macro>();
  const objects = new Map<string, string>();
  const text = expand(preprocess(file, macros, objects), macros, kernelMacros(macros));
  const kernels = new Map<string, Param[]>();
  for (const m of text.matchAll(
    /extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(([^)]*)\)/g,
  )) {
    const params = m[2]!.split(",").map((p) => {
      const [, type, name] = /^(.*?)(\w+)\s*$/s.exec(p.trim())!;
      return { name: camel(name!), kind: kindOf(type!) };
    });
    assert.ok(!kernels.has(m[1]!), `${file} declares ${m[1]} twice`);
    kernels.set(m[1]!, params);
  }
  return kernels;
}

/** Each entry of a PTX file, with its parameters' declarations (".u64", ".align 8 .b8 [512]", ...). */
function ptxEntries(file: string): Map<string, string[]> {
  const entries = new Map<string, string[]>();
  for (const m of readFileSync(join(kernelDir, file), "utf8").matchAll(/\.entry\s+(\w+)\s*\(([^)]*)\)/g)) {
    entries.set(
      m[1]!,
      [...m[2]!.matchAll(/\.param\s+([^,]*?)\s*\w+_param_\d+(\[\d+\])?/g)].map(
        (p) => `${p[1]}${p[2] ? ` ${p[2]}` : ""}`,
      ),
    );
  }
  return entries;
}

const ptxDecl: Record<ParamKind, string> = {
  ptr: ".u64",
  i64: ".u64",
  i32: ".u32",
  f32: ".f32",
  ptrs: `.align 8 .b8 [${8 * maxRowBlocks}]`,
  tensorMap: ".align 64 .b8 [128]",
};

const sources = readdirSync(kernelDir)
  .filter((f) => f.endsWith(".cu"))
  .sort();
const declared = new Map(sources.map((f) => [f, declaredKernels(f)]));
const tableParams = (s: KernelSignature): Param[] =>
  Object.entries(kernelSignatures[s].params).map(([name, kind]) => ({ name, kind: kind as ParamKind }));

describe("kernel parameter table", () => {
  it("finds the kernels of every .cu file, macro-instantiated ones included", () => {
    assert.ok(sources.length >= 9, `kernels/*.cu: ${sources.join(", ")}`);
    for (const [file, kernels] of declared) assert.ok(kernels.size > 0, `${file} declares no kernel`);
    // Spot checks of the expansion: a type macro applied through FOR_WEIGHT_TYPES, a size and a prefix pasted.
    assert.ok(declared.get("elementwise.cu")!.has("rms_norm_bf16"));
    assert.ok(declared.get("flash.cu")!.has("flash_tall_f16_128"));
    assert.ok(declared.get("gemm.cu")!.has("gemm_skinny2_f16"));
  });

  it("declares in each .cu file exactly the entries of its PTX, with the parameters the table's kinds pass", () => {
    for (const [file, kernels] of declared) {
      const entries = ptxEntries(file.replace(/\.cu$/, ".ptx"));
      assert.deepEqual([...kernels.keys()].sort(), [...entries.keys()].sort(), `${file} against its PTX`);
      for (const [name, params] of kernels)
        assert.deepEqual(
          entries.get(name),
          params.map((p) => ptxDecl[p.kind]),
          `${name}: .cu against PTX`,
        );
    }
  });

  it("lists every declared kernel once, with its parameters name for name and kind for kind", () => {
    const all = new Map([...declared.values()].flatMap((k) => [...k]));
    const listed = Object.values(kernelSignatures).flatMap((s) => [...s.kernels]);
    assert.deepEqual(
      [...listed].sort(),
      [...all.keys()].sort(),
      "kernels in the table against kernels in kernels/*.cu",
    );
    assert.equal(new Set(listed).size, listed.length, "a kernel listed under two signatures");
    for (const [name, params] of all)
      assert.deepEqual(tableParams(signatureOf(name)!), params, `${name} (signature ${signatureOf(name)})`);
  });

  it("sizes write_rows' block pointers as MAX_ROW_BLOCKS", () => {
    const objects = new Map<string, string>();
    preprocess("elementwise.cu", new Map(), objects);
    assert.equal(Number(objects.get("MAX_ROW_BLOCKS")), maxRowBlocks);
  });
});

describe("orderedArgs", () => {
  it("orders named arguments as the signature and tags each with its kind", () => {
    assert.deepEqual(orderedArgs("add_f32", "add_f32", { n: 8, b: 3n, out: 1n, a: 2n }), [
      { ptr: 1n },
      { ptr: 2n },
      { ptr: 3n },
      { i64: 8 },
    ]);
    const xMap = { dtype: "bf16", ptr: 5n, rows: 1, cols: 64, boxRows: 128 } as const;
    const args = orderedArgs("gemm_tma", "gemm_tma_bf16", { y: 1n, xMap, wMap: xMap, bias: 0n, M: 1, N: 2, K: 64 });
    assert.deepEqual(args.slice(0, 2), [{ ptr: 1n }, { tensorMap: xMap }]);
  });

  it("throws on a missing or an extra name, and on a kernel of another signature", () => {
    assert.throws(
      () => orderedArgs("add_f32", "add_f32", { out: 1n, a: 2n, n: 8 } as never),
      /no argument for parameter b/,
    );
    assert.throws(
      () => orderedArgs("add_f32", "add_f32", { out: 1n, a: 2n, b: 3n, n: 8, m: 1 } as never),
      /has no parameter m/,
    );
    assert.throws(
      () => orderedArgs("cast_f32", "cast_rows_bf16", { out: 1n, x: 2n, n: 8 }),
      /takes the cast_rows parameters/,
    );
  });

  it("leaves a kernel no .cu declares to the launch, which reports it missing from the PTX", () => {
    assert.deepEqual(orderedArgs("embed", "embed_mxfp4", { out: 1n, table: 2n, ids: 3n, hidden: 4 }), [
      { ptr: 1n },
      { ptr: 2n },
      { ptr: 3n },
      { i32: 4 },
    ]);
  });
});
