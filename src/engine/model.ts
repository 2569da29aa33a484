// The library's entry point: a loaded model folder that plans its memory, streams its layers, generates text and exposes logits.
import { freemem } from "node:os";
import { createArchModel } from "../arch/index.js";
import { hasRecurrentLayers, type ArchModel } from "../arch/types.js";
import { createBackend, type BackendName } from "../backend/index.js";
import { dtypeBytes, type FloatDType } from "../backend/dtype.js";
import type { Backend } from "../backend/ops.js";
import { UsageError } from "../errors.js";
import { ChatTemplate, type ChatMessage } from "../model/chat-template.js";
import { Checkpoint } from "../model/checkpoint.js";
import { DiskReader, type FileIo } from "../model/disk-reader.js";
import { checkTokenIds, PromptEncoder, promptTooLong, type EncodeOptions, type PromptLimits } from "../model/prompt-encoder.js";
import { readGenerationDefaults, type GenerationDefaults } from "../model/generation-config.js";
import { TextTokenizer } from "../model/tokenizer.js";
import { FileRanges } from "./file-ranges.js";
import { modelFingerprint } from "./fingerprint.js";
import { generateText, generateTokens, type GenerateOptions, type GenerationResult, type TokenStats } from "./generate.js";
import { KvStager } from "./kv-attention.js";
import { KvCache, type KvPolicy } from "./kv-cache.js";
import { KvSpill } from "./kv-spill.js";
import { KvBlockPool } from "./kv-blocks.js";
import { KvStore, type BlockLayout, type StoreIo } from "./kv-store.js";
import { modelLayout, type ModelLayout } from "./layout.js";
import { kvLayersOf, kvReservedBlocks, planPrefill, windowBlocks, type Plan } from "./planner.js";
import { Runner, type LogitsWanted } from "./runner.js";
import type { LogitsRequest, RankedLogits } from "./sampling.js";
import { LayerStreamer } from "./streamer.js";
import { validateWeights } from "./weights.js";

export interface LoadOptions {
  /** A backend name, or a backend to share (the model then leaves it open on close). */
  backend?: BackendName | Backend;
  /** Element type of the KV cache; default: f32 on the CPU backend, bf16 on CUDA. */
  kvDtype?: FloatDType;
  /** Tokens per KV cache block (the unit of tiering and of the persistent cache). */
  kvBlockTokens?: number;
  /** Bytes the compute device may hold; default: free GPU memory less a margin (CPU backend: no limit). */
  vram?: number;
  /** Bytes of RAM for caching weights and KV; default: half the free RAM. */
  ram?: number;
  /** Tokens one sequence may hold, for planning; default: the model's context. */
  context?: number;
  /** Sequences decoded together, for planning; default 1. */
  batch?: number;
  /** Rows per layer pass during prefill; default: 8192, 4096 or 2048, the largest whose plan decodes as fast as 2048's (see planPrefill). */
  prefillChunk?: number;
  /** Rows taken through all layers before the next (each layer's weights pass once per span); default: the whole context where that costs decode nothing, else 32768 (see planPrefill). */
  prefillSpan?: number;
  /** Folder of the persistent KV cache: prompts that start with a cached prefix skip its prefill. */
  kvCache?: string;
  /** Largest size of the persistent KV cache; least recently used blocks go first. */
  kvCacheMax?: number;
  /** Most device slots for hot experts (mixture-of-experts models); default: what the VRAM budget leaves room for. */
  expertSlots?: number;
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

export type Prompt = string | { messages: readonly ChatMessage[] } | { ids: readonly number[] };

/** What the engine did, for --json and benchmarks; counters grow over the model's life. */
export interface EngineStats {
  peakVramBytes: number;
  peakHostBytes: number;
  diskReadBytes: number;
  h2dBytes: number;
  kvDiskBytes: number;
  ioWaitS: number;
  computeS: number;
  /** Seconds the weight reader had a read in flight (busy time of the disk, as this process drives it). */
  diskBusyS: number;
  kvCacheHitTokens: number;
  /** Mixture of experts: experts copied to the device (misses of the hot-expert cache), and hits. */
  expertLoads: number;
  expertHits: number;
}

/** A conversation's state on the model: the tokens it has seen and their KV cache. */
export class Sequence {
  readonly tokens: number[] = [];
  /** Blocks already in the persistent cache, and the hash of the last (the next block's parent). */
  savedBlocks = 0;
  lastHash: string | null = null;

  constructor(readonly cache: KvCache) {}

  get length(): number {
    return this.tokens.length;
  }

  /**
   * Forgets everything from token `length` on; returns the length kept, which is 0 when a sliding-window layer has
   * already freed keys that position needs, or a recurrent layer's state has moved past it (the caller then feeds the
   * tokens again).
   */
  async rewind(length: number): Promise<number> {
    if (!this.cache.canTruncate(Math.min(length, this.tokens.length))) length = 0;
    this.tokens.length = Math.min(length, this.tokens.length);
    await this.cache.truncate(this.tokens.length);
    if (this.savedBlocks * this.cache.policy.blockTokens > this.tokens.length) {
      // The hash chain restarts from the first block; blocks the cache already has are skipped when saving.
      this.savedBlocks = 0;
      this.lastHash = null;
    }
    return this.tokens.length;
  }

  dispose(): void {
    this.cache.free();
  }
}

export interface ForwardOptions {
  /** Fraction of the forward's layer passes done. */
  onProgress?: (done: number) => void;
  signal?: AbortSignal;
}

export class LayerwiseModel {
  private readonly statsBase = { kvCacheHitTokens: 0, computeS: 0 };
  /** Some layers keep recurrent state (linear attention) instead of KV. */
  private readonly recurrent: boolean;

  private constructor(
    readonly dir: string,
    readonly arch: ArchModel,
    readonly checkpoint: Checkpoint,
    readonly tokenizer: TextTokenizer,
    readonly chatTemplate: ChatTemplate | undefined,
    readonly defaults: GenerationDefaults,
    readonly backend: Backend,
    readonly layout: ModelLayout,
    readonly plan: Plan,
    /** The engine's parts (tests and benchmarks look at the KV policy). */
    readonly parts: {
      reader: DiskReader;
      streamer: LayerStreamer;
      stager: KvStager;
      runner: Runner;
      spill: KvSpill;
      ranges: FileRanges;
      store?: KvStore;
      blockLayout?: BlockLayout;
      policy: KvPolicy;
      blocks: KvBlockPool;
      ownsBackend: boolean;
      encoder: PromptEncoder;
    },
    /** Why the backend was chosen, when `auto` fell back. */
    readonly backendNote?: string,
  ) {
    this.recurrent = hasRecurrentLayers(arch.shape);
  }

  static async load(dir: string, o: LoadOptions = {}): Promise<LayerwiseModel> {
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
      const { backend, note } = shared ? { backend: shared, note: undefined } : await createBackend((o.backend as BackendName | undefined) ?? "auto");
      if (!shared) cleanup.push(() => backend.dispose());
      const layout = modelLayout(checkpoint, arch, backend.caps.directIo);
      const kvDtype = o.kvDtype ?? (backend.name === "cpu" ? "f32" : "bf16");
      const kvBlockTokens = o.kvBlockTokens ?? 256;
      const thePlan = planPrefill({
        layout,
        shape: arch.shape,
        contextTokens: Math.min(o.context ?? arch.shape.maxPositions, arch.shape.maxPositions),
        batch: o.batch ?? 1,
        prefillChunk: o.prefillChunk,
        prefillSpan: o.prefillSpan,
        kvBlockTokens,
        kvDtype,
        deviceBytesFor: (n) => backend.deviceBytesFor(n),
        workspaceSlack: backend.workspaceSlack,
        vramBytes: (o.vram ?? (await backend.defaultDeviceBudget())) - backend.deviceOverheadBytes,
        ramBytes: o.ram ?? Math.floor(freemem() / 2),
        expertSlots: o.expertSlots,
        kvKeepsEveryBlock: o.kvCache !== undefined,
      });
      const { prefillChunk, prefillSpan } = thePlan.input;
      backend.setDeviceBudget(thePlan.input.vramBytes + backend.deviceOverheadBytes);
      backend.resetPeaks();
      const reader = new DiskReader({ direct: backend.caps.directIo, io: o.fileIo });
      cleanup.push(() => reader.close());
      // The plan's device share for KV is taken now (below), so device memory is the same at any context length.
      const blocks = new KvBlockPool(backend, kvBlockTokens, kvDtype);
      cleanup.push(() => blocks.dispose());
      const streamer = await LayerStreamer.create(backend, layout, thePlan, reader, () => blocks.extraDeviceBytes());
      cleanup.push(() => streamer.dispose());
      const kvBlockBytes = Math.max(...arch.shape.kvLayers.map((l) => l.kvHeads * l.headDim)) * kvBlockTokens * dtypeBytes[kvDtype];
      const stager = new KvStager(backend, kvBlockBytes, Math.max(2, thePlan.kvStagingBlocks), kvDtype);
      // With a persistent cache, recurrent state is kept at chunk ends too, so a cached prefix can resume near its end.
      const runner = new Runner(backend, arch, streamer, stager, { prefillChunk, prefillSpan, ...(o.kvCache && hasRecurrentLayers(arch.shape) ? { stateSnapshotTokens: prefillChunk } : {}) });
      cleanup.push(() => runner.dispose());
      runner.reserveHostStates(thePlan.hiddenHostBuffers.count, thePlan.hiddenHostBuffers.rows);
      const policy: KvPolicy = {
        blockTokens: kvBlockTokens,
        dtype: kvDtype,
        deviceBlocks: Math.floor(thePlan.kvDeviceTokens / kvBlockTokens),
        decodeDeviceBlocks: Math.floor(thePlan.kvDeviceTokensDecode / kvBlockTokens),
        hostBlocks: Math.floor(thePlan.kvHostTokens / kvBlockTokens),
        dropOutsideWindow: !o.kvCache,
      };
      if (thePlan.slots > 0) {
        for (const [kvCols, count] of kvReservedBlocks(thePlan)) blocks.reserve(kvCols, count);
        if (thePlan.kvStagingBlocks > 0) stager.reserve();
        // The RAM tier's pinned buffers, one per block; a sliding-window layer that frees what its window passed holds
        // at most its window's blocks, in either tier.
        for (const l of kvLayersOf(thePlan.input)) {
          const count = thePlan.input.batch * Math.min(policy.hostBlocks, Math.max(0, windowBlocks(thePlan.input, l) - policy.deviceBlocks));
          blocks.reserveHost(2 * kvBlockTokens * l.kvHeads * l.headDim * dtypeBytes[kvDtype], count);
        }
      }
      let store: KvStore | undefined;
      let blockLayout: BlockLayout | undefined;
      if (o.kvCache) {
        store = await KvStore.open(o.kvCache, { maxBytes: o.kvCacheMax, io: o.storeIo, events: { warn: o.onWarning ?? (() => {}) } });
        const fingerprint = await modelFingerprint(checkpoint, `kv:${kvDtype}:${kvBlockTokens}`);
        const kvLayers = arch.shape.kvLayers;
        blockLayout = { fingerprint, dtype: kvDtype, blockTokens: kvBlockTokens, layerBytes: kvLayers.map((l) => 2 * kvBlockTokens * l.kvHeads * l.headDim * dtypeBytes[kvDtype]), stateBytes: kvLayers.map((l) => 4 * (l.stateFloats ?? 0)) };
      }
      await encoderStarted;
      const parts = { reader, streamer, stager, runner, spill: new KvSpill(o.kvSpillDir), ranges: new FileRanges(), store, blockLayout, policy, blocks, ownsBackend: !shared, encoder };
      return new LayerwiseModel(dir, arch, checkpoint, tokenizer, chatTemplate, defaults, backend, layout, thePlan, parts, note);
    } catch (e) {
      for (const c of cleanup.reverse()) await c();
      throw e;
    }
  }

  get maxPositions(): number {
    return this.arch.shape.maxPositions;
  }

  createSequence(): Sequence {
    return new Sequence(new KvCache(this.backend, this.arch.shape, this.parts.policy, this.parts.spill, this.parts.ranges, this.parts.blocks));
  }

  /** Feeds `ids` after what `seq` holds; logits [rows * vocab] of the last id, or of every id with `all`. */
  async forward(seq: Sequence, ids: readonly number[], logits: "last" | "all" = "last", o: ForwardOptions = {}): Promise<Float32Array> {
    return (await this.forwardBatch([{ seq, ids }], logits, o))[0]!;
  }

  /**
   * Feeds new ids to several sequences in one pass (every layer's weights serve all of them): a batch of decode steps,
   * or prompts. Logits per sequence, as `forward` gives them.
   */
  async forwardBatch(items: readonly { seq: Sequence; ids: readonly number[] }[], logits?: "last" | "all", o?: ForwardOptions): Promise<Float32Array[]>;
  /** With sampling requests (one per item): the last token's best ids where its request asks, ranked on the backend. */
  async forwardBatch(items: readonly { seq: Sequence; ids: readonly number[] }[], logits: LogitsWanted, o?: ForwardOptions): Promise<(Float32Array | RankedLogits)[]>;
  async forwardBatch(items: readonly { seq: Sequence; ids: readonly number[] }[], logits: LogitsWanted = "last", o: ForwardOptions = {}): Promise<(Float32Array | RankedLogits)[]> {
    for (const { seq, ids } of items) {
      if (seq.length + ids.length > this.maxPositions) {
        throw new UsageError("CONTEXT_FULL", `${seq.length} + ${ids.length} tokens exceed the model's context of ${this.maxPositions}`);
      }
    }
    const single = items.length === 1 ? items[0]! : undefined;
    if (single && this.parts.store && this.recurrent) {
      // Recurrent state can be cached only where a block ends: run up to the prompt's last block boundary first.
      const block = this.parts.policy.blockTokens;
      const cut = Math.floor((single.seq.length + single.ids.length) / block) * block - single.seq.length;
      if (cut > 0 && cut < single.ids.length) {
        const first = await this.forwardBatch([{ seq: single.seq, ids: single.ids.slice(0, cut) }], logits === "all" ? "all" : "last", o);
        const rest = await this.forwardBatch([{ seq: single.seq, ids: single.ids.slice(cut) }], logits, o);
        return [logits === "all" ? Float32Array.from([...first[0]!, ...(rest[0] as Float32Array)]) : rest[0]!];
      }
    }
    const t0 = performance.now();
    const wait0 = this.ioWaitS();
    const before = items.map(({ seq }) => seq.tokens.length);
    // A prompt's completed spans go to the persistent cache as they finish (a crash keeps them).
    const afterSpan = single
      ? async (spanEnd: number) => {
          single.seq.tokens.length = before[0]!;
          single.seq.tokens.push(...single.ids.slice(0, spanEnd));
          await this.persist(single.seq);
        }
      : undefined;
    let out: (Float32Array | RankedLogits)[];
    try {
      out = await this.parts.runner.forward(
        items.map(({ seq, ids }) => ({ cache: seq.cache, ids })),
        logits,
        { onProgress: o.onProgress, signal: o.signal, afterSpan },
      );
    } catch (e) {
      // The runner rolled the caches back (to nothing, if a sliding window had freed keys): keep the token lists in step.
      for (const { seq } of items) if (seq.cache.length() < seq.tokens.length) await seq.rewind(seq.cache.length());
      throw e;
    }
    items.forEach(({ seq, ids }, i) => {
      seq.tokens.length = before[i]!;
      seq.tokens.push(...ids);
    });
    this.statsBase.computeS += (performance.now() - t0) / 1000 - (this.ioWaitS() - wait0);
    return out;
  }

  /** Loads the longest cached prefix of `ids` into an empty sequence; returns how many tokens it covers. */
  async loadPrefix(seq: Sequence, ids: readonly number[]): Promise<number> {
    const { store, blockLayout: layout } = this.parts;
    if (!store || !layout || seq.length > 0) return 0;
    let blocks = await store.lookup(layout, ids);
    const recurrent = layout.layerBytes.map((_, l) => seq.cache.isRecurrent(l));
    if (this.recurrent) {
      // Recurrent state resumes only at a block stored with its state, and must leave a prompt token to run.
      const resumable = (i: number) => (i + 1) * layout.blockTokens < ids.length && recurrent.every((r, l) => !r || blocks[i]!.manifest.layers[l]!.bytes > 0);
      let last = blocks.length - 1;
      while (last >= 0 && !resumable(last)) last--;
      blocks = blocks.slice(0, last + 1);
    }
    // Adopted blocks take device memory before the prompt's forward would free the layers decode kept: free them now.
    if (blocks.length > 0) await this.parts.streamer.useShare("prefill");
    const buf = new Uint8Array(Math.max(...layout.layerBytes, ...blocks.flatMap((b) => b.manifest.layers.map((l) => l.bytes))));
    let loaded = 0;
    for (const [i, b] of blocks.entries()) {
      const layers: (Uint8Array | undefined)[] = [];
      for (let l = 0; l < layout.layerBytes.length; l++) {
        if (recurrent[l] && i < blocks.length - 1) {
          layers.push(undefined); // only the last block's state is needed
          continue;
        }
        const bytes = await store.readLayer(b, l, buf);
        if (!bytes) break;
        layers.push(bytes.slice());
      }
      if (layers.length < layout.layerBytes.length) break; // a corrupt block ends the reusable prefix: recompute from here
      for (let l = 0; l < layers.length; l++) {
        if (!recurrent[l]) await seq.cache.adopt(l, layers[l]!);
        else if (layers[l]) seq.cache.adoptState(l, layers[l]!, (i + 1) * layout.blockTokens);
      }
      loaded++;
      seq.lastHash = b.hash;
    }
    if (this.recurrent && loaded < blocks.length) {
      // A corrupt block before the last: the state to resume from is gone, so nothing is reused.
      await seq.rewind(0);
      seq.lastHash = null;
      loaded = 0;
    }
    await store.touch(blocks.slice(0, loaded));
    const tokens = loaded * layout.blockTokens;
    seq.tokens.push(...ids.slice(0, tokens));
    seq.savedBlocks = loaded;
    // At least one prompt token must run to give logits.
    if (tokens === ids.length && tokens > 0) await seq.rewind(tokens - 1);
    const hit = seq.length;
    this.statsBase.kvCacheHitTokens += hit;
    return hit;
  }

  /** Writes the sequence's complete blocks that the persistent cache does not have yet. */
  async persist(seq: Sequence): Promise<void> {
    const { store, blockLayout: layout } = this.parts;
    if (!store || !layout) return;
    const block = layout.blockTokens;
    const complete = Math.floor(seq.length / block);
    for (let b = seq.savedBlocks; b < complete; b++) {
      const blocks = (l: number) => seq.cache.blocks(l)[b]!;
      const state = seq.cache.snapshotAt((b + 1) * block); // recurrent layers' state where this block ends, if kept
      seq.lastHash = await store.save(layout, seq.lastHash, b, seq.tokens.slice(b * block, (b + 1) * block), async (l) => {
        if (seq.cache.isRecurrent(l)) return state?.get(l) ?? new Uint8Array(0);
        const bytes = new Uint8Array(layout.layerBytes[l]!);
        await seq.cache.blockBytesOf(l, blocks(l), bytes);
        return bytes;
      });
      seq.savedBlocks = b + 1;
    }
    seq.cache.dropSnapshots((position) => position > complete * block);
  }

  /**
   * Token ids for a prompt: text gets the tokenizer's special tokens (BOS), messages go through the chat template, ids
   * are checked against the vocabulary. Rendering and tokenizing run in the encoder's own process, never on the event
   * loop, within time and memory limits (`promptLimits`); a text too long in bytes for the context is refused first.
   */
  async encodePrompt(prompt: Prompt, o: EncodeOptions = {}): Promise<number[]> {
    if (typeof prompt === "string") return this.parts.encoder.encodeText(prompt, o);
    if ("ids" in prompt) {
      const ids = checkTokenIds(prompt.ids, this.arch.shape.vocabSize);
      if (o.maxTokens !== undefined && ids.length > o.maxTokens) throw promptTooLong(ids.length, this.maxPositions);
      return ids;
    }
    if (!this.chatTemplate) throw new UsageError("NO_CHAT_TEMPLATE", `${this.dir} has no chat template`, "use a plain prompt (layerwise run) or an instruct model");
    return this.parts.encoder.encodeMessages(prompt.messages, { bos_token: this.tokenizer.specialToken("bos_token"), eos_token: this.tokenizer.specialToken("eos_token") }, o);
  }

  /** Generated token ids, one at a time, on a fresh sequence (or `seq`, continuing it). */
  generateTokens(promptIds: readonly number[], o: GenerateOptions & { onPrefillProgress?: (done: number) => void } = {}, seq?: Sequence): AsyncGenerator<number, TokenStats, boolean | undefined> {
    const sequence = seq ?? this.createSequence();
    const model = this;
    return (async function* () {
      try {
        const hit = await model.loadPrefix(sequence, promptIds);
        let first = true;
        const stepper = {
          eosTokenIds: model.defaults.eosTokenIds,
          room: model.maxPositions - sequence.length,
          step: async (ids: readonly number[], request: LogitsRequest | undefined) => {
            const progress = first ? o.onPrefillProgress : undefined;
            first = false;
            return (await model.forwardBatch([{ seq: sequence, ids }], [request], { onProgress: progress, signal: o.signal }))[0]!;
          },
        };
        const stats = yield* generateTokens(stepper, promptIds, promptIds.length - hit, model.withDefaults(o), hit);
        await model.persist(sequence);
        return stats;
      } finally {
        if (!seq) sequence.dispose();
      }
    })();
  }

  /** Streams text pieces; `for await (const piece of model.generate(prompt))`. The generator's return value is the full result. */
  generate(prompt: Prompt, o: GenerateOptions & { onPrefillProgress?: (done: number) => void } = {}, seq?: Sequence): AsyncGenerator<string, GenerationResult> {
    const model = this;
    return (async function* () {
      const ids = await model.encodePrompt(prompt, { signal: o.signal });
      return yield* generateText(model.tokenizer, ids, model.generateTokens(ids, o, seq), o);
    })();
  }

  /** Generates to the end and returns text, tokens and timings; `onText` sees each piece as it comes. */
  async complete(prompt: Prompt, o: GenerateOptions & { onText?: (piece: string) => void; onPrefillProgress?: (done: number) => void } = {}, seq?: Sequence): Promise<GenerationResult> {
    const it = this.generate(prompt, o, seq);
    for (;;) {
      const r = await it.next();
      if (r.done) return r.value;
      o.onText?.(r.value);
    }
  }

  /** What the engine has done so far (bytes moved, waits, peaks). */
  stats(): EngineStats {
    const m = this.backend.memory;
    const p = this.parts;
    return {
      peakVramBytes: m.deviceBytesPeak,
      peakHostBytes: m.hostBytesPeak,
      diskReadBytes: p.reader.stats.diskReadBytes + p.ranges.bytesRead + (p.store?.stats.bytesRead ?? 0),
      h2dBytes: m.h2dBytes,
      kvDiskBytes: p.spill.bytesWritten + (p.store?.stats.bytesWritten ?? 0),
      ioWaitS: this.ioWaitS(),
      computeS: this.statsBase.computeS,
      diskBusyS: p.reader.stats.readBusyS,
      kvCacheHitTokens: this.statsBase.kvCacheHitTokens,
      expertLoads: p.streamer.expertStats?.loads ?? 0,
      expertHits: p.streamer.expertStats?.hits ?? 0,
    };
  }

  private ioWaitS(): number {
    return this.parts.streamer.stats.ioWaitS + (this.parts.streamer.expertStats?.waitS ?? 0) + this.parts.stager.stats.waitS;
  }

  /** The request's options over the model's generation_config.json defaults. */
  withDefaults(o: GenerateOptions): GenerateOptions {
    const d = this.defaults;
    return { temperature: d.temperature, topK: d.topK, topP: d.topP, minP: d.minP, repetitionPenalty: d.repetitionPenalty, ...stripUndefined(o) };
  }

  async close(): Promise<void> {
    this.parts.encoder.close();
    await this.parts.streamer.dispose(); // first: its reads ahead may still be landing
    this.parts.stager.dispose();
    this.parts.runner.dispose();
    this.parts.blocks.dispose();
    await this.parts.spill.dispose();
    await this.parts.ranges.close();
    await this.parts.reader.close();
    if (this.parts.ownsBackend) await this.backend.dispose();
    await this.checkpoint.close();
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

export const loadModel = LayerwiseModel.load;

/** Loads a model, runs `fn` with it, and closes it whatever happens. */
export async function withModel<T>(dir: string, o: LoadOptions, fn: (m: LayerwiseModel) => Promise<T>): Promise<T> {
  const m = await LayerwiseModel.load(dir, o);
  try {
    return await fn(m);
  } finally {
    await m.close();
  }
}
