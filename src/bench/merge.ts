// One results object from several saved runs (`bench --report a.json,b.json`: the bench split over calls with --skip).
import { ratios } from "./ratios.js";
import type { BenchResults, GoalRatios, RunFigures } from "./results.js";

/**
 * One results object from runs of other workloads on one machine: a later run's figures replace an earlier one's key
 * by key, RAM-tier figures context by context, the long-context and other-model lists are joined, and the goal ratios
 * are worked out again. Keys the type does not name (notes in older files) are copied like any other.
 */
export function mergeResults(runs: readonly BenchResults[]): BenchResults & GoalRatios {
  const merged = {} as BenchResults;
  const anyKey = merged as unknown as Record<string, unknown>;
  for (const run of runs) {
    for (const [key, value] of Object.entries(run)) {
      if (key === "ram_tier") merged.ram_tier = byContext([...(merged.ram_tier ?? []), ...run.ram_tier!]);
      else if (key === "long_context") merged.long_context = [...(merged.long_context ?? []), ...run.long_context!];
      else if (key === "other_models") merged.other_models = [...(merged.other_models ?? []), ...run.other_models!];
      else if (key === "contexts")
        merged.contexts = [...new Set([...(merged.contexts ?? []), ...run.contexts!])].sort((a, b) => a - b);
      else if (key === "date") {
        merged.date ??= run.date;
        merged.run_dates = [...(merged.run_dates ?? []), run.date];
      } else anyKey[key] = value;
    }
  }
  return { ...merged, ...ratios(merged) };
}

/** One figure per context, the last one given for each, in the order of the contexts. */
function byContext(figures: readonly RunFigures[]): RunFigures[] {
  return [...new Map(figures.map((f) => [f.context, f])).values()].sort((a, b) => a.context - b.context);
}

/** What `bench --report` writes the report from: one saved run with its ratios worked out again, or several merged. */
export function reportedResults(runs: readonly BenchResults[]): BenchResults & GoalRatios {
  return runs.length === 1 ? { ...runs[0]!, ...ratios(runs[0]!) } : mergeResults(runs);
}
