// forwardBatch over the paged cache against the token-by-token forward over DenseKv, and the wasm
// kernels (matmuls and elementwise) against the JS kernels, on stories260K (F32), on a small
// synthetic Q8_0 model and on F32 models whose widths are not multiples of 4. A cross-module test
// (model, cache and the adapter between them), so it sits in test/ rather than beside src/model.

import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { resolveCacheConfig } from "../src/cache/config.js";
import { CacheKv, createModelCache } from "../src/model/cache-kv.js";
import { readGgufHeader } from "../src/gguf/header.js";
import { ELEMENTWISE_WASM_BASE64 } from "../src/model/wasm/elementwise-wasm.js";
import { compileEmbedded } from "../src/wasm/embedded.js";
import { rng } from "./cache-helpers.js";
import { gv, writeGguf, type GgufWriterValue, type WriterTensor } from "./fixtures/gguf-writer.js";
import { requireShared, sharedPath } from "./helpers/shared.js";
import { writeSyntheticModel, type SyntheticShape } from "./fixtures/synthetic-model.js";
import { DenseKv } from "../src/model/dense-kv.js";
import { createModel, type CreateModelOptions } from "../src/model/architectures.js";
import type { CausalLM, KvBackend } from "../src/model/causal-lm.js";
import { wasmKernelsAvailable } from "../src/model/wasm/wasm-kernels.js";

const MODEL = "models/stories260K.gguf";
const have = requireShared(MODEL) && requireShared("golden/stories260K-stream-ids-4096.json");

async function loadBytes(bytes: Uint8Array, opts: CreateModelOptions = {}) {
  const header = await readGgufHeader(bytes);
  return createModel(header, bytes.subarray(header.dataOffset), opts);
}

/** Logits after each of `ids`, one forward per token over DenseKv. */
function denseLogits(model: CausalLM, ids: number[]): Float32Array[] {
  const kv = new DenseKv(model);
  const out: Float32Array[] = [];
  for (let p = 0; p < ids.length; p++) {
    const logits = new Float32Array(model.hp.nVocab);
    kv.setPosition(p);
    model.forward(ids[p]!, p, kv, logits);
    out.push(logits);
  }
  return out;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe.skipIf(!have)("stories260K: batched prefill and kernel choice", () => {
  const ids: number[] = have ? JSON.parse(readFileSync(sharedPath("golden/stories260K-stream-ids-4096.json"), "utf8")).ids.slice(0, 45) : [];

  it("forwardBatch over the paged cache (f32 pages, pieces of 16) equals per-token dense logits within 1e-4", async () => {
    const model = await loadBytes(readFileSync(sharedPath(MODEL)), { maxBatchTokens: 16 });
    const want = denseLogits(model, ids);
    const cache = createModelCache(model, resolveCacheConfig({ contextWindowSize: 512, codec: "f32" }));
    cache.add(0);
    const kv = new CacheKv(cache, 0, model);
    const logits = new Float32Array(model.hp.nVocab);
    let checked = 0;
    for (let p = 0; p < ids.length; p += 16) {
      const n = Math.min(16, ids.length - p);
      cache.reserveOrThrow(0, n);
      model.forwardBatch(ids, p, n, kv, logits, p);
      expect(maxAbsDiff(logits, want[p + n - 1]!)).toBeLessThan(1e-4);
      checked++;
    }
    expect(checked).toBe(3); // 16 + 16 + 13: a short last piece too
  });

  it("forwardBatch with onLogits gives every position's logits (paged cache and the one-by-one fallback)", async () => {
    const model = await loadBytes(readFileSync(sharedPath(MODEL)), { maxBatchTokens: 16 });
    const want = denseLogits(model, ids);
    const cache = createModelCache(model, resolveCacheConfig({ contextWindowSize: 512, codec: "f32" }));
    cache.add(0);
    const kv = new CacheKv(cache, 0, model);
    const buf = new Float32Array(model.hp.nVocab);
    const seen: number[] = [];
    let maxDiff = 0;
    for (let p = 0; p < ids.length; p += 16) {
      const n = Math.min(16, ids.length - p);
      cache.reserveOrThrow(0, n);
      model.forwardBatch(ids, p, n, kv, buf, p, (i, logits) => {
        expect(logits).toBe(buf); // the caller's buffer, reused: no [n][nVocab] copy
        seen.push(p + i);
        maxDiff = Math.max(maxDiff, maxAbsDiff(logits, want[p + i]!));
      });
    }
    expect(seen).toEqual(ids.map((_, i) => i));
    expect(maxDiff).toBeLessThan(1e-4);
    // A backend without the batch methods (DenseKv, placed at each token's position as it is
    // written): the tokens go one by one, each still reported.
    const dense = new DenseKv(model);
    let next = 0;
    const oneByOne: KvBackend = {
      write: (layer, k, v) => {
        if (layer === 0) dense.setPosition(next++);
        dense.write(layer, k, v);
      },
      attend: (layer, q, pos, out) => dense.attend(layer, q, pos, out),
    };
    const fallback: number[] = [];
    model.forwardBatch(ids, 0, 5, oneByOne, buf, 0, (i, logits) => {
      fallback.push(i);
      expect(maxAbsDiff(logits, want[i]!)).toBeLessThan(1e-4);
    });
    expect(fallback).toEqual([0, 1, 2, 3, 4]);
    expect(() => model.forwardBatch(ids, 0, 2, new DenseKv(model), null, 0, () => {})).toThrow(/needs a logits buffer/);
  });

  it("forwardBatch refuses more tokens than maxBatchTokens", async () => {
    const model = await loadBytes(readFileSync(sharedPath(MODEL)), { maxBatchTokens: 4 });
    const kv = new DenseKv(model);
    expect(() => model.forwardBatch(ids, 0, 5, kv, null)).toThrow(/forwardBatch of 5 tokens/);
  });

  it.skipIf(!wasmKernelsAvailable())("wasm kernels equal the JS kernels within 1e-4 (F32 weights)", async () => {
    const bytes = readFileSync(sharedPath(MODEL));
    const wasm = await loadBytes(bytes, { kernels: "wasm" });
    const js = await loadBytes(bytes, { kernels: "js" });
    expect(wasm.kernels).toBe("wasm");
    expect(js.kernels).toBe("js");
    expect(js.wasmBytes).toBe(0);
    const a = denseLogits(wasm, ids.slice(0, 20));
    const b = denseLogits(js, ids.slice(0, 20));
    for (let p = 0; p < a.length; p++) expect(maxAbsDiff(a[p]!, b[p]!)).toBeLessThan(1e-4);
  });
});

// Small enough to build in milliseconds; Q8_0 needs dims that are multiples of 32.
const TINY: SyntheticShape = { arch: "llama", nLayer: 2, nEmbd: 128, nHead: 4, nHeadKv: 2, nFf: 256, nVocab: 512, nCtxTrain: 256 };

describe.skipIf(!wasmKernelsAvailable())("a small synthetic Q8_0 model on the wasm kernels", () => {
  const bytes = writeSyntheticModel(TINY, "Q8_0", 3);
  const ids = [1, 17, 300, 42, 99, 7, 511, 256, 3, 64];

  it("f32 activations keep quantized matrices on the JS kernels: equal to kernels: js within 1e-4 relative", async () => {
    const wasm = await loadBytes(bytes, { activations: "f32" });
    const js = await loadBytes(bytes, { kernels: "js" });
    expect(wasm.kernels).toBe("wasm");
    expect(wasm.activations).toBe("f32");
    const a = denseLogits(wasm, ids), b = denseLogits(js, ids);
    for (let p = 0; p < ids.length; p++) {
      let scale = 0;
      for (let i = 0; i < b[p]!.length; i++) scale = Math.max(scale, Math.abs(b[p]![i]!));
      expect(maxAbsDiff(a[p]!, b[p]!)).toBeLessThan(1e-4 * scale);
    }
  });

  for (const type of ["Q4_K", "Q6_K", "Q4_0", "Q5_0"]) {
    it(`${type} on the wasm kernels (q8 activations) stays within 2% (K types, Q8_K activations: 4%) of the JS kernels' logits`, async () => {
      const shape: SyntheticShape = { ...TINY, nEmbd: 256, nFf: 512 }; // K-type rows need 256-value multiples
      const k4 = writeSyntheticModel(shape, type, 5);
      const wasm = await loadBytes(k4);
      const js = await loadBytes(k4, { kernels: "js" });
      expect(wasm.wasmBytes).toBeGreaterThan(0);
      const a = denseLogits(wasm, ids), b = denseLogits(js, ids);
      for (let p = 0; p < ids.length; p++) {
        let scale = 0;
        for (let i = 0; i < b[p]!.length; i++) scale = Math.max(scale, Math.abs(b[p]![i]!));
        // Q8_K activations (the K types', as llama.cpp: one scale per 256 values) round coarser
        // than Q8_0's per-32 scale: ~2-3% here where Q8_0 stays under 2%.
        expect(maxAbsDiff(a[p]!, b[p]!)).toBeLessThan((type.endsWith("_K") ? 0.04 : 0.02) * scale);
      }
    });
  }

  it("q8 activations (the default) stay within 2% of the f32-activation logits, and batched equals per-token", async () => {
    const q8 = await loadBytes(bytes);
    expect(q8.activations).toBe("q8");
    const ref = denseLogits(await loadBytes(bytes, { kernels: "js" }), ids);
    const a = denseLogits(q8, ids);
    for (let p = 0; p < ids.length; p++) {
      let scale = 0;
      for (let i = 0; i < ref[p]!.length; i++) scale = Math.max(scale, Math.abs(ref[p]![i]!));
      expect(maxAbsDiff(a[p]!, ref[p]!)).toBeLessThan(0.02 * scale);
    }
    // The batch path quantizes the same rows the same way: equal to per-token within float noise.
    const cache = createModelCache(q8, resolveCacheConfig({ contextWindowSize: 64, codec: "f32" }));
    cache.add(0);
    const logits = new Float32Array(q8.hp.nVocab);
    cache.reserveOrThrow(0, ids.length);
    q8.forwardBatch(ids, 0, ids.length, new CacheKv(cache, 0, q8), logits);
    expect(maxAbsDiff(logits, a[ids.length - 1]!)).toBeLessThan(1e-4);
  });
});

/** A small F32 model: widths that are not multiples of 4 (tails), optional QK norms (qwen3). */
function tinyModel(arch: "llama" | "qwen3", nEmbd: number, nHead: number, nHeadKv: number, nFf: number, seed: number): Uint8Array {
  const rand = rng(seed);
  const nVocab = 97, nLayer = 2;
  const hd = nEmbd / nHead;
  const meta: Array<[string, GgufWriterValue]> = [
    ["general.architecture", gv.str(arch)],
    [`${arch}.block_count`, gv.u32(nLayer)],
    [`${arch}.embedding_length`, gv.u32(nEmbd)],
    [`${arch}.attention.head_count`, gv.u32(nHead)],
    [`${arch}.attention.head_count_kv`, gv.u32(nHeadKv)],
    [`${arch}.feed_forward_length`, gv.u32(nFf)],
    [`${arch}.context_length`, gv.u32(64)],
    [`${arch}.vocab_size`, gv.u32(nVocab)],
    [`${arch}.attention.layer_norm_rms_epsilon`, gv.f32(1e-6)],
  ];
  const t = (name: string, shape: number[], scale: number, offset = 0): WriterTensor => {
    let n = 1;
    for (const d of shape) n *= d;
    const f = new Float32Array(n);
    for (let i = 0; i < n; i++) f[i] = offset + (rand() * 2 - 1) * scale;
    return { name, shape, type: "F32", data: new Uint8Array(f.buffer) };
  };
  const mat = (name: string, cols: number, rows: number) => t(name, [cols, rows], 1 / Math.sqrt(cols));
  const tensors = [mat("token_embd.weight", nEmbd, nVocab), t("output_norm.weight", [nEmbd], 0.5, 1)];
  for (let l = 0; l < nLayer; l++) {
    const p = `blk.${l}.`;
    tensors.push(
      t(p + "attn_norm.weight", [nEmbd], 0.5, 1),
      mat(p + "attn_q.weight", nEmbd, nEmbd),
      mat(p + "attn_k.weight", nEmbd, nHeadKv * hd),
      mat(p + "attn_v.weight", nEmbd, nHeadKv * hd),
      mat(p + "attn_output.weight", nEmbd, nEmbd),
      t(p + "ffn_norm.weight", [nEmbd], 0.5, 1),
      mat(p + "ffn_gate.weight", nEmbd, nFf),
      mat(p + "ffn_up.weight", nEmbd, nFf),
      mat(p + "ffn_down.weight", nFf, nEmbd),
    );
    if (arch === "qwen3") tensors.push(t(p + "attn_q_norm.weight", [hd], 0.5, 1), t(p + "attn_k_norm.weight", [hd], 0.5, 1));
  }
  return writeGguf({ metadata: meta, tensors }).bytes;
}

describe.skipIf(!wasmKernelsAvailable() || compileEmbedded(ELEMENTWISE_WASM_BASE64) === null)("CausalLM on the elementwise kernels", () => {
  const ids = [1, 50, 96, 7, 33, 2, 80, 64, 11, 5];
  const cases: Array<[string, Uint8Array]> = [
    // 3 heads of 14: every width (42, 14, 58) leaves a tail of 2 past the last group of 4.
    ["llama, widths 42 / 58", tinyModel("llama", 42, 3, 1, 58, 5)],
    ["qwen3 with QK norms, widths 40 / 100", tinyModel("qwen3", 40, 4, 2, 100, 9)],
  ];
  for (const [name, file] of cases) {
    it(`${name}: wasm logits (token by token and batched) equal kernels: "js" within 1e-4 relative; the memory does not grow`, async () => {
      const wasm = await loadBytes(file, { maxBatchTokens: 4 });
      const js = await loadBytes(file, { kernels: "js" });
      expect(wasm.kernels).toBe("wasm");
      expect(wasm["ew"]).not.toBeNull();
      const memory = wasm["arena"]!.k.memory;
      const before = memory.buffer.byteLength;
      const kvA = new DenseKv(wasm), kvB = new DenseKv(js);
      const a = new Float32Array(wasm.hp.nVocab);
      const want: Float32Array[] = [];
      const close = (got: Float32Array, ref: Float32Array) => {
        let scale = 0, diff = 0;
        for (let i = 0; i < ref.length; i++) {
          scale = Math.max(scale, Math.abs(ref[i]!));
          diff = Math.max(diff, Math.abs(got[i]! - ref[i]!));
        }
        expect(scale).toBeGreaterThan(0);
        expect(diff).toBeLessThan(1e-4 * scale);
      };
      for (let p = 0; p < ids.length; p++) {
        const b = new Float32Array(js.hp.nVocab);
        kvA.setPosition(p);
        kvB.setPosition(p);
        wasm.forward(ids[p]!, p, kvA, a);
        js.forward(ids[p]!, p, kvB, b);
        close(a, b);
        want.push(b);
      }
      // Batches of up to 4 rows over the paged cache: the norms and adds run over several rows.
      const cache = createModelCache(wasm, resolveCacheConfig({ contextWindowSize: 64, codec: "f32" }));
      cache.add(0);
      const kv = new CacheKv(cache, 0, wasm);
      for (let p = 0; p < ids.length; p += 4) {
        const n = Math.min(4, ids.length - p);
        cache.reserveOrThrow(0, n);
        wasm.forwardBatch(ids, p, n, kv, a, p);
        close(a, want[p + n - 1]!);
      }
      expect(memory.buffer.byteLength).toBe(before);
    });
  }
});
