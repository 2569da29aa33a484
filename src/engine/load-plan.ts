// The one plan a model runs by: a checkpoint, a backend and the load options in, a Plan out. `load`, `layerwise plan`
// and the bench all call planForLoad, so what `plan` prints is what `run` executes; the user's --vram (which counts the
// CUDA context) becomes the bytes layerwise may allocate here and nowhere else.
import { freemem } from "node:os";
import type { ArchModel } from "../arch/types.js";
import type { FloatDType } from "../backend/dtype.js";
import type { Backend } from "../backend/ops.js";
import { UsageError } from "../errors.js";
import type { Checkpoint } from "../model/checkpoint.js";
import { formatBytes } from "../util/bytes.js";
import { modelLayout } from "./layout.js";
import { planPrefill, type Plan } from "./planner.js";

/** What changes the plan; LoadOptions has these and more. */
export interface PlanOptions {
  /** Element type of the KV cache; default: f32 on the CPU backend, bf16 on CUDA. */
  kvDtype?: FloatDType;
  /** Tokens per KV block (the unit of tiering and of the persistent cache); default 256. */
  kvBlockTokens?: number;
  /** Bytes of GPU memory layerwise may use, the CUDA context included; default: free GPU memory less a margin (CPU backend: no limit). */
  vram?: number;
  /** Bytes of RAM for caching weights and KV; default: half the free RAM. */
  ram?: number;
  /** Tokens one sequence may hold, for planning; default (and most): the model's context. */
  context?: number;
  /** Sequences decoded together, for planning; default 1. */
  batch?: number;
  /** Rows per layer pass during prefill; default: 8192, 4096 or 2048, the largest whose plan decodes as fast as 2048's (see planPrefill). */
  prefillChunk?: number;
  /** Rows taken through all layers before the next (each layer's weights pass once per span); default: the whole context where that costs decode nothing, else 32768 (see planPrefill). */
  prefillSpan?: number;
  /** Most device slots for hot experts (mixture-of-experts models); default: what the VRAM budget leaves room for. */
  expertSlots?: number;
  /** Folder of the persistent KV cache: with one, KV blocks stay whole (sliding windows keep every block). */
  kvCache?: string;
}

export async function planForLoad(
  checkpoint: Checkpoint,
  arch: ArchModel,
  backend: Backend,
  o: PlanOptions,
): Promise<Plan> {
  return planPrefill({
    layout: modelLayout(checkpoint, arch, backend.caps.directIo),
    shape: arch.shape,
    contextTokens: Math.min(o.context ?? arch.shape.maxPositions, arch.shape.maxPositions),
    batch: o.batch ?? 1,
    prefillChunk: o.prefillChunk,
    prefillSpan: o.prefillSpan,
    kvBlockTokens: o.kvBlockTokens ?? 256,
    kvDtype: o.kvDtype ?? (backend.name === "cpu" ? "f32" : "bf16"),
    deviceBytesFor: (n) => backend.deviceBytesFor(n),
    workspaceSlack: backend.workspaceSlack,
    vramBytes: await deviceBudget(backend, o.vram),
    deviceOverheadBytes: backend.deviceOverheadBytes,
    ramBytes: o.ram ?? Math.floor(freemem() / 2),
    expertSlots: o.expertSlots,
    kvKeepsEveryBlock: o.kvCache !== undefined,
  });
}

/** The device bytes layerwise may allocate: the user's budget less the backend's own memory, or the backend's default. */
async function deviceBudget(backend: Backend, vram: number | undefined): Promise<number> {
  if (vram === undefined) return backend.defaultDeviceBudget();
  const overhead = backend.deviceOverheadBytes;
  if (vram <= overhead)
    throw new UsageError(
      "VRAM_TOO_SMALL",
      `a VRAM budget of ${formatBytes(vram)} does not even hold the CUDA context (${formatBytes(overhead)})`,
      "give more --vram",
    );
  return vram - overhead;
}

/** A plan as JSON: its input without the layout and shape it was computed from (they are the checkpoint's). */
export function planJson(p: Plan): object {
  const { layout: _layout, shape: _shape, ...input } = p.input;
  return { ...p, input };
}
