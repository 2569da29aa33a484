// Where each layer's bytes are: its tensors in the checkpoint, the coalesced reads that fetch them, and their place in a device slot.
import type { ArchModel, WeightSpecs } from "../arch/types.js";
import type { DType } from "../backend/dtype.js";
import type { Checkpoint } from "../model/checkpoint.js";
import type { TensorInfo } from "../model/safetensors.js";
import { weightDType } from "./weights.js";

/** Device buffers hold tensors at this alignment so kernels can use wide loads. */
export const deviceAlign = 256;
/** O_DIRECT needs offsets, lengths and memory aligned to the logical block size; 4 KiB covers the usual ones. */
export const ioAlign = 4096;
/** Neighbouring tensors closer than this are fetched in one read (the gap is read and dropped). */
const coalesceGap = 64 << 10;

export interface PlacedTensor {
  /** The architecture's names for it (two when a tied head shares the embedding). */
  readonly keys: readonly string[];
  readonly info: TensorInfo;
  readonly dtype: DType;
  /** Offset in the layer's device slot. */
  readonly deviceOffset: number;
  /** Offset in the layer's host staging image. */
  readonly hostOffset: number;
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
}

const alignUp = (n: number, a: number) => Math.ceil(n / a) * a;
const alignDown = (n: number, a: number) => Math.floor(n / a) * a;

export function tensorGroup(ckpt: Checkpoint, specs: WeightSpecs): TensorGroup {
  const byName = new Map<string, { keys: string[]; info: TensorInfo }>();
  for (const [key, spec] of Object.entries(specs)) {
    const seen = byName.get(spec.name); // a tied head shares the embedding's bytes
    if (seen) seen.keys.push(key);
    else byName.set(spec.name, { keys: [key], info: ckpt.tensor(spec.name) });
  }
  const entries = [...byName.values()];
  const byFile = [...entries].sort((a, b) => (a.info.file === b.info.file ? a.info.start - b.info.start : a.info.file < b.info.file ? -1 : 1));
  const reads: ReadRange[] = [];
  const hostOffsetOf = new Map<string, number>();
  let hostBytes = 0;
  let current: { file: string; start: number; end: number; hostOffset: number } | undefined;
  const flush = () => {
    if (!current) return;
    const length = alignUp(current.end, ioAlign) - current.start;
    reads.push({ file: current.file, start: current.start, length, dataLength: current.end - current.start, hostOffset: current.hostOffset });
    hostBytes = current.hostOffset + length;
    current = undefined;
  };
  for (const { info } of byFile) {
    const end = info.start + info.byteLength;
    if (!current || current.file !== info.file || info.start - current.end > coalesceGap) {
      flush();
      current = { file: info.file, start: alignDown(info.start, ioAlign), end, hostOffset: hostBytes };
    } else current.end = Math.max(current.end, end);
    hostOffsetOf.set(info.name, current.hostOffset + info.start - current.start);
  }
  flush();
  let deviceBytes = 0;
  const tensors = entries.map(({ keys, info }) => {
    const placed = { keys, info, dtype: weightDType(info), deviceOffset: deviceBytes, hostOffset: hostOffsetOf.get(info.name)! };
    deviceBytes = alignUp(deviceBytes + info.byteLength, deviceAlign);
    return placed;
  });
  const dataBytes = entries.reduce((n, e) => n + e.info.byteLength, 0);
  return { tensors, reads, deviceBytes, hostBytes, dataBytes };
}

export function modelLayout(ckpt: Checkpoint, model: ArchModel): ModelLayout {
  const layers = Array.from({ length: model.shape.numLayers }, (_, i) => tensorGroup(ckpt, model.layerWeights(i)));
  return {
    globals: tensorGroup(ckpt, model.globalWeights),
    layers,
    maxLayerDeviceBytes: Math.max(...layers.map((l) => l.deviceBytes)),
    maxLayerHostBytes: Math.max(...layers.map((l) => l.hostBytes)),
  };
}
