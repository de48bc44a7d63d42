// Decode latency per token at position ~1k vs ~64k with a 1024-token sliding window (issue "kvbound
// run"): a bounded cache must make the cost per token flat however long the stream runs.
//
//   npx tsx bench/decode-latency.ts [--far 65536] [--window 1024] [--sinks 4] [--codec f16] [--tokens 256]
//
// One model (stories260K), one cache. The stream is fed token by token (the model's own greedy
// continuation would loop on a tiny model, so the TinyStories ids are cycled); per-token forward
// time is sampled in CPU time for `--tokens` tokens just after position `window` ("near") and just
// after position `far`; the two medians and their ratio are printed.

import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { resolveCacheConfig, type CodecKind } from "../src/index.js";
import { createModelCache, CacheKv } from "../src/model/cache-kv.js";
import { loadModel } from "../src/engine/load-model.js";
import { encodeTextStream } from "../src/engine/text-stream.js";
import { machineInfo, machineLines } from "./lib/machine.js";
import { markdownTable } from "./lib/table.js";

const { values } = parseArgs({
  options: {
    far: { type: "string", default: "65536" },
    window: { type: "string", default: "1024" },
    sinks: { type: "string", default: "4" },
    codec: { type: "string", default: "f16" },
    tokens: { type: "string", default: "256" },
    model: { type: "string", default: "../shared/models/stories260K.gguf" },
    text: { type: "string", default: "../shared/text/tinystories-valid-excerpt.txt" },
  },
});
const far = Number(values.far);
const window = Number(values.window);
const sampleTokens = Number(values.tokens);

const loaded = await loadModel(values.model!);
const { model } = loaded;
const ids = encodeTextStream(loaded.tokenizer, readFileSync(values.text!, "utf8"), { maxTokens: 20000 });
const config = resolveCacheConfig({ slidingWindowSize: window, attentionSinkSize: Number(values.sinks), codec: values.codec as CodecKind });
const cache = createModelCache(model, config);
cache.add(0);
const kv = new CacheKv(cache, 0, model);
const logits = new Float32Array(model.hp.nVocab);

const near: number[] = [];
const farSamples: number[] = [];
const end = far + sampleTokens;
let bytesNear = 0;
const t0 = process.cpuUsage();
for (let pos = 0; pos < end; pos++) {
  const sampleNear = pos >= window && pos < window + sampleTokens;
  const sampleFar = pos >= far;
  const start = sampleNear || sampleFar ? process.cpuUsage() : null;
  const r = cache.reserve(0, 1);
  if (!r.ok) throw new Error(`reserve refused at ${pos}: ${r.reason}`);
  model.forward(ids[pos % ids.length]!, pos, kv, logits);
  if (start) {
    const d = process.cpuUsage(start);
    (sampleNear ? near : farSamples).push((d.user + d.system) / 1000);
  }
  if (pos === window + sampleTokens) bytesNear = cache.stats().bytesUsed;
}
const total = process.cpuUsage(t0);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const bytesFar = cache.stats().bytesUsed;

console.log(`## Decode latency: position ${window} vs ${far}, sliding window ${window} (sinks ${values.sinks}), codec ${values.codec}\n`);
console.log(machineLines(machineInfo(), [`model: ${values.model}`, `total CPU ${((total.user + total.system) / 1e6).toFixed(1)} s for ${end} tokens`]));
console.log();
console.log(
  markdownTable(
    [{ title: "position" }, { title: "median ms/token", align: "right" }, { title: "mean ms/token", align: "right" }, { title: "cache bytes used", align: "right" }],
    [
      [`${window}..${window + sampleTokens - 1}`, median(near).toFixed(3), mean(near).toFixed(3), bytesNear],
      [`${far}..${end - 1}`, median(farSamples).toFixed(3), mean(farSamples).toFixed(3), bytesFar],
    ],
  ),
);
console.log(`\nratio far/near (median): ${(median(farSamples) / median(near)).toFixed(3)} (target <= 1.2)`);
