// kvbound's WebGPU backend (src/model/webgpu/) vs its CPU backend (the wasm path, as bench/model.ts
// runs it) vs llama.cpp's Vulkan build (node-llama-cpp, bench/peers, every layer offloaded):
// prefill and greedy-decode tokens/s on stories260K and on SmolLM2-135M- and Qwen2.5-0.5B-shaped
// Q8_0 synthetic models, the same token ids to every engine, interleaved per repetition. Each
// WebGPU row also checks the GPU bytes the device created against the memory plan
// (src/plan/webgpu.ts): "GPU bytes = plan" must read yes.
// On SwiftShader (Chromium's CPU Vulkan driver, what a machine without a GPU has) the speeds are
// labelled as such: they measure an emulator, not a GPU.
// --window-tokens N instead runs the memory acceptance: stories260K under a 4-sink, 256-token
// sliding window on the GPU for N generated tokens, the GPU bytes checked against the plan after
// every token from the first eviction on, its pages --codec f32 (default), f16, int8 or int4.
// Run: npm run bench:webgpu -- [--quick] [--json] [--reps N] [--only stories260K|smollm2-135m-q8_0|qwen2.5-0.5b-q8_0]
//      [--no-llama-cpp] [--window-tokens 20000 [--codec int8]]
// Node needs an adapter: on Linux without a GPU, VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json
// LD_LIBRARY_PATH=/usr/lib/chromium (set here when unset and Chromium's SwiftShader is present:
// re-exec'd, since the loader reads LD_LIBRARY_PATH at start).

import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const SWIFTSHADER = "/usr/lib/chromium/vk_swiftshader_icd.json";
if (!process.env.VK_ICD_FILENAMES && existsSync(SWIFTSHADER) && !process.env.KVBOUND_BENCH_REEXEC) {
  const env = { ...process.env, VK_ICD_FILENAMES: SWIFTSHADER, LD_LIBRARY_PATH: [process.env.LD_LIBRARY_PATH, "/usr/lib/chromium"].filter(Boolean).join(":"), KVBOUND_BENCH_REEXEC: "1" };
  const r = spawnSync(process.execPath, [...process.execArgv, ...process.argv.slice(1)], { stdio: "inherit", env });
  process.exit(r.status ?? 1);
}

const { resolveCacheConfig } = await import("../src/cache/config.js");
const { readGgufHeader } = await import("../src/gguf/header.js");
const { transformerPlan } = await import("../src/model/architectures.js");
const { requestGpu } = await import("../src/model/webgpu/device.js");
const { WebGpuTransformer } = await import("../src/model/webgpu/forward.js");
const { webgpuMemory } = await import("../src/plan/webgpu.js");
const { loadModelSpec } = await import("../src/spec/load.js");
const { QWEN25_05B, SMOLLM2_135M, writeSyntheticModel } = await import("../test/fixtures/synthetic-model.js");
const { kvboundRunner } = await import("./lib/kvbound-runner.js");
const { machineInfo, machineLines } = await import("./lib/machine.js");
const { spmVocabMetadata, withExtraMetadata } = await import("./lib/synthetic-vocab.js");
const { fmt, markdownTable } = await import("./lib/table.js");
const { summarize, timeOnce, tokensPerSecond } = await import("./lib/timing.js");
const { loadLlamaCpp } = await import("./peers/llama-cpp.js");
import type { GpuCodec } from "../src/cache/gpu-page-bytes.js";
import type { GpuContext } from "../src/model/webgpu/device.js";
import type { SyntheticShape } from "../test/fixtures/synthetic-model.js";
import type { EngineRunner } from "./lib/runner.js";
import type { Sample, SampleSummary } from "./lib/timing.js";

const argv = process.argv.slice(2);
const QUICK = argv.includes("--quick");
const JSON_OUT = argv.includes("--json");
const NO_PEER = argv.includes("--no-llama-cpp");
function opt(name: string): string | undefined {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
}
const ONLY = opt("--only");
const REPS = opt("--reps") === undefined ? (QUICK ? 1 : 3) : Number(opt("--reps"));
const WINDOW_TOKENS = opt("--window-tokens") === undefined ? undefined : Number(opt("--window-tokens"));
const WINDOW_CODEC = (opt("--codec") ?? "f32") as GpuCodec;
if (!["f32", "f16", "int8", "int4"].includes(WINDOW_CODEC)) throw new Error(`--codec ${WINDOW_CODEC}: use f32, f16, int8 or int4`);

const SHARED = new URL("../../shared/", import.meta.url);
const tempDirs: string[] = [];

function argmax(a: Float32Array): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i]! > a[best]!) best = i;
  return best;
}

function seededIds(n: number, nVocab: number, seed: number): number[] {
  let s = seed >>> 0 || 1;
  const ids: number[] = [];
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    ids.push(3 + (s % (nVocab - 3)));
  }
  return ids;
}

async function loadFile(path: string) {
  const header = await readGgufHeader(path);
  const file = readFileSync(path);
  const data = new Uint8Array(file.buffer, file.byteOffset + header.dataOffset, file.length - header.dataOffset);
  return { header, data };
}

interface GpuRunner extends EngineRunner {
  /** GPU bytes the model and its cache created, and the plan's steady (between steps) and peak bytes. */
  memory(): { live: number; peak: number; planSteady: number; planPeak: number };
}

/** The WebGPU forward as a runner: prefill in maxBatchTokens batches (no logits), decode one token a step. */
async function webgpuRunner(ctx: GpuContext, path: string, contextSize: number, maxBatchTokens: number): Promise<GpuRunner> {
  const { header, data } = await loadFile(path);
  const spec = await loadModelSpec(path);
  const config = resolveCacheConfig({ contextWindowSize: contextSize, codec: "f32" });
  const mem = ctx.memory!;
  const before = mem.liveBytes;
  mem.resetPeak();
  const model = new WebGpuTransformer(ctx, header, data, transformerPlan(header, data), { window: config.windowTokens, maxBatchTokens });
  const gc = model.createCache(config);
  const plan = webgpuMemory(spec, config, { maxBatchTokens, maxBindingBytes: ctx.maxBindingBytes });
  gc.cache.add(0);
  const logits = new Float32Array(model.hp.nVocab);
  return {
    engine: "kvbound webgpu",
    async reset() {
      gc.cache.remove(0);
      gc.cache.add(0);
    },
    async prefill(ids) {
      for (let p = 0; p < ids.length; p += maxBatchTokens) {
        const n = Math.min(maxBatchTokens, ids.length - p);
        gc.cache.reserveOrThrow(0, n);
        await model.forwardBatch(ids, p, n, gc, 0, null);
      }
      await ctx.device.queue.onSubmittedWorkDone();
    },
    async decode(first, n) {
      const out: number[] = [];
      let t = first;
      for (let i = 0; i < n; i++) {
        gc.cache.reserveOrThrow(0, 1);
        await model.forward(t, gc, 0, logits);
        t = argmax(logits);
        out.push(t);
      }
      return out;
    },
    memory: () => ({ live: mem.liveBytes - before, peak: mem.peakBytes - before, planSteady: plan.steadyBytes, planPeak: plan.peakBytes }),
    async dispose() {},
  };
}

interface Case {
  readonly name: string;
  readonly promptTokens: number;
  readonly decodeTokens: number;
  readonly contextSize: number;
  prepare(): Promise<{ path: string; prompt: number[] }>;
}

function syntheticCase(name: string, shape: SyntheticShape, weightType: string, promptTokens: number, decodeTokens: number): Case {
  return {
    name,
    promptTokens,
    decodeTokens,
    contextSize: 256,
    async prepare() {
      const dir = mkdtempSync(join(tmpdir(), "kvbound-bench-webgpu-"));
      tempDirs.push(dir);
      const path = join(dir, `${name}-shape.gguf`);
      writeFileSync(path, await withExtraMetadata(writeSyntheticModel(shape, weightType), spmVocabMetadata(shape.nVocab)));
      return { path, prompt: seededIds(promptTokens, shape.nVocab, 7) };
    },
  };
}

const CASES: Case[] = [
  {
    name: "stories260K",
    promptTokens: QUICK ? 32 : 128,
    decodeTokens: QUICK ? 16 : 128,
    contextSize: 512,
    async prepare() {
      const path = fileURLToPath(new URL("models/stories260K.gguf", SHARED));
      const idsPath = fileURLToPath(new URL("golden/stories260K-stream-ids-4096.json", SHARED));
      if (!existsSync(path) || !existsSync(idsPath)) throw new Error(`missing ${path} or ${idsPath} (../shared)`);
      const ids = (JSON.parse(readFileSync(idsPath, "utf8")) as { ids: number[] }).ids;
      return { path, prompt: ids.slice(0, this.promptTokens) };
    },
  },
  syntheticCase("smollm2-135m-q8_0", SMOLLM2_135M, "Q8_0", QUICK ? 8 : 64, QUICK ? 4 : 32),
  syntheticCase("qwen2.5-0.5b-q8_0", QWEN25_05B, "Q8_0", QUICK ? 4 : 64, QUICK ? 2 : 32),
];

interface Row {
  readonly engine: string;
  readonly model: string;
  readonly prefillTokensPerSecond: number | null;
  readonly decodeTokensPerSecond: number | null;
  readonly gpuBytes?: number;
  readonly planBytes?: number;
  readonly gpuBytesEqualPlan?: boolean;
  readonly error?: string;
}

async function measure(r: EngineRunner, prompt: number[], decodeTokens: number, reps: number): Promise<{ prefill: SampleSummary; decode: SampleSummary; greedy: number[] }> {
  const prefill: Sample[] = [];
  const decode: Sample[] = [];
  let greedy: number[] = [];
  for (let rep = -1; rep < reps; rep++) {
    const p = await timeOnce(() => r.reset(), () => r.prefill(prompt));
    const d = await timeOnce(
      async () => {
        await r.reset();
        await r.prefill(prompt.slice(0, -1));
      },
      async () => {
        greedy = await r.decode(prompt[prompt.length - 1]!, decodeTokens);
      },
    );
    if (rep >= 0) {
      prefill.push(p);
      decode.push(d);
    }
  }
  return { prefill: summarize(prefill), decode: summarize(decode), greedy };
}

/** 4 sinks + a 256-token sliding window for `n` generated tokens: GPU bytes against the plan every token. */
async function windowRun(ctx: GpuContext, n: number): Promise<void> {
  const path = fileURLToPath(new URL("models/stories260K.gguf", SHARED));
  const { header, data } = await loadFile(path);
  const spec = await loadModelSpec(path);
  const config = resolveCacheConfig({ slidingWindowSize: 256, attentionSinkSize: 4, codec: WINDOW_CODEC });
  const plan = webgpuMemory(spec, config, { maxBatchTokens: 16, maxBindingBytes: ctx.maxBindingBytes });
  const mem = ctx.memory!;
  const before = mem.liveBytes;
  mem.resetPeak();
  const model = new WebGpuTransformer(ctx, header, data, transformerPlan(header, data), { window: config.windowTokens, maxBatchTokens: 16 });
  const gc = model.createCache(config);
  gc.cache.add(0);
  const logits = new Float32Array(model.hp.nVocab);
  let firstEviction = -1;
  let mismatches = 0;
  const t0 = performance.now();
  const lines: string[] = [];
  let t = 1;
  for (let i = 0; i < n; i++) {
    gc.cache.reserveOrThrow(0, 1);
    await model.forward(t, gc, 0, logits);
    t = i % 64 === 63 ? 1 + (i % 500) : argmax(logits); // greedy, nudged every 64 tokens (stories260K loops)
    if (firstEviction < 0 && gc.cache.stats().evictedTokens > 0) firstEviction = i + 1;
    if (firstEviction >= 0 && mem.liveBytes - before !== plan.steadyBytes) mismatches++;
    if ((i + 1) % 1000 === 0 || i + 1 === n) {
      const line = `${i + 1} tokens: held ${gc.cache.length(0)}, evicted ${gc.cache.stats().evictedTokens}, GPU live ${mem.liveBytes - before} B (plan ${plan.steadyBytes}), peak ${mem.peakBytes - before} B (plan ${plan.peakBytes}), ${((performance.now() - t0) / (i + 1)).toFixed(1)} ms/token`;
      lines.push(line);
      if (!JSON_OUT) process.stderr.write(`${line}\n`);
    }
  }
  const ok = mismatches === 0 && mem.peakBytes - before === plan.peakBytes && firstEviction > 0;
  const result = {
    tokens: n, firstEviction, evictedTokens: gc.cache.stats().evictedTokens, held: gc.cache.length(0),
    liveBytes: mem.liveBytes - before, peakBytes: mem.peakBytes - before, planSteadyBytes: plan.steadyBytes, planPeakBytes: plan.peakBytes,
    codec: WINDOW_CODEC, tokensAfterFirstEvictionOffPlan: mismatches, ok, adapter: ctx.description, machine: machineInfo(),
  };
  if (JSON_OUT) console.log(JSON.stringify(result, null, 2));
  else {
    console.log(`## WebGPU sliding window (4 sinks + 256 tokens, ${WINDOW_CODEC} pages), stories260K, ${n} generated tokens\n`);
    console.log(lines.map((l) => `- ${l}`).join("\n"));
    console.log(`\nfirst eviction at token ${firstEviction}; tokens after it whose GPU bytes differed from the plan: ${mismatches}; result: ${ok ? "bytes = plan, flat" : "MISMATCH"}\n`);
    console.log(machineLines(result.machine, [`adapter: ${ctx.description}`]));
  }
  if (!ok) process.exitCode = 1;
}

async function main(): Promise<void> {
  const machine = machineInfo();
  const loadStart = loadavg()[0]!;
  const ctx = await requestGpu();
  const swiftshader = /swiftshader/i.test(ctx.description);
  const adapter = `${ctx.description || "unknown adapter"}${swiftshader ? " (SwiftShader: a CPU emulation of a GPU; its speeds are meaningless for GPU speed)" : ""}`;
  if (WINDOW_TOKENS !== undefined) return windowRun(ctx, WINDOW_TOKENS);
  const notes: string[] = [];
  let peer: Awaited<ReturnType<typeof loadLlamaCpp>> | null = null;
  if (!NO_PEER) {
    try {
      peer = await loadLlamaCpp(1, { gpu: "vulkan" });
    } catch (e) {
      notes.push(`llama.cpp Vulkan peer unavailable: ${(e as Error).message.split("\n")[0]}`);
    }
  }
  const rows: Row[] = [];
  try {
    for (const c of CASES) {
      if (ONLY !== undefined && ONLY !== c.name) continue;
      const { path, prompt } = await c.prepare();
      process.stderr.write(`${c.name}: loading...`);
      const runners: { label: string; make: () => Promise<EngineRunner> }[] = [
        { label: "kvbound webgpu", make: () => webgpuRunner(ctx, path, c.contextSize, 64) },
        { label: "kvbound cpu (wasm, 1 thread, f32 pages)", make: () => kvboundRunner(path, { contextSize: c.contextSize, codec: "f32", model: { threads: 1 } }) },
      ];
      if (peer !== null) runners.push({ label: "llama.cpp vulkan", make: () => peer!.runner(path, { threads: 1, contextSize: c.contextSize, kvCacheType: "F32" }) });
      const greedy: Record<string, number[]> = {};
      for (const r of runners) {
        process.stderr.write(` ${r.label}...`);
        let runner: EngineRunner | null = null;
        try {
          runner = await r.make();
          const m = await measure(runner, prompt, c.decodeTokens, REPS);
          greedy[r.label] = m.greedy;
          const row: Row = {
            engine: r.label,
            model: c.name,
            prefillTokensPerSecond: tokensPerSecond(prompt.length, m.prefill.medianWallMs),
            decodeTokensPerSecond: tokensPerSecond(c.decodeTokens, m.decode.medianWallMs),
          };
          if ("memory" in runner) {
            const g = (runner as GpuRunner).memory();
            Object.assign(row, { gpuBytes: g.peak, planBytes: g.planPeak, gpuBytesEqualPlan: g.peak === g.planPeak && g.live === g.planSteady });
          }
          rows.push(row);
        } catch (e) {
          rows.push({ engine: r.label, model: c.name, prefillTokensPerSecond: null, decodeTokensPerSecond: null, error: (e as Error).message.split("\n")[0] });
        } finally {
          await runner?.dispose();
        }
      }
      process.stderr.write(" done\n");
      const labels = Object.keys(greedy);
      if (labels.length > 1) {
        const a = greedy[labels[0]!]!;
        notes.push(`${c.name}: prompt ${prompt.length} tokens, decode ${c.decodeTokens}, median of ${REPS} run(s) after a warm-up; greedy ids ${labels.slice(1).map((l) => `${labels[0]} vs ${l}: ${agreement(a, greedy[l]!)}`).join("; ")}`);
      }
    }
  } finally {
    await peer?.dispose();
    for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
  }
  if (JSON_OUT) {
    console.log(JSON.stringify({ adapter: ctx.description, swiftshader, results: rows, machine, peer: peer?.info ?? null, notes }, null, 2));
    return;
  }
  console.log(`## kvbound WebGPU vs kvbound CPU vs llama.cpp Vulkan (wall clock, median)${swiftshader ? " — ON SWIFTSHADER: GPU SPEEDS MEANINGLESS" : ""}\n`);
  console.log(markdownTable(
    [
      { title: "engine" }, { title: "model" }, { title: "prefill tok/s", align: "right" }, { title: "decode tok/s", align: "right" },
      { title: "GPU bytes (peak)", align: "right" }, { title: "plan bytes", align: "right" }, { title: "GPU bytes = plan" },
    ],
    rows.map((r) => [
      r.engine, r.model, r.error ? `error: ${r.error}` : fmt(r.prefillTokensPerSecond), fmt(r.decodeTokensPerSecond),
      r.gpuBytes === undefined ? "" : String(r.gpuBytes), r.planBytes === undefined ? "" : String(r.planBytes), r.gpuBytesEqualPlan === undefined ? "" : r.gpuBytesEqualPlan ? "yes" : "NO",
    ]),
  ));
  console.log("");
  console.log(machineLines(machine, [
    `WebGPU adapter: ${adapter}`,
    peer === null ? "llama.cpp Vulkan peer: not run" : `peer: node-llama-cpp ${peer.info.nodeLlamaCppVersion}, llama.cpp ${peer.info.llamaCppRelease} (${peer.info.buildType}, gpu ${peer.info.gpu}), every layer offloaded, F32 KV cache, 1 thread`,
    "kvbound webgpu: f32 pages, 64-token batches, logits read back every decode step; kvbound cpu: wasm kernels, 1 thread, f32 pages",
    ...notes,
    `1-minute load average ${loadStart.toFixed(2)} at start, ${loadavg()[0]!.toFixed(2)} at end (above ${machine.cores}: other processes competed, SwiftShader included)`,
  ]));
  if (rows.some((r) => r.gpuBytesEqualPlan === false)) process.exitCode = 1;
}

function agreement(a: number[], b: number[]): string {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i === a.length && i === b.length ? `all ${i} equal` : `equal up to step ${i} of ${Math.min(a.length, b.length)}`;
}

await main();
process.exit(process.exitCode ?? 0);
