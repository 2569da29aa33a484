// One forward pass: embed new tokens, run every layer over them (appending to each sequence's KV cache), and compute logits.
import type { ArchModel, AttentionCall, LayerRun } from "../arch/types.js";
import type { AttentionSeq, Backend, Tensor } from "../backend/ops.js";
import type { KvCache } from "./kv-cache.js";
import type { WeightSource } from "./weights.js";

export interface ForwardItem {
  readonly cache: KvCache;
  readonly ids: readonly number[];
}

/** Logits of the last new token of each item ("last") or of every new token ("all"), each [rows * vocab]. */
export async function forward(backend: Backend, model: ArchModel, weights: WeightSource, items: readonly ForwardItem[], logits: "last" | "all"): Promise<Float32Array[]> {
  const rowsTotal = items.reduce((n, it) => n + it.ids.length, 0);
  const ids = new Int32Array(rowsTotal);
  const positions = new Int32Array(rowsTotal);
  const spans: { row: number; rows: number; pos: number; cache: KvCache }[] = [];
  let row = 0;
  for (const it of items) {
    const pos = it.cache.length();
    ids.set(it.ids, row);
    for (let i = 0; i < it.ids.length; i++) positions[row + i] = pos + i;
    spans.push({ row, rows: it.ids.length, pos, cache: it.cache });
    row += it.ids.length;
  }

  backend.pushScope();
  try {
    let x = model.embed(backend, weights.globals, ids);
    for (let layer = 0; layer < model.shape.numLayers; layer++) {
      const w = await weights.layer(layer);
      const run: LayerRun = {
        positions,
        attention(q: Tensor, k: Tensor, v: Tensor, o: AttentionCall): Tensor {
          const seqs: AttentionSeq[] = spans.map((s) => {
            s.cache.append(layer, k, v, s.row, s.rows);
            return { qRow: s.row, qRows: s.rows, qPos: s.pos, blocks: s.cache.blocks(layer) };
          });
          return backend.attention(q, { ...o, seqs });
        },
      };
      backend.pushScope();
      const y = model.forwardLayer(backend, layer, w, x, run);
      backend.popScope([y]);
      weights.release(layer);
      backend.free(x);
      x = y;
    }
    const out: Float32Array[] = [];
    if (logits === "all" || spans.every((s) => s.rows === 1)) {
      const all = await backend.read(model.head(backend, weights.globals, x));
      const vocab = all.length / rowsTotal;
      for (const s of spans) out.push(logits === "all" ? all.slice(s.row * vocab, (s.row + s.rows) * vocab) : all.slice(s.row * vocab, (s.row + 1) * vocab));
    } else {
      for (const s of spans) out.push(await backend.read(model.head(backend, weights.globals, backend.rows(x, s.row + s.rows - 1, 1))));
    }
    return out;
  } catch (e) {
    for (const s of spans) s.cache.truncate(s.pos); // a failed pass leaves no half-written tokens behind
    throw e;
  } finally {
    backend.popScope();
  }
}
