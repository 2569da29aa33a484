// `layerwise plan MODEL --context 100k --vram 8GB`: what goes where, bytes per token by link, and the seconds-per-token floor.
import { stat } from "node:fs/promises";
import type { Command } from "commander";
import { createArchModel } from "../arch/index.js";
import { createBackend } from "../backend/index.js";
import type { FloatDType } from "../backend/dtype.js";
import { measureDisk, measureHostToDevice, type LinkSpeed } from "../bench/bandwidth.js";
import { planForLoad, planJson } from "../engine/load-plan.js";
import { decodeExtraKvBytesAt, decodeKeptLayers, type Plan } from "../engine/planner.js";
import { validateWeights } from "../engine/weights.js";
import { UsageError } from "../errors.js";
import { Checkpoint } from "../model/checkpoint.js";
import { formatBytes } from "../util/bytes.js";
import { addModelFlags, backendName, loadOptions, numberFlag, type ModelFlags } from "./options.js";

interface PlanFlags extends ModelFlags {
  batch: string;
  kvDtype?: string;
  diskGbps?: string;
  h2dGbps?: string;
}

export function registerPlan(program: Command): void {
  // The flags of `run` that change the plan, read by the same loadOptions, and the plan from the same planForLoad.
  addModelFlags(
    program
      .command("plan")
      .description(
        "print the memory plan `run` would execute, bytes per token by link and the predicted seconds-per-token floor",
      )
      .argument("<model>", "Hugging Face model folder")
      .option("--batch <n>", "sequences decoded together (serve --max-batch, batch --batch)", "1")
      .option("--kv-dtype <dtype>", "KV cache element type: bf16, f16 or f32 (default: bf16 on CUDA, f32 on CPU)")
      .option("--disk-gbps <n>", "disk read speed in GB/s instead of measuring it")
      .option("--h2d-gbps <n>", "host-to-GPU copy speed in GB/s instead of measuring it"),
  ).action(async (dir: string, flags: PlanFlags) => {
    const kvDtype = flags.kvDtype as FloatDType | undefined;
    if (kvDtype !== undefined && !["bf16", "f16", "f32"].includes(kvDtype))
      throw new UsageError("BAD_FLAG", `--kv-dtype ${kvDtype} is not bf16, f16 or f32`);
    const batch = numberFlag(flags.batch, "--batch", { integer: true })!;
    const ckpt = await Checkpoint.open(dir);
    try {
      const { model } = createArchModel(ckpt.rawConfig, `${dir}/config.json`);
      validateWeights(
        ckpt,
        model,
        (code, message) => flags.json || process.stderr.write(`warning [${code}]: ${message}\n`),
      );
      const { backend } = await createBackend(backendName(flags));
      try {
        const p = await planForLoad(ckpt, model, backend, {
          ...loadOptions(flags),
          batch,
          ...(kvDtype ? { kvDtype } : {}),
        });
        const sizes = await Promise.all(ckpt.files.map(async (f) => ({ f, size: (await stat(f)).size })));
        const largest = sizes.sort((a, b) => b.size - a.size)[0]!.f;
        const given = (v: string | undefined, flag: string): LinkSpeed | undefined =>
          v === undefined ? undefined : { gbps: numberFlag(v, flag)!, bytes: 0, seconds: 0, method: "given" };
        const disk =
          given(flags.diskGbps, "--disk-gbps") ??
          (p.perToken.diskBytes > 0 ? await measureDisk(backend, [largest]) : undefined);
        const h2d =
          given(flags.h2dGbps, "--h2d-gbps") ??
          (p.perToken.h2dBytes > 0 ? await measureHostToDevice(backend) : undefined);
        const floor = Math.max(
          disk ? p.perToken.diskBytes / (disk.gbps * 1e9) : 0,
          h2d ? p.perToken.h2dBytes / (h2d.gbps * 1e9) : 0,
        );
        if (flags.json)
          process.stdout.write(JSON.stringify({ ...planJson(p), disk, h2d, floor_s_per_token: floor }) + "\n");
        else printPlan(p, String(ckpt.rawConfig.model_type), disk, h2d, floor);
      } finally {
        await backend.dispose();
      }
    } finally {
      await ckpt.close();
    }
  });
}

function printPlan(
  p: Plan,
  modelType: string,
  disk: LinkSpeed | undefined,
  h2d: LinkSpeed | undefined,
  floor: number,
): void {
  const i = p.input;
  const count = (t: string) => p.layerTier.filter((x) => x === t).length;
  const d = p.deviceBytes;
  const h = p.hostBytes;
  const f = formatBytes;
  const lines: [string, string][] = [
    [
      "model",
      `${modelType}, ${i.shape.numLayers} layers, ${f(i.layout.layers.reduce((n, l) => n + l.dataBytes, 0) + i.layout.experts.flat().reduce((n, g) => n + g.dataBytes, 0) + i.layout.globals.dataBytes)} of weights`,
    ],
    [
      "context",
      `${i.contextTokens} tokens x ${i.batch} sequence(s), prefill chunk ${i.prefillChunk} in spans of ${Math.min(i.prefillSpan, i.contextTokens)}, KV ${i.kvDtype} in blocks of ${i.kvBlockTokens}`,
    ],
    [
      "budgets",
      `VRAM ${i.vramBytes === Infinity ? "unlimited" : `${f(i.vramBytes + (i.deviceOverheadBytes ?? 0))}${i.deviceOverheadBytes ? ` (${f(i.deviceOverheadBytes)} of it the CUDA context's)` : ""}`}, RAM ${f(i.ramBytes)}; the least VRAM this runs in: ${f(p.minDeviceBytes)}`,
    ],
    [
      "device",
      `embeddings+head ${f(d.globals)}, workspace ${f(d.workspace + d.kvHeadroom)}, ${p.slots} layer slots ${f(d.slots)}, ${count("device")} resident layers ${f(d.residentLayers)}, KV ${f(d.kv)} (${p.kvDeviceTokens} tokens/layer while prefilling, ${p.kvDeviceTokensDecode} decoding), KV staging ${f(d.kvStaging)}${p.experts.total ? `, experts ${f(d.experts)}` : ""} = ${f(d.total)}`,
    ],
    [
      "RAM",
      `${count("ram")} layers ${f(h.ramLayers)}, KV ${f(h.kv)} (${p.kvHostTokens} tokens/layer)${p.experts.total ? `, experts ${f(h.ramExperts)}` : ""}; working: disk staging ${f(h.staging)}, span activations ${f(h.activations)}, transfers ${f(h.transfer)} = ${f(h.total)}`,
    ],
    ["disk", `${count("disk")} layers streamed, KV ${f(p.kvDiskBytes)}`],
    ...(p.experts.total > 0 ? [expertLine(p)] : []),
    ...(p.slots > 0 ? [keptLine(p)] : []),
    ["per token", `host->device ${f(p.perToken.h2dBytes)}, disk ${f(p.perToken.diskBytes)} (decoding)`],
    [
      "links",
      `host->device ${h2d ? `${h2d.gbps.toFixed(1)} GB/s (${h2d.method})` : "unused"}, disk ${disk ? `${disk.gbps.toFixed(2)} GB/s (${disk.method})` : "unused"}`,
    ],
    [
      "floor",
      floor > 0
        ? `${floor.toFixed(3)} s/token (bytes per token over the slower link; compute not counted)`
        : "no weight or KV traffic per token: compute-bound",
    ],
  ];
  const w = Math.max(...lines.map(([k]) => k.length));
  for (const [k, v] of lines) process.stdout.write(`${k.padEnd(w)}  ${v}\n`);
}

/** Streamed layers decode keeps on the device in the room the prompt's activations leave, at this context and at its shortest. */
function keptLine(p: Plan): [string, string] {
  const at = (tokens: number) => decodeKeptLayers(p, decodeExtraKvBytesAt(p, tokens)).length;
  return [
    "decode",
    `keeps ${at(p.input.contextTokens)} streamed layers on the device at ${p.input.contextTokens} tokens, up to ${at(1)} at short contexts (in the ${formatBytes(p.decodeSpare)} a prompt's activations leave, beside decode's KV)`,
  ];
}

/** Where a mixture-of-experts model's experts live: the hot-expert cache on the GPU, pinned RAM, the rest on disk. */
function expertLine(p: Plan): [string, string] {
  const e = p.experts;
  const moe = p.input.shape.moe!;
  const where =
    e.deviceSlots === e.total
      ? "all on the GPU"
      : `${e.deviceSlots} cached on the GPU (${formatBytes(p.deviceBytes.experts)}), ${e.ram} in RAM (${formatBytes(p.hostBytes.ramExperts)}), ${e.total - e.ram} read from disk when routed`;
  return ["experts", `${e.total} (${moe.experts} per layer, ${moe.topK} routed per token): ${where}`];
}
