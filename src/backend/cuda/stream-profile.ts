// Opt-in timing of the compute stream for profiling runs (bench/profile-prefill.ts): each kernel launch and copy to the
// host sits between two timing events; the report sums GPU time by name and says how long the stream sat idle.
import { HostTimes, type HostInterval, type LabelTime } from "../../util/host-time.js";
import type { Handle } from "./driver.js";

/** The driver calls the profile makes (a narrow interface, as UploadRing's). */
export interface ProfileDriver {
  eventCreate(timing: boolean): Handle;
  eventRecord(event: Handle, stream: Handle): void;
  eventWait(event: Handle): Promise<void>;
  elapsedMs(start: Handle, end: Handle): number;
  eventDestroy(event: Handle): void;
}

export interface StreamReport {
  /** From the first timed op's start to the last one's end. */
  spanMs: number;
  /** Sum of the timed ops' GPU time; spanMs - busyMs is time the stream waited (for the host, or for copies). */
  busyMs: number;
  /** Per name: how often it ran, its GPU time, and the idle time just before it (what the stream waited for to start it). */
  byName: OpTimes[];
  /** Time the host spent waiting for the device, by what it waited for (each such wait lets the GPU's queue run dry). */
  hostWaits: LabelTime[];
  /** Each of those waits, on performance.now()'s clock. */
  hostWaitIntervals: HostInterval[];
  /** Idle time by the pair of ops around it ("a -> b"), most first: where in a layer the stream waits. */
  gaps: Gap[];
  /** The longest single idle gaps, longest first. */
  worstGaps: WorstGap[];
}

/** One idle gap, with the host times at which the ops around it were enqueued (performance.now()'s clock). */
export interface WorstGap {
  /** The op that ends the gap: its place among the timed ops, of `ops`. */
  index: number;
  ops: number;
  between: string;
  ms: number;
  previousEnqueuedMs: number;
  enqueuedMs: number;
  /** As Gap.deviceWaitMs: the op after was enqueued before the op before could have ended. */
  deviceWait: boolean;
}

export interface Gap {
  between: string;
  count: number;
  ms: number;
  /**
   * The part of `ms` where the second op was enqueued before the first could have ended (the host was ahead): the
   * stream waited for another stream's work (a copy), not for the host. The rest is the host being late, or unknown.
   */
  deviceWaitMs: number;
}

export interface OpTimes {
  name: string;
  count: number;
  ms: number;
  idleBeforeMs: number;
}

export class StreamProfile {
  private spans: { name: string; start: Handle; end: Handle; enqueuedMs: number }[] = [];
  private readonly waits = new HostTimes();
  static readonly worstGapCount = 12;

  constructor(
    private readonly driver: ProfileDriver,
    private readonly stream: Handle,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Enqueues `enqueue`'s work between two timing events on the profiled stream. */
  time(name: string, enqueue: () => void): void {
    const start = this.driver.eventCreate(true);
    const end = this.driver.eventCreate(true);
    const enqueuedMs = this.now();
    this.driver.eventRecord(start, this.stream);
    enqueue();
    this.driver.eventRecord(end, this.stream);
    this.spans.push({ name, start, end, enqueuedMs });
  }

  /** Times the host's wait for `wait`, as a wait for `what`. */
  hostWait(what: string, wait: () => Promise<void>): Promise<void> {
    return this.waits.time(what, wait);
  }

  /** Waits for the timed work, reports it, and starts over. */
  async report(): Promise<StreamReport> {
    const spans = this.spans;
    this.spans = [];
    const hostWaitIntervals = [...this.waits.intervals];
    const hostWaits = this.waits.take();
    if (spans.length === 0)
      return { spanMs: 0, busyMs: 0, byName: [], hostWaits, hostWaitIntervals, gaps: [], worstGaps: [] };
    await this.driver.eventWait(spans[spans.length - 1]!.end);
    const byName = new Map<string, OpTimes>();
    const gaps = new Map<string, Gap>();
    const worstGaps: WorstGap[] = [];
    let busyMs = 0;
    let previousMs = 0;
    spans.forEach((s, i) => {
      const ms = this.driver.elapsedMs(s.start, s.end);
      busyMs += ms;
      const entry = byName.get(s.name) ?? { name: s.name, count: 0, ms: 0, idleBeforeMs: 0 };
      entry.count++;
      entry.ms += ms;
      if (i > 0) {
        const previous = spans[i - 1]!;
        const idle = this.driver.elapsedMs(previous.end, s.start);
        entry.idleBeforeMs += idle;
        const between = `${previous.name} -> ${s.name}`;
        const gap = gaps.get(between) ?? { between, count: 0, ms: 0, deviceWaitMs: 0 };
        gap.count++;
        gap.ms += idle;
        // The op before started no sooner than it was enqueued, so it ended no sooner than that plus its GPU time.
        const deviceWait = s.enqueuedMs <= previous.enqueuedMs + previousMs;
        if (deviceWait) gap.deviceWaitMs += idle;
        gaps.set(between, gap);
        worstGaps.push({
          index: i,
          ops: spans.length,
          between,
          ms: idle,
          previousEnqueuedMs: previous.enqueuedMs,
          enqueuedMs: s.enqueuedMs,
          deviceWait,
        });
      }
      previousMs = ms;
      byName.set(s.name, entry);
    });
    const spanMs = this.driver.elapsedMs(spans[0]!.start, spans[spans.length - 1]!.end);
    for (const s of spans) (this.driver.eventDestroy(s.start), this.driver.eventDestroy(s.end));
    return {
      spanMs,
      busyMs,
      byName: [...byName.values()].sort((a, b) => b.ms - a.ms),
      hostWaits,
      hostWaitIntervals,
      gaps: [...gaps.values()].sort((a, b) => b.ms - a.ms),
      worstGaps: worstGaps.sort((a, b) => b.ms - a.ms).slice(0, StreamProfile.worstGapCount),
    };
  }
}
