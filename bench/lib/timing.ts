// Timing helpers for the benchmarks: repeated runs summarised by their median, which a stray
// slow run on a shared 2-core machine moves less than the mean.

export interface Timed {
  /** Milliseconds of each repetition, in run order. */
  readonly runsMs: readonly number[];
  readonly medianMs: number;
  readonly minMs: number;
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) throw new Error("median of no values");
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/**
 * Runs `setup` (untimed) then `body` (timed) `reps` times after `warmup` untimed rounds (JIT,
 * page cache, llama.cpp's first-call allocations).
 */
export async function timeRepeated(
  reps: number,
  warmup: number,
  setup: () => Promise<void> | void,
  body: () => Promise<void> | void,
): Promise<Timed> {
  for (let i = 0; i < warmup; i++) {
    await setup();
    await body();
  }
  const runsMs: number[] = [];
  for (let i = 0; i < reps; i++) {
    await setup();
    const t0 = performance.now();
    await body();
    runsMs.push(performance.now() - t0);
  }
  let minMs = Infinity;
  for (let i = 0; i < runsMs.length; i++) minMs = Math.min(minMs, runsMs[i]!);
  return { runsMs, medianMs: median(runsMs), minMs };
}

/** One timed call: wall-clock and this process's CPU time (user + system, every thread). */
export interface Sample {
  readonly wallMs: number;
  readonly cpuMs: number;
}

/**
 * Runs `setup` untimed, then times `body`. CPU time is the robust figure on a shared machine:
 * other processes stretch the wall clock but not the CPU time of a single-threaded run (the
 * llama.cpp peer computes on one ggml thread while the JS thread idles, so it counts once too).
 */
export async function timeOnce(setup: () => Promise<void> | void, body: () => Promise<void> | void): Promise<Sample> {
  await setup();
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await body();
  const wallMs = performance.now() - t0;
  const c = process.cpuUsage(c0);
  return { wallMs, cpuMs: (c.user + c.system) / 1000 };
}

export interface SampleSummary {
  readonly n: number;
  readonly medianWallMs: number;
  readonly medianCpuMs: number;
}

export function summarize(samples: readonly Sample[]): SampleSummary {
  const wall: number[] = [];
  const cpu: number[] = [];
  for (let i = 0; i < samples.length; i++) {
    wall.push(samples[i]!.wallMs);
    cpu.push(samples[i]!.cpuMs);
  }
  return { n: samples.length, medianWallMs: median(wall), medianCpuMs: median(cpu) };
}

/** Tokens per second for `tokens` processed in `ms`. */
export function tokensPerSecond(tokens: number, ms: number): number {
  return (tokens * 1000) / ms;
}
