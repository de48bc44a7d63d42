// Threads do not change results: the same logits, bit for bit, from 1 and 2 threads (and 3), on
// stories260K and on synthetic models of every weight type with a wasm kernel, through batched
// prefill over the paged cache and token-by-token decode; loadModel's `threads` option and the
// commands' --threads reach the model; a model that cannot run threads says why. Cross-module (model, cache, engine), so in test/.

import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { resolveCacheConfig } from "../src/cache/config.js";
import { runAttention } from "./helpers/attention-run.js";
import { loadModel } from "../src/engine/load-model.js";
import { readGgufHeader } from "../src/gguf/header.js";
import { createModel, type CreateModelOptions } from "../src/model/architectures.js";
import { CacheKv, createModelCache } from "../src/model/cache-kv.js";
import type { TransformerModel } from "../src/model/transformer.js";
import { threadsUnavailable } from "../src/model/wasm/matmul-pool.js";
import { wasmKernelsAvailable } from "../src/model/wasm/wasm-kernels.js";
import { buildArchModel, WEIGHT_KINDS } from "./fixtures/arch-models.js";
import { writeSyntheticModel } from "./fixtures/synthetic-model.js";
import { runCli } from "./helpers/cli.js";
import { requireShared, sharedPath } from "./helpers/shared.js";

const STORIES = "models/stories260K.gguf";
const IDS = "golden/stories260K-stream-ids-4096.json";
const threadsHere = wasmKernelsAvailable() && threadsUnavailable() === null;

async function modelOf(bytes: Uint8Array, opts: CreateModelOptions): Promise<TransformerModel> {
  const header = await readGgufHeader(bytes);
  const m = createModel(header, bytes.subarray(header.dataOffset), opts);
  await m.threadsReady();
  return m;
}

/** Logits after a batched prefill of ids[0..p) in pieces of 16 and after each later token, decoded one by one. */
function logitsOf(model: TransformerModel, ids: readonly number[], prefill: number): Float32Array[] {
  const cache = createModelCache(model, resolveCacheConfig({ contextWindowSize: 256, codec: "f16" }));
  cache.add(0);
  const kv = new CacheKv(cache, 0, model);
  const out: Float32Array[] = [];
  for (let p = 0; p < prefill; p += 16) {
    const n = Math.min(16, prefill - p);
    cache.reserveOrThrow(0, n);
    const logits = new Float32Array(model.hp.nVocab);
    model.forwardBatch(ids, p, n, kv, logits, p);
    out.push(logits);
  }
  for (let p = prefill; p < ids.length; p++) {
    cache.reserveOrThrow(0, 1);
    const logits = new Float32Array(model.hp.nVocab);
    model.forward(ids[p]!, p, kv, logits);
    out.push(logits);
  }
  return out;
}

/** Positions whose logits differ in any bit. */
function differing(a: readonly Float32Array[], b: readonly Float32Array[]): number {
  expect(a.length).toBe(b.length);
  let n = 0;
  for (let i = 0; i < a.length; i++) {
    const x = new Uint32Array(a[i]!.buffer), y = new Uint32Array(b[i]!.buffer);
    for (let j = 0; j < x.length; j++) {
      if (x[j] !== y[j]) {
        n++;
        break;
      }
    }
  }
  return n;
}

/** Runs `bytes` on 1 thread and on each of `threads`, every matmul split (minSplitWork 0). */
async function expectSameAcrossThreads(bytes: Uint8Array, ids: readonly number[], prefill: number, threads: readonly number[]): Promise<void> {
  const one = await modelOf(bytes, { threads: 1 });
  expect(one.threads).toBe(1);
  const want = logitsOf(one, ids, prefill);
  for (const t of threads) {
    const m = await modelOf(bytes, { threads: t, minSplitWork: 0 });
    expect(m.threads).toBe(t);
    expect(m.threadsNote).toBeNull();
    const got = logitsOf(m, ids, prefill);
    expect(m.threadSplits).toBeGreaterThan(0);
    expect(differing(got, want)).toBe(0);
    m.dispose();
  }
}

const haveStories = requireShared(STORIES) && requireShared(IDS);

describe.skipIf(!threadsHere || !haveStories)("stories260K on 1, 2 and 3 threads", () => {
  it("the same logits, bit for bit: batched prefill of 40 tokens, then 24 decoded", async () => {
    const ids: number[] = (JSON.parse(readFileSync(sharedPath(IDS), "utf8")) as { ids: number[] }).ids.slice(0, 64);
    await expectSameAcrossThreads(readFileSync(sharedPath(STORIES)), ids, 40, [2, 3]);
  });
});

describe.skipIf(!threadsHere)("synthetic models of every wasm weight type on 1 and 2 threads", () => {
  for (const weights of WEIGHT_KINDS) {
    it(`${weights}: the same logits, bit for bit`, async () => {
      const m = buildArchModel({ arch: "llama", weights, seed: 3 });
      const ids: number[] = [];
      for (let i = 0; i < 24; i++) ids.push(1 + ((i * 7919) % (m.nVocab - 1)));
      await expectSameAcrossThreads(m.bytes, ids, 17, [2]);
    });
  }

  it("qwen2 (biases, Q8_0): the same logits, bit for bit", async () => {
    const m = buildArchModel({ arch: "qwen2", weights: "Q8_0", seed: 4 });
    const ids: number[] = [];
    for (let i = 0; i < 20; i++) ids.push(1 + ((i * 104729) % (m.nVocab - 1)));
    await expectSameAcrossThreads(m.bytes, ids, 12, [2]);
  });
});

describe.skipIf(!threadsHere)("attention split over the threads by KV head", () => {
  // A window of 48 with 4 sinks evicts (StreamingLLM re-assigns positions: more than one RoPE
  // range per block); gemma2 masks a sliding window and soft-caps its scores between the jobs.
  // llama's 2 KV heads split whole on 2 threads, in halves on 3; mistral's one KV head in halves.
  const cases = [
    { arch: "llama", codec: "f16", threads: 2, splits: true },
    { arch: "llama", codec: "f16", threads: 3, splits: true },
    { arch: "mistral", codec: "f16", threads: 2, splits: true },
    { arch: "llama", codec: "f32", threads: 2, splits: true },
    { arch: "llama", codec: "fp8", threads: 3, splits: true },
    { arch: "llama", codec: "int8", threads: 2, splits: false },
    { arch: "gemma2", codec: "f16", threads: 2, splits: true },
  ] as const;
  for (const { arch, codec, threads, splits } of cases) {
    it(`${arch}, ${codec} pages, ${threads} threads: the same logits as one, bit for bit${splits ? ", every attention job split" : ", attention on one thread (no per-head kernels)"}`, async () => {
      const m = buildArchModel({ arch, weights: "Q8_0", seed: 7 });
      const ids: number[] = [];
      for (let i = 0; i < 120; i++) ids.push(1 + ((i * 7919) % (m.nVocab - 1)));
      const want = await runAttention(m.bytes, ids, 70, 1, codec);
      const got = await runAttention(m.bytes, ids, 70, threads, codec);
      expect(got.threads).toBe(threads);
      expect(got.logits.length).toBe(ids.length * m.nVocab);
      const a = new Uint32Array(got.logits.buffer), b = new Uint32Array(want.logits.buffer);
      expect(a.filter((x, i) => x !== b[i]).length).toBe(0);
      if (splits) {
        expect(got.jobs).toBeGreaterThan(0);
        expect(got.split).toBe(got.jobs);
      } else {
        expect(got.jobs).toBe(0);
      }
    });
  }

  it("SmolLM2's 3 query heads per KV head on 2 threads: halves of 2 and 1 rows, the same logits bit for bit", async () => {
    // Decode's single query gives a head 3 rows: the first half takes 2, the second 1; phi3's one
    // row per head on 3 threads leaves a second half without rows. Prefill in 5s: every job's
    // blocks of 4 and 1 query give the units different rows (a unit that took rows by the block's
    // own count would write, in the short block, rows the other thread was still on: 2 of 60
    // positions differed in some runs).
    const bytes = writeSyntheticModel({ arch: "llama", nLayer: 2, nEmbd: 192, nHead: 3, nHeadKv: 1, nFf: 256, nVocab: 256, nCtxTrain: 512 }, "Q8_0");
    const phi3 = buildArchModel({ arch: "phi3", weights: "Q8_0", seed: 3 });
    for (const [m, nVocab, threads] of [[bytes, 256, 2], [phi3.bytes, phi3.nVocab, 3]] as const) {
      const ids: number[] = [];
      for (let i = 0; i < 60; i++) ids.push(1 + ((i * 7919) % (nVocab - 1)));
      const want = await runAttention(m, ids, 37, 1, "f16", 5);
      const got = await runAttention(m, ids, 37, threads, "f16", 5);
      expect(got.split).toBeGreaterThan(0);
      const a = new Uint32Array(got.logits.buffer), b = new Uint32Array(want.logits.buffer);
      expect(a.filter((x, i) => x !== b[i]).length).toBe(0);
    }
  });
});

describe("the threads option", () => {
  it.skipIf(!threadsHere)("loadModel({ threads }) reaches the model; dispose() stops the workers and the model goes on alone", async () => {
    const m = buildArchModel({ arch: "llama", weights: "Q8_0", seed: 5 });
    const loaded = await loadModel(m.bytes, { threads: 2 });
    const model = loaded.model as TransformerModel;
    expect(model.threads).toBe(2);
    expect(model.threadsWanted).toBe(2);
    loaded.model.dispose();
    const logits = new Float32Array(model.hp.nVocab);
    const cache = createModelCache(model, resolveCacheConfig({ contextWindowSize: 64 }));
    cache.add(0);
    cache.reserveOrThrow(0, 1);
    model.forward(1, 0, new CacheKv(cache, 0, model), logits);
    expect(logits.some((v) => v !== 0)).toBe(true);
  });

  it("threads 1: no shared memory; the JS kernels: one thread, and the note says why", async () => {
    const m = buildArchModel({ arch: "llama", weights: "Q8_0", seed: 6 });
    const one = await modelOf(m.bytes, { threads: 1 });
    expect(one.threads).toBe(1);
    expect(one.threadsNote).toBeNull();
    const js = await modelOf(m.bytes, { threads: 4, kernels: "js" });
    expect(js.threads).toBe(1);
    expect(js.threadsNote).toMatch(/JS kernels/);
  });

  it("refuses a thread count outside 1..64", async () => {
    const m = buildArchModel({ arch: "llama", weights: "Q8_0", seed: 6 });
    await expect(modelOf(m.bytes, { threads: 0 })).rejects.toThrow(/threads 0 is invalid/);
    await expect(modelOf(m.bytes, { threads: 1.5 })).rejects.toThrow(/threads 1.5 is invalid/);
  });
});

describe.skipIf(!haveStories || !requireShared("golden/stories260K-greedy.json"))("--threads on the engine commands", () => {
  const model = "../shared/models/stories260K.gguf";

  it("run --threads 2 --json: the golden greedy ids, stats.threads 2; --threads 1 the same ids", async () => {
    const golden = JSON.parse(readFileSync(sharedPath("golden/stories260K-greedy.json"), "utf8")) as { greedyIds: number[] };
    for (const t of threadsHere ? ["1", "2"] : ["1"]) {
      const r = await runCli("run", "--model", model, "--prompt", "Once upon a time", "--max-tokens", "24", "--temperature", "0", "--codec", "f32", "--threads", t, "--json");
      expect(r.code, r.err).toBe(0);
      const j = JSON.parse(r.out) as { ids: number[]; stats: { threads: number } };
      expect(j.ids).toEqual(golden.greedyIds.slice(0, 24));
      expect(j.stats.threads).toBe(Number(t));
    }
  });

  it("bench --threads 1 --json reports threads 1; a bad count is a typed error naming the range", async () => {
    const r = await runCli("bench", "--model", model, "--prompt-tokens", "16", "--gen-tokens", "8", "--repetitions", "1", "--threads", "1", "--json");
    expect(r.code, r.err).toBe(0);
    const j = JSON.parse(r.out) as { threads: number; threadsNote: string | null };
    expect(j.threads).toBe(1);
    expect(j.threadsNote).toBeNull();
    const extra: Record<string, string[]> = { run: ["--prompt", "x"], chat: [], serve: [], bench: [], ppl: ["--text", "x"] };
    for (const [cmd, args] of Object.entries(extra)) {
      const bad = await runCli(cmd, "--model", model, ...args, "--threads", "0");
      expect(bad.code, `${cmd}: ${bad.err}`).toBe(1);
      expect(bad.err).toMatch(/InvalidSettingError: --threads "0" is not a whole number of threads in 1\.\.64/);
    }
  });
});
