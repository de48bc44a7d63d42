// `kvbound run | chat | bench` end to end, and the cache flags they share with `kvbound ppl`.
// Expected ids are the llama2.c golden outputs (../shared/golden/README.md).

import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { Command } from "commander";
import { beforeAll, describe, expect, it } from "vitest";

import { addCacheFlags, cacheConfigFromFlags } from "../src/cli/cache-flags.js";
import { chatCommand } from "../src/cli/commands/chat.js";
import { sessionFromFlags } from "../src/cli/commands/run.js";
import { resolveCacheConfig } from "../src/cache/config.js";
import { runCli as cli } from "./helpers/cli.js";
import { loadModel } from "../src/engine/load-model.js";
import { InvalidSettingError } from "../src/errors.js";
import { requireShared, sharedPath } from "./helpers/shared.js";

const REPO = fileURLToPath(new URL("..", import.meta.url));
const MODEL_REL = "../shared/models/stories260K.gguf";
const have = requireShared("models/stories260K.gguf") && requireShared("golden/stories260K-greedy.json");


describe("cache flags", () => {
  it("map to a CacheConfigInput", () => {
    expect(cacheConfigFromFlags({})).toEqual({ contextWindowSize: 4096 });
    expect(cacheConfigFromFlags({}, 512)).toEqual({ contextWindowSize: 512 });
    expect(cacheConfigFromFlags({ contextWindow: "8k", codec: "F16", pageSize: "32", cacheBudget: "64MiB" })).toEqual({
      contextWindowSize: 8192,
      codec: "f16",
      pageSize: 32,
      budgetBytes: 64 * 1024 * 1024,
    });
    expect(cacheConfigFromFlags({ slidingWindow: "1024", sinks: "4", policy: "h2o", prefillChunk: "128" })).toEqual({
      slidingWindowSize: 1024,
      attentionSinkSize: 4,
      policy: { kind: "h2o" },
      prefillChunkSize: 128,
    });
    // An evicting policy alone means a sliding window of the default size.
    expect(cacheConfigFromFlags({ policy: "fifo" }, 256)).toEqual({ slidingWindowSize: 256, policy: { kind: "fifo" } });
    expect(cacheConfigFromFlags({ sinks: "0", slidingWindow: "64" })).toEqual({ slidingWindowSize: 64, attentionSinkSize: 0 });
  });

  it("refuse bad values with InvalidSettingError", () => {
    expect(() => cacheConfigFromFlags({ policy: "lru" })).toThrow(InvalidSettingError);
    expect(() => cacheConfigFromFlags({ codec: "q4_0" })).toThrow(InvalidSettingError);
    expect(() => cacheConfigFromFlags({ contextWindow: "-5" })).toThrow(InvalidSettingError);
    expect(() => cacheConfigFromFlags({ sinks: "x" })).toThrow(InvalidSettingError);
    expect(() => cacheConfigFromFlags({ cacheBudget: "lots" })).toThrow(InvalidSettingError);
  });

  it("carry each policy's own settings: --prefix, --h2o-recent / --h2o-heavy / --h2o-window", () => {
    expect(cacheConfigFromFlags({ slidingWindow: "64", policy: "prefix-recent", prefix: "32" })).toEqual({
      slidingWindowSize: 64,
      policy: { kind: "prefix-recent", prefix: 32 },
    });
    expect(cacheConfigFromFlags({ slidingWindow: "256", sinks: "4", policy: "h2o", h2oRecent: "64", h2oHeavy: "188", h2oWindow: "128" })).toEqual({
      slidingWindowSize: 256,
      attentionSinkSize: 4,
      policy: { kind: "h2o", recent: 64, heavy: 188, scoreWindow: 128 },
    });
    // Resolved, the split adds up; one of recent / heavy is enough.
    const r = resolveCacheConfig(cacheConfigFromFlags({ slidingWindow: "256", sinks: "4", policy: "h2o", h2oHeavy: "52", h2oWindow: "32" }));
    expect(r.policy).toEqual({ kind: "h2o", window: 256, sinks: 4, recent: 200, heavy: 52, scoreWindow: 32, positions: "original" });
    expect(resolveCacheConfig(cacheConfigFromFlags({ slidingWindow: "64", policy: "prefix-recent", prefix: "32" })).policy).toMatchObject({ prefix: 32, recent: 32 });
  });

  it("refuse a policy's settings with another policy, naming the fix (InvalidSettingError)", () => {
    const refused = (flags: Parameters<typeof cacheConfigFromFlags>[0], message: RegExp): void => {
      expect(() => cacheConfigFromFlags(flags)).toThrow(InvalidSettingError);
      expect(() => cacheConfigFromFlags(flags)).toThrow(message);
    };
    refused({ slidingWindow: "64", sinks: "4", prefix: "32" }, /--prefix .* add --policy prefix-recent/);
    refused({ slidingWindow: "64", policy: "sliding", sinks: "4", prefix: "32" }, /policy is sliding; add --policy prefix-recent/);
    refused({ slidingWindow: "64", policy: "prefix-recent" }, /needs --prefix N/);
    refused({ slidingWindow: "64", policy: "prefix-recent", sinks: "4", prefix: "32" }, /use --prefix instead/);
    refused({ slidingWindow: "64", policy: "prefix-recent", prefix: "-1" }, /prefix "-1" is invalid/);
    refused({ slidingWindow: "64", policy: "tova", h2oWindow: "8" }, /--h2o-window .* add --policy h2o/);
    refused({ slidingWindow: "64", h2oRecent: "8" }, /--h2o-recent .* add --policy h2o/);
    refused({ slidingWindow: "64", policy: "h2o", h2oHeavy: "lots" }, /h2o-heavy "lots" is invalid/);
    refused({ slidingWindow: "64", policy: "h2o", h2oWindow: "0" }, /h2o-window/);
    refused({ slidingWindow: "64", policy: "h2o", h2oWindow: "5000" }, /at most 4096/);
    // A split that does not fill the window is resolveCacheConfig's to refuse (it knows the window).
    expect(() => resolveCacheConfig(cacheConfigFromFlags({ slidingWindow: "64", policy: "h2o", h2oRecent: "8", h2oHeavy: "8" }))).toThrow(
      /add up to 64/,
    );
  });

  it("are declared on a command under the documented names", () => {
    const cmd = addCacheFlags(new Command("x"), { runtimeBudget: true });
    const names = cmd.options.map((o) => o.long);
    for (const n of [
      "--context-window",
      "--sliding-window",
      "--sinks",
      "--policy",
      "--prefix",
      "--h2o-recent",
      "--h2o-heavy",
      "--h2o-window",
      "--codec",
      "--page-size",
      "--budget",
      "--cache-budget",
      "--prefill-chunk",
    ]) {
      expect(names).toContain(n);
    }
  });
});

describe.skipIf(!have)("kvbound run | chat | bench on stories260K", () => {
  let golden: { promptIds: number[]; greedyIds: number[] };
  beforeAll(() => {
    golden = JSON.parse(readFileSync(sharedPath("golden/stories260K-greedy.json"), "utf8"));
  });

  it("run --budget asks the planner: it picks and prints the settings, and the run stays inside them; too small is a typed error", async () => {
    // 10,000 tokens do not fit the model's context: the planner picks a sliding window that fits 8 MiB.
    const r = await cli("run", "--model", MODEL_REL, "--prompt", "Once upon a time", "--budget", "8MiB", "--max-tokens", "10000", "--temperature", "0", "--json");
    expect(r.code, r.err).toBe(0);
    const line = /\[budget 8\.00 MiB: sliding window (\d+) tokens \(4 sinks\), (\w+); weights .* \+ cache ([\d.]+) (KiB|MiB) \+ compute .* = ([\d.]+) MiB\]/.exec(r.err);
    expect(line, r.err).not.toBeNull();
    const window = Number(line![1]);
    expect(Number(line![5])).toBeLessThanOrEqual(8);
    const j = JSON.parse(r.out);
    expect(j.ids).toHaveLength(10_000);
    expect(j.stats.finishReason).toBe("length");
    expect(j.stats.lengthCause).toBe("maxTokens");
    expect(j.stats.tokensHeld).toBeLessThanOrEqual(window);
    expect(j.stats.evictions).toBeGreaterThan(10_000 - window - 10);
    expect(j.stats.cache.codec).toBe(line![2]);
    // The pool the run reserved is the cache the planner counted (the line rounds to 2 decimals).
    const unit = line![4] === "MiB" ? 2 ** 20 : 2 ** 10;
    expect(Math.abs(j.stats.cache.bytesReserved - Number(line![3]) * unit)).toBeLessThan(0.006 * unit);

    // The weights alone over the budget, or a window the pool cannot hold: typed errors before any compute.
    const weights = await cli("run", "--model", MODEL_REL, "--prompt", "Once", "--budget", "64KiB", "--sliding-window", "256", "--sinks", "4");
    expect(weights.code).toBe(1);
    expect(weights.err).toMatch(/error: ModelTooLargeError: the weights alone \(\d+ bytes\) exceed the budget of 65536 bytes/);
    expect(weights.out).toBe("");
    const pool = await cli("run", "--model", MODEL_REL, "--prompt", "Once", "--cache-budget", "64KiB", "--sliding-window", "256", "--sinks", "4");
    expect(pool.code).toBe(1);
    expect(pool.err).toMatch(/error: BudgetTooSmallError: .* the 18 pages a 256-token sliding window spans/);
    // ppl and bench measure the settings given: --budget is not theirs.
    const ppl = await cli("ppl", "--model", MODEL_REL, "--text", "x", "--budget", "8MiB");
    expect(ppl.code).not.toBe(0);
    expect(ppl.err).toMatch(/unknown option '--budget'/);
  }, 120_000);

  it("run --json prints promptIds, the golden greedy ids, text and stats", async () => {
    const r = await cli("run", "--model", MODEL_REL, "--prompt", "Once upon a time", "--max-tokens", "40", "--temperature", "0", "--codec", "f32", "--json");
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out);
    expect(j.promptIds).toEqual(golden.promptIds);
    expect(j.ids).toEqual(golden.greedyIds.slice(0, 40));
    expect(typeof j.text).toBe("string");
    expect(j.stats.finishReason).toBe("length");
    expect(j.stats.tokensHeld).toBe(5 + 39);
    expect(j.stats.cache.codec).toBe("f32");
  });

  it("run streams the prompt and its continuation, and a summary on stderr", async () => {
    const r = await cli("run", "--model", MODEL_REL, "--prompt", "Once upon a time", "--max-tokens", "8", "--temperature", "0");
    expect(r.code).toBe(0);
    expect(r.out.startsWith("Once upon a time, there was a little girl")).toBe(true);
    expect(r.err).toMatch(/8 tokens, finish length/);
  });

  it("run refuses a prompt longer than --context-window (exit 1, typed error)", async () => {
    const r = await cli("run", "--model", MODEL_REL, "--prompt", "Once upon a time there was a little girl", "--context-window", "4");
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/ContextWindowSizeExceededError/);
    const bad = await cli("run", "--model", MODEL_REL, "--prompt", "x", "--policy", "lru");
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/InvalidSettingError/);
  });

  it("run with a sliding window decodes past the window", async () => {
    const r = await cli("run", "--model", MODEL_REL, "--prompt", "Once upon a time", "--max-tokens", "100", "--temperature", "0", "--sliding-window", "32", "--sinks", "4", "--json");
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out);
    expect(j.ids.length).toBe(100);
    expect(j.stats.tokensHeld).toBe(32);
    expect(j.stats.evictions).toBeGreaterThan(0);
  });

  it("run --policy prefix-recent --prefix 32 keeps the first 32 prompt tokens, --policy sliding --sinks 4 the first 4", async () => {
    const loaded = await loadModel(sharedPath("models/stories260K.gguf"));
    const prompt = "Once upon a time there was a little girl named Lily. She loved to play outside in the sun with her dog. ".repeat(6);
    /** The text positions the cache keeps after prefilling the prompt, under `run`'s own flag parsing. */
    const kept = async (...argv: string[]): Promise<number[]> => {
      const flags = addCacheFlags(new Command("run")).parse(["--sliding-window", "64", ...argv], { from: "user" }).opts();
      const session = sessionFromFlags(loaded, flags);
      const ids = session.encode(prompt);
      expect(ids.length).toBeGreaterThan(150);
      await session.prefill(ids);
      const pos = new Int32Array(64);
      const n = session.cache.originalPositions(session.seqId, pos);
      return Array.from(pos.subarray(0, n));
    };
    const prefix = await kept("--policy", "prefix-recent", "--prefix", "32");
    const sliding = await kept("--policy", "sliding", "--sinks", "4");
    const last = prefix[prefix.length - 1]!;
    expect(sliding[sliding.length - 1]).toBe(last);
    const range = (a: number, b: number): number[] => Array.from({ length: b - a }, (_, i) => a + i);
    expect(prefix).toEqual([...range(0, 32), ...range(last - 31, last + 1)]);
    expect(sliding).toEqual([...range(0, 4), ...range(last - 59, last + 1)]);

    const r = await cli("run", "--model", MODEL_REL, "--prompt", prompt, "--max-tokens", "20", "--temperature", "0", "--sliding-window", "64", "--policy", "prefix-recent", "--prefix", "32", "--json");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out).stats.tokensHeld).toBe(64);
    const bad = await cli("run", "--model", MODEL_REL, "--prompt", "x", "--sliding-window", "64", "--sinks", "4", "--prefix", "32");
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/InvalidSettingError.*--prefix/);
  });

  it("run --policy h2o --h2o-window decodes past the window with the score window", async () => {
    const r = await cli("run", "--model", MODEL_REL, "--prompt", "Once upon a time", "--max-tokens", "80", "--temperature", "0", "--sliding-window", "32", "--sinks", "4", "--policy", "h2o", "--h2o-recent", "8", "--h2o-window", "16", "--json");
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out);
    expect(j.ids.length).toBe(80);
    expect(j.stats.tokensHeld).toBe(32);
    expect(j.stats.cache.policy).toBe("h2o");
  });

  it("bench --json reports speeds and memory", async () => {
    const r = await cli("bench", "--model", MODEL_REL, "--prompt-tokens", "32", "--gen-tokens", "32", "--repetitions", "1", "--json");
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out);
    expect(j.prefillTokensPerSecond).toBeGreaterThan(0);
    expect(j.decodeTokensPerSecond).toBeGreaterThan(0);
    expect(j.cacheBytesReserved).toBeGreaterThanOrEqual(j.cacheBytesUsed);
    expect(j.rssBytes).toBeGreaterThan(0);
    // stories260K: 1.12 MiB of f32 tensors (its header's sum, see ../shared/models/PROVENANCE.md).
    expect(j.weightsBytes).toBeGreaterThan(1_000_000);
    // Node 20 has WebAssembly SIMD and stories260K's head dim 8 suits the attention kernels.
    expect(j.kernels).toEqual({ model: "wasm", attention: "wasm" });
  });

  it("chat (in process) reuses the first turn's tokens in the second", async () => {
    let out = "";
    let err = "";
    async function* lines() {
      yield "Once upon a time";
      yield "The end.";
    }
    const code = await chatCommand(
      { model: MODEL_REL, maxTokens: "10", temperature: "0", codec: "f32" },
      { stdout: (s) => void (out += s), stderr: (s) => void (err += s) },
      lines(),
    );
    expect(code).toBe(0);
    const { tokenizer } = await loadModel(sharedPath("models/stories260K.gguf"));
    const promptText = tokenizer.decode(golden.promptIds);
    const expected = tokenizer.decode([...golden.promptIds, ...golden.greedyIds.slice(0, 10)]).slice(promptText.length);
    expect(out.split("\n")[0]).toBe(expected);
    const mem = err.split("\n").filter((l) => l.startsWith("[cache"));
    expect(mem.length).toBe(2);
    expect(mem[0]).toMatch(/reused 0, prefilled 5 tokens/);
    // Turn 2 reuses the prompt and the 9 fed reply tokens.
    expect(mem[1]).toMatch(/reused 14, /);
  });

  it("chat as a child process: two piped lines, two streamed replies with memory lines", async () => {
    const child = spawn("npx", ["tsx", "src/cli/main.ts", "chat", "--model", MODEL_REL, "--max-tokens", "12", "--temperature", "0"], {
      cwd: REPO,
      stdio: ["pipe", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    child.stdin.end("Once upon a time\nThe cat sat on the mat.\n");
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    expect(code).toBe(0);
    const replies = out.split("\n").filter((l) => l.length > 0);
    expect(replies.length).toBe(2);
    expect(replies[0]!.startsWith(", there was a little girl")).toBe(true);
    expect(err.match(/\[cache .* tokens held, 0 evicted/g)?.length).toBe(2);
  }, 30_000);
});
