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
