// kvbound's side of bench/model.ts: the model over the real paged cache (createModelCache +
// CacheKv, f16 pages like llama.cpp's default F16 KV cache, so both engines store K/V alike).
// Prefill goes through forwardBatch in chunks of the cache's prefillChunkSize (what Session does);
// decode is one forward per token. `model.threads` sets the matmuls' threads (checked: it runs them).

import { readFileSync } from "node:fs";
import { resolveCacheConfig } from "../../src/cache/config.js";
import type { CodecKind } from "../../src/cache/codecs/types.js";
import { CacheKv, createModelCache } from "../../src/model/cache-kv.js";
import { readGgufHeader } from "../../src/gguf/header.js";
import { createModel, type CreateModelOptions } from "../../src/model/architectures.js";
import type { PoolStats } from "../../src/model/wasm/matmul-pool.js";
import type { EngineRunner } from "./runner.js";

function argmax(a: Float32Array): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i]! > a[best]!) best = i;
  return best;
}

export interface KvboundRunnerOptions {
  /** Context window of the cache (tokens); default the model's training context, at most 4096. */
  readonly contextSize?: number;
  /** KV page codec; default f16 (llama.cpp's default KV type), f32 under bench/model.ts --kv-f32. */
  readonly codec?: CodecKind;
  readonly model?: CreateModelOptions;
}

/** kvbound's runner, and its model's split jobs so far (bench/kernel-profile.ts). */
export interface KvboundRunner extends EngineRunner {
  threadStats(): Readonly<PoolStats> | null;
}

export async function kvboundRunner(path: string, opts: KvboundRunnerOptions = {}): Promise<KvboundRunner> {
  const header = await readGgufHeader(path);
  const file = readFileSync(path);
  const model = createModel(header, new Uint8Array(file.buffer, file.byteOffset + header.dataOffset, file.length - header.dataOffset), opts.model);
  await model.threadsReady(); // the matmul workers up before anything is timed
  if (opts.model?.threads !== undefined && model.threads !== opts.model.threads) {
    throw new Error(`kvbound runs ${model.threads} threads, asked for ${opts.model.threads}: ${model.threadsNote}`);
  }
  // bench/model.ts --kv-f32 switches llama.cpp to an F32 KV cache: follow it so both store K/V alike.
  const codec = opts.codec ?? (process.argv.includes("--kv-f32") ? "f32" : "f16");
  const config = resolveCacheConfig({ contextWindowSize: opts.contextSize ?? Math.min(model.hp.nCtxTrain, 4096), codec });
  const cache = createModelCache(model, config);
  const seqId = 0;
  cache.add(seqId);
  const kv = new CacheKv(cache, seqId, model);
  const logits = new Float32Array(model.hp.nVocab); // [nVocab]
  // Session's prefill: chunks of prefillChunkSize, each reserved and run in forwardBatch-sized pieces.
  const chunk = Math.min(config.prefillChunkSize, model.maxBatchTokens);
  let pos = 0; // CacheKv takes positions from the cache; this only keeps the KvBackend contract
  const step = (token: number) => {
    cache.reserveOrThrow(seqId, 1);
    model.forward(token, pos++, kv, logits);
  };
  return {
    engine: "kvbound",
    threadStats: () => model.threadStats,
    async reset() {
      cache.remove(seqId);
      cache.add(seqId);
      pos = 0;
    },
    async prefill(ids) {
      for (let p = 0; p < ids.length; p += chunk) {
        const n = Math.min(chunk, ids.length - p);
        cache.reserveOrThrow(seqId, n);
        model.forwardBatch(ids, p, n, kv, null, pos);
        pos += n;
      }
    },
    async decode(first, n) {
      const out: number[] = [];
      let t = first;
      for (let i = 0; i < n; i++) {
        step(t);
        t = argmax(logits);
        out.push(t);
      }
      return out;
    },
    async dispose() {
      model.dispose();
    },
  };
}
