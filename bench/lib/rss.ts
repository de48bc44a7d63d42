// Peak resident memory of this process during a run, sampled on a timer. A timer cannot fire
// while a synchronous kernel holds the event loop, so callers that run long synchronous loops
// also call `sample()` themselves between steps; the peak is the max of both.

export interface RssReport {
  readonly peakBytes: number;
  readonly startBytes: number;
  readonly endBytes: number;
  readonly samples: number;
}

export class RssSampler {
  private peak = 0;
  private count = 0;
  private readonly start: number;
  private timer: ReturnType<typeof setInterval> | null = null;

  constructor(intervalMs = 10) {
    this.start = process.memoryUsage.rss();
    this.peak = this.start;
    this.timer = setInterval(() => this.sample(), intervalMs);
    // The sampler must never keep a finished benchmark alive.
    this.timer.unref();
  }

  /** Takes one reading now (libuv reads /proc/self/stat on Linux: microseconds), cheap enough per token. */
  sample(): number {
    const rss = process.memoryUsage.rss();
    if (rss > this.peak) this.peak = rss;
    this.count++;
    return rss;
  }

  /** Stops the timer and returns the peak, including a last reading. */
  stop(): RssReport {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    const end = this.sample();
    return { peakBytes: this.peak, startBytes: this.start, endBytes: end, samples: this.count };
  }
}

/** Runs `fn` while sampling RSS; `fn` receives the sampler to call `sample()` in sync loops. */
export async function withPeakRss<T>(fn: (s: RssSampler) => Promise<T> | T, intervalMs = 10): Promise<{ result: T; rss: RssReport }> {
  const s = new RssSampler(intervalMs);
  try {
    const result = await fn(s);
    return { result, rss: s.stop() };
  } finally {
    s.stop();
  }
}

/** Relative gap between a measured peak and a prediction: (measured - predicted) / predicted. */
export function relativeError(measuredBytes: number, predictedBytes: number): number {
  return (measuredBytes - predictedBytes) / predictedBytes;
}

export function formatMiB(bytes: number): string {
  return `${(bytes / 1048576).toFixed(1)} MiB`;
}

export interface SettleReport {
  readonly waitedMs: number;
  /** RSS at the start minus RSS at the end (positive: the runtime released that much while idle). */
  readonly releasedBytes: number;
}

/**
 * Idles until the process's RSS stops falling, so a baseline taken next is the runtime's settled
 * memory and not a transient that V8 is about to release. After a full GC, V8's memory reducer
 * fires about 8 s later (its long-delay timer) and returns the freed heap pages it pooled to the
 * OS: measured 5-8 MiB on Node 20 after tsx's startup, released in the middle of a run when not
 * waited for, which then hides that much of the model's memory. Waits at least `minMs`, until RSS
 * has not fallen by more than 64 KiB for `quietMs`, at most `maxMs`.
 */
export async function settleRss(minMs = 12_000, quietMs = 3_000, maxMs = 30_000, stepMs = 250): Promise<SettleReport> {
  const t0 = performance.now();
  const start = process.memoryUsage.rss();
  let low = start;
  let lastFall = t0;
  for (;;) {
    await new Promise((r) => setTimeout(r, stepMs));
    const now = performance.now();
    const rss = process.memoryUsage.rss();
    if (rss < low - 65536) lastFall = now;
    if (rss < low) low = rss;
    const waited = now - t0;
    if ((waited >= minMs && now - lastFall >= quietMs) || waited >= maxMs) {
      return { waitedMs: waited, releasedBytes: start - rss };
    }
  }
}
