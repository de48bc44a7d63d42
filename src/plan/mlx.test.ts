// No published mlx-lm figure isolates the KV cache (mlx_lm.generate prints "Peak memory", which
// includes the weights, activations and MLX's allocator cache), so these tests restate the cited
// code: a shape-only replay of ml-explore/mlx-lm mlx_lm/models/cache.py (KVCache.update_and_fetch,
// RotatingKVCache._update_concat / _update_in_place) driven the way mlx_lm/generate.py
// generate_step drives it, checked against the rule's closed forms, and byte counts written out
// from QuantizedKVCache's array shapes.

import { describe, expect, it } from "vitest";

import { InvalidSettingError, UnsupportedArchitectureError } from "../errors.js";
import { registrySpec } from "../spec/registry.js";
import { exportPlan } from "./export.js";
import { fitContexts } from "./fit.js";
import { mlxKv, mlxKvCacheSlots, mlxRotatingPrefillPeak, mlxRotatingSlots } from "./mlx.js";
import { planMemory } from "./plan.js";

const STEP = 256;

/** KVCache buffer length (axis 2) after each update_and_fetch, as cache.py computes it. */
class KvCacheShape {
  shape = 0;
  offset = 0;
  private empty = true;
  update(s: number): void {
    const prev = this.offset;
    if (this.empty || prev + s > this.shape) {
      const grow = Math.ceil(s / STEP) * STEP; // n_steps * step
      if (!this.empty && prev % STEP !== 0) this.shape = prev; // keys[..., :prev, :]
      this.shape = this.empty ? grow : this.shape + grow;
      this.empty = false;
    }
    this.offset += s;
  }
}

/** RotatingKVCache buffer length, as _update_concat (S > 1) and _update_in_place (S == 1) leave it. */
class RotatingShape {
  shape = 0;
  offset = 0;
  private idx = 0;
  private empty = true;
  constructor(
    private readonly maxSize: number,
    private readonly keep: number,
  ) {}
  update(s: number): void {
    if (s === 1) this.inPlace();
    else this.concat(s);
  }
  private concat(s: number): void {
    if (this.empty) {
      this.shape = s;
      this.empty = false;
    } else {
      // _temporal_order: a full or wrapped buffer keeps its length; an unfilled one is sliced to _idx.
      if (!(this.idx === this.shape || this.idx < this.offset)) this.shape = this.idx;
      this.idx = this.shape;
      const trim = this.idx - this.maxSize + 1;
      if (trim > 0) this.shape -= trim;
      this.shape += s;
    }
    this.offset += s;
    this.idx = this.shape;
  }
  private inPlace(): void {
    const prev = this.offset;
    if (this.empty || (prev >= this.shape && this.shape < this.maxSize)) {
      const grow = Math.min(STEP, this.maxSize - prev);
      this.shape = this.empty ? grow : this.shape + grow;
      this.empty = false;
      this.idx = prev;
    }
    const trim = this.shape - this.maxSize;
    if (trim > 0) {
      this.shape = this.maxSize;
      this.idx = this.maxSize;
    }
    if (this.idx === this.maxSize) this.idx = this.keep;
    this.offset += 1;
    this.idx += 1;
  }
}

/** generate_step: prefill chunks of `step` until one prompt token is left, then one token per
 *  step for the last prompt token and each generated token. Returns the largest buffer seen. */
function drive(cache: { update(s: number): void; shape: number }, prompt: number, generated: number, step = 2048): number {
  let remaining = prompt;
  let peak = 0;
  while (remaining > 1) {
    const n = Math.min(step, remaining - 1);
    cache.update(n);
    peak = Math.max(peak, cache.shape);
    remaining -= n;
  }
  for (let i = 0; i < remaining + generated; i++) {
    cache.update(1);
    peak = Math.max(peak, cache.shape);
  }
  return peak;
}

describe("mlx: cache.py growth replayed against the rule", () => {
  const cases: Array<[number, number]> = [
    [1, 0],
    [1, 300],
    [10, 0],
    [255, 1],
    [256, 0],
    [257, 0],
    [2049, 0],
    [2050, 100],
    [2, 0],
    [2, 500],
    [4098, 3],
    [4097, 0],
    [5000, 0],
    [5000, 1234],
    [9000, 17],
  ];

  it("KVCache holds ceil(tokens / 256) x 256 slots whatever the prompt / generation split", () => {
    for (const [prompt, generated] of cases) {
      const sim = new KvCacheShape();
      drive(sim, prompt, generated);
      expect([prompt, generated, sim.shape]).toEqual([prompt, generated, mlxKvCacheSlots(prompt + generated)]);
    }
    expect(mlxKvCacheSlots(1)).toBe(256);
    expect(mlxKvCacheSlots(256)).toBe(256);
    expect(mlxKvCacheSlots(257)).toBe(512);
  });

  it("sweep: prompts around the 256 and 2048 boundaries, both caches", () => {
    for (const prompt of [1, 2, 3, 255, 256, 257, 511, 2047, 2048, 2049, 2050, 2051, 4096, 4097, 4098, 6145]) {
      for (const generated of [0, 1, 255, 256, 3000]) {
        const kv = new KvCacheShape();
        drive(kv, prompt, generated);
        expect([prompt, generated, kv.shape]).toEqual([prompt, generated, mlxKvCacheSlots(prompt + generated)]);
        for (const maxSize of [128, 1024, 4096]) {
          const rot = new RotatingShape(maxSize, 4);
          const peak = drive(rot, prompt, generated);
          const final = mlxRotatingSlots(prompt + generated, prompt, maxSize);
          expect([maxSize, prompt, generated, rot.shape, peak]).toEqual([maxSize, prompt, generated, final, Math.max(final, mlxRotatingPrefillPeak(prompt, maxSize, 2048))]);
        }
      }
    }
  });

  it("RotatingKVCache: final slots and prefill peak match the replay (windows 128, 1024, 4096)", () => {
    for (const maxSize of [128, 1024, 4096]) {
      for (const [prompt, generated] of cases) {
        for (const keep of [0, 4]) {
          const sim = new RotatingShape(maxSize, keep);
          const peak = drive(sim, prompt, generated);
          const tokens = prompt + generated;
          expect([maxSize, prompt, generated, sim.shape]).toEqual([maxSize, prompt, generated, mlxRotatingSlots(tokens, prompt, maxSize)]);
          expect([maxSize, prompt, peak]).toEqual([maxSize, prompt, Math.max(mlxRotatingSlots(tokens, prompt, maxSize), mlxRotatingPrefillPeak(prompt, maxSize, 2048))]);
        }
      }
    }
  });
});

describe("mlx: bytes per slot from the cache arrays' shapes", () => {
  const llama = registrySpec("llama-3.1-8b"); // 32 layers, 8 KV heads, head_dim 128

  it("KVCache: float16 keys and values [1, 8, slots, 128] per layer", () => {
    const r = mlxKv(llama, { ctx: 10000 });
    expect(r.kv.caches).toHaveLength(1);
    expect(r.kv.caches[0]).toMatchObject({ kind: "full", cells: 10240, layers: 32, typeK: "float16" });
    expect(r.kv.totalBytes).toBe(10240 * 32 * 8 * 128 * 2 * 2);
  });

  it("QuantizedKVCache: uint32 [.., 128 * bits / 32] + scales and biases [.., 128 / 64] in float16", () => {
    // 4-bit: 128 * 4 / 8 = 64 B of packed values + 2 x (128 / 64) x 2 B = 8 B per head and token.
    const q4 = mlxKv(llama, { ctx: 10000, kvBits: 4 });
    expect(q4.kv.caches[0]).toMatchObject({ cells: 10240, typeK: "q4/g64" });
    expect(q4.kv.totalBytes).toBe(10240 * 32 * 8 * (64 + 8) * 2);
    const q8 = mlxKv(llama, { ctx: 10000, kvBits: 8, kvGroupSize: 32 });
    expect(q8.kv.totalBytes).toBe(10240 * 32 * 8 * (128 + 2 * 4 * 2) * 2);
    // bfloat16 models: same sizes; float32: 4-byte scales and biases.
    const q4f32 = mlxKv(llama, { ctx: 10000, kvBits: 4, kvCacheDtype: "float32" });
    expect(q4f32.kv.totalBytes).toBe(10240 * 32 * 8 * (64 + 16) * 2);
  });

  it("quantization starts at --quantized-kv-start (5000 by default)", () => {
    const below = mlxKv(llama, { ctx: 4000, kvBits: 4 });
    expect(below.extra?.quantized).toBe(false);
    expect(below.kv.totalBytes).toBe(4096 * 32 * 8 * 128 * 2 * 2);
    expect(below.notes.some((n) => n.includes("never quantized"))).toBe(true);
    expect(mlxKv(llama, { ctx: 4000, kvBits: 4, quantizedKvStart: 0 }).extra?.quantized).toBe(true);
  });

  it("--max-kv-size: a RotatingKVCache per layer, bounded at any length", () => {
    const long = mlxKv(llama, { ctx: 32768, maxKvSize: 4096 });
    expect(long.kv.caches[0]).toMatchObject({ kind: "swa", cells: 4096, layers: 32 });
    expect(long.kv.totalBytes).toBe(4096 * 32 * 8 * 128 * 2 * 2);
    // Shorter than the window: the prompt's 999 concatenated tokens + one 256-token step.
    expect(mlxKv(llama, { ctx: 1000, maxKvSize: 4096 }).kv.caches[0]!.cells).toBe(1255);
    // While the prompt runs: the first 2048-token chunk, then 4095 kept + 2048 = 6143 slots.
    expect(long.extra?.prefillPeakKvBytes).toBe(6143 * 32 * 8 * 128 * 2 * 2);
  });

  it("models with make_cache: sliding-window layers rotate at the window, the rest grow; --max-kv-size does not reach them", () => {
    const gemma = registrySpec("gemma-3-4b"); // 29 sliding layers (window 1024) + 5 global, 4 KV heads x 256
    const r = mlxKv(gemma, { ctx: 32768, maxKvSize: 4096 });
    const swa = r.kv.caches.find((c) => c.kind === "swa")!;
    const full = r.kv.caches.find((c) => c.kind === "full")!;
    expect([swa.cells, swa.layers, full.cells, full.layers]).toEqual([1024, 29, 32768, 5]);
    expect(r.kv.totalBytes).toBe((1024 * 29 + 32768 * 5) * 4 * 256 * 2 * 2);
    expect(r.notes.some((n) => n.includes("--max-kv-size 4096 has no effect"))).toBe(true);
    // mlx-lm's gemma2.py has no window at all: every layer keeps the whole context.
    const g2 = mlxKv(registrySpec("gemma-2-2b"), { ctx: 8192 });
    expect(g2.kv.caches).toHaveLength(1);
    expect(g2.kv.caches[0]!.kind).toBe("full");
  });

  it("refuses what mlx-lm refuses or kvbound does not model", () => {
    const gemma = registrySpec("gemma-3-4b");
    // RotatingKVCache.to_quantized raises NotImplementedError.
    expect(() => mlxKv(gemma, { ctx: 8192, kvBits: 4 })).toThrow(InvalidSettingError);
    expect(() => mlxKv(llama, { ctx: 8192, kvBits: 4, maxKvSize: 4096 })).toThrow(InvalidSettingError);
    // ... unless the cache never reaches --quantized-kv-start.
    expect(mlxKv(gemma, { ctx: 4096, kvBits: 4 }).extra?.quantized).toBe(false);
    expect(() => mlxKv(llama, { ctx: 8192, kvBits: 3 })).toThrow(InvalidSettingError);
    expect(() => mlxKv(llama, { ctx: 8192, kvBits: 4, kvGroupSize: 48 })).toThrow(InvalidSettingError);
    expect(() => mlxKv(registrySpec("phi-3.5-mini"), { ctx: 8192, kvBits: 4, quantizedKvStart: 0 })).toThrow(InvalidSettingError); // head 96, group 64
    expect(() => mlxKv(registrySpec("deepseek-v3"), { ctx: 8192 })).toThrow(UnsupportedArchitectureError);
    expect(() => mlxKv(registrySpec("falcon-mamba-7b"), { ctx: 8192 })).toThrow(UnsupportedArchitectureError);
    expect(() => mlxKv(registrySpec("llama-4-scout"), { ctx: 8192 })).toThrow(UnsupportedArchitectureError);
  });
});

describe("mlx: plan, exports, fit", () => {
  const llama = registrySpec("llama-3.1-8b");

  it("says the weights are the GGUF's, not MLX's", () => {
    const plan = planMemory(llama, { engine: "mlx", ctx: 8192 });
    expect(plan.engine).toBe("mlx");
    expect(plan.notes.some((n) => n.includes("mlx-lm loads its own safetensors"))).toBe(true);
    expect(plan.compute?.note).toContain("mlx-lm");
  });

  it("exports mlx_lm.generate flags, and mlx_lm.server flags only for what the server takes", () => {
    const plain = planMemory(llama, { engine: "mlx", ctx: 8192, promptTokens: 6000 });
    expect(exportPlan(plain, "mlx").split("\n")).toEqual([
      "# the cache holds prompt + generated tokens: a 6000-token prompt + 2192 generated = 8192",
      "mlx_lm.generate --model <mlx model> --max-tokens 2192",
      "# server: one cached conversation of the planned size (the LRU keeps 10 by default)",
      `mlx_lm.server --model <mlx model> --max-tokens 2192 --decode-concurrency 1 --prompt-concurrency 1 --prompt-cache-size 1 --prompt-cache-bytes ${plain.kv.totalBytes}`,
    ]);
    const q = planMemory(llama, { engine: "mlx", ctx: 8192, kvBits: 4, quantizedKvStart: 0 });
    const lines = exportPlan(q, "mlx").split("\n");
    expect(lines[1]).toBe("mlx_lm.generate --model <mlx model> --kv-bits 4 --kv-group-size 64 --quantized-kv-start 0");
    expect(lines[2]).toContain("mlx_lm.server takes no --max-kv-size or --kv-bits");
    expect(lines).toHaveLength(3);
  });

  it("fit offers the dtype, 8-bit and 4-bit caches and --max-kv-size", () => {
    const fit = fitContexts(llama, { engine: "mlx", budgetBytes: 8 * 1024 ** 3 });
    expect(fit.options.map((o) => o.label)).toEqual([
      "model dtype (float16)",
      "--kv-bits 8 --quantized-kv-start 0",
      "--kv-bits 4 --quantized-kv-start 0",
      "--max-kv-size (RotatingKVCache, keep 4)",
    ]);
    const [f16, q8, q4, rotating] = fit.options;
    expect(f16!.maxCtx).not.toBeNull();
    expect(q8!.maxCtx!).toBeGreaterThan(f16!.maxCtx!);
    expect(q4!.maxCtx!).toBeGreaterThan(q8!.maxCtx!);
    expect(rotating!.bounded).toBe(true);
    expect(rotating!.settings.maxKvSize).toBe(rotating!.maxCtx);
  });
});
