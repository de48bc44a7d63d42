// `kvbound ppl` in-process through main(): the --json contract, the text report, and a context
// window that cannot hold the stream refused with the typed error and exit code 1; on WebGPU too.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { progressLine } from "../src/cli/commands/ppl.js";
import { main, type CliIo } from "../src/cli/main.js";
import { loadModel } from "../src/engine/load-model.js";
import { gpuForTests } from "../src/model/webgpu/device.js";
import { requireShared, sharedPath } from "./helpers/shared.js";

const have = requireShared("models/stories260K.gguf");

const DOCS = [
  "Once upon a time, there was a little cat. The cat liked to play with a red ball.",
  "Tom and Sue went to the park. They saw a big dog. The dog was happy and ran to them.",
  "Lily had a small box. Inside the box was a shiny stone. She gave it to her mom.",
];

async function runCli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const io: CliIo = { stdout: (t) => void (out += t), stderr: (t) => void (err += t) };
  const code = await main(argv, io);
  return { code, out, err };
}

describe.skipIf(!have)("kvbound ppl", () => {
  let dir: string;
  let textPath: string;
  const model = sharedPath("models/stories260K.gguf");
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "kvbound-ppl-"));
    textPath = join(dir, "docs.txt");
    // Separators with stray whitespace around the documents, and a trailing one.
    writeFileSync(textPath, `${DOCS[0]}\n<|endoftext|>\n\n${DOCS[1]}  \n<|endoftext|>\n${DOCS[2]}\n<|endoftext|>\n`);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("--json prints exactly { tokens, ppl, nll, segments, cache, tokensPerSecond } with ppl = exp(nll)", async () => {
    const { code, out } = await runCli(["ppl", "--model", model, "--text", textPath, "--json", "--codec", "f32", "--no-progress"]);
    expect(code).toBe(0);
    const j = JSON.parse(out);
    expect(Object.keys(j).sort()).toEqual(["cache", "nll", "ppl", "segments", "tokens", "tokensPerSecond"]);
    // The stream: BOS + the tokenizer's ids of each document (counted here with the tokenizer alone).
    const { tokenizer } = await loadModel(model);
    let expected = 0;
    for (const d of DOCS) expected += 1 + tokenizer.encode(d, { parseSpecial: false }).length;
    expect(j.tokens).toBe(expected);
    expect(j.ppl).toBeCloseTo(Math.exp(j.nll), 9);
    expect(j.ppl).toBeGreaterThan(1);
    // A 260K-parameter story model on stories: far better than uniform over its 512 tokens.
    expect(j.ppl).toBeLessThan(50);
    expect(j.segments).toEqual([{ start: 0, end: expected - 1, ppl: j.ppl }]);
    expect(j.tokensPerSecond).toBeGreaterThan(0);
    // Without window flags the window holds the whole stream: nothing evicted.
    expect(j.cache.policy).toBe("context");
    expect(j.cache.codec).toBe("f32");
    expect(j.cache.tokens).toBe(expected - 1);
    expect(j.cache.evictedTokens).toBe(0);
    expect(typeof j.cache.bytesUsed).toBe("number");
  }, 20_000);

  it("prints segments, perplexity, memory and speed; --skip-docs and --max-tokens cut the stream", async () => {
    const { code, out } = await runCli([
      "ppl", "--model", model, "--text", textPath, "--skip-docs", "1", "--max-tokens", "30",
      "--sliding-window", "16", "--sinks", "4", "--no-progress",
    ]);
    expect(code).toBe(0);
    expect(out).toMatch(/30 tokens, 29 predicted/);
    expect(out).toMatch(/sliding window 16 \(sinks 4\), positions reassigned/);
    expect(out).toMatch(/^0\.\.28 +\d+\.\d{3}$/m);
    expect(out).toMatch(/perplexity +\d+\.\d{4}/);
    expect(out).toMatch(/memory .* of cache pages at peak/);
    expect(out).toMatch(/tokens\/s/);
    const orig = await runCli([
      "ppl", "--model", model, "--text", textPath, "--max-tokens", "30", "--sliding-window", "16", "--sinks", "4",
      "--positions", "original", "--no-progress",
    ]);
    expect(orig.code).toBe(0);
    expect(orig.out).toMatch(/positions original/);
    const h2o = await runCli([
      "ppl", "--model", model, "--text", textPath, "--max-tokens", "30", "--sliding-window", "16", "--sinks", "4",
      "--policy", "h2o", "--h2o-window", "8", "--no-progress",
    ]);
    expect(h2o.code).toBe(0);
    expect(h2o.out).toMatch(/h2o window 16 \(sinks 4, recent \d+, heavy \d+, scores over the last 8 queries\)/);
    const ctxReassigned = await runCli(["ppl", "--model", model, "--text", textPath, "--positions", "reassigned", "--no-progress"]);
    expect(ctxReassigned.code).toBe(1);
    expect(ctxReassigned.err).toMatch(/needs an evicting policy/);
  }, 20_000);

  it("the progress line", () => {
    const line = progressLine({ done: 1024, total: 4095, elapsedMs: 2000, ppl: 4.6887, cacheBytes: 0 });
    expect(line).toBe(`[${"#".repeat(8)}${"-".repeat(22)}]  25.0%  1,024/4,095  ppl 4.69  512 tok/s`);
  });

  it("--recompute runs the oracle; a too-small --context-window exits 1 with ContextWindowSizeExceededError", async () => {
    const r = await runCli(["ppl", "--model", model, "--text", textPath, "--recompute", "8", "--max-tokens", "24", "--json", "--no-progress"]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out).tokens).toBe(24);
    const every = await runCli(["ppl", "--model", model, "--text", textPath, "--recompute", "8", "--recompute-every", "3", "--max-tokens", "24", "--no-progress"]);
    expect(every.code).toBe(0);
    expect(every.out).toMatch(/recompute oracle, window 8, one prediction every 3 tokens/);
    const bad = await runCli(["ppl", "--model", model, "--text", textPath, "--context-window", "16", "--no-progress"]);
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/ContextWindowSizeExceededError: .*raise context_window_size or use sliding_window_size/);
    const missing = await runCli(["ppl", "--model", model, "--text", join(dir, "nope.txt")]);
    expect(missing.code).toBe(1);
    expect(missing.err).toMatch(/InvalidSettingError: --text .*nope\.txt/);
  }, 20_000);
});

// `--backend webgpu` (SwiftShader here): the stream one token a pass through GPU pages under a
// sliding window that evicts, against the CPU backend on the same f32 pages.
const gpu = await gpuForTests();

describe.skipIf(!have || gpu === null)("kvbound ppl --backend webgpu", () => {
  let dir: string;
  let textPath: string;
  const model = sharedPath("models/stories260K.gguf");
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "kvbound-ppl-gpu-"));
    textPath = join(dir, "docs.txt");
    writeFileSync(textPath, `${DOCS.join("\n<|endoftext|>\n")}\n`);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("gives the CPU backend's per-token NLLs within 1e-4 and the same evictions under a 32-token window + 4 sinks", async () => {
    const window = ["--sliding-window", "32", "--sinks", "4", "--codec", "f32", "--json", "--no-progress"];
    const cpu = await runCli(["ppl", "--model", model, "--text", textPath, ...window, "--batch", "1"]);
    const web = await runCli(["ppl", "--model", model, "--text", textPath, ...window, "--backend", "webgpu"]);
    expect(cpu.code).toBe(0);
    expect(web.code).toBe(0);
    const a = JSON.parse(cpu.out), b = JSON.parse(web.out);
    expect(b.tokens).toBe(a.tokens);
    expect(b.cache.evictedTokens).toBe(a.cache.evictedTokens);
    expect(a.cache.evictedTokens).toBeGreaterThan(0);
    expect(Math.abs(b.nll - a.nll)).toBeLessThan(1e-4);
    console.log(`ppl on webgpu ${b.ppl.toFixed(5)} vs cpu ${a.ppl.toFixed(5)} over ${a.tokens} tokens, ${a.cache.evictedTokens} evicted`);
  }, 120_000);

  it("refuses the recompute oracle and batches over 1 on webgpu, by name", async () => {
    const r = await runCli(["ppl", "--model", model, "--text", textPath, "--backend", "webgpu", "--sliding-window", "32", "--sinks", "4", "--recompute", "16", "--json", "--no-progress"]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/recompute oracle runs on the cpu backend/);
    const b = await runCli(["ppl", "--model", model, "--text", textPath, "--backend", "webgpu", "--sliding-window", "32", "--sinks", "4", "--batch", "8", "--json", "--no-progress"]);
    expect(b.code).toBe(1);
    expect(b.err).toMatch(/one token a pass/);
  }, 60_000);
});
