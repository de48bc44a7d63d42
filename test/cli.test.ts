// The kvbound CLI end to end: `main(argv, io)` in-process for most cases, and once as a child
// process (`npx tsx src/cli/main.ts ...`) the way a user runs it. Expected byte figures are hand
// computations written here, or published llama.cpp log figures (cited).

import { execFile } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { runCli as run, type CliRun as Run } from "./helpers/cli.js";
import { readGgufHeader } from "../src/gguf/header.js";
import { listRegistry } from "../src/spec/registry.js";

const execFileAsync = promisify(execFile);
const REPO = fileURLToPath(new URL("..", import.meta.url));
const STORIES_REL = "../shared/models/stories260K.gguf";
const STORIES = join(REPO, STORIES_REL);
const haveStories = existsSync(STORIES);
if (process.env.CI && !haveStories) throw new Error(`CI: test model missing: ${STORIES}`);

const MIB = 1024 * 1024;


async function runJson(...argv: string[]): Promise<Record<string, any>> {
  const r = await run(...argv, "--json");
  expect(r.err).toBe("");
  expect(r.code).toBe(0);
  return JSON.parse(r.out) as Record<string, any>;
}

let dir = "";
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "kvbound-cli-"));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

function write(name: string, content: string): string {
  const path = join(dir, name);
  mkdirSync(join(path, ".."), { recursive: true });
  writeFileSync(path, content);
  return path;
}

// Llama 3.2 1B as GGUF metadata: 16 blocks, 32 heads, 8 KV heads, hidden 2048 -> head 64
// (https://huggingface.co/meta-llama/Llama-3.2-1B/blob/main/config.json).
const LLAMA_32_1B_METADATA = {
  "general.architecture": "llama",
  "general.name": "Llama 3.2 1B",
  "llama.block_count": 16,
  "llama.embedding_length": 2048,
  "llama.feed_forward_length": 8192,
  "llama.attention.head_count": 32,
  "llama.attention.head_count_kv": 8,
  "llama.context_length": 131072,
  "llama.vocab_size": 128256,
};

// Mistral-Small-24B-Instruct-2501 config.json (https://huggingface.co/mistralai/Mistral-Small-24B-Instruct-2501):
// 40 layers, 32 heads, 8 KV heads, head_dim 128, hidden 5120.
const MISTRAL_SMALL_24B_CONFIG = {
  architectures: ["MistralForCausalLM"],
  model_type: "mistral",
  hidden_size: 5120,
  intermediate_size: 32768,
  num_hidden_layers: 40,
  num_attention_heads: 32,
  num_key_value_heads: 8,
  head_dim: 128,
  max_position_embeddings: 32768,
  vocab_size: 131072,
  sliding_window: null,
  torch_dtype: "bfloat16",
};

describe("the kvbound command's shebang", () => {
  // An installed `kvbound` runs through the first line of src/cli/main.ts (kept by tsc in dist/):
  // run that line's command as env would, on the TypeScript entry, and see the runtime it set up.
  it("starts node with its allocator and young-generation settings", async () => {
    const line = readFileSync(join(REPO, "src/cli/main.ts"), "utf8").split("\n", 1)[0]!;
    const m = /^#!\/usr\/bin\/env -S (.+)$/.exec(line);
    expect(m).not.toBeNull();
    const probe = "console.log(JSON.stringify([process.env.MALLOC_ARENA_MAX, process.execArgv]))";
    const { stdout } = await execFileAsync("/usr/bin/env", ["-S", `${m![1]} -e "${probe}"`], { cwd: REPO, timeout: 30_000 });
    const [arenas, execArgv] = JSON.parse(stdout) as [string, string[]];
    expect(arenas).toBe("2");
    expect(execArgv).toContain("--max-semi-space-size=1");
    // And the command itself runs under it (`kvbound --version` through tsx).
    const v = await execFileAsync("/usr/bin/env", ["-S", `${m![1]} --import tsx src/cli/main.ts --version`], { cwd: REPO, timeout: 30_000 });
    expect(v.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
  });
});

describe("kvbound plan (child process)", () => {
  it.skipIf(!haveStories)("plans stories260K.gguf at -c 128: 256 cells, 0.16 MiB, weights = sum of tensor sizes", async () => {
    const { stdout, stderr } = await execFileAsync("npx", ["tsx", "src/cli/main.ts", "plan", STORIES_REL, "--ctx", "128", "--json"], {
      cwd: REPO,
      timeout: 30_000,
    });
    expect(stderr.replace(/npm warn.*\n/g, "")).toBe("");
    const plan = JSON.parse(stdout) as Record<string, any>;
    expect(Object.keys(plan).sort()).toEqual(
      expect.arrayContaining(["compute", "engine", "kv", "model", "notes", "settings", "totalBytes", "weights"]),
    );
    expect(plan.engine).toBe("llama.cpp");
    // stories260K: 5 blocks, n_embd 64, 8 heads, 4 KV heads -> K/V rows of 4 x 8 = 32 values.
    // llama.cpp pads n_ctx 128 up to 256 (llama-context.cpp), so: 256 cells x 5 layers x (32 K +
    // 32 V) values x 2 bytes (f16) = 163840 bytes = 0.16 MiB, as llama.cpp's log prints for -c 128.
    expect(plan.kv.caches).toHaveLength(1);
    expect(plan.kv.caches[0]).toMatchObject({ kind: "full", cells: 256, layers: 5, streams: 1 });
    expect(plan.kv.totalBytes).toBe(256 * 5 * (32 + 32) * 2);
    expect((plan.kv.totalBytes / MIB).toFixed(2)).toBe("0.16");
    // weights: recompute from the tensor shapes and ggml block sizes (not the header's byte sums).
    const header = await readGgufHeader(STORIES);
    let sum = 0;
    for (const t of header.tensors) {
      let ne = 1;
      for (const d of t.shape) ne *= d;
      sum += (ne / t.type.blockSize) * t.type.typeSize;
    }
    expect(header.tensors.length).toBe(48);
    expect(plan.weights.bytes).toBe(sum);
    expect(plan.weights.source).toBe("gguf-tensors");
    expect(plan.totalBytes).toBe(plan.kv.totalBytes + plan.weights.bytes + (plan.compute?.bytes ?? 0));
  });
});

describe("kvbound plan (in-process)", () => {
  it("`plan` with no model lists the registry for this machine, offline, in seconds", async () => {
    // `npm start` runs exactly this (tsx src/cli/main.ts plan); the test is in-process to stay fast.
    const t0 = performance.now();
    const r = await run("plan");
    const seconds = (performance.now() - t0) / 1000;
    expect(r.code).toBe(0);
    expect(r.err).toBe("");
    expect(seconds).toBeLessThan(5);
    for (const e of listRegistry()) expect(r.out).toContain(e.id);
    expect(r.out).toMatch(/this machine's total memory/);
  });

  it("a GGUF metadata JSON: Llama-3.2-1B at n_ctx 2048 is 64.00 / 34.00 / 18.00 MiB (f16 / q8_0 / q4_0)", async () => {
    // Published llama.cpp logs for Llama-3.2-1B at -c 2048: "KV self size = 64.00 MiB" (f16),
    // 34.00 MiB (q8_0), 18.00 MiB (q4_0) (figures quoted in the kvbound plan issue).
    // Hand: 2048 cells x 16 layers x 2 x 512 values = 33,554,432 values; f16 2 B each;
    // q8_0 34 B per 32 values; q4_0 18 B per 32.
    const path = write("llama-3.2-1b.json", JSON.stringify(LLAMA_32_1B_METADATA));
    const values = 2048 * 16 * 2 * 512;
    const f16 = await runJson("plan", path, "--ctx", "2048");
    expect(f16.kv.totalBytes).toBe(values * 2);
    expect((f16.kv.totalBytes / MIB).toFixed(2)).toBe("64.00");
    const q8 = await runJson("plan", path, "--ctx", "2k", "--type-k", "q8_0", "--type-v", "q8_0", "--flash-attn", "on");
    expect(q8.kv.totalBytes).toBe((values / 32) * 34);
    expect((q8.kv.totalBytes / MIB).toFixed(2)).toBe("34.00");
    const q4 = await runJson("plan", path, "--ctx", "2048", "--type-k", "q4_0", "--type-v", "Q4_0", "--flash-attn", "on");
    expect((q4.kv.totalBytes / MIB).toFixed(2)).toBe("18.00");
    expect(f16.weights).toBeNull();
  });

  it("a HF config.json: Mistral-Small-24B at 6656 is 1040 MiB f16", async () => {
    // Hand: 6656 cells x 40 layers x 2 x (8 x 128) values x 2 B = 1,090,519,040 B = 1040.00 MiB.
    const path = write("mistral-small/config.json", JSON.stringify(MISTRAL_SMALL_24B_CONFIG));
    const plan = await runJson("plan", path, "--ctx", "6656");
    expect(plan.kv.totalBytes).toBe(6656 * 40 * 2 * 1024 * 2);
    expect(plan.kv.caches[0]).toMatchObject({ kind: "full", cells: 6656, layers: 40 });
  });

  it("a registry id: the table shows each cache in MiB and a verdict against --budget", async () => {
    // Llama 3.1 8B: 32 layers x 8 KV heads x 128: K = 32768 x 32 x 1024 x 2 B = 2048.00 MiB, V the same.
    const r = await run("plan", "llama-3.1-8b", "--ctx", "32k", "--budget", "64GiB");
    expect(r.code).toBe(0);
    expect(r.err).toBe("");
    expect(r.out).toMatch(/full\s+32,768\s+32\s+1\s+f16\s+f16\s+2048\.00\s+2048\.00/);
    expect(r.out).toMatch(/^fits: .* of 64\.00 GiB \(\d+%\)$/m);
    const tight = await run("plan", "llama-3.1-8b", "--ctx", "32k", "--budget", "8GiB");
    expect(tight.code).toBe(0);
    expect(tight.out).toMatch(/^does not fit: needs .* more .*; try .*--type-k q8_0/m);
  });

  it("--llama-cpp-build applies that build's padding", async () => {
    // Before llama.cpp PR 16812, the KV cache was padded to 32 cells without flash attention
    // (llama_kv_cache_get_padding): PAD(1100, 32) = 1120. Current rules pad n_ctx to 256: 1280.
    const old = await runJson("plan", "llama-3.2-1b", "--ctx", "1100", "--llama-cpp-build", "b4000", "--flash-attn", "off");
    expect(old.kv.caches[0].cells).toBe(1120);
    const now = await runJson("plan", "llama-3.2-1b", "--ctx", "1100", "--flash-attn", "off");
    expect(now.kv.caches[0].cells).toBe(1280);
  });

  it("--json prints the MemoryPlan object and nothing else", async () => {
    const r = await run("plan", "qwen2.5-7b", "--ctx", "8k", "--budget", "16GiB", "--json");
    expect(r.code).toBe(0);
    const plan = JSON.parse(r.out) as Record<string, any>;
    expect(plan.engine).toBe("llama.cpp");
    expect(plan.settings.ctx).toBe(8192);
    expect(r.out.trim().startsWith("{")).toBe(true);
    expect(r.out.trim().endsWith("}")).toBe(true);
  });

  it("--export llama.cpp prints the flags that realize the plan", async () => {
    const r = await run("plan", "llama-3.1-8b", "--ctx", "32k", "--type-k", "q8_0", "--type-v", "q8_0", "--flash-attn", "on", "--export", "llama.cpp");
    expect(r.code).toBe(0);
    expect(r.out).toContain("-c 32768");
    expect(r.out).toContain("q8_0");
  });

  it("other engines: vllm and webllm plan too", async () => {
    const v = await runJson("plan", "llama-3.1-8b", "--engine", "vllm", "--ctx", "32k", "--budget", "80GiB");
    expect(v.engine).toBe("vllm");
    const w = await runJson("plan", "llama-3.2-1b", "--engine", "webllm", "--context-window", "4096");
    expect(w.engine).toBe("webllm");
    const k = await runJson("plan", "llama-3.2-1b", "--engine", "kvbound", "--sliding-window", "1024", "--sinks", "4", "--codec", "int8");
    expect(k.engine).toBe("kvbound");
    expect(k.settings.slidingWindowSize).toBe(1024);
  });
});

describe("kvbound plan: bad input is a typed error on stderr and exit 1", () => {
  async function expectError(name: string, ...argv: string[]): Promise<Run> {
    const r = await run(...argv);
    expect(r.code).toBe(1);
    expect(r.out).toBe("");
    expect(r.err).toMatch(new RegExp(`^error: ${name}: `));
    return r;
  }

  it("--ctx -5 and --ctx 1e12", async () => {
    await expectError("InvalidSettingError", "plan", "llama-3.1-8b", "--ctx", "-5");
    await expectError("InvalidSettingError", "plan", "llama-3.1-8b", "--ctx", "1e12");
    await expectError("InvalidSettingError", "plan", "llama-3.1-8b", "--ctx", "999999999999");
  });

  it("an unknown cache type, engine or flash-attn value", async () => {
    await expectError("UnknownCacheTypeError", "plan", "llama-3.1-8b", "--type-k", "q3_k");
    await expectError("InvalidSettingError", "plan", "llama-3.1-8b", "--engine", "tgi");
    await expectError("InvalidSettingError", "plan", "llama-3.1-8b", "--flash-attn", "maybe");
  });

  it("quantized V without flash attention (llama.cpp refuses it)", async () => {
    await expectError("QuantizedVRequiresFlashAttentionError", "plan", "llama-3.1-8b", "--type-v", "q8_0", "--flash-attn", "off");
  });

  it("an unknown model, with suggestions", async () => {
    const r = await expectError("UnknownModelError", "plan", "llama-3.1-8bb");
    expect(r.err).toContain("llama-3.1-8b");
  });

  it("garbage files", async () => {
    await expectError("GgufParseError", "plan", write("garbage.gguf", "definitely not a GGUF header"));
    await expectError("ModelConfigError", "plan", write("garbage.txt", "\u0001\u0002garbage"));
    await expectError("ModelConfigError", "plan", write("other.json", JSON.stringify({ hello: 1 })));
  });

  it("usage errors exit 2", async () => {
    const r = await run("plan", "llama-3.1-8b", "--no-such-flag");
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/unknown option/);
    expect((await run("frobnicate")).code).toBe(2);
    expect((await run("fit", "llama-3.1-8b")).code).toBe(2); // --budget is required
  });

  it("--help exits 0", async () => {
    const r = await run("--help");
    expect(r.code).toBe(0);
    expect(r.out).toContain("plan");
  });
});

describe("kvbound fit / rank / list", () => {
  it("fit: each KV type's max ctx fits and one step more does not", async () => {
    const fit = await runJson("fit", "llama-3.1-8b", "--budget", "8GiB");
    const unbounded = (fit.options as any[]).filter((o) => !o.bounded);
    expect(unbounded.map((o) => o.label)).toEqual(["f16 K+V", "q8_0 K+V", "q4_0 K+V"]);
    for (const o of unbounded) {
      expect(o.maxCtx).toBeGreaterThan(0);
      const args = ["plan", "llama-3.1-8b", "--type-k", o.settings.typeK, "--type-v", o.settings.typeV];
      if (o.settings.flashAttn) args.push("--flash-attn", "on");
      const at = await runJson(...args, "--ctx", String(o.maxCtx));
      expect(at.totalBytes).toBeLessThanOrEqual(8 * 1024 ** 3);
      if (o.limitedBy === "budget") {
        const over = await runJson(...args, "--ctx", String(o.maxCtx + 256));
        expect(over.totalBytes).toBeGreaterThan(8 * 1024 ** 3);
      }
    }
    // Smaller K/V rows can only hold more tokens.
    expect(unbounded[1].maxCtx).toBeGreaterThanOrEqual(unbounded[0].maxCtx);
    expect(unbounded[2].maxCtx).toBeGreaterThanOrEqual(unbounded[1].maxCtx);
  });

  it("fit --ctx: the cheapest settings that make it fit", async () => {
    const r = await run("fit", "llama-3.1-8b", "--budget", "8GiB", "--ctx", "32k");
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/cheapest for ctx 32768: /);
    const j = await runJson("fit", "llama-3.1-8b", "--budget", "8GiB", "--ctx", "32k");
    expect(j.cheapest.fits).toBe(true);
    expect(j.cheapest.bytes).toBeLessThanOrEqual(8 * 1024 ** 3);
  });

  it("rank: fitting models first, the rest demoted with a reason", async () => {
    const j = await runJson("rank", "--budget", "8GiB", "--ctx", "32k");
    const models = j.models as any[];
    expect(models.length).toBe(listRegistry().length);
    const firstMiss = models.findIndex((m) => !m.fits);
    expect(firstMiss).toBeGreaterThan(0);
    for (let i = firstMiss; i < models.length; i++) {
      expect(models[i].fits).toBe(false);
      expect(models[i].reason).not.toBe("");
    }
    for (const m of models.slice(0, firstMiss)) expect(m.bytes).toBeLessThanOrEqual(8 * 1024 ** 3);
    const text = await run("rank", "--budget", "8GiB", "--ctx", "32k");
    expect(text.out).toMatch(/cannot hold the context \(\d+\), closest first:/);
    // smollm2-135m fits 8 GiB many times over but was trained at 8k: demoted with that reason
    expect(models.find((m) => m.id === "smollm2-135m").reason).toMatch(/trained at 8192 tokens/);
    expect(text.out).toContain("deepseek-v3");
  });

  it("list: every registry id", async () => {
    const r = await run("list");
    for (const e of listRegistry()) expect(r.out).toContain(e.id);
  });

  it("plan without a model honours --budget and --ctx", async () => {
    const j = await runJson("plan", "--budget", "4GiB", "--ctx", "4k");
    expect(j.budgetBytes).toBe(4 * 1024 ** 3);
    const rows = j.models as any[];
    expect(rows.length).toBe(listRegistry().length);
    for (const row of rows) {
      if (row.plan === null) continue;
      expect(row.ctx).toBe(4096);
      expect(row.fits).toBe(row.plan.totalBytes <= 4 * 1024 ** 3);
    }
  });
});
