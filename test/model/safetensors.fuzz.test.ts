// Fuzz: the safetensors header parser gives a header or a clean LayerwiseError for any bytes, never another exception.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  parseSafetensorsHeader,
  safetensorsHeaderLength,
  safetensorsDTypeBytes,
  type SafetensorsHeader,
} from "../../src/model/safetensors.js";
import { storiesDir, tinyModel } from "../helpers.js";
import {
  assertHeapBounded,
  awkwardJson,
  awkwardNumber,
  cleanOutcome,
  fuzz,
  jsonText,
  prototypeKey,
} from "./fuzz-values.js";

/** A file as its first bytes (length field and header) and its full size: the tensor data itself is never read. */
interface FileImage {
  readonly prefix: Uint8Array;
  readonly size: number;
}

function parse(f: FileImage): SafetensorsHeader {
  const headerLen = safetensorsHeaderLength("fuzz.safetensors", f.size, f.prefix.subarray(0, 8));
  const header = f.prefix.subarray(8, 8 + headerLen);
  // The parser is given what a read would give: a prefix shorter than the header is a file shorter than it.
  if (header.length < headerLen) return parseSafetensorsHeader("fuzz.safetensors", 8 + header.length, header);
  return parseSafetensorsHeader("fuzz.safetensors", f.size, header);
}

/** What a header the parser accepted promises: every tensor inside the file, and the tensors tiling the data. */
function checkAccepted(h: SafetensorsHeader, f: FileImage): void {
  const sorted = [...h.tensors].sort((a, b) => a.start - b.start || a.byteLength - b.byteLength);
  const dataStart = h.fileSize - sorted.reduce((n, t) => n + t.byteLength, 0);
  let cursor = dataStart;
  for (const t of sorted) {
    assert.equal(t.start, cursor, `${t.name} starts at ${t.start}, expected ${cursor}`);
    assert.ok(Object.hasOwn(safetensorsDTypeBytes, t.dtype));
    assert.equal(t.byteLength, t.shape.reduce((a, b) => a * b, 1) * safetensorsDTypeBytes[t.dtype]);
    cursor += t.byteLength;
  }
  assert.equal(cursor, f.size);
}

function image(header: unknown, dataBytes: number, lengthDelta = 0): FileImage {
  const json = Buffer.from(typeof header === "string" ? header : jsonText(header));
  const prefix = Buffer.alloc(8 + json.length);
  prefix.writeBigUInt64LE(BigInt(Math.max(0, json.length + lengthDelta)));
  json.copy(prefix, 8);
  return { prefix, size: prefix.length + dataBytes };
}

async function realHeaders(): Promise<{ header: Record<string, unknown>; dataBytes: number }[]> {
  const files = [
    join(storiesDir, "model.safetensors"),
    join(await tinyModel({ preset: "tiny-gpt-oss", layers: 1 }), "model.safetensors"),
  ];
  return Promise.all(
    files.map(async (file) => {
      const bytes = await readFile(file);
      const len = Number(bytes.readBigUInt64LE(0));
      return {
        header: JSON.parse(bytes.subarray(8, 8 + len).toString("utf8")) as Record<string, unknown>,
        dataBytes: bytes.length - 8 - len,
      };
    }),
  );
}

describe("fuzz: safetensors header", () => {
  it("random bytes", { timeout: 120_000 }, async () => {
    await fuzz(
      fc.asyncProperty(
        fc.uint8Array({ maxLength: 600 }),
        fc.nat({ max: 4096 }),
        fc.boolean(),
        async (bytes, extra, lengthFits) => {
          // Half the time the length field agrees with the bytes, so the parser gets past it.
          if (lengthFits && bytes.length >= 8)
            Buffer.from(bytes.buffer, bytes.byteOffset, 8).writeBigUInt64LE(BigInt(bytes.length - 8));
          const f = { prefix: bytes, size: bytes.length + extra };
          const h = await cleanOutcome(() => parse(f));
          if (h) checkAccepted(h, f);
        },
      ),
    );
    assertHeapBounded();
  });

  it("real headers with their length field, bytes or size changed", { timeout: 120_000 }, async () => {
    const reals = await realHeaders();
    await fuzz(
      fc.asyncProperty(
        fc.nat({ max: reals.length - 1 }),
        fc.integer({ min: -9, max: 9 }),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
        fc.integer({ min: -3, max: 3 }),
        async (which, lengthDelta, flips, sizeDelta) => {
          const { header, dataBytes } = reals[which]!;
          const base = image(header, dataBytes, lengthDelta);
          const prefix = Uint8Array.from(base.prefix);
          for (const [at, byte] of flips) prefix[8 + (at % (prefix.length - 8))] = byte;
          const f = { prefix, size: Math.max(0, base.size + sizeDelta) };
          const h = await cleanOutcome(() => parse(f));
          if (h) checkAccepted(h, f);
          // The unchanged real file parses; any change that moves a byte of the layout is refused.
          if (lengthDelta === 0 && sizeDelta === 0 && flips.length === 0) assert.ok(h, "the real header parses");
          if (lengthDelta !== 0 || sizeDelta !== 0) assert.equal(h, undefined, "a shifted layout is refused");
        },
      ),
    );
    assertHeapBounded();
  });

  it("real headers with one field of one tensor replaced", { timeout: 120_000 }, async () => {
    const reals = await realHeaders();
    const field = fc.constantFrom("dtype", "shape", "data_offsets", "entry", "name", "__metadata__");
    const dtype = fc.oneof(fc.constantFrom(...Object.keys(safetensorsDTypeBytes)), prototypeKey, awkwardJson);
    await fuzz(
      fc.asyncProperty(
        fc.nat({ max: reals.length - 1 }),
        fc.nat(),
        field,
        dtype,
        awkwardJson,
        async (which, pick, key, newDtype, value) => {
          const { header, dataBytes } = reals[which]!;
          const copy = structuredClone(header);
          const names = Object.keys(copy).filter((n) => n !== "__metadata__");
          const name = names[pick % names.length]!;
          const entry = copy[name] as Record<string, unknown>;
          if (key === "dtype") entry.dtype = newDtype;
          else if (key === "entry") copy[name] = value;
          else if (key === "name") {
            delete copy[name];
            copy[typeof value === "string" ? value : String(newDtype)] = entry;
          } else if (key === "__metadata__") copy.__metadata__ = value;
          else entry[key] = value;
          const f = image(copy, dataBytes);
          const h = await cleanOutcome(() => parse(f));
          if (h) checkAccepted(h, f);
        },
      ),
    );
    assertHeapBounded();
  });

  it("generated headers of random tensors", { timeout: 120_000 }, async () => {
    const tensor = fc.record({
      dtype: fc.oneof(fc.constantFrom(...Object.keys(safetensorsDTypeBytes)), prototypeKey),
      shape: fc.array(fc.oneof(fc.nat({ max: 6 }), awkwardNumber), { maxLength: 4 }),
      size: fc.oneof(fc.constant(-1), fc.nat({ max: 64 })),
    });
    await fuzz(
      fc.asyncProperty(
        fc.dictionary(fc.oneof(fc.string({ maxLength: 12 }), prototypeKey), tensor, { maxKeys: 8 }),
        fc.integer({ min: -2, max: 2 }),
        async (tensors, slack) => {
          // Offsets laid end to end from the declared shapes (or a random size), as a writer would, then the data size off by `slack`.
          const header: Record<string, unknown> = {};
          let offset = 0;
          for (const [name, t] of Object.entries(tensors)) {
            const elementBytes = Object.hasOwn(safetensorsDTypeBytes, t.dtype)
              ? safetensorsDTypeBytes[t.dtype as keyof typeof safetensorsDTypeBytes]
              : 1;
            const declared = t.shape.reduce((a, b) => a * b, 1) * elementBytes;
            const size =
              t.size >= 0 ? t.size : Number.isSafeInteger(declared) && declared >= 0 && declared < 1e6 ? declared : 0;
            header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + size] };
            offset += size;
          }
          const f = image(header, Math.max(0, offset + slack));
          const h = await cleanOutcome(() => parse(f));
          if (h) checkAccepted(h, f);
        },
      ),
    );
    assertHeapBounded();
  });
});
