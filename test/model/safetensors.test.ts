// The safetensors header parser: the layout the format requires (tensors cover the data exactly, no holes), hostile headers.
import assert from "node:assert/strict";
import { open, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { CheckpointError } from "../../src/errors.js";
import { readSafetensorsHeader } from "../../src/model/safetensors.js";
import { rejectsWith, storiesCopy, tempDir } from "../helpers.js";

/** A safetensors file: the length field (`headerLen`, default the header's own), the header JSON, then `dataBytes` zeros. */
function safetensorsBytes(header: unknown, dataBytes: number, headerLen?: number): Buffer {
  const json = Buffer.from(typeof header === "string" ? header : JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(headerLen ?? json.length));
  return Buffer.concat([len, json, Buffer.alloc(dataBytes)]);
}

async function writeTemp(bytes: Uint8Array): Promise<string> {
  const file = join(await tempDir("lw-st-"), "model.safetensors");
  await writeFile(file, bytes);
  return file;
}

const rejects = (p: Promise<unknown>, code: string, message: RegExp) => rejectsWith(p, code, message, CheckpointError);

/** stories260K's model.safetensors with its length field changed by `delta`. */
async function storiesWithHeaderLength(delta: number): Promise<string> {
  const file = join(await storiesCopy(), "model.safetensors");
  const fh = await open(file, "r+");
  const len = Buffer.alloc(8);
  await fh.read(len, 0, 8, 0);
  len.writeBigUInt64LE(len.readBigUInt64LE(0) + BigInt(delta));
  await fh.write(len, 0, 8, 0);
  await fh.close();
  return file;
}

describe("safetensors header", () => {
  it("reads the bundled model's header", async () => {
    const h = await readSafetensorsHeader(join(await storiesCopy(), "model.safetensors"));
    assert.equal(h.tensors.length, 47); // 5 layers of 9, the embedding (tied to the head) and the final norm
  });

  it("refuses a header length one short (every tensor would be read a byte early)", async () => {
    // stories260K's header ends in a padding space, so one byte shorter is still valid JSON.
    await rejects(
      readSafetensorsHeader(await storiesWithHeaderLength(-1)),
      "SAFETENSORS_LAYOUT_INVALID",
      /tensors end at byte 1040128 of the data, but the file has 1040129 bytes after the header/,
    );
  });

  it("refuses a header length one long", async () => {
    const file = await storiesWithHeaderLength(1);
    // The first data byte joins the header: make it a space, so the header still parses and only the layout is wrong.
    const fh = await open(file, "r+");
    await fh.write(Buffer.from(" "), 0, 1, 8 + 4849 - 1);
    await fh.close();
    await rejects(readSafetensorsHeader(file), "TENSOR_OUT_OF_BOUNDS", /ends at byte/);
  });

  it("refuses a hole between tensors and bytes after the last one", async () => {
    const hole = {
      a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
      b: { dtype: "F32", shape: [2], data_offsets: [12, 20] },
    };
    await rejects(
      readSafetensorsHeader(await writeTemp(safetensorsBytes(hole, 20))),
      "SAFETENSORS_LAYOUT_INVALID",
      /no tensor holds bytes 8 to 12 of the data \(before b\)/,
    );
    const trailing = { a: { dtype: "F32", shape: [2], data_offsets: [0, 8] } };
    await rejects(
      readSafetensorsHeader(await writeTemp(safetensorsBytes(trailing, 9))),
      "SAFETENSORS_LAYOUT_INVALID",
      /tensors end at byte 8 of the data, but the file has 9 bytes after the header/,
    );
  });

  it("accepts zero-size tensors beside others (they overlap nothing)", async () => {
    const header = {
      __metadata__: { format: "pt" },
      a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
      b: { dtype: "F32", shape: [2], data_offsets: [8, 16] },
      empty: { dtype: "F32", shape: [0, 4], data_offsets: [8, 8] },
      scalar_free: { dtype: "BF16", shape: [0], data_offsets: [16, 16] },
    };
    const h = await readSafetensorsHeader(await writeTemp(safetensorsBytes(header, 16)));
    assert.deepEqual(
      h.tensors.map((t) => [t.name, t.byteLength]),
      [
        ["a", 8],
        ["b", 8],
        ["empty", 0],
        ["scalar_free", 0],
      ],
    );
    const empty = await readSafetensorsHeader(
      await writeTemp(safetensorsBytes({ z: { dtype: "U8", shape: [0], data_offsets: [0, 0] } }, 0)),
    );
    assert.equal(empty.tensors.length, 1);
  });

  it("still names overlapping tensors", async () => {
    const header = {
      a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
      b: { dtype: "F32", shape: [2], data_offsets: [4, 12] },
    };
    await rejects(
      readSafetensorsHeader(await writeTemp(safetensorsBytes(header, 12))),
      "TENSOR_OVERLAP",
      /tensors a and b overlap at byte/,
    );
  });

  for (const dtype of ["constructor", "toString", "__proto__", "hasOwnProperty"]) {
    it(`refuses dtype "${dtype}" (not looked up through the prototype chain)`, async () => {
      const header = { a: { dtype, shape: [2], data_offsets: [0, 8] } };
      await rejects(
        readSafetensorsHeader(await writeTemp(safetensorsBytes(header, 8))),
        "SAFETENSORS_DTYPE_UNSUPPORTED",
        new RegExp(`tensor a has dtype ${dtype}, not one of F64`),
      );
    });
  }

  it("refuses a 200k-deep shape cleanly (no stack overflow)", async () => {
    const deep = "[".repeat(200_000) + "]".repeat(200_000);
    const text = `{"a":{"dtype":"F32","shape":${deep},"data_offsets":[0,8]}}`;
    await rejects(
      readSafetensorsHeader(await writeTemp(safetensorsBytes(text, 8))),
      "SAFETENSORS_HEADER_INVALID",
      /tensor a: shape .* is not a list of non-negative integers/,
    );
  });

  it("refuses a shape of absurd rank or size with a short message", async () => {
    const long = { a: { dtype: "F32", shape: new Array(100_000).fill(1), data_offsets: [0, 4] } };
    await assert.rejects(
      readSafetensorsHeader(await writeTemp(safetensorsBytes(long, 4))),
      (e: CheckpointError) =>
        e.code === "SAFETENSORS_HEADER_INVALID" && /has 100000 dimensions/.test(e.message) && e.message.length < 400,
    );
    const huge = { a: { dtype: "F32", shape: [2 ** 40, 2 ** 40], data_offsets: [0, 4] } };
    await rejects(
      readSafetensorsHeader(await writeTemp(safetensorsBytes(huge, 4))),
      "SAFETENSORS_HEADER_INVALID",
      /shape \[1099511627776,1099511627776\] of F32 is larger than any file/,
    );
  });

  it("refuses metadata that is not a map of strings", async () => {
    const header = { __metadata__: [1, 2], a: { dtype: "F32", shape: [2], data_offsets: [0, 8] } };
    await rejects(
      readSafetensorsHeader(await writeTemp(safetensorsBytes(header, 8))),
      "SAFETENSORS_HEADER_INVALID",
      /__metadata__ is not a map of strings/,
    );
  });

  it("bounds the header length before reading it", async () => {
    // A sparse file of 300 MB whose length field claims 200 MB: refused before anything that size is allocated.
    const file = await writeTemp(safetensorsBytes("{}", 0, 200e6));
    await truncate(file, 300e6);
    await rejects(
      readSafetensorsHeader(file),
      "SAFETENSORS_HEADER_INVALID",
      /header of 200000000 bytes is larger than the 100000000 allowed/,
    );
  });

  it("refuses a shard that is not a regular file without opening it for a blocking read", async () => {
    const dir = await tempDir("lw-st-");
    await rejects(readSafetensorsHeader(dir), "FILE_NOT_REGULAR", /is a directory, not a regular file/);
  });
});
