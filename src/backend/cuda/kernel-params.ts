// The parameters of every kernel in kernels/*.cu, in the order of its `extern "C" __global__` signature, and how each
// is passed. Launches name their arguments ({ out, x, n }); orderedArgs turns them into the packed list Kernels.launch
// takes, throwing on a name missing or extra. Names are the .cu ones camelCased (inv_freq: invFreq; M stays M); kernels
// one macro instantiates for several types or sizes share an entry. test/backend/kernel-params.test.ts expands the .cu
// macros and checks this table against the signatures (name for name, kind for kind) and against the PTX's entries.
import type { Handle } from "./driver.js";
import {
  deltaRuleKeyDims,
  flashKernel,
  flashTiles,
  gemmKernel,
  gemmTiles,
  type FlashTile,
  type GemmTile,
  type KernelArg,
  type TensorMapArg,
} from "./kernels.js";

/** How a parameter is passed: a device pointer, pointers by value (a struct of them), 32/64-bit ints, a float, a TMA map. */
export type ParamKind = "ptr" | "ptrs" | "i32" | "i64" | "f32" | "tensorMap";

/** Tensors one write_rows launch takes: its `dst` is this many pointers by value (MAX_ROW_BLOCKS in kernels/elementwise.cu). */
export const maxRowBlocks = 64;

/** The weight types FOR_WEIGHT_TYPES instantiates kernels for (kernels/common.cuh), and the 16-bit ones. */
const weightTypes = ["f32", "bf16", "f16"] as const;
const halfTypes = ["bf16", "f16"] as const;
const named = (types: readonly string[], name: (t: string) => string) => types.map(name);

/** y = x w^T + bias for x [M, K], w [N, K]: every GEMM and GEMV kernel but the TMA one. */
const matmulParams = { y: "ptr", x: "ptr", w: "ptr", bias: "ptr", M: "i32", N: "i32", K: "i32" } as const;
const matmulKernels = [
  ...halfTypes.flatMap((t) =>
    (Object.keys(gemmTiles) as GemmTile[]).filter((tile) => !gemmTiles[tile].tma).map((tile) => gemmKernel(tile, t)),
  ),
  gemmKernel("square", "mxfp4"),
  ...halfTypes.flatMap((t) => [1, 2, 4].map((rows) => `gemm_skinny${rows}_${t}`)),
  ...[...weightTypes, "mxfp4"].flatMap((t) => [1, 4, 16].map((rows) => `gemv${rows}_${t}`)),
  ...named(weightTypes, (t) => `gemm_simt_${t}`),
];
const flashKernels = (Object.keys(flashTiles) as FlashTile[]).flatMap((tile) =>
  halfTypes.flatMap((t) => flashTiles[tile].headDims.map((hd) => flashKernel(tile, t, hd))),
);

export const kernelSignatures = {
  // kernels/elementwise.cu
  rope: {
    kernels: ["rope"],
    params: {
      out: "ptr",
      x: "ptr",
      positions: "ptr",
      invFreq: "ptr",
      rows: "i32",
      heads: "i32",
      headDim: "i32",
      half: "i32",
      scale: "f32",
    },
  },
  gated_act: {
    kernels: ["gated_act"],
    params: { out: "ptr", gate: "ptr", up: "ptr", n: "i64", act: "i32", twin: "ptr", twinKind: "i32" },
  },
  add_f32: { kernels: ["add_f32"], params: { out: "ptr", a: "ptr", b: "ptr", n: "i64" } },
  scale_f32: { kernels: ["scale_f32"], params: { out: "ptr", x: "ptr", s: "f32", n: "i64" } },
  softcap_f32: { kernels: ["softcap_f32"], params: { out: "ptr", x: "ptr", cap: "f32", n: "i64" } },
  clamped_swiglu: {
    kernels: ["clamped_swiglu"],
    params: { out: "ptr", x: "ptr", n: "i64", alpha: "f32", limit: "f32" },
  },
  copy_words: { kernels: ["copy_words"], params: { dst: "ptr", src: "ptr", n: "i32" } },
  gather_rows: { kernels: ["gather_rows"], params: { out: "ptr", x: "ptr", rows: "ptr", n: "i32", cols: "i32" } },
  accumulate_rows: {
    kernels: ["accumulate_rows"],
    params: { acc: "ptr", y: "ptr", rows: "ptr", scales: "ptr", n: "i32", cols: "i32" },
  },
  merge_attention: {
    kernels: ["merge_attention"],
    params: { out: "ptr", lse: "ptr", oa: "ptr", la: "ptr", ob: "ptr", lb: "ptr", rowHeads: "i32", headDim: "i32" },
  },
  embed: {
    kernels: named(weightTypes, (t) => `embed_${t}`),
    params: { out: "ptr", table: "ptr", ids: "ptr", hidden: "i32" },
  },
  rms_norm: {
    kernels: named(weightTypes, (t) => `rms_norm_${t}`),
    params: { out: "ptr", x: "ptr", w: "ptr", group: "i32", eps: "f32", offset: "f32", twin: "ptr" },
  },
  write_rows: {
    kernels: named(weightTypes, (t) => `write_rows_${t}`),
    params: { dst: "ptrs", first: "i32", blockRows: "i32", src: "ptr", rows: "i32", cols: "i32" },
  },
  cast_f32: { kernels: named(weightTypes, (t) => `cast_f32_${t}`), params: { out: "ptr", x: "ptr", n: "i64" } },
  // kernels/attention.cu
  attn_merge_splits: {
    kernels: ["attn_merge_splits"],
    params: {
      out: "ptr",
      lse: "ptr",
      partO: "ptr",
      partMl: "ptr",
      sinks: "ptr",
      heads: "i32",
      rowHeads: "i32",
      headDim: "i32",
      splits: "i32",
    },
  },
  attn_simt: {
    kernels: named(weightTypes, (t) => `attn_simt_${t}`),
    params: {
      partO: "ptr",
      partMl: "ptr",
      q: "ptr",
      seqs: "ptr",
      nSeqs: "i32",
      blockPtrs: "ptr",
      blockPos: "ptr",
      heads: "i32",
      kvHeads: "i32",
      headDim: "i32",
      kvCols: "i32",
      scale: "f32",
      window: "i32",
      softcap: "f32",
      splits: "i32",
    },
  },
  // kernels/flash.cu, flash_sm90.cu
  flash: {
    kernels: flashKernels,
    params: {
      out: "ptr",
      lse: "ptr",
      q: "ptr",
      seqs: "ptr",
      blockPtrs: "ptr",
      blockPos: "ptr",
      sinks: "ptr",
      heads: "i32",
      kvHeads: "i32",
      kvCols: "i32",
      scale: "f32",
      window: "i32",
      softcap: "f32",
    },
  },
  // kernels/gemm.cu, gemm_sm90.cu, matmul.cu
  matmul: { kernels: matmulKernels, params: matmulParams },
  gemm_tma: {
    kernels: named(halfTypes, (t) => gemmKernel("hopper", t)),
    params: { y: "ptr", xMap: "tensorMap", wMap: "tensorMap", bias: "ptr", M: "i32", N: "i32", K: "i32" },
  },
  cast_rows: { kernels: named(halfTypes, (t) => `cast_rows_${t}`), params: { out: "ptr", x: "ptr", n: "i64" } },
  // kernels/recurrent.cu
  causal_conv1d: {
    kernels: named(weightTypes, (t) => `causal_conv1d_4_${t}`),
    params: { out: "ptr", x: "ptr", w: "ptr", seqs: "ptr", states: "ptr", channels: "i32" },
  },
  gated_delta_rule: {
    kernels: deltaRuleKeyDims.flatMap((kd) => [`gated_delta_rule_${kd}`, `gated_delta_chunked_${kd}`]),
    params: {
      out: "ptr",
      qkv: "ptr",
      a: "ptr",
      b: "ptr",
      aLog: "ptr",
      dtBias: "ptr",
      seqs: "ptr",
      states: "ptr",
      kHeads: "i32",
      vHeads: "i32",
      vDim: "i32",
    },
  },
  // kernels/sampling.cu
  penalize: { kernels: ["penalize"], params: { x: "ptr", ids: "ptr", n: "i32", factor: "f32" } },
  top_k: { kernels: ["top_k"], params: { outIds: "ptr", outValues: "ptr", x: "ptr", cols: "i32", k: "i32" } },
} as const satisfies Record<
  string,
  { readonly kernels: readonly string[]; readonly params: Readonly<Record<string, ParamKind>> }
>;

export type KernelSignature = keyof typeof kernelSignatures;
type Params<S extends KernelSignature> = (typeof kernelSignatures)[S]["params"];
type ArgValue<K> = K extends "ptr"
  ? Handle
  : K extends "ptrs"
    ? readonly Handle[]
    : K extends "tensorMap"
      ? TensorMapArg
      : number;
/** A launch's arguments by name: each parameter of the signature, none other. */
export type KernelArgs<S extends KernelSignature> = { readonly [P in keyof Params<S>]: ArgValue<Params<S>[P]> };

const signatureOfKernel = new Map<string, KernelSignature>(
  (Object.keys(kernelSignatures) as KernelSignature[]).flatMap((s) =>
    kernelSignatures[s].kernels.map((k): [string, KernelSignature] => [k, s]),
  ),
);

/** The signature a kernel of the table takes (undefined for a name no .cu declares). */
export function signatureOf(kernel: string): KernelSignature | undefined {
  return signatureOfKernel.get(kernel);
}

/**
 * `args` in the order of the signature's parameters, as Kernels.launch packs them. Throws where a name is missing or
 * extra, or where the table lists `kernel` under another signature. (A kernel no .cu declares, as embed_mxfp4, passes:
 * Kernels.launch then says it is not in the PTX.)
 */
export function orderedArgs<S extends KernelSignature>(signature: S, kernel: string, args: KernelArgs<S>): KernelArg[] {
  const listed = signatureOfKernel.get(kernel);
  if (listed !== undefined && listed !== signature)
    throw new Error(`kernel ${kernel} takes the ${listed} parameters, not ${signature}'s`);
  const params: Readonly<Record<string, ParamKind>> = kernelSignatures[signature].params;
  const given = args as Readonly<Record<string, unknown>>;
  for (const name of Object.keys(given))
    if (!Object.hasOwn(params, name)) throw new Error(`kernel ${kernel} has no parameter ${name}`);
  return Object.entries(params).map(([name, kind]) => {
    const value = given[name];
    if (value === undefined) throw new Error(`kernel ${kernel}: no argument for parameter ${name}`);
    return { [kind]: value } as KernelArg;
  });
}
