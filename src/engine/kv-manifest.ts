// The persistent KV cache's JSON files, validated: the folder's marker and each block's manifest. Anything that does
// not parse, or does not match the block it is named after, is reported as a reason (the block is then corrupt).
import { z } from "zod";

export const format = 1;
export const markerName = "layerwise-kv-cache.json";
export const markerMaxBytes = 4096;
export const markerText =
  JSON.stringify({
    tool: "layerwise",
    format,
    note: "layerwise KV cache: every file below was written by layerwise and may be deleted by it",
  }) + "\n";

const Marker = z.object({ tool: z.literal("layerwise"), format: z.literal(format) });

const Hash = z.string().regex(/^[0-9a-f]{32}$/);
const Uint = z.number().int().nonnegative();
const Manifest = z.strictObject({
  format: z.literal(format),
  tool: z.literal("layerwise"),
  fingerprint: z.string().max(128),
  dtype: z.string().max(16),
  block_tokens: Uint,
  index: Uint,
  parent: Hash.nullable(),
  token_ids: z.array(
    z
      .number()
      .int()
      .min(0)
      .max(2 ** 31 - 1),
  ),
  layers: z.array(z.strictObject({ offset: Uint, bytes: Uint, crc32: Uint.max(0xffffffff) })),
});
export type Manifest = z.infer<typeof Manifest>;

export interface BlockLayout {
  readonly fingerprint: string;
  readonly dtype: string;
  readonly blockTokens: number;
  /** K (or V) bytes of one block, per layer. */
  readonly layerBytes: readonly number[];
  /** Bytes of a recurrent layer's state (0 for a layer that stores KV). */
  readonly stateBytes: readonly number[];
}

/** The largest manifest a block of `layout` can have: token ids and layers as decimal JSON, with room to spare. */
export function manifestMaxBytes(layout: BlockLayout): number {
  return 4096 + 12 * layout.blockTokens + 128 * layout.layerBytes.length;
}

/** The reason the marker is not this tool's, or undefined when it is. */
export function markerProblem(text: string): string | undefined {
  const r = validate(Marker, text);
  return "why" in r ? r.why : undefined;
}

/** The manifest named after block `index` (following `parent`, holding `ids`) or the reason it cannot be that block's. */
export function parseManifest(
  text: string,
  layout: BlockLayout,
  parent: string | null,
  index: number,
  ids: readonly number[],
): Manifest | string {
  const r = validate(Manifest, text);
  if ("why" in r) return r.why;
  const m = r.ok;
  if (m.fingerprint !== layout.fingerprint) return "it is another model's";
  if (m.dtype !== layout.dtype || m.block_tokens !== layout.blockTokens)
    return `it holds ${m.block_tokens} tokens of ${m.dtype}, not ${layout.blockTokens} of ${layout.dtype}`;
  if (
    m.index !== index ||
    m.parent !== parent ||
    m.token_ids.length !== ids.length ||
    m.token_ids.some((id, i) => id !== ids[i])
  )
    return "its token ids are not the ones its name stands for";
  if (m.layers.length !== layout.layerBytes.length)
    return `it has ${m.layers.length} layers, the model ${layout.layerBytes.length}`;
  let offset = 0;
  for (const [l, layer] of m.layers.entries()) {
    const want = layout.stateBytes[l]! > 0 ? [0, layout.stateBytes[l]!] : [layout.layerBytes[l]!];
    if (layer.offset !== offset || !want.includes(layer.bytes))
      return `its layer ${l} is ${layer.bytes} bytes at ${layer.offset}, expected ${want.join(" or ")} at ${offset}`;
    offset += layer.bytes;
  }
  return m;
}

/** Bytes of a block's data file, per its (valid) manifest. */
export function dataBytes(m: Manifest): number {
  return m.layers.reduce((n, l) => n + l.bytes, 0);
}

function validate<T>(schema: z.ZodType<T>, text: string): { ok: T } | { why: string } {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return { why: `it is not JSON (${(e as Error).message.slice(0, 80)})` };
  }
  const r = schema.safeParse(json);
  if (r.success) return { ok: r.data };
  const issue = r.error.issues[0]!;
  return { why: `${issue.path.join(".").slice(0, 60) || "it"}: ${issue.message.slice(0, 100)}` };
}
