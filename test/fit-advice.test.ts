// Advice that holds: what `fit` proposes must be something the engine accepts.
// - kvbound: every `kvbound run ...` line fit prints is run, as printed, through the real CLI
//   (src/cli/main.ts: commander's `run` options, then cacheConfigFromFlags and the cache config
//   validation), on stories260K with one token to generate.
// - llama.cpp: context shift is offered only where llama.cpp can shift the memory
//   (llamaCppShiftRefusal, citing llama_kv_cache_iswa::get_can_shift, llama_memory_recurrent::seq_rm,
//   llama_kv_cache::get_can_shift).

import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

import { describe, expect, it } from "vitest";

import { fitContexts } from "../src/plan/fit.js";
import { llamaCppShiftRefusal } from "../src/plan/llama-cpp.js";
import { registrySpec } from "../src/spec/registry.js";
import { runCli } from "./helpers/cli.js";

const REPO = fileURLToPath(new URL("..", import.meta.url));
const STORIES = join(REPO, "../shared/models/stories260K.gguf");
const haveStories = existsSync(STORIES);
if (process.env.CI && !haveStories) throw new Error(`CI: test model missing: ${STORIES}`);

const GIB = 1024 ** 3;

/** Splits a printed command line into argv the way a POSIX shell would for these lines
 *  (whitespace, single and double quotes; no expansions). */
function shellSplit(line: string): string[] {
  const out: string[] = [];
  let cur = "";
  let inWord = false;
  let quote: string | null = null;
  for (const ch of line) {
    if (quote !== null) {
      if (ch === quote) quote = null;
      else cur += ch;
      continue;
    }
    if (ch === "'" || ch === '"') {
      quote = ch;
      inWord = true;
    } else if (/\s/.test(ch)) {
      if (inWord) out.push(cur);
      cur = "";
      inWord = false;
    } else {
      cur += ch;
      inWord = true;
    }
  }
  if (quote !== null) throw new Error(`unbalanced quote in ${line}`);
  if (inWord) out.push(cur);
  return out;
}

function runLines(out: string): string[] {
  return out
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.startsWith("kvbound run "));
}

describe.skipIf(!haveStories)("fit --engine kvbound: every `kvbound run` line runs as printed", () => {
  // 8 MiB: every option reaches the training context; 1800 KiB: small windows, and --ctx 2048
  // falls back to a sliding window (the cheapest line prints its own run command).
  const cases: string[][] = [
    ["--budget", "8MiB"],
    ["--budget", "1800KiB", "--ctx", "2048"],
    ["--budget", "1800KiB", "--page-size", "32", "--prefill-chunk", "64"],
  ];
  for (const extra of cases) {
    it(`fit ${extra.join(" ")}`, { timeout: 120_000 }, async () => {
      const fit = await runCli("fit", STORIES, "--engine", "kvbound", ...extra);
      expect(fit.err).toBe("");
      expect(fit.code).toBe(0);
      const lines = runLines(fit.out);
      expect(lines.length).toBeGreaterThanOrEqual(4);
      for (const line of lines) {
        expect(line).not.toMatch(/--ctx|-1\b/); // flags only `kvbound plan` takes
        const argv = shellSplit(line).slice(1); // drop "kvbound"
        const r = await runCli(...argv, "--max-tokens", "1", "--temperature", "0", "--json");
        expect(r.err, line).toBe("");
        expect(r.code, line).toBe(0);
        const stats = (JSON.parse(r.out) as { stats: { cache: { tokens?: number } } }).stats;
        expect(stats).toBeDefined();
      }
    });
  }

  it("no `kvbound run` line for a model `kvbound run` cannot take (a registry id, an architecture it does not run)", async () => {
    const reg = await runCli("fit", "llama-3.2-1b", "--engine", "kvbound", "--budget", "4GiB");
    expect(reg.code).toBe(0);
    expect(runLines(reg.out)).toEqual([]);
    expect(reg.out).toMatch(/run it: kvbound run takes the model's GGUF file/);
    const arch = await runCli("fit", "qwen3-next-80b-a3b", "--engine", "kvbound", "--budget", "96GiB");
    expect(runLines(arch.out)).toEqual([]);
    expect(arch.out).toMatch(/kvbound run has no forward pass for qwen3next/);
  });

  it("the check has teeth: the plan flags fit used to print are refused by `kvbound run`", async () => {
    const ctx = await runCli("run", "--model", STORIES, "--prompt", "x", "--ctx", "2048", "--codec", "f16", "--max-tokens", "1");
    expect(ctx.code).toBe(2); // unknown option
    const unset = await runCli("run", "--model", STORIES, "--prompt", "x", "--context-window", "-1", "--sliding-window", "2048", "--sinks", "4", "--max-tokens", "1");
    expect(unset.code).toBe(1);
    expect(unset.err).toMatch(/InvalidSettingError|context-window/);
  });
});

describe("fit --engine llama.cpp: context shift only where llama.cpp can shift", () => {
  const bounded = (id: string, budget: number, swaFull?: boolean) =>
    fitContexts(registrySpec(id), { engine: "llama.cpp", budgetBytes: budget, ...(swaFull ? { swaFull } : {}) }).options.find((o) => o.bounded)!;

  it("interleaved SWA (gemma-3-27b, gpt-oss-20b): never plain --context-shift; offered with --swa-full, sized with it", () => {
    for (const id of ["gemma-3-27b", "gpt-oss-20b"]) {
      const o = bounded(id, 24 * GIB);
      expect(o.label).toBe("context shift (--swa-full --context-shift --keep 4)");
      expect(o.settings.swaFull).toBe(true);
      expect(o.note).toMatch(/llama_kv_cache_iswa::get_can_shift/);
      // Its bytes are a --swa-full plan's: more than the same context without it.
      expect(o.maxCtx).not.toBeNull();
    }
    expect(llamaCppShiftRefusal(registrySpec("gemma-3-27b"), false)).toMatch(/--swa-full/);
    expect(llamaCppShiftRefusal(registrySpec("gemma-3-27b"), true)).toBeNull();
    // A user who passed --swa-full gets the plain option, sized with their settings.
    expect(bounded("gemma-3-27b", 24 * GIB, true).label).toBe("context shift (--context-shift --keep 4)");
  });

  it("recurrent and hybrid models (qwen3-next, falcon-mamba, lfm2): not offered, with llama.cpp's reason", () => {
    for (const id of ["qwen3-next-80b-a3b", "falcon-mamba-7b", "lfm2-1.2b"]) {
      const o = bounded(id, 96 * GIB);
      expect(o.limitedBy, id).toBe("unavailable");
      expect(o.maxCtx, id).toBeNull();
      expect(o.note, id).toMatch(/llama_memory_recurrent::seq_rm/);
    }
  });

  it("full-attention models still get it (llama-3.1-8b)", () => {
    const o = bounded("llama-3.1-8b", 16 * GIB);
    expect(o.label).toBe("context shift (--context-shift --keep 4)");
    expect(o.maxCtx).toBe(131072);
  });

  it("the CLI prints no plain --context-shift advice for gemma-3-27b", async () => {
    const r = await runCli("fit", "gemma-3-27b", "--budget", "24GiB");
    expect(r.code).toBe(0);
    expect(r.out).not.toMatch(/llama-server --context-shift/);
    expect(r.out).toMatch(/llama-server --swa-full --context-shift --keep 4 -c \d+/);
  });
});
