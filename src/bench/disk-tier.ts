// The main checkpoint with weights from disk every token (--ram 0) at the goal context: a cold prefill and a few decode
// steps, each phase's floor taken from disk readings next to it.
import { withModel } from "../engine/model.js";
import { decodeBytesAt } from "../engine/planner.js";
import { measureDisk } from "./bandwidth.js";
import { transferS } from "./floors.js";
import { measureGeneration, promptIds } from "./generation.js";
import { dropCaches, pageCacheBytes } from "./machine.js";
import type { BenchResults, RunFigures } from "./results.js";
import { mainPrefillFloorS, withinBudget, type BenchSetup } from "./setup.js";

/** Decode steps of the --ram 0 run: each reads the whole model from disk (about 8 s for Llama-3.1-8B there). */
const diskDecodeTokens = 4;

/** Figures, floors and the disk readings they take; the page cache is dropped first where allowed. */
export async function diskTier(bench: BenchSetup, results: Pick<BenchResults, "disk_tier">): Promise<void> {
  const { goalContext: ctx, main, links } = bench;
  await withModel(main.dir, { ...withinBudget(bench), ram: 0, context: ctx + 64 }, async (m) => {
    const dropped = await dropCaches();
    const cachedBefore = await pageCacheBytes();
    // The disk's speed drifts by 10-30% over minutes on the GPU machine: the cold prefill's and the decode's floors
    // each take the better of the readings just before and just after them (O_DIRECT: the page cache stays as it is).
    // A forward ends by reading the next token's first layers ahead: they land first, so as not to share the disk.
    const readDisk = async () => {
      await m.readsAheadSettled();
      return (await measureDisk(bench.backend, main.shards, 2 ** 33)).gbps;
    };
    const beforePrefill = await readDisk();
    const aroundDecode: number[] = [];
    const f = await measureGeneration(
      m,
      promptIds(ctx, main.vocab, 7),
      diskDecodeTokens,
      async () => void aroundDecode.push(await readDisk()),
    );
    const cachedAfter = await pageCacheBytes();
    aroundDecode.push(await readDisk());
    const prefillDiskGbps = Math.max(beforePrefill, aroundDecode[0]!);
    const decodeDiskGbps = Math.max(...aroundDecode);
    const bytes = decodeBytesAt(m.plan, ctx);
    // The KV spill file is written through the page cache: where the cache grew by at least the KV a token reads
    // back, those reads came from RAM, not the disk, and the disk floor leaves them out (the host->GPU one has them).
    const pageCacheGrowth = cachedBefore !== undefined && cachedAfter !== undefined ? cachedAfter - cachedBefore : null;
    const kvFromPageCache = pageCacheGrowth !== null && bytes.kvDiskBytes > 0 && pageCacheGrowth >= bytes.kvDiskBytes;
    const diskFloorBytes = bytes.diskBytes - (kvFromPageCache ? bytes.kvDiskBytes : 0);
    const run: RunFigures = {
      context: ctx,
      ...f,
      floorDecodeS: Math.max(transferS(diskFloorBytes, decodeDiskGbps), transferS(bytes.h2dBytes, links.h2dGbps)),
      floorPrefillS: mainPrefillFloorS(bench, m.layout, ctx, prefillDiskGbps),
    };
    results.disk_tier = {
      ...run,
      disk_gbps_before_prefill: beforePrefill,
      disk_gbps_around_decode: aroundDecode,
      page_cache_dropped: dropped,
      page_cache_growth_bytes: pageCacheGrowth,
      kv_spill_bytes_per_token: bytes.kvDiskBytes,
      kv_spill_from_page_cache: kvFromPageCache,
      disk_read_bytes: m.stats().diskReadBytes,
    };
    bench.log(
      `--ram 0 ${ctx} tokens: first token ${f.ttftS.toFixed(2)} s (cold; floor ${run.floorPrefillS!.toFixed(2)} at ${prefillDiskGbps.toFixed(2)} GB/s), decode ${f.decodeSPerToken.toFixed(2)} s/token (floor ${run.floorDecodeS!.toFixed(2)} at ${decodeDiskGbps.toFixed(2)} GB/s, the better of ${aroundDecode.map((g) => g.toFixed(2)).join(" and ")}), ${(f.decodeDiskBytesPerToken! / f.decodeSPerToken / 1e9).toFixed(2)} GB/s from disk, reading ${((100 * f.decodeDiskBusySPerToken!) / f.decodeSPerToken).toFixed(0)}% of the time, page cache grew ${pageCacheGrowth === null ? "?" : (pageCacheGrowth / 1e9).toFixed(2)} GB`,
    );
  });
}
