// Peak memory of kvbound's runtime against the planner (issue "kvbound run", memory acceptance):
// prefill a 16k-token prompt, then generate 100k tokens with a sliding window, sampling RSS the
// whole time, and compare the peak with `planMemory(spec, { engine: "kvbound", ... })`'s
// weights + cache + compute.
//
//   npx tsx bench/memory.ts [--model PATH] [--prompt 16384] [--gen 100000] [--window 1024] [--sinks 4] [--codec f16]
//                           [--young 1] [--malloc-arena-max 2] [--threads 1]
//
// Measured figure: PEAK RSS MINUS THE PROCESS'S RSS JUST BEFORE THE MODEL IS LOADED. That baseline
// is the JS runtime's own memory (V8 heap, code, the tsx loader, this script's id stream and the
// spec), which no engine plan counts; everything the model load and the run add is in the delta.
// Before the baseline and after the load a full GC runs (--expose-gc), so a freed read buffer or
// the synthetic file's bytes do not sit in the figure by accident; the load's own transient peak
// is printed separately. Three things keep V8's own noise out of the delta, in both directions:
//
// - The young generation is pinned: the script re-runs itself under node with
//   --min-semi-space-size=1 --max-semi-space-size=1 (V8's initial 1 MiB semi-space on 64-bit;
//   `--young MIB` picks another size, `--young 0` leaves V8's default). Unpinned, it grows to
//   16 MiB semi-spaces while tsx compiles (inside the baseline) and shrinks or regrows later:
//   measured +-15 MiB of RSS that has nothing to do with the model.
// - The baseline is settled (bench/lib/rss.ts settleRss): after 8 full GCs (startup bytecode ages
//   out after 5) the script idles until RSS
//   stops falling (~8 s: V8's memory reducer returns the heap pages the GC freed). Not waited for,
//   those 5-8 MiB leave in the middle of the run and hide as much of the model (a 30k-token run
//   ended 2 MiB BELOW the plan's own buffers). The amount is printed.
// - Every buffer the plan counts is an ArrayBuffer or wasm memory, which V8 tallies as "external";
//   the report prints that tally next to the plan, so the plan's side is checked directly.
//
// What remains above the plan is the JS runtime's and is reported, not subtracted: V8's optimizing
// compiler (TurboFan) allocates its scratch with malloc on background threads, and glibc keeps
// each thread's arena at its high-water mark; the optimized code and its feedback add V8 pages.
// About 4 MiB here, the same for any model size (it depends on the engine's code, not on the
// weights). glibc's arenas are capped at 2 (MALLOC_ARENA_MAX=2, as the kvbound CLI's shebang sets;
// `--malloc-arena-max 0` leaves glibc's default of one arena per thread that allocated).
// One matmul thread by default: each worker thread is a V8 isolate of its own (~9.5 MiB idle on
// Node 20), which no plan counts; `--threads N` measures it.
//
// Default model: a synthetic Q8_0 llama (test/fixtures/synthetic-model.ts; random weights, no
// tokenizer) of ~23M parameters written to a temp file. Size: the prediction (~58 MiB) must be
// large against that fixed ~4 MiB, or the test measures V8 and not the model (stories260K's
// 3 MiB plan comes out ~2x); and 100k decode tokens must finish in minutes on 2 cores (~7 min
// here with another job on the cores; decode time grows with the weight bytes read per token).
// n_ff 12288 buys the memory where it costs the least time: the 64-token prefill activations
// (hb, hb2 and the q8 scratch, 9 MiB) are predicted, allocated and written by every prefill
// batch, while a decode token reads only their first row. Token ids come
// from the TinyStories excerpt: the model's tokenizer when it has one (stories260K), else the
// text's UTF-8 bytes + 3 (the byte-fallback ids of a SentencePiece vocabulary), cycled. Decoding
// feeds back the greedy token, as a generation does (the content does not change the memory).
// The loop is Session's own (src/engine/session.ts): prefill pieces of model.maxBatchTokens via
// cache.reserve + forwardBatch, then reserve(1) + forward per token, one f32 logits row.

import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { getHeapStatistics } from "node:v8";
import { resolveCacheConfig } from "../src/cache/config.js";
import { CacheKv, createModelCache } from "../src/model/cache-kv.js";
import { loadModelWeights } from "../src/engine/load-model.js";
import { encodeTextStream } from "../src/engine/text-stream.js";
import { readGgufHeader } from "../src/gguf/header.js";
import { createTokenizer } from "../src/model/tokenizer/index.js";
import { kvboundCacheInput } from "../src/plan/kvbound.js";
import { planMemory } from "../src/plan/plan.js";
import type { PlanSettings } from "../src/plan/types.js";
import { loadModelSpec } from "../src/spec/load.js";
import { writeSyntheticModel, type SyntheticShape } from "../test/fixtures/synthetic-model.js";
import { machineInfo, machineLines } from "./lib/machine.js";
import { formatMiB, relativeError, RssSampler, settleRss } from "./lib/rss.js";
import { markdownTable } from "./lib/table.js";

/** ~23.4M parameters (19.2M in 2 layers with a wide FFN + 4.2M tied embeddings), Q8_0: ~25 MB file, ~26 MB wasm
 *  copies, ~9 MB of batch activations. Few layers and heads keep attention from dominating decode time. */
const DEFAULT_SHAPE: SyntheticShape = { arch: "llama", nLayer: 2, nEmbd: 256, nHead: 4, nHeadKv: 1, nFf: 12288, nVocab: 16384, nCtxTrain: 131072 };
const DEFAULT_TYPE = "Q8_0";
/** Target of the acceptance: |peak delta / prediction - 1| <= 10%. */
const TOLERANCE = 0.1;

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    prompt: { type: "string", default: "16384" },
    gen: { type: "string", default: "100000" },
    window: { type: "string", default: "1024" },
    sinks: { type: "string", default: "4" },
    codec: { type: "string", default: "f16" },
    text: { type: "string", default: "../shared/text/tinystories-valid-excerpt.txt" },
    "no-gc": { type: "boolean", default: false },
    young: { type: "string", default: "1" },
    "malloc-arena-max": { type: "string", default: "2" },
    threads: { type: "string", default: "1" },
  },
});

// Re-run under node with the young generation pinned (see the header), --expose-gc, and the
// allocator setting asked for; the child does the measuring.
const CHILD_ENV = "KVBOUND_BENCH_MEMORY_CHILD";
if (process.env[CHILD_ENV] === undefined) {
  const young = Number(values.young);
  const flags = young > 0 ? [`--min-semi-space-size=${young}`, `--max-semi-space-size=${young}`] : [];
  const env: NodeJS.ProcessEnv = { ...process.env, [CHILD_ENV]: "1" };
  if (values["malloc-arena-max"] !== "0") env.MALLOC_ARENA_MAX = values["malloc-arena-max"];
  // process.execArgv carries tsx's loader (--require/--import), so the child runs this .ts file too.
  const r = spawnSync(process.execPath, [...flags, "--expose-gc", ...process.execArgv, process.argv[1]!, ...process.argv.slice(2)], { stdio: "inherit", env });
  process.exit(r.status ?? 1);
}
const promptTokens = Number(values.prompt);
const genTokens = Number(values.gen);
const settings: PlanSettings = { slidingWindowSize: Number(values.window), attentionSinkSize: Number(values.sinks), codec: values.codec! };

const gcFn = (globalThis as { gc?: () => void }).gc;
if (gcFn === undefined) throw new Error("bench/memory.ts: the child runs with --expose-gc; globalThis.gc is missing");
// Eight full GCs, not one: V8 flushes the bytecode of functions unused for 5 mark-compacts
// (--bytecode-old-age), so tsx's and the setup's startup code would otherwise age out, and its
// pages leave, in the middle of the run.
const gc = () => {
  if (!values["no-gc"]) for (let i = 0; i < 8; i++) gcFn();
};

// --- everything before the baseline: the file, the spec, the id stream -------------------------
let tmp: string | null = null;
let modelPath = values.model;
let modelLabel = modelPath ?? "";
if (modelPath === undefined) {
  tmp = mkdtempSync(join(tmpdir(), "kvbound-memory-"));
  modelPath = join(tmp, "synthetic.gguf");
  writeFileSync(modelPath, writeSyntheticModel(DEFAULT_SHAPE, DEFAULT_TYPE));
  const s = DEFAULT_SHAPE;
  modelLabel = `synthetic ${DEFAULT_TYPE} llama: ${s.nLayer} layers, n_embd ${s.nEmbd}, ${s.nHead} heads / ${s.nHeadKv} KV, n_ff ${s.nFf}, vocab ${s.nVocab}, tied embeddings`;
}
const spec = await loadModelSpec(modelPath);
const plan = planMemory(spec, { ...settings, engine: "kvbound" });
const head0 = await readGgufHeader(modelPath);
const text = readFileSync(values.text!, "utf8");
const nVocab = spec.nVocab ?? 0;
let ids: Int32Array;
let idSource: string;
if (head0.metadata["tokenizer.ggml.tokens"] !== undefined) {
  ids = Int32Array.from(encodeTextStream(createTokenizer(head0.metadata), text, { maxTokens: promptTokens }));
  idSource = "the model's tokenizer";
} else {
  const bytes = new TextEncoder().encode(text).subarray(0, promptTokens);
  ids = Int32Array.from(bytes, (b) => (b + 3) % nVocab);
  idSource = "UTF-8 bytes + 3";
}
const prompt = new Int32Array(promptTokens);
for (let i = 0; i < promptTokens; i++) prompt[i] = ids[i % ids.length]!;

gc();
const settled = await settleRss();
const baseline = process.memoryUsage.rss();
const heapBaseline = process.memoryUsage().heapTotal;
const mallocBaseline = getHeapStatistics().malloced_memory;
const externalBaseline = process.memoryUsage().external;
// Secondary view: RSS minus V8's committed heap, so JS-heap growth and shrinking (young
// generation resizing, the memory reducer releasing pages after a while) drop out; every byte the
// plan counts (file buffer, wasm memory, cache pages) lives outside the V8 heap.
const offHeapBaseline = baseline - heapBaseline;
let offHeapPeak = offHeapBaseline;
let heapPeak = heapBaseline;
// Third view (Linux): anonymous RSS only. File-backed pages are the node binary's code (V8's
// optimizing compiler, faulted in when the hot loops first tier up) and shared libraries.
const rssKinds = (): { anon: number; file: number } | null => {
  try {
    const st = readFileSync("/proc/self/status", "utf8");
    const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(st)?.[1] ?? NaN) * 1024;
    return { anon: kb("RssAnon"), file: kb("RssFile") };
  } catch {
    return null;
  }
};
const kindsBaseline = rssKinds();
let anonPeak = kindsBaseline?.anon ?? NaN;
let filePeak = kindsBaseline?.file ?? NaN;
function sampleOffHeap(): void {
  const u = process.memoryUsage();
  if (u.rss - u.heapTotal > offHeapPeak) offHeapPeak = u.rss - u.heapTotal;
  if (u.heapTotal > heapPeak) heapPeak = u.heapTotal;
  const k = rssKinds();
  if (k !== null) {
    if (k.anon > anonPeak) anonPeak = k.anon;
    if (k.file > filePeak) filePeak = k.file;
  }
}

// --- load: header, resident tensors, wasm copies streamed in (each tensor held once), the cache ----
const loadSampler = new RssSampler(5);
const { model } = await loadModelWeights(modelPath, { threads: Number(values.threads) });
const config = resolveCacheConfig(kvboundCacheInput(spec, settings));
const cache = createModelCache(model, config);
cache.add(0);
const kv = new CacheKv(cache, 0, model);
const logits = new Float32Array(model.hp.nVocab);
loadSampler.sample();
const loadPeak = loadSampler.stop().peakBytes;
gc();
const afterLoad = process.memoryUsage.rss();

// --- the run: prefill, then generate, sampling RSS inside both loops ------------------------------
const sampler = new RssSampler(10);
const t0 = performance.now();
let pos = 0;
for (let p = 0; p < promptTokens; ) {
  const n = Math.min(promptTokens - p, model.maxBatchTokens);
  const r = cache.reserve(0, n);
  if (!r.ok) throw new Error(`reserve(${n}) refused at ${p}: ${r.reason}`);
  model.forwardBatch(prompt, p, n, kv, p + n === promptTokens ? logits : null, pos);
  p += n;
  pos += n;
  sampler.sample();
  sampleOffHeap();
}
const tPrefill = performance.now() - t0;
const prefillPeak = sampler.stop().peakBytes;
const genSampler = new RssSampler(10);
const t1 = performance.now();
let tok = argmax(logits);
for (let i = 0; i < genTokens; i++) {
  const r = cache.reserve(0, 1);
  if (!r.ok) throw new Error(`reserve(1) refused at token ${i}: ${r.reason}`);
  model.forward(tok, pos++, kv, logits);
  tok = argmax(logits);
  if ((i & 15) === 0) {
    genSampler.sample();
    sampleOffHeap();
  }
}
const tGen = performance.now() - t1;
const genReport = genSampler.stop();
const peak = Math.max(prefillPeak, genReport.peakBytes);
const heapEnd = process.memoryUsage().heapTotal;
// Every buffer the plan counts is an ArrayBuffer or a WebAssembly memory: V8 accounts them as
// "external" (by length, touched or not; wasm memories rounded up to 64 KiB pages).
const externalDelta = process.memoryUsage().external - externalBaseline;

// --- report -------------------------------------------------------------------------------------
const predicted = plan.totalBytes;
const delta = peak - baseline;
const err = relativeError(delta, predicted);
const offHeapDelta = offHeapPeak - offHeapBaseline;
const f = (b: number) => `${formatMiB(b)} (${b} B)`;
console.log(`## Peak memory: prefill ${promptTokens} + generate ${genTokens} tokens, sliding window ${values.window} (sinks ${values.sinks}), codec ${values.codec}\n`);
console.log(
  machineLines(machineInfo(), [
    `model: ${modelLabel}${spec.params !== null ? ` (${(spec.params / 1e6).toFixed(2)}M parameters)` : ""}`,
    `ids: TinyStories excerpt via ${idSource}, cycled; decode feeds back the greedy token`,
    `kernels: ${model.kernels}, activations ${model.activations}, batch ${model.maxBatchTokens}, threads ${model.threads}; model.wasmBytes ${model.wasmBytes}; cache.reservedBytes ${cache.reservedBytes}`,
    `JS runtime: ${Number(values.young) > 0 ? `young generation pinned (node --min-semi-space-size=${values.young} --max-semi-space-size=${values.young})` : "V8's default young generation (not pinned)"}${process.env.MALLOC_ARENA_MAX !== undefined ? `; MALLOC_ARENA_MAX=${process.env.MALLOC_ARENA_MAX} (as the kvbound CLI's shebang)` : "; glibc malloc defaults"}`,
    `measured = peak RSS during prefill + decode MINUS the RSS just before the model load (${f(baseline)}: the JS runtime's own baseline, not in any plan)${values["no-gc"] ? "; no forced GC" : "; full GC before the baseline and after the load"}`,
    `baseline settled: idled ${(settled.waitedMs / 1000).toFixed(1)} s after the GC until RSS stopped falling; V8 released ${f(settled.releasedBytes)} meanwhile (would otherwise leave mid-run and hide that much)`,
    `load: peak ${f(loadPeak - baseline)} above baseline while reading (transient read buffers), ${f(afterLoad - baseline)} after it`,
    `V8 heap (heapTotal) baseline ${formatMiB(heapBaseline)}, peak ${formatMiB(heapPeak)}, after the run ${formatMiB(heapEnd)} (JS objects, not in the plan)`,
    `V8 malloced memory (compiler zones etc.): baseline ${formatMiB(mallocBaseline)}, V8's peak ${formatMiB(getHeapStatistics().peak_malloced_memory)}; external ${formatMiB(process.memoryUsage().external)}`,
    `external (ArrayBuffers + wasm memories, by length) after the run: +${f(externalDelta)} above baseline; the plan: ${f(plan.totalBytes)}`,
    `file-backed RSS (binary code, libraries): baseline ${formatMiB(kindsBaseline?.file ?? NaN)}, peak ${formatMiB(filePeak)}`,
    `time: prefill ${(tPrefill / 1000).toFixed(1)} s (${((promptTokens / tPrefill) * 1000).toFixed(0)} tok/s), decode ${(tGen / 1000).toFixed(1)} s (${((genTokens / tGen) * 1000).toFixed(0)} tok/s); RSS samples ${genReport.samples}`,
  ]),
);
console.log();
console.log(
  markdownTable(
    [{ title: "part" }, { title: "predicted", align: "right" }],
    [
      ["weights (resident tensors + wasm copies)", f(plan.weights?.bytes ?? 0)],
      ["cache (kvbound paged pool)", f(plan.kv.totalBytes)],
      ["compute (activations + logits)", f(plan.compute?.bytes ?? 0)],
      ["total", f(predicted)],
    ],
  ),
);
console.log();
console.log(
  markdownTable(
    [{ title: "model" }, { title: "measured" }, { title: "prediction", align: "right" }, { title: "measured delta", align: "right" }, { title: "ratio", align: "right" }, { title: "within 10%" }],
    [
      [values.model ?? "synthetic", "peak RSS - baseline RSS", formatMiB(predicted), formatMiB(delta), (delta / predicted).toFixed(3), Math.abs(err) <= TOLERANCE ? "yes" : "NO"],
      [values.model ?? "synthetic", "peak RssAnon - baseline RssAnon", formatMiB(predicted), formatMiB(anonPeak - (kindsBaseline?.anon ?? NaN)), ((anonPeak - (kindsBaseline?.anon ?? NaN)) / predicted).toFixed(3), Math.abs(relativeError(anonPeak - (kindsBaseline?.anon ?? NaN), predicted)) <= TOLERANCE ? "yes" : "NO"],
      [values.model ?? "synthetic", "peak (RSS - V8 heap) - baseline (RSS - V8 heap)", formatMiB(predicted), formatMiB(offHeapDelta), (offHeapDelta / predicted).toFixed(3), Math.abs(relativeError(offHeapDelta, predicted)) <= TOLERANCE ? "yes" : "NO"],
    ],
  ),
);
const residual = delta - predicted;
console.log(
  `\nabove the plan: ${f(residual)}; of it V8 heap growth (heapTotal peak - baseline) ${formatMiB(heapPeak - heapBaseline)}, ` +
    `the rest ${formatMiB(residual - (heapPeak - heapBaseline))} outside the JS heap and outside every buffer the plan counts ` +
    `(V8's compiler scratch kept in glibc's per-thread arenas, optimized code: the JS runtime's, reported, not subtracted)`,
);
console.log(`\nprefill peak - baseline ${formatMiB(prefillPeak - baseline)}; decode peak - baseline ${formatMiB(genReport.peakBytes - baseline)}; end - baseline ${formatMiB(genReport.endBytes - baseline)}`);
if (tmp !== null) rmSync(tmp, { recursive: true, force: true });

function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}
