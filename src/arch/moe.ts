// Mixture-of-experts layers: route each row to its top-k experts, run only those (the engine loads them on demand), combine.
import type { Ops, Tensor } from "../backend/ops.js";
import { topIndices } from "../util/top-k.js";
import type { LayerRun, Weights } from "./types.js";

/** Per row, the chosen experts and their weights (topK of each). */
export interface Routes {
  readonly experts: Int32Array;
  readonly weights: Float32Array;
}

/** Routes of every row of logits (rows of `stride` values, the first `experts` of them): `weigh` gives a row's top k weights. */
function route(
  logits: Float32Array,
  stride: number,
  experts: number,
  k: number,
  weigh: (row: Float32Array, top: number[]) => number[],
): Routes {
  const rows = logits.length / stride;
  const ids = new Int32Array(rows * k);
  const weights = new Float32Array(rows * k);
  for (let r = 0; r < rows; r++) {
    const row = logits.subarray(r * stride, r * stride + experts);
    const top = Array.from(topIndices(row, k)); // ties keep the lower index, as torch.topk does on these sizes
    ids.set(top, r * k);
    weights.set(weigh(row, top), r * k);
  }
  return { experts: ids, weights };
}

/** gpt-oss: the top-k logits, then a softmax over those k. */
export function softmaxOfTopK(logits: Float32Array, experts: number, k: number): Routes {
  return route(logits, experts, experts, k, (row, top) => {
    const exps = top.map((e) => Math.exp(row[e]! - row[top[0]!]!));
    const sum = exps.reduce((a, b) => a + b, 0);
    return exps.map((x) => x / sum);
  });
}

/** Qwen MoE: a softmax over every expert's logit, then the top k, renormalized to sum to 1 when `normalize`. */
export function softmaxThenTopK(
  logits: Float32Array,
  stride: number,
  experts: number,
  k: number,
  normalize: boolean,
): Routes {
  return route(logits, stride, experts, k, (row, top) => {
    const max = row[top[0]!]!;
    const exps = top.map((e) => Math.exp(row[e]! - max));
    // Renormalized, the softmax's denominator cancels: only the top k's exponentials are needed (512 experts a row).
    let total = 0;
    if (normalize) for (const x of exps) total += x;
    else for (let e = 0; e < row.length; e++) total += Math.exp(row[e]! - max);
    return exps.map((x) => x / total);
  });
}

/**
 * Runs the routed experts over x [rows, hidden] and sums their outputs weighted by the routes. Every needed expert is
 * asked for at once, so the engine can read them in parallel, then each is computed as it arrives.
 */
export async function routedExperts<E extends string>(
  ops: Ops,
  run: LayerRun<E>,
  x: Tensor,
  routes: Routes,
  expert: (w: Weights<E>, xe: Tensor) => Tensor,
): Promise<Tensor> {
  const rows = x.shape[0]!;
  const k = routes.experts.length / rows;
  const byExpert = new Map<number, { rows: number[]; scales: number[] }>();
  for (let i = 0; i < routes.experts.length; i++) {
    const e = routes.experts[i]!;
    const entry = byExpert.get(e) ?? { rows: [], scales: [] };
    entry.rows.push(Math.floor(i / k));
    entry.scales.push(routes.weights[i]!);
    byExpert.set(e, entry);
  }
  const order = [...byExpert.keys()].sort((a, b) => a - b);
  const loads = order.map((e) => run.expert(e));
  loads.forEach((p) => p.catch(() => {})); // awaited below, in order; a failure surfaces there
  const out = ops.zeros([rows, x.shape[1]!]);
  for (let i = 0; i < order.length; i++) {
    const e = order[i]!;
    const w = await loads[i]!;
    const { rows: list, scales } = byExpert.get(e)!;
    const rowIds = Int32Array.from(list);
    ops.scoped(() => {
      const xe = list.length === rows ? x : ops.gatherRows(x, rowIds);
      ops.accumulateRows(out, expert(w, xe), rowIds, Float32Array.from(scales));
      return out;
    });
    run.releaseExpert(e);
  }
  return out;
}
