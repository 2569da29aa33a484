// Where the host spends its time, by label: the CUDA stream profile's waits for the device, and, while a profile asks
// for it (bench/profile-prefill.ts), the runner's layer passes and waits; off otherwise, at no cost. The GPU sits idle
// whenever the host falls behind it: comparing these times with the compute stream's busy time says whether the host
// enqueues work fast enough, and which wait holds it back.

export interface LabelTime {
  readonly what: string;
  count: number;
  ms: number;
}

/** One timed piece of host work, on performance.now()'s clock. */
export interface HostInterval {
  readonly what: string;
  readonly startMs: number;
  readonly endMs: number;
}

/** Host time summed by label, and each timed piece (the most recent ones) to line up with the GPU's idle gaps. */
export class HostTimes {
  private readonly byLabel = new Map<string, LabelTime>();
  private recent: HostInterval[] = [];
  private static readonly maxIntervals = 100_000;

  /** `work()`'s result; the time from calling it until it settles, failed or not, is added to `what`. */
  async time<T>(what: string, work: () => Promise<T>): Promise<T> {
    const t0 = performance.now();
    try {
      return await work();
    } finally {
      const entry = this.byLabel.get(what) ?? { what, count: 0, ms: 0 };
      entry.count++;
      const t1 = performance.now();
      entry.ms += t1 - t0;
      this.byLabel.set(what, entry);
      if (this.recent.length === HostTimes.maxIntervals) this.recent.shift();
      this.recent.push({ what, startMs: t0, endMs: t1 });
    }
  }

  /** The timed pieces since the last take, oldest first. */
  get intervals(): readonly HostInterval[] {
    return this.recent;
  }

  /** The labels' times, most first, and a fresh start. */
  take(): LabelTime[] {
    const all = [...this.byLabel.values()].sort((a, b) => b.ms - a.ms);
    this.byLabel.clear();
    this.recent = [];
    return all;
  }
}

/** The runner's host times, summed while `on`. */
export const runnerTimes = { on: false, times: new HostTimes() };

/** `work()`'s result; while runnerTimes is on, its time is added to `what`. */
export function timeHost<T>(what: string, work: () => Promise<T>): Promise<T> {
  return runnerTimes.on ? runnerTimes.times.time(what, work) : work();
}
