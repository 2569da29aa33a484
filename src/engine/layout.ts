// Where each layer's bytes are: its tensors in the checkpoint, the coalesced reads that fetch them, and their place in a device slot.
import { expertsIn, specEntries, type ArchModel, type WeightSpecs } from "../arch/types.js";
import type { DType } from "../backend/dtype.js";
import type { Checkpoint } from "../model/checkpoint.js";
import { resolveWeight, type ResolvedWeight } from "./weights.js";

/** Device buffers hold tensors at this alignment so kernels can use wide loads. */
export const deviceAlign = 256;
/** O_DIRECT needs offsets, lengths and memory aligned to the logical block size; 4 KiB covers the usual ones. */
export const ioAlign = 4096;
/** Neighbouring tensors of a layer closer than this are fetched in one read (the gap is read and dropped). */
const coalesceGap = 64 << 10;

export interface ReadShape {
  /** Alignment of read offsets and lengths (ioAlign for O_DIRECT, else 1). */
  readonly align: number;
  /** Largest gap between ranges read as one; an expert's gap would be other experts' bytes, so experts use 0. */
  readonly gap: number;
}

export interface PlacedTensor {
  /** The architecture's names for it (two when a tied head shares the embedding). */
  readonly keys: readonly string[];
  readonly shape: readonly number[];
  readonly dtype: DType;
  /** Offset in the layer's device slot. */
  readonly deviceOffset: number;
  /** Its file ranges' places in the host image and in the device slot (back to back from `deviceOffset`). */
  readonly pieces: readonly {
    readonly hostOffset: number;
    readonly deviceOffset: number;
    readonly byteLength: number;
  }[];
}

/** One read of a file range, aligned for O_DIRECT, landing at `hostOffset` of the staging image. */
export interface ReadRange {
  readonly file: string;
  readonly start: number;
  readonly length: number;
  /** Bytes from `start` that hold tensor data (the rest is alignment padding that may lie past the end of the file). */
  readonly dataLength: number;
  readonly hostOffset: number;
}

export interface TensorGroup {
  readonly tensors: readonly PlacedTensor[];
  readonly reads: readonly ReadRange[];
  /** Bytes of the device slot and of the host image (aligned reads, so a little more than the data). */
  readonly deviceBytes: number;
  readonly hostBytes: number;
  /** Bytes of tensor data alone. */
  readonly dataBytes: number;
}

export interface ModelLayout {
  readonly globals: TensorGroup;
  readonly layers: readonly TensorGroup[];
  readonly maxLayerDeviceBytes: number;
  readonly maxLayerHostBytes: number;
  /** Per layer, each expert's weights (empty for dense models). */
  readonly experts: readonly (readonly TensorGroup[])[];
  readonly maxExpertDeviceBytes: number;
  readonly maxExpertHostBytes: number;
}

const alignUp = (n: number, a: number) => Math.ceil(n / a) * a;
const alignDown = (n: number, a: number) => Math.floor(n / a) * a;

export function tensorGroup(
  ckpt: Checkpoint,
  specs: WeightSpecs,
  io: ReadShape = { align: ioAlign, gap: coalesceGap },
): TensorGroup {
  const byWeight = new Map<string, { keys: string[]; weight: ResolvedWeight }>();
  for (const [key, spec] of specEntries(specs)) {
    const id = `${spec.name}|${spec.index ?? ""}|${spec.scales ?? ""}|${JSON.stringify(spec.rowRanges ?? [])}`;
    const seen = byWeight.get(id); // a tied head shares the embedding's bytes
    if (seen) seen.keys.push(key);
    else byWeight.set(id, { keys: [key], weight: resolveWeight(ckpt, spec) });
  }
  const entries = [...byWeight.values()];
  const ranges = entries.flatMap((e, i) => e.weight.ranges.map((r, j) => ({ ...r, owner: i, part: j })));
  const byFile = [...ranges].sort((a, b) => (a.file === b.file ? a.start - b.start : a.file < b.file ? -1 : 1));
  const reads: ReadRange[] = [];
  const hostOffsetOf = new Map<string, number>();
  let hostBytes = 0;
  let current: { file: string; start: number; end: number; hostOffset: number } | undefined;
  const flush = () => {
    if (!current) return;
    const length = alignUp(current.end, io.align) - current.start;
    reads.push({
      file: current.file,
      start: current.start,
      length,
      dataLength: current.end - current.start,
      hostOffset: current.hostOffset,
    });
    hostBytes = current.hostOffset + length;
    current = undefined;
  };
  for (const r of byFile) {
    const end = r.start + r.byteLength;
    if (!current || current.file !== r.file || alignDown(r.start, io.align) - current.end > io.gap) {
      flush();
      current = { file: r.file, start: alignDown(r.start, io.align), end, hostOffset: hostBytes };
    } else current.end = Math.max(current.end, end);
    hostOffsetOf.set(`${r.owner}:${r.part}`, current.hostOffset + r.start - current.start);
  }
  flush();
  let deviceBytes = 0;
  const tensors = entries.map(({ keys, weight }, i) => {
    const deviceOffset = deviceBytes;
    let at = deviceOffset;
    const pieces = weight.ranges.map((r, j) => {
      const piece = { hostOffset: hostOffsetOf.get(`${i}:${j}`)!, deviceOffset: at, byteLength: r.byteLength };
      at += r.byteLength;
      return piece;
    });
    deviceBytes = alignUp(deviceOffset + weight.byteLength, deviceAlign);
    return { keys, shape: weight.shape, dtype: weight.dtype, deviceOffset, pieces };
  });
  const dataBytes = entries.reduce((n, e) => n + e.weight.byteLength, 0);
  return { tensors, reads, deviceBytes, hostBytes, dataBytes };
}

/** Where every layer's and expert's bytes are; `directIo`: reads aligned for O_DIRECT (else exact byte ranges). */
export function modelLayout(ckpt: Checkpoint, model: ArchModel, directIo = true): ModelLayout {
  const align = directIo ? ioAlign : 1;
  const dense = { align, gap: coalesceGap };
  const layers = Array.from({ length: model.shape.numLayers }, (_, i) =>
    tensorGroup(ckpt, model.layerWeights(i), dense),
  );
  const experts = Array.from({ length: model.shape.numLayers }, (_, i) =>
    Array.from({ length: expertsIn(model.shape, i) }, (_, e) =>
      tensorGroup(ckpt, model.expertWeights!(i, e), { align, gap: 0 }),
    ),
  );
  const flat = experts.flat();
  return {
    globals: tensorGroup(ckpt, model.globalWeights, dense),
    layers,
    maxLayerDeviceBytes: Math.max(...layers.map((l) => l.deviceBytes)),
    maxLayerHostBytes: Math.max(...layers.map((l) => l.hostBytes)),
    experts,
    maxExpertDeviceBytes: Math.max(0, ...flat.map((g) => g.deviceBytes)),
    maxExpertHostBytes: Math.max(0, ...flat.map((g) => g.hostBytes)),
  };
}
