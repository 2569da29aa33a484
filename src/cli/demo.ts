// `layerwise demo`: the engine end to end on the bundled stories260K (a real trained Llama), in a VRAM budget too small
// for the model, so its layers stream from RAM and disk while it writes a story; then the same run with every layer
// resident, to show streaming changes where the bytes live, not what the model says.
import type { Command } from "commander";
import { createBackend } from "../backend/index.js";
import type { Backend } from "../backend/ops.js";
import { LayerwiseModel, type LoadOptions } from "../engine/model.js";
import { kvBytesAt, type Plan } from "../engine/planner.js";
import { bundledModelDir } from "../model/bundled.js";
import { formatBytes } from "../util/bytes.js";
import { backendName, numberFlag } from "./options.js";
import { interruptSignal } from "./output.js";

interface DemoFlags {
  backend: string;
  prompt: string;
  maxTokens: string;
  json?: boolean;
  debug?: boolean;
}

// Small prefill chunks and KV blocks keep the workspace small, so the budget can be far below the model's size.
const demoChunk = 16;
const demoKvBlock = 16;
// Layers the RAM budget holds; the others are read from disk for every token.
const layersInRam = 3;

export function registerDemo(program: Command): void {
  program
    .command("demo")
    .description(
      "run the bundled stories260K model (a real 260K-parameter Llama) with its layers streaming through a tiny VRAM budget; no download",
    )
    .option("--backend <name>", "compute backend: cpu, cuda or auto", "auto")
    .option("--prompt <text>", "the start of the story", "Once upon a time, there was a little dog")
    .option("--max-tokens <n>", "most new tokens", "120")
    .option("--json", "print one JSON line at the end instead of streaming text")
    .option("--debug", "print stack traces of errors")
    .action(async (flags: DemoFlags) => {
      const maxTokens = numberFlag(flags.maxTokens, "--max-tokens", { integer: true })!;
      const { backend, note } = await createBackend(backendName(flags));
      try {
        await runDemo(backend, note, flags.prompt, maxTokens, !!flags.json);
      } finally {
        await backend.dispose();
      }
    });
}

async function runDemo(
  backend: Backend,
  backendNote: string | undefined,
  prompt: string,
  maxTokens: number,
  json: boolean,
): Promise<void> {
  const say = (line = "") => json || process.stdout.write(`${line}\n`);
  const base: LoadOptions = { backend, prefillChunk: demoChunk, kvBlockTokens: demoKvBlock };
  // The unlimited plan tells the smallest budget the model streams in, and the context the prompt needs.
  const roomy = await LayerwiseModel.load(bundledModelDir, base);
  const promptTokens = (await roomy.encodePrompt(prompt)).length;
  const context = Math.min(roomy.maxPositions, promptTokens + maxTokens);
  const { minDeviceBytes, input } = roomy.plan;
  const layers = roomy.layout.layers;
  const weightBytes = roomy.layout.globals.dataBytes + layers.reduce((n, l) => n + l.dataBytes, 0);
  await roomy.close();

  // Room for one more layer slot than the least, and RAM for the KV and the first layers: the rest stays on disk.
  const vram = minDeviceBytes + 2 * roomy.layout.maxLayerDeviceBytes;
  const ram =
    kvBytesAt(input.shape, input.kvDtype, context) + layers.slice(0, layersInRam).reduce((n, l) => n + l.hostBytes, 0);
  const tight = { ...base, context, vram, ram };
  const signal = interruptSignal();

  say("layerwise demo: stories260K, a real 260K-parameter Llama trained on TinyStories (bundled, MIT; no download)");
  say(`backend  ${backendNote ?? backend.name}`);
  const streamed = await generate(tight, { prompt, maxTokens, signal, quiet: json }, (model) => {
    say();
    const overhead = backend.deviceOverheadBytes;
    const note =
      backend.name === "cpu"
        ? " (the CPU backend keeps to it as a GPU would)"
        : overhead
          ? ` (the CUDA context's ${formatBytes(overhead)} and ${formatBytes(vram - overhead)} for layerwise)`
          : "";
    say(`The plan for a VRAM budget of ${formatBytes(vram)}${note}, for ${formatBytes(weightBytes)} of weights:`);
    for (const line of planLines(model.plan)) say(`  ${line}`);
    say();
    say(`prompt: ${prompt}`);
    if (!json) process.stdout.write(prompt);
  });
  const resident = await generate({ ...base, context }, { prompt, maxTokens, signal, quiet: true }, () => {});
  const same = streamed.text === resident.text;

  const perToken = (bytes: number) => bytes / Math.max(1, streamed.tokens - 1);
  const rate = (s: number) => (s > 0 ? `${(1 / s).toFixed(0)} tokens/s` : "-");
  if (json) {
    process.stdout.write(
      JSON.stringify({
        backend: backend.name,
        model: "stories260K",
        vram_budget_bytes: vram,
        ram_budget_bytes: ram,
        layer_tiers: streamed.plan.layerTier,
        layer_slots: streamed.plan.slots,
        prompt,
        text: streamed.text,
        prompt_tokens: streamed.promptTokens,
        tokens: streamed.tokens,
        ttft_s: streamed.ttftS,
        decode_s_per_token: streamed.decodeSPerToken,
        decode_h2d_bytes_per_token: perToken(streamed.decodeH2dBytes),
        decode_disk_read_bytes_per_token: perToken(streamed.decodeDiskBytes),
        peak_vram_bytes: streamed.peakVramBytes,
        resident_decode_s_per_token: resident.decodeSPerToken,
        resident_text_identical: same,
      }) + "\n",
    );
    return;
  }
  say("\n");
  say(
    `${streamed.promptTokens} prompt tokens, ${streamed.tokens} new: first token in ${streamed.ttftS.toFixed(3)} s, then ${rate(streamed.decodeSPerToken)}`,
  );
  say(
    `measured: each token copied ${formatBytes(perToken(streamed.decodeH2dBytes))} to the device and read ${formatBytes(perToken(streamed.decodeDiskBytes))} from disk; peak device memory ${formatBytes(streamed.peakVramBytes)} of the ${formatBytes(vram)} budget`,
  );
  say(
    same
      ? `check: with every layer resident (no budget) the model wrote the same ${resident.tokens} tokens, at ${rate(resident.decodeSPerToken)}`
      : `check: with every layer resident the text differs (${JSON.stringify(resident.text.slice(0, 60))}...): please report this`,
  );
  say();
  say(
    `next: layerwise run <model folder> --prompt "..."   (a Hugging Face folder: config.json, *.safetensors, tokenizer.json)`,
  );
  say(`      layerwise plan <model folder> --context 100k --vram 8GB`);
}

interface DemoRun {
  plan: Plan;
  text: string;
  promptTokens: number;
  tokens: number;
  ttftS: number;
  decodeSPerToken: number;
  decodeH2dBytes: number;
  decodeDiskBytes: number;
  peakVramBytes: number;
}

/** Loads the bundled model with `o`, greedily continues the prompt (streaming the text unless quiet), and closes it. */
async function generate(
  o: LoadOptions,
  g: { prompt: string; maxTokens: number; signal: AbortSignal; quiet: boolean },
  onLoaded: (m: LayerwiseModel) => void,
): Promise<DemoRun> {
  const model = await LayerwiseModel.load(bundledModelDir, o);
  try {
    onLoaded(model);
    let afterPrefill = model.stats();
    const r = await model.complete(g.prompt, {
      maxTokens: g.maxTokens,
      temperature: 0,
      signal: g.signal,
      onPrefillProgress: (done) => {
        if (done >= 1) afterPrefill = model.stats();
      },
      onText: (piece) => g.quiet || process.stdout.write(piece),
    });
    const s = model.stats();
    return {
      plan: model.plan,
      text: r.text,
      promptTokens: r.promptTokens,
      tokens: r.tokens.length,
      ttftS: r.ttftS,
      decodeSPerToken: r.decodeSPerToken,
      decodeH2dBytes: s.h2dBytes - afterPrefill.h2dBytes,
      decodeDiskBytes: s.diskReadBytes - afterPrefill.diskReadBytes,
      peakVramBytes: s.peakVramBytes,
    };
  } finally {
    await model.close();
  }
}

/** Where each part of the model lives, one line per tier, and what a token moves. */
function planLines(p: Plan): string[] {
  const layersIn = (tier: string) => p.layerTier.flatMap((t, i) => (t === tier ? [i] : []));
  const list = (ids: number[]) => (ids.length === 1 ? `layer ${ids[0]}` : `layers ${ids.join(", ")}`);
  const d = p.deviceBytes;
  const resident = layersIn("device");
  const ram = layersIn("ram");
  const disk = layersIn("disk");
  return [
    `device  embeddings and head ${formatBytes(d.globals)}${resident.length ? `, ${list(resident)} ${formatBytes(d.residentLayers)}` : ""}, ${p.slots} slots the other layers take turns in ${formatBytes(d.slots)}, prefill workspace ${formatBytes(d.workspace + d.kvHeadroom)}, KV ${formatBytes(d.kv + d.kvStaging)}`,
    ...(ram.length
      ? [`RAM     ${list(ram)} (pinned, ${formatBytes(p.hostBytes.ramLayers)}) and the KV beyond the device's share`]
      : []),
    ...(disk.length ? [`disk    ${list(disk)}, read again for every token`] : []),
    `each token copies ${formatBytes(p.perToken.h2dBytes)} to the device (a layer alone in its slot stays) and reads ${formatBytes(p.perToken.diskBytes)} from disk, each layer's copy running while the one before it computes`,
  ];
}
