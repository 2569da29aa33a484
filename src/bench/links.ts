// The links the bench's floors divide by, measured at the start of a run: disk reads of the main checkpoint (page cache
// dropped where allowed), pinned host -> device copies, and torch's bf16 matmul and attention speeds where torch runs.
import type { Backend } from "../backend/ops.js";
import { measureDisk, measureHostToDevice } from "./bandwidth.js";
import type { Links } from "./floors.js";
import { dropCaches, runPythonTool } from "./machine.js";
import type { LinkLimits, TorchLimits } from "./results.js";

/** The speeds for the floors (`links`), and as the results show them (`limits`); without torch its speeds are NaN. */
export async function measureLinks(
  backend: Backend,
  shards: readonly string[],
  withTorch: boolean,
  log: (l: string) => void,
): Promise<{ links: Links; limits: LinkLimits }> {
  const cold = await dropCaches();
  const disk = await measureDisk(backend, shards, 2 ** 33);
  const h2d = await measureHostToDevice(backend, 256 << 20, 8);
  const torch = withTorch ? runPythonTool("torch_limits.py", []) : undefined;
  const torchLimits = torch ? (JSON.parse(torch.trim().split("\n").pop()!) as TorchLimits) : undefined;
  const links: Links = {
    diskGbps: disk.gbps,
    h2dGbps: h2d.gbps,
    matmulTflops: torchLimits?.matmul_bf16_tflops ?? NaN,
    attentionTflops: torchLimits?.sdpa_32k_tflops ?? NaN,
  };
  const limits: LinkLimits = {
    disk_gbps: disk.gbps,
    disk_method: cold ? `${disk.method}, page cache dropped` : disk.method,
    disk_queue_depth: disk.depth,
    h2d_pinned_gbps: h2d.gbps,
    torch: torchLimits ?? null,
  };
  log(
    `links: disk ${disk.gbps.toFixed(2)} GB/s (${disk.method}, ${disk.depth} reads in flight), host->GPU ${h2d.gbps.toFixed(1)} GB/s, torch matmul ${links.matmulTflops.toFixed(0)} TFLOP/s, SDPA ${links.attentionTflops.toFixed(0)} TFLOP/s`,
  );
  return { links, limits };
}
