// `--threads N`, the flag the engine commands (run, chat, serve, bench, ppl) share: how many threads
// the model's matmuls are split over (ModelOptions.threads), validated once here; and the line that
// says so when fewer run than asked.

import type { Command } from "commander";

import { InvalidSettingError } from "../errors.js";
import type { CausalLM } from "../model/causal-lm.js";
import { MAX_THREADS } from "../model/wasm/matmul-pool.js";

export interface ThreadsFlags {
  threads?: string;
}

export function addThreadsFlag(cmd: Command): Command {
  return cmd.option("--threads <n>", `threads the matmuls run on, 1..${MAX_THREADS} (default: the cores, at most 4; 1: no worker threads)`);
}

/** The --threads value, or undefined for the default. */
export function threadsFromFlags(f: ThreadsFlags): number | undefined {
  if (f.threads === undefined) return undefined;
  const n = f.threads.trim() === "" ? NaN : Number(f.threads);
  if (!Number.isInteger(n) || n < 1 || n > MAX_THREADS) {
    throw new InvalidSettingError(`--threads ${JSON.stringify(f.threads)} is not a whole number of threads in 1..${MAX_THREADS}`, { setting: "threads", value: f.threads });
  }
  return n;
}

/** `[threads: 1 (why)]` when the model runs fewer threads than it was asked for, else null. */
export function threadsNoteLine(model: CausalLM): string | null {
  return model.threadsNote === null ? null : `[threads: ${model.threads} (${model.threadsNote})]\n`;
}
