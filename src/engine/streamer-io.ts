// The moves weight streaming is made of: a group's file ranges into a host image, the image's tensors into a device buffer.
import type { Weights } from "../arch/types.js";
import type { Backend, CopyQueue, Fence, HostBuffer, Tensor } from "../backend/ops.js";
import type { DiskReader } from "../model/disk-reader.js";
import type { TensorGroup } from "./layout.js";

/** Allocates a byte buffer on the device (as f32 elements; every size here is a multiple of 256). */
export function deviceBytes(backend: Backend, bytes: number): Tensor {
  return backend.alloc([Math.ceil(bytes / 4)], "f32");
}

/** Reads every range of a group into its host image. */
export async function readGroup(reader: DiskReader, group: TensorGroup, image: HostBuffer): Promise<void> {
  await Promise.all(
    group.reads.map((r) =>
      reader.read(r.file, r.start, r.length, image.bytes.subarray(r.hostOffset, r.hostOffset + r.length), r.dataLength),
    ),
  );
}

/** Enqueues the copies of a group's tensors from its host image into a device buffer; returns views on them. */
export async function copyGroup(
  backend: Backend,
  group: TensorGroup,
  image: HostBuffer,
  buffer: Tensor,
  after: Fence | undefined,
  waitForCopies: boolean,
  queue: CopyQueue = "needed",
): Promise<Weights> {
  const copies: Promise<void>[] = [];
  const w: Record<string, Tensor> = {};
  for (const t of group.tensors) {
    for (const p of t.pieces)
      copies.push(backend.copyToDevice(buffer, p.deviceOffset, image, p.hostOffset, p.byteLength, after, queue));
    const view = backend.view(buffer, t.deviceOffset, t.shape, t.dtype);
    for (const key of t.keys) w[key] = view;
  }
  // A staging image is reused by the next read: its copies must be done first. RAM images never change.
  if (waitForCopies) await Promise.all(copies);
  return w;
}

export async function loadGroup(
  backend: Backend,
  reader: DiskReader,
  group: TensorGroup,
  image: HostBuffer,
  buffer: Tensor,
): Promise<Weights> {
  await readGroup(reader, group, image);
  return copyGroup(backend, group, image, buffer, undefined, true);
}

/**
 * A group's weights in a device buffer: copied from its RAM image when it has one, else read from disk into a staging
 * buffer first (given back once the copies are done). Copies wait for compute to reach `after`, on `queue`.
 */
export async function fetchGroup(
  backend: Backend,
  reader: DiskReader,
  group: TensorGroup,
  ram: HostBuffer | undefined,
  staging: BufferPool,
  buffer: Tensor,
  after: Fence | undefined,
  queue: CopyQueue,
): Promise<Weights> {
  const image = ram ?? (await staging.take());
  try {
    if (!ram) await readGroup(reader, group, image);
    return await copyGroup(backend, group, image, buffer, after, !ram, queue);
  } finally {
    if (!ram) staging.give(image);
  }
}

/** Pinned host buffers that disk reads land in, handed out in request order. */
export class BufferPool {
  private readonly free: HostBuffer[] = [];
  private readonly all: HostBuffer[] = [];
  private readonly waiters: ((b: HostBuffer) => void)[] = [];

  constructor(
    private readonly backend: Backend,
    count: number,
    bytes: number,
  ) {
    for (let i = 0; i < count; i++) this.all.push(backend.allocHost(bytes));
    this.free.push(...this.all);
  }

  take(): Promise<HostBuffer> {
    const b = this.free.pop();
    return b ? Promise.resolve(b) : new Promise<HostBuffer>((resolve) => this.waiters.push(resolve));
  }

  give(b: HostBuffer): void {
    const waiter = this.waiters.shift();
    if (waiter) waiter(b);
    else this.free.push(b);
  }

  dispose(): void {
    for (const b of this.all.splice(0)) this.backend.freeHost(b);
    this.free.splice(0);
  }
}
