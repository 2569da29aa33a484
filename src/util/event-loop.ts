// CPU math runs on the event loop's thread and awaits only settled promises, so without a turn now and then, timers,
// sockets and signal handlers (Ctrl-C) would wait until a whole generation ended.

/** Lets the event loop run once the caller has held it for `maxHoldMs` since its last turn. */
export class EventLoopTurns {
  private lastTurnMs = performance.now();

  constructor(private readonly maxHoldMs = 10) {}

  get due(): boolean {
    return performance.now() - this.lastTurnMs >= this.maxHoldMs;
  }

  async take(): Promise<void> {
    await new Promise((resolve) => setImmediate(resolve));
    this.lastTurnMs = performance.now();
  }
}
