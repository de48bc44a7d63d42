// Peak memory of kvbound's runtime against the planner (issue "kvbound run", memory acceptance):
// prefill a 16k-token prompt, then generate 100k tokens with a sliding window, sampling RSS the
// whole time, and compare the peak with `planMemory(spec, { engine: "kvbound", ... })`'s
// weights + cache + compute.
//
//   npx tsx bench/memory.ts [--model PATH] [--prompt 16384] [--gen 100000] [--window 1024] [--sinks 4] [--codec f16]
//
// Measured figure: PEAK RSS MINUS THE PROCESS'S RSS JUST BEFORE THE MODEL IS LOADED. That baseline
// is the JS runtime's own memory (V8 heap, code, the tsx loader, this script's id stream and the
// spec), which no engine plan counts; everything the model load and the run add is in the delta.
// Before the baseline and after the load a full GC runs (exposed through v8.setFlagsFromString),
// so a freed read buffer or the synthetic file's bytes do not sit in the figure by accident; the
// load's own transient peak is printed separately.
//
// Default model: a synthetic Q8_0 llama (test/fixtures/synthetic-model.ts; random weights, no
// tokenizer) of ~11M parameters written to a temp file: large enough that the model dominates
// V8's noise, small enough that 100k decode tokens finish in minutes on 2 cores. Token ids come
// from the TinyStories excerpt: the model's tokenizer when it has one (stories260K), else the
// text's UTF-8 bytes + 3 (the byte-fallback ids of a SentencePiece vocabulary), cycled. Decoding
// feeds back the greedy token, as a generation does (the content does not change the memory).
// The loop is Session's own (src/engine/session.ts): prefill pieces of model.maxBatchTokens via
// cache.reserve + forwardBatch, then reserve(1) + forward per token, one f32 logits row.

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { runInNewContext } from "node:vm";
import { getHeapStatistics, setFlagsFromString } from "node:v8";
import { resolveCacheConfig } from "../src/cache/config.js";
import { CacheKv, createModelCache } from "../src/engine/cache-kv.js";
import { readModelBytes } from "../src/engine/load-model.js";
import { encodeTextStream } from "../src/engine/text-stream.js";
import { readGgufHeader } from "../src/gguf/header.js";
import { LlamaModel } from "../src/model/llama.js";
import { createTokenizer } from "../src/model/tokenizer/index.js";
import { kvboundCacheInput } from "../src/plan/kvbound.js";
import { planMemory } from "../src/plan/plan.js";
import type { PlanSettings } from "../src/plan/types.js";
import { loadModelSpec } from "../src/spec/load.js";
import { writeSyntheticModel, type SyntheticShape } from "../test/fixtures/synthetic-model.js";
import { machineInfo, machineLines } from "./lib/machine.js";
import { formatMiB, relativeError, RssSampler } from "./lib/rss.js";
import { markdownTable } from "./lib/table.js";

/** ~10.8M parameters (6.6M in 2 layers with a wide FFN + 4.2M tied embeddings), Q8_0: ~11.5 MB file, ~12.2 MB wasm
 *  copies. Few layers and heads keep the windowed attention (scalar JS) from dominating decode time. */
const DEFAULT_SHAPE: SyntheticShape = { arch: "llama", nLayer: 2, nEmbd: 256, nHead: 4, nHeadKv: 1, nFf: 4096, nVocab: 16384, nCtxTrain: 131072 };
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
  },
});
const promptTokens = Number(values.prompt);
const genTokens = Number(values.gen);
const settings: PlanSettings = { slidingWindowSize: Number(values.window), attentionSinkSize: Number(values.sinks), codec: values.codec! };

setFlagsFromString("--expose-gc");
const gcFn = runInNewContext("gc") as () => void;
const gc = () => {
  if (!values["no-gc"]) for (let i = 0; i < 3; i++) gcFn();
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
const baseline = process.memoryUsage.rss();
const heapBaseline = process.memoryUsage().heapTotal;
const mallocBaseline = getHeapStatistics().malloced_memory;
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

// --- load: the file into one buffer, the model (wasm copies), the cache ------------------------
const loadSampler = new RssSampler(5);
const { bytes } = await readModelBytes(modelPath);
const header = await readGgufHeader(bytes);
const model = new LlamaModel(header, bytes.subarray(header.dataOffset));
const config = resolveCacheConfig(kvboundCacheInput(spec, settings));
const cache = createModelCache(model.hp, config);
cache.add(0);
const kv = new CacheKv(cache, 0);
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
    `kernels: ${model.kernels}, activations ${model.activations}, batch ${model.maxBatchTokens}; model.wasmBytes ${model.wasmBytes}; cache.reservedBytes ${cache.reservedBytes}`,
    `measured = peak RSS during prefill + decode MINUS the RSS just before the model load (${f(baseline)}: the JS runtime's own baseline, not in any plan)${values["no-gc"] ? "; no forced GC" : "; full GC before the baseline and after the load"}`,
    `load: peak ${f(loadPeak - baseline)} above baseline while reading (transient read buffers), ${f(afterLoad - baseline)} after it`,
    `V8 heap (heapTotal) baseline ${formatMiB(heapBaseline)}, peak ${formatMiB(heapPeak)}, after the run ${formatMiB(heapEnd)} (JS objects, not in the plan)`,
    `V8 malloced memory (compiler zones etc.): baseline ${formatMiB(mallocBaseline)}, V8's peak ${formatMiB(getHeapStatistics().peak_malloced_memory)}; external ${formatMiB(process.memoryUsage().external)}`,
    `file-backed RSS (binary code, libraries): baseline ${formatMiB(kindsBaseline?.file ?? NaN)}, peak ${formatMiB(filePeak)}`,
    `time: prefill ${(tPrefill / 1000).toFixed(1)} s (${((promptTokens / tPrefill) * 1000).toFixed(0)} tok/s), decode ${(tGen / 1000).toFixed(1)} s (${((genTokens / tGen) * 1000).toFixed(0)} tok/s); RSS samples ${genReport.samples}`,
  ]),
);
console.log();
console.log(
  markdownTable(
    [{ title: "part" }, { title: "predicted", align: "right" }],
    [
      ["weights (file tensors + wasm copies)", f(plan.weights?.bytes ?? 0)],
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
console.log(`\nprefill peak - baseline ${formatMiB(prefillPeak - baseline)}; decode peak - baseline ${formatMiB(genReport.peakBytes - baseline)}; end - baseline ${formatMiB(genReport.endBytes - baseline)}`);
if (tmp !== null) rmSync(tmp, { recursive: true, force: true });

function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}
