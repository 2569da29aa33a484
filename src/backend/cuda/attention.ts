// CUDA attention over KV blocks: the flash kernel (tensor cores, a tile of query rows a block; TileChoice picks the tile)
// where a sequence has 16 query rows or more, else the SIMT kernel split over the keys and a merge of the splits; and
// the merge of two parts over disjoint keys (flash-decoding across memory tiers).
import { BackendError } from "../../errors.js";
import type { AttentionOptions, AttentionPart, KvBlock, Tensor } from "../ops.js";
import type { Allocations } from "./allocations.js";
import type { ComputeQueue } from "./compute-queue.js";
import type { Driver } from "./driver.js";
import { flashKernel, flashSmem, flashTiles, type Kernels } from "./kernels.js";
import type { Streams } from "./streams.js";
import { asCudaTensor, type CudaTensor } from "./tensor.js";
import type { TileChoice } from "./tiles.js";

export interface AttentionParts {
  readonly queue: ComputeQueue;
  readonly allocations: Allocations;
  readonly tiles: TileChoice;
  readonly kernels: Pick<Kernels, "has">;
  /** For the output of attention with no keys at all, written on the compute stream directly. */
  readonly driver: Driver;
  readonly streams: Streams;
  /** The GPU's multiprocessors: the SIMT kernel splits the keys to fill about four blocks each. */
  readonly multiprocessors: number;
}

export class CudaAttention {
  constructor(private readonly parts: AttentionParts) {}

  /** Attention of q over the blocks of o.seqs: the output, and each row's log-sum-exp per head when `withLse`. */
  attend(q: Tensor, o: AttentionOptions, withLse: boolean): { out: CudaTensor; lse?: CudaTensor } {
    const { queue, allocations, tiles, kernels, driver, streams } = this.parts;
    const qt = asCudaTensor(q);
    const rows = qt.shape[0]!;
    const { heads, kvHeads, headDim } = o;
    const out = allocations.allocOutput([rows, heads * headDim]);
    const lse = withLse ? allocations.allocOutput([rows, heads]) : undefined;
    if (!o.sinks && o.seqs.every((s) => s.blocks.length === 0 || s.qRows === 0)) {
      // No keys at all: zero output, and -Infinity log-sum-exps so a merge ignores this part.
      driver.memsetAsync(out.ptr, 0, out.byteLength, streams.compute);
      if (lse)
        driver.copyHtoDAsyncFrom(
          lse.ptr,
          new Uint8Array(new Float32Array(rows * heads).fill(-Infinity).buffer),
          rows * heads * 4,
          streams.compute,
        );
      return { out, lse };
    }
    const blocks: KvBlock[] = o.seqs.flatMap((s) => s.blocks);
    const kvDtype = blocks[0]?.k.dtype ?? "bf16"; // no blocks: only the sinks count, any kernel does
    const sinks = o.sinks && queue.asF32(o.sinks, "forget");
    const seqInfo = new Int32Array(o.seqs.length * 5);
    let begin = 0;
    o.seqs.forEach((s, i) => {
      seqInfo.set([s.qRow, s.qRows, s.qPos, begin, s.blocks.length], 5 * i);
      begin += s.blocks.length;
    });
    const ptrs = new BigUint64Array(blocks.length * 2);
    const pos = new Int32Array(blocks.length * 2);
    blocks.forEach((b, i) => {
      ptrs[2 * i] = asCudaTensor(b.k).ptr;
      ptrs[2 * i + 1] = asCudaTensor(b.v).ptr;
      pos[2 * i] = b.start;
      pos[2 * i + 1] = b.length;
    });
    const seqBuf = queue.uploadSmall(seqInfo, "forget");
    const ptrBuf = queue.uploadSmall(ptrs, "forget");
    const posBuf = queue.uploadSmall(pos, "forget");
    const reads = [qt, ...blocks.flatMap((b) => [b.k, b.v])];
    const keys = {
      seqs: seqBuf.ptr,
      blockPtrs: ptrBuf.ptr,
      blockPos: posBuf.ptr,
      heads,
      kvHeads,
      kvCols: kvHeads * headDim,
    };
    const scores = { scale: o.scale, window: o.slidingWindow ?? 0, softcap: o.softcap ?? 0 };
    const maxQRows = Math.max(...o.seqs.map((s) => s.qRows));
    const tile = tiles.flashTileFor(kvDtype, headDim, maxQRows);
    const flash = flashKernel(tile, kvDtype, headDim);
    if (maxQRows >= 16 && kernels.has(flash)) {
      queue.launch({
        kernel: flash,
        signature: "flash",
        grid: [Math.ceil(maxQRows / flashTiles[tile].rows), heads, o.seqs.length],
        block: [flashTiles[tile].threads, 1, 1],
        args: { out: out.ptr, lse: lse?.ptr ?? 0n, q: qt.ptr, sinks: sinks?.ptr ?? 0n, ...keys, ...scores },
        reads: [...reads, sinks],
        smem: flashSmem(headDim, tile),
        cast: "forget",
      });
    } else {
      if (headDim > 256)
        throw new BackendError("CUDA_HEAD_DIM", `head_dim ${headDim} is larger than the 256 the CUDA kernels support`);
      const maxKeys = Math.max(1, ...o.seqs.map((s) => s.blocks.reduce((n, b) => n + b.length, 0)));
      const splits = Math.max(
        1,
        Math.min(Math.ceil(maxKeys / 128), Math.floor((4 * this.parts.multiprocessors) / Math.max(1, heads * rows))),
      );
      const partO = allocations.alloc([rows * heads * splits * headDim], "f32");
      const partMl = allocations.alloc([rows * heads * splits * 2], "f32");
      queue.launch({
        kernel: `attn_simt_${kvDtype}`,
        signature: "attn_simt",
        grid: [splits, heads, rows],
        block: [128, 1, 1],
        args: {
          partO: partO.ptr,
          partMl: partMl.ptr,
          q: qt.ptr,
          nSeqs: o.seqs.length,
          headDim,
          splits,
          ...keys,
          ...scores,
        },
        reads,
        cast: "forget",
      });
      queue.launch({
        signature: "attn_merge_splits",
        grid: [rows * heads, 1, 1],
        block: [Math.min(256, Math.ceil(headDim / 32) * 32), 1, 1],
        args: {
          out: out.ptr,
          lse: lse?.ptr ?? 0n,
          partO: partO.ptr,
          partMl: partMl.ptr,
          sinks: sinks?.ptr ?? 0n,
          heads,
          rowHeads: rows * heads,
          headDim,
          splits,
        },
        reads: [sinks],
        cast: "forget",
      });
      allocations.free(partO);
      allocations.free(partMl);
    }
    allocations.freeAfterEnqueue(seqBuf, ptrBuf, posBuf);
    queue.freeF32Copy(sinks, o.sinks);
    return { out, lse };
  }

  mergeAttention(a: AttentionPart, b: AttentionPart): AttentionPart {
    const { queue, allocations } = this.parts;
    const [ao, al, bo, bl] = [asCudaTensor(a.out), asCudaTensor(a.lse), asCudaTensor(b.out), asCudaTensor(b.lse)];
    const [rows, heads] = al.shape as [number, number];
    const headDim = ao.shape[1]! / heads;
    const out = allocations.allocOutput(ao.shape);
    const lse = allocations.allocOutput(al.shape);
    queue.launch({
      signature: "merge_attention",
      grid: [rows * heads, 1, 1],
      block: [Math.min(256, Math.ceil(headDim / 32) * 32), 1, 1],
      args: {
        out: out.ptr,
        lse: lse.ptr,
        oa: ao.ptr,
        la: al.ptr,
        ob: bo.ptr,
        lb: bl.ptr,
        rowHeads: rows * heads,
        headDim,
      },
      reads: [ao, al, bo, bl],
      cast: "forget",
    });
    return { out, lse };
  }
}
