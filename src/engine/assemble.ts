// The composition root: from a model folder and load options, every part of a loaded model, built in order and torn
// down in order. LayerwiseModel is the public API over these parts; nothing else builds them.
import { createArchModel } from "../arch/index.js";
import { hasRecurrentLayers, type ArchModel } from "../arch/types.js";
import { createBackend, type BackendName } from "../backend/index.js";
import { dtypeBytes } from "../backend/dtype.js";
import type { Backend } from "../backend/ops.js";
import { ChatTemplate } from "../model/chat-template.js";
import { Checkpoint } from "../model/checkpoint.js";
import { DiskReader, type FileIo } from "../model/disk-reader.js";
import { readGenerationDefaults, type GenerationDefaults } from "../model/generation-config.js";
import { PromptEncoder, type PromptLimits } from "../model/prompt-encoder.js";
import { TextTokenizer } from "../model/tokenizer.js";
import { FileRanges } from "./file-ranges.js";
import { modelFingerprint } from "./fingerprint.js";
import { KvStager } from "./kv-attention.js";
import { KvBlockPool } from "./kv-blocks.js";
import type { KvPolicy } from "./kv-cache.js";
import { KvSpill } from "./kv-spill.js";
import { KvStore, type StoreIo } from "./kv-store.js";
import { planForLoad, type PlanOptions } from "./load-plan.js";
import { kvLayersOf, kvReservedBlocks, windowBlocks, type Plan } from "./planner.js";
import { PrefixCache } from "./prefix-cache.js";
import { Runner } from "./runner.js";
import { LayerStreamer } from "./streamer.js";
import { validateWeights } from "./weights.js";

export interface LoadOptions extends PlanOptions {
  /** A backend name, or a backend to share (the model then leaves it open on close). */
  backend?: BackendName | Backend;
  /** Largest size of the persistent KV cache; least recently used blocks go first. */
  kvCacheMax?: number;
  /** Where to put KV that spills to disk; default: the OS temp folder. */
  kvSpillDir?: string;
  /** Time and memory limits of prompt encoding (chat template and tokenizer, in a process of their own); defaults in prompt-encoder.ts. */
  promptLimits?: Partial<PromptLimits>;
  /**
   * Problems layerwise handled on its own. The persistent KV cache never fails an answer; it reports KV_CACHE_DISABLED
   * (it is off, or no longer written, for the rest of the model's life), KV_CACHE_CORRUPT (a damaged or malformed block,
   * recomputed and removed), KV_CACHE_READ_FAILED (a block that could not be read, recomputed) and KV_CACHE_NOT_OURS (an
   * entry at one of its names that it did not write, left alone).
   */
  onWarning?: (code: string, message: string) => void;
  /** Test seams for file errors. */
  fileIo?: FileIo;
  storeIo?: StoreIo;
}

/** Every part of a loaded model. */
export interface Engine {
  readonly checkpoint: Checkpoint;
  readonly arch: ArchModel;
  readonly tokenizer: TextTokenizer;
  readonly chatTemplate: ChatTemplate | undefined;
  readonly defaults: GenerationDefaults;
  readonly encoder: PromptEncoder;
  readonly backend: Backend;
  /** Why the backend was chosen, when `auto` fell back. */
  readonly backendNote?: string;
  readonly plan: Plan;
  readonly reader: DiskReader;
  readonly blocks: KvBlockPool;
  readonly streamer: LayerStreamer;
  readonly stager: KvStager;
  readonly runner: Runner;
  readonly policy: KvPolicy;
  readonly spill: KvSpill;
  readonly ranges: FileRanges;
  readonly prefixCache?: PrefixCache;
  close(): Promise<void>;
}

export async function assembleEngine(dir: string, o: LoadOptions): Promise<Engine> {
  const checkpoint = await Checkpoint.open(dir);
  const cleanup: (() => unknown)[] = [() => checkpoint.close()];
  try {
    const { model: arch } = createArchModel(checkpoint.rawConfig, `${dir}/config.json`);
    validateWeights(checkpoint, arch, o.onWarning);
    const tokenizer = await TextTokenizer.load(dir, { vocabSize: arch.shape.vocabSize });
    const chatTemplate = await ChatTemplate.load(dir, tokenizer.config);
    // The encoder's process loads the tokenizer while the rest loads here (it reads the folder now, not at the first prompt).
    const encoder = PromptEncoder.open(dir, { maxPositions: arch.shape.maxPositions, limits: o.promptLimits });
    cleanup.push(() => encoder.close());
    const encoderStarted = encoder.start();
    encoderStarted.catch(() => {}); // awaited below
    const defaults = await readGenerationDefaults(dir, checkpoint.rawConfig);
    const shared = typeof o.backend === "object" ? o.backend : undefined;
    const { backend, note } = shared
      ? { backend: shared, note: undefined }
      : await createBackend((o.backend as BackendName | undefined) ?? "auto");
    if (!shared) cleanup.push(() => backend.dispose());

    const plan = await planForLoad(checkpoint, arch, backend, o);
    const { prefillChunk, prefillSpan, kvBlockTokens, kvDtype } = plan.input;
    backend.setDeviceBudget(plan.input.vramBytes);
    backend.resetPeaks();
    const reader = new DiskReader({ direct: backend.caps.directIo, io: o.fileIo });
    cleanup.push(() => reader.close());
    // The plan's device share for KV is taken now (below), so device memory is the same at any context length.
    const blocks = new KvBlockPool(backend, kvBlockTokens, kvDtype);
    cleanup.push(() => blocks.dispose());
    const streamer = await LayerStreamer.create(backend, plan.input.layout, plan, reader, () =>
      blocks.extraDeviceBytes(),
    );
    cleanup.push(() => streamer.dispose());
    const kvBlockBytes =
      Math.max(...arch.shape.kvLayers.map((l) => l.kvHeads * l.headDim)) * kvBlockTokens * dtypeBytes[kvDtype];
    const stager = new KvStager(backend, kvBlockBytes, Math.max(2, plan.kvStagingBlocks), kvDtype);
    cleanup.push(() => stager.dispose());
    // With a persistent cache, recurrent state is kept at chunk ends too, so a cached prefix can resume near its end.
    const runner = new Runner(backend, arch, streamer, stager, {
      prefillChunk,
      prefillSpan,
      ...(o.kvCache && hasRecurrentLayers(arch.shape) ? { stateSnapshotTokens: prefillChunk } : {}),
    });
    cleanup.push(() => runner.dispose());
    runner.reserveHostStates(plan.hiddenHostBuffers.count, plan.hiddenHostBuffers.rows);
    const policy: KvPolicy = {
      blockTokens: kvBlockTokens,
      dtype: kvDtype,
      deviceBlocks: Math.floor(plan.kvDeviceTokens / kvBlockTokens),
      decodeDeviceBlocks: Math.floor(plan.kvDeviceTokensDecode / kvBlockTokens),
      hostBlocks: Math.floor(plan.kvHostTokens / kvBlockTokens),
      dropOutsideWindow: !o.kvCache,
    };
    if (plan.slots > 0) {
      for (const [kvCols, count] of kvReservedBlocks(plan)) blocks.reserve(kvCols, count);
      if (plan.kvStagingBlocks > 0) stager.reserve();
      // The RAM tier's pinned buffers, one per block; a sliding-window layer that frees what its window passed holds
      // at most its window's blocks, in either tier.
      for (const l of kvLayersOf(plan.input)) {
        const count =
          plan.input.batch *
          Math.min(policy.hostBlocks, Math.max(0, windowBlocks(plan.input, l) - policy.deviceBlocks));
        blocks.reserveHost(2 * kvBlockTokens * l.kvHeads * l.headDim * dtypeBytes[kvDtype], count);
      }
    }
    const prefixCache = o.kvCache
      ? await openPrefixCache(o.kvCache, o, checkpoint, arch, plan, () => streamer.useShare("prefill"))
      : undefined;
    const spill = new KvSpill(o.kvSpillDir);
    cleanup.push(() => spill.dispose());
    const ranges = new FileRanges();
    cleanup.push(() => ranges.close());
    await encoderStarted;
    return {
      checkpoint,
      arch,
      tokenizer,
      chatTemplate,
      defaults,
      encoder,
      backend,
      backendNote: note,
      plan,
      reader,
      blocks,
      streamer,
      stager,
      runner,
      policy,
      spill,
      ranges,
      prefixCache,
      async close() {
        encoder.close();
        await streamer.dispose(); // first: its reads ahead may still be landing
        stager.dispose();
        runner.dispose();
        blocks.dispose();
        await spill.dispose();
        await ranges.close();
        await reader.close();
        if (!shared) await backend.dispose();
        await checkpoint.close();
      },
    };
  } catch (e) {
    for (const c of cleanup.reverse()) await c();
    throw e;
  }
}

async function openPrefixCache(
  dir: string,
  o: LoadOptions,
  checkpoint: Checkpoint,
  arch: ArchModel,
  plan: Plan,
  beforeAdopt: () => Promise<void>,
): Promise<PrefixCache> {
  const { kvDtype, kvBlockTokens } = plan.input;
  const store = await KvStore.open(dir, {
    maxBytes: o.kvCacheMax,
    io: o.storeIo,
    events: { warn: o.onWarning ?? (() => {}) },
  });
  const fingerprint = await modelFingerprint(checkpoint, `kv:${kvDtype}:${kvBlockTokens}`);
  const kvLayers = arch.shape.kvLayers;
  const layout = {
    fingerprint,
    dtype: kvDtype,
    blockTokens: kvBlockTokens,
    layerBytes: kvLayers.map((l) => 2 * kvBlockTokens * l.kvHeads * l.headDim * dtypeBytes[kvDtype]),
    stateBytes: kvLayers.map((l) => 4 * (l.stateFloats ?? 0)),
  };
  return new PrefixCache(store, layout, hasRecurrentLayers(arch.shape), beforeAdopt);
}
