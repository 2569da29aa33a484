// Where the host spends a forward, by label, while a profile asks for it (bench/profile-prefill.ts); off otherwise, at
// no cost. The GPU sits idle whenever the host falls behind it: comparing these times with the compute stream's busy
// time says whether the host enqueues work fast enough, and which wait holds it back.

export interface HostTimes {
  on: boolean;
  readonly byLabel: Map<string, { count: number; ms: number }>;
}

export const hostTimes: HostTimes = { on: false, byLabel: new Map() };

/** `work`'s result; while profiling, the time until it settles is added to `label`. */
export function timeHost<T>(label: string, work: Promise<T>): Promise<T> {
  if (!hostTimes.on) return work;
  const t0 = performance.now();
  const add = () => {
    const entry = hostTimes.byLabel.get(label) ?? { count: 0, ms: 0 };
    entry.count++;
    entry.ms += performance.now() - t0;
    hostTimes.byLabel.set(label, entry);
  };
  return work.finally(add);
}
