// The paged cache under the real model: the same logits as the dense reference for every page size,
// and a sliding window equals dense while the stream is shorter than the window.

import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { resolveCacheConfig, type CacheConfigInput } from "../src/cache/config.js";
import { readGgufHeader } from "../src/gguf/header.js";
import { DenseKv } from "../src/model/dense-kv.js";
import { createModel } from "../src/model/architectures.js";
import type { CausalLM } from "../src/model/causal-lm.js";
import { requireShared, sharedPath } from "./helpers/shared.js";
import { CacheKv, createModelCache } from "../src/model/cache-kv.js";

const have = requireShared("models/stories260K.gguf") && requireShared("golden/stories260K-stream-ids-4096.json");

async function loadModel() {
  const path = sharedPath("models/stories260K.gguf");
  const header = await readGgufHeader(path);
  const file = readFileSync(path);
  return createModel(header, new Uint8Array(file.buffer, file.byteOffset + header.dataOffset, file.length - header.dataOffset));
}

function run(model: CausalLM, ids: number[], input: CacheConfigInput | null): Float32Array[] {
  const out: Float32Array[] = [];
  const dense = new DenseKv(model);
  const cache = input ? createModelCache(model, resolveCacheConfig(input)) : null;
  cache?.add(0);
  const kv = cache ? new CacheKv(cache, 0, model) : dense;
  for (let p = 0; p < ids.length; p++) {
    if (cache) {
      const r = cache.reserve(0, 1);
      if (!r.ok) throw new Error(`reserve refused at ${p}: ${r.reason}`);
    } else dense.setPosition(p);
    const logits = new Float32Array(model.hp.nVocab);
    model.forward(ids[p]!, p, kv, logits);
    out.push(logits);
  }
  return out;
}

function maxDiff(a: Float32Array[], b: Float32Array[]): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) for (let j = 0; j < a[i]!.length; j++) m = Math.max(m, Math.abs(a[i]![j]! - b[i]![j]!));
  return m;
}

describe.skipIf(!have)("paged cache under stories260K", () => {
  it("paged (f32) equals dense within 1e-4 for every page size; sliding equals dense below the window", async () => {
    const model = await loadModel();
    const ids: number[] = JSON.parse(readFileSync(sharedPath("golden/stories260K-stream-ids-4096.json"), "utf8")).ids.slice(0, 200);
    const dense = run(model, ids, null);
    for (const pageSize of [1, 2, 4, 16, 64, 256]) {
      const paged = run(model, ids, { contextWindowSize: 512, pageSize, codec: "f32" });
      expect(maxDiff(paged, dense), `page ${pageSize}`).toBeLessThan(1e-4);
    }
    const sliding = run(model, ids, { slidingWindowSize: 256, attentionSinkSize: 4, codec: "f32" });
    expect(maxDiff(sliding, dense)).toBeLessThan(1e-4);
  });
});
