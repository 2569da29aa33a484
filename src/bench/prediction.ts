// The planner's plan for a model benchmarked with fewer layers than the real one (too big for the machine's disk).
import { createArchModel } from "../arch/index.js";
import type { LayerwiseModel } from "../engine/model.js";
import { decodeBytesAt, plan } from "../engine/planner.js";
import { layerWeightBytes, transferS, type Links } from "./floors.js";
import type { FullModelPrediction } from "./results.js";

/**
 * The planner's plan for the real depth of a model benchmarked with fewer layers: its layer (and expert) layouts repeat
 * the measured ones, the budgets stay; per-token bytes over the links measured in this run give the floor.
 */
export function predictFullModel(
  m: LayerwiseModel,
  realConfig: Record<string, unknown>,
  context: number,
  links: Links,
): FullModelPrediction {
  const { model: real } = createArchModel({ ...realConfig, num_hidden_layers: realConfig.num_hidden_layers });
  const layers = real.shape.numLayers;
  const measured = m.layout.layers.length;
  const layout = {
    ...m.layout,
    layers: Array.from({ length: layers }, (_, i) => m.layout.layers[i % measured]!),
    experts: Array.from({ length: layers }, (_, i) => m.layout.experts[i % measured]!),
  };
  const p = plan({ ...m.plan.input, layout, shape: real.shape, contextTokens: context });
  const bytes = decodeBytesAt(p, context);
  const weights =
    layout.globals.dataBytes + layerWeightBytes(layout) + layout.experts.flat().reduce((n, g) => n + g.dataBytes, 0);
  return {
    layers,
    context,
    checkpoint_bytes: weights,
    vram_planned_bytes: p.deviceBytes.total + (p.input.deviceOverheadBytes ?? 0),
    ram_planned_bytes: p.hostBytes.total,
    experts: p.experts,
    per_token_h2d_bytes: bytes.h2dBytes,
    per_token_disk_bytes: bytes.diskBytes,
    floor_decode_s: Math.max(transferS(bytes.h2dBytes, links.h2dGbps), transferS(bytes.diskBytes, links.diskGbps)),
  };
}
