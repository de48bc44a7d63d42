// `kvbound bench --model M`: prefill and decode speed (tokens/s) and memory (KV cache bytes
// reserved and used, weights bytes, process RSS) for one model and cache setting. The prompt is a
// fixed English text repeated to the requested length; decoding is greedy and ignores
// end-of-generation tokens so every run decodes exactly --gen-tokens (as llama-bench does).

import type { Command } from "commander";

import { collect } from "../../engine/generate.js";
import { parseCount } from "../../plan/parse.js";
import { addCacheFlags, type RawCacheFlags } from "../cache-flags.js";
import { formatBytes, table } from "../format.js";
import type { CliIo } from "../main.js";
import { flagsWindow, loadModelForCli, sessionFromFlags, tokensPerSecond } from "./run.js";
import { addThreadsFlag, threadsFromFlags, type ThreadsFlags } from "../threads-flag.js";
import { addBackendFlag, backendFromFlags, type BackendFlags } from "../backend-flag.js";

export interface BenchFlags extends RawCacheFlags, ThreadsFlags, BackendFlags {
  model: string;
  promptTokens?: string;
  genTokens?: string;
  repetitions?: string;
  json?: boolean;
}

export const DEFAULT_BENCH_PROMPT_TOKENS = 128;
export const DEFAULT_BENCH_GEN_TOKENS = 128;

const FILLER =
  "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends. " +
  "One day, she saw a big red ball under a tree, and she ran to get it. ";

export interface BenchResult {
  readonly model: string;
  readonly promptTokens: number;
  readonly genTokens: number;
  readonly repetitions: number;
  /** Best of the repetitions (the least disturbed run). */
  readonly prefillTokensPerSecond: number;
  readonly decodeTokensPerSecond: number;
  readonly weightsBytes: number;
  readonly cacheBytesReserved: number;
  readonly cacheBytesUsed: number;
  readonly rssBytes: number;
  readonly cache: ReturnType<import("../../cache/paged-kv-cache.js").PagedKvCache["stats"]>;
  /** Where the work ran: the model's matmuls and the cache's attention, WebAssembly SIMD or JS. */
  readonly kernels: { readonly model: "wasm" | "js"; readonly attention: "wasm" | "js" };
  /** Threads the matmuls ran on, and why not as many as asked (null: as asked). */
  readonly threads: number;
  readonly threadsNote: string | null;
  /** Where the forward pass ran (--backend). */
  readonly backend: "cpu" | "webgpu";
}

export async function benchCommand(flags: BenchFlags, io: CliIo): Promise<number> {
  const nPrompt = flags.promptTokens === undefined ? DEFAULT_BENCH_PROMPT_TOKENS : parseCount(flags.promptTokens, "prompt-tokens");
  const nGen = flags.genTokens === undefined ? DEFAULT_BENCH_GEN_TOKENS : parseCount(flags.genTokens, "gen-tokens");
  const reps = flags.repetitions === undefined ? 3 : parseCount(flags.repetitions, "repetitions", 100);
  const threads = threadsFromFlags(flags);
  const backend = backendFromFlags(flags);
  const loaded = await loadModelForCli(flags.model, io, flagsWindow(flags), threads, backend);
  // Default window: the whole benchmark fits without eviction.
  const session = sessionFromFlags(loaded, flags.contextWindow === undefined && flags.slidingWindow === undefined
    ? { ...flags, contextWindow: String(nPrompt + nGen) }
    : flags);
  const prompt: number[] = session.encode(FILLER);
  const filler = loaded.tokenizer.encode(FILLER);
  while (prompt.length < nPrompt) prompt.push(...filler);
  prompt.length = nPrompt;

  let bestPrefill = 0;
  let bestDecode = 0;
  for (let r = 0; r < reps; r++) {
    session.reset();
    const t0 = performance.now();
    await session.prefill(prompt);
    const prefillMs = performance.now() - t0;
    const gen = await collect(session.generate(prompt, { maxTokens: nGen, temperature: 0, ignoreEos: true }));
    bestPrefill = Math.max(bestPrefill, tokensPerSecond(nPrompt, prefillMs));
    // The first decoded token comes from the prefill's logits: nGen - 1 forward passes.
    bestDecode = Math.max(bestDecode, tokensPerSecond(Math.max(0, gen.ids.length - 1), gen.done.decodeMs));
  }
  const stats = session.cache.stats();
  const result: BenchResult = {
    model: loaded.source,
    promptTokens: nPrompt,
    genTokens: nGen,
    repetitions: reps,
    prefillTokensPerSecond: bestPrefill,
    decodeTokensPerSecond: bestDecode,
    weightsBytes: loaded.header.tensorBytes,
    cacheBytesReserved: stats.bytesReserved,
    cacheBytesUsed: stats.bytesUsed,
    rssBytes: process.memoryUsage().rss,
    cache: stats,
    kernels: { model: loaded.model.kernels, attention: session.cache.kernels },
    threads: loaded.model.threads,
    threadsNote: loaded.model.threadsNote,
    backend: backend ?? "cpu",
  };
  if (flags.json) {
    io.stdout(JSON.stringify(result, null, 2) + "\n");
    return 0;
  }
  io.stdout(
    table(
      [
        ["measure", "value"],
        ["model", result.model],
        ["cache", `${stats.policy}, window ${stats.windowTokens}, ${stats.codec}, page ${stats.pageSize}`],
        ["kernels", result.backend === "webgpu" ? "webgpu (matmuls and attention)" : `matmuls ${loaded.model.kernels}, attention ${session.cache.kernels}`],
        ["threads", `${result.threads}${result.threadsNote !== null ? ` (${result.threadsNote})` : ""}`],
        ["prefill", `${result.prefillTokensPerSecond.toFixed(1)} tok/s (${nPrompt} tokens, best of ${reps})`],
        ["decode", `${result.decodeTokensPerSecond.toFixed(1)} tok/s (${nGen} tokens, best of ${reps})`],
        ["weights", formatBytes(result.weightsBytes)],
        ["KV cache", `${formatBytes(result.cacheBytesUsed)} used of ${formatBytes(result.cacheBytesReserved)} reserved`],
        ["RSS", formatBytes(result.rssBytes)],
      ],
      ["l", "l"],
    ) + "\n",
  );
  return 0;
}

export function registerBench(program: Command, io: CliIo, setExit: (code: number) => void): void {
  const cmd = program
    .command("bench")
    .description("prefill and decode tokens/s and memory (KV cache, weights, RSS) for a model and cache setting")
    .requiredOption("--model <ref>", "a GGUF path, an http(s) URL or hf:owner/repo/file.gguf")
    .option("--prompt-tokens <n>", `prompt length (default ${DEFAULT_BENCH_PROMPT_TOKENS})`)
    .option("--gen-tokens <n>", `tokens to decode (default ${DEFAULT_BENCH_GEN_TOKENS})`)
    .option("--repetitions <n>", "runs; the best is reported (default 3)")
    .option("--json", "print the result as JSON only");
  addThreadsFlag(cmd);
  addBackendFlag(cmd);
  addCacheFlags(cmd).action(async (flags: BenchFlags) => {
    setExit(await benchCommand(flags, io));
  });
}
