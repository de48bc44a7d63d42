import { describe, expect, it } from "vitest";

import { InvalidSettingError, UnknownCacheTypeError } from "../errors.js";
import type { LayerSpec, ModelSpec } from "../spec/model-spec.js";
import { vllmBlocksPerRequest, vllmKv, vllmNumBlocks } from "./vllm.js";

const GIB = 1024 ** 3;
const MIB = 1024 ** 2;
const NO_OVERHEAD = { weightsBytes: 0, activationBytes: 0 };

function dense(opts: { name: string; nLayer: number; nHeadKv: number; headDim: number; nCtxTrain: number; swaEvery?: number; nSwa?: number }): ModelSpec {
  const layers: LayerSpec[] = [];
  for (let i = 0; i < opts.nLayer; i++) {
    const swa = opts.swaEvery !== undefined && i % opts.swaEvery === 0;
    layers.push({ kind: "attention", nHeadKv: opts.nHeadKv, headDimK: opts.headDim, headDimV: opts.headDim, swa });
  }
  return {
    name: opts.name,
    arch: "llama",
    source: "test",
    nLayer: opts.nLayer,
    nEmbd: 4096,
    nHead: 32,
    nFf: 14336,
    nVocab: 128256,
    nCtxTrain: opts.nCtxTrain,
    nSwa: opts.nSwa ?? 0,
    swaType: opts.nSwa ? "standard" : "none",
    layers,
    mla: null,
    experts: null,
    params: null,
    weights: null,
  };
}

// meta-llama/Llama-3.1-8B-Instruct config.json: 32 layers, 8 KV heads, head_dim 128.
const llama8b = dense({ name: "Llama 3.1 8B", nLayer: 32, nHeadKv: 8, headDim: 128, nCtxTrain: 131072 });
// Qwen/Qwen3-Coder-480B-A35B-Instruct config.json: 62 layers, 8 KV heads, head_dim 128.
const qwenCoder480b = dense({ name: "Qwen3-Coder-480B-A35B", nLayer: 62, nHeadKv: 8, headDim: 128, nCtxTrain: 262144 });

describe("vllmKv page and request sizes", () => {
  it("a bf16 page is block_size x kv_heads x (head_k + head_v) x 2 bytes per layer", () => {
    const r = vllmKv(llama8b, { ctx: 20000 });
    // 16 x 8 x (128 + 128) x 2 = 65,536 bytes per layer per block
    expect(r.extra?.pageBytesPerLayer).toBe(65536);
    // ceil(20000 / 16) = 1250 blocks x 65,536 x 32 layers = 2,621,440,000 bytes for one request
    expect(r.extra?.bytesPerRequest).toBe(2_621_440_000);
    expect(r.kv.totalBytes).toBe(2_621_440_000);
    expect(r.kv.kBytes).toBe(r.kv.vBytes);
    expect(r.notes.join(" ")).toMatch(/no budgetBytes/);
  });

  it("seqs multiplies the no-budget figure; fp8 halves it", () => {
    expect(vllmKv(llama8b, { ctx: 20000, seqs: 3 }).kv.totalBytes).toBe(3 * 2_621_440_000);
    expect(vllmKv(llama8b, { ctx: 20000, kvCacheDtype: "fp8" }).kv.totalBytes).toBe(2_621_440_000 / 2);
    expect(vllmKv(llama8b, { ctx: 20000, kvCacheDtype: "fp8_e5m2" }).extra?.pageBytesPerLayer).toBe(32768);
  });

  it("defaults max_model_len to the training context", () => {
    expect(vllmKv(llama8b, {}).settings.maxModelLen).toBe(131072);
  });

  // vllm-project/recipes PR #12 (Qwen3-Coder-480B-A35B-FP8, dp=8, KV auto = bf16):
  // "To serve at least one request with the models's max seq len (262144), (62.00 GiB KV cache is needed"
  it("matches vLLM's published 62.00 GiB for one 262144-token Qwen3-Coder-480B request", () => {
    const r = vllmKv(qwenCoder480b, { ctx: 262144 });
    // ceil(262144/16) = 16384 blocks x 65,536 B x 62 layers = 62 x 2^30 exactly
    expect(r.extra?.bytesPerRequest).toBe(62 * GIB);
  });

  // Same PR: "available KV cache memory (48.66 GiB) ... the estimated maximum model length is 205728"
  // and, with --gpu-memory-utilization 0.95, "(55.65 GiB) ... estimated maximum model length is 235296".
  it("matches vLLM's published estimated maximum model lengths", () => {
    const at = (availableGiB: number): unknown =>
      vllmKv(qwenCoder480b, { ctx: 262144, budgetBytes: Math.floor(availableGiB * GIB), gpuMemoryUtilization: 1 }, NO_OVERHEAD).extra?.estimatedMaxModelLen;
    expect(at(48.66)).toBe(205728);
    // The log rounds to 2 decimals; 55.652 GiB prints as 55.65 and lies inside the 12,706-block step.
    expect((55.652).toFixed(2)).toBe("55.65");
    expect(at(55.652)).toBe(235296);
  });
});

describe("vllmKv block pool (budget given)", () => {
  // vllm-project/vllm issue #10517, Llama-3.1-8B-Instruct on an RTX 3090, --max-model-len 29000:
  // "# GPU blocks: 1478", "Maximum concurrency for 29000 tokens per request: 0.82x",
  // "maximum number of tokens that can be stored in KV cache (23648)".
  it("reproduces the published token capacity and concurrency from the block count", () => {
    // A KV budget of 1478 blocks of 32 layers x 64 KiB = 2 MiB each, plus less than one block.
    const r = vllmKv(llama8b, { ctx: 29000, budgetBytes: 1478 * 2 * MIB + MIB, gpuMemoryUtilization: 1 }, NO_OVERHEAD);
    expect(r.extra?.numBlocks).toBe(1478);
    expect(r.extra?.kvTokenCapacity).toBe(23648); // 1478 x 16
    expect((r.extra?.maxConcurrency as number).toFixed(2)).toBe("0.82"); // 1478 / ceil(29000/16) = 1478 / 1813
    expect(r.extra?.fitsOneRequest).toBe(false);
    expect(r.extra?.estimatedMaxModelLen).toBe(23648);
    expect(r.kv.totalBytes).toBe(1478 * 2 * MIB);
  });

  // vllm-project/vllm PR #13596 (the log format change): "GPU KV cache size: 2,042,016 tokens",
  // "Maximum concurrency for 2,048 tokens per request: 997.08x" from "# GPU blocks: 127626".
  it("reproduces PR #13596's token count and concurrency from its block count", () => {
    const r = vllmKv(llama8b, { ctx: 2048, budgetBytes: 127626 * 2 * MIB, gpuMemoryUtilization: 1 }, NO_OVERHEAD);
    expect(r.extra?.numBlocks).toBe(127626);
    expect(r.extra?.kvTokenCapacity).toBe(2_042_016); // 127626 x 16
    expect((r.extra?.maxConcurrency as number).toFixed(2)).toBe("997.08"); // 127626 / (2048 / 16)
  });

  // Same issue, --max-model-len 20000: "kv_cache_size=3.81GiB", "GPU blocks: 1952",
  // "Maximum concurrency for 20000 tokens per request: 1.56x".
  it("reproduces the 20000-token run: 3.81 GiB -> about 1952 blocks, 1.56x", () => {
    // 3.81 GiB is rounded; any KV size that prints as 3.81 gives 1948..1953 blocks of 2 MiB.
    for (const gib of [3.805, 3.81, 3.8149]) {
      const blocks = vllmNumBlocks(Math.floor(gib * GIB), 65536, 32);
      expect(blocks).toBeGreaterThanOrEqual(1948);
      expect(blocks).toBeLessThanOrEqual(1953);
    }
    const r = vllmKv(llama8b, { ctx: 20000, budgetBytes: 1952 * 2 * MIB, gpuMemoryUtilization: 1 }, NO_OVERHEAD);
    expect(r.extra?.numBlocks).toBe(1952);
    expect((r.extra?.maxConcurrency as number).toFixed(2)).toBe("1.56"); // 1952 / 1250
    expect(r.extra?.fitsOneRequest).toBe(true);
  });

  it("subtracts utilization, weights per GPU and activations", () => {
    const budget = 24 * GIB;
    const r = vllmKv(llama8b, { ctx: 8192, budgetBytes: budget, gpuMemoryUtilization: 0.9, tensorParallel: 2 }, { weightsBytes: 8 * GIB, activationBytes: GIB });
    // floor(24 GiB x 0.9) = 23,192,823,398 B; minus 9 GiB = 13,529,146,982 B available.
    const available = Math.floor(budget * 0.9) - 9 * GIB;
    expect(r.extra?.availableKvBytes).toBe(available);
    // tp 2: 4 KV heads per rank -> 16 x 4 x 256 x 2 = 32,768 B per layer page, x 32 layers per block
    expect(r.extra?.numBlocks).toBe(Math.floor(available / (32768 * 32)));
  });

  it("defaults gpu_memory_utilization to 0.92 (vllm/config/cache.py)", () => {
    expect(vllmKv(llama8b, { ctx: 4096, budgetBytes: 80 * GIB }, NO_OVERHEAD).settings.gpuMemoryUtilization).toBe(0.92);
  });

  it("reports weights that leave nothing for KV", () => {
    const r = vllmKv(llama8b, { ctx: 4096, budgetBytes: 8 * GIB }, { weightsBytes: 16 * GIB, activationBytes: 0 });
    expect(r.extra?.numBlocks).toBe(0);
    expect(r.extra?.fitsOneRequest).toBe(false);
    expect(r.notes.join(" ")).toMatch(/No available memory/);
  });
});

describe("vllmKv parallelism, MLA and sliding windows", () => {
  it("replicates KV heads when tp exceeds them: max(1, nHeadKv // tp)", () => {
    // 8 KV heads, tp 16 -> 1 head per rank: 16 x 1 x 256 x 2 = 8,192 B
    const r = vllmKv(llama8b, { ctx: 4096, tensorParallel: 16 });
    expect(r.extra?.pageBytesPerLayer).toBe(8192);
    expect(r.notes.join(" ")).toMatch(/replicates/);
    // tp 4 -> 2 heads: 16,384 B
    expect(vllmKv(llama8b, { ctx: 4096, tensorParallel: 4 }).extra?.pageBytesPerLayer).toBe(16384);
  });

  it("MLA stores one latent of kv_lora_rank + rope dims, no factor 2", () => {
    // DeepSeek-V3 config.json: 61 layers, kv_lora_rank 512, qk_rope_head_dim 64
    const base = dense({ name: "DeepSeek-V3", nLayer: 61, nHeadKv: 1, headDim: 576, nCtxTrain: 163840 });
    const spec: ModelSpec = {
      ...base,
      layers: base.layers.map(() => ({ kind: "attention", nHeadKv: 1, headDimK: 576, headDimV: 512, swa: false }) as const),
      mla: { kvLoraRank: 512, ropeDim: 64 },
    };
    const r = vllmKv(spec, { ctx: 4096, tensorParallel: 8 });
    // 16 x (512 + 64) x 2 = 18,432 B per layer page, whatever the tp
    expect(r.extra?.pageBytesPerLayer).toBe(18432);
    // 4096 / 16 = 256 blocks x 18,432 x 61 layers
    expect(r.kv.totalBytes).toBe(256 * 18432 * 61);
    expect(r.kv.vBytes).toBe(0);
    expect(r.kv.caches[0]?.kind).toBe("mla");
  });

  // gpt-oss-20b-like hybrid: 24 layers alternating sliding (window 128) / full, 8 KV heads of 64.
  const gptOss = dense({ name: "gpt-oss-20b", nLayer: 24, nHeadKv: 8, headDim: 64, nCtxTrain: 131072, swaEvery: 2, nSwa: 128 });

  it("groups full and sliding layers and sizes the sliding group by window + batch", () => {
    const r = vllmKv(gptOss, { ctx: 131072, ubatch: 2048 });
    // 12 full + 12 sliding: group size 12 (12 < 1.5 x 12), two groups, page 16 x 8 x 128 x 2 = 32,768 B
    expect(r.extra?.groupSize).toBe(12);
    expect(r.extra?.pageBytesPerLayer).toBe(32768);
    // full: ceil(131072/16) = 8192 blocks; sliding: ceil(min(128 - 1 + 2048, 131072)/16) + 1 = 136 + 1 = 137
    expect(vllmBlocksPerRequest("swa", 131072, 16, 128, 2048)).toBe(137);
    expect(r.extra?.blocksPerRequest).toBe(8192 + 137);
    expect(r.extra?.bytesPerRequest).toBe(12 * 32768 * (8192 + 137));
  });

  it("hybrid pool: blocks = available // page // group size; tokens = blocks // groups x 16", () => {
    const available = 10 * GIB;
    const r = vllmKv(gptOss, { ctx: 131072, ubatch: 2048, budgetBytes: available, gpuMemoryUtilization: 1 }, NO_OVERHEAD);
    const blocks = Math.floor(Math.floor(available / 32768) / 12); // 27,306
    expect(r.extra?.numBlocks).toBe(blocks);
    expect(r.extra?.kvTokenCapacity).toBe(Math.floor(blocks / 2) * 16);
    expect(r.extra?.maxConcurrency).toBeCloseTo(blocks / (8192 + 137), 10);
    expect(r.kv.totalBytes).toBe(blocks * 32768 * 12);
  });

  it("refuses unknown dtypes and block sizes with typed errors", () => {
    expect(() => vllmKv(llama8b, { ctx: 4096, kvCacheDtype: "q4_0" })).toThrow(UnknownCacheTypeError);
    expect(() => vllmKv(llama8b, { ctx: 4096, blockSize: 24 })).toThrow(InvalidSettingError);
    expect(() => vllmKv(llama8b, { ctx: 4096, gpuMemoryUtilization: 1.5 })).toThrow(InvalidSettingError);
    expect(() => vllmKv({ ...llama8b, nCtxTrain: null }, {})).toThrow(InvalidSettingError);
  });
});

describe("vllmKv: tensor parallel sizes vLLM refuses", () => {
  // vllm/config/model.py verify_with_parallel_config: "Total number of attention heads (32) must be
  // divisible by tensor parallel size (3)"; vllm/model_executor/layers/linear.py QKVParallelLinear:
  // divide(kv_heads, tp) when tp < kv_heads, divide(tp, kv_heads) (replication) when tp >= kv_heads.
  const llama8b = dense({ name: "Llama 3.1 8B", nLayer: 32, nHeadKv: 8, headDim: 128, nCtxTrain: 131072 });

  it("--tp 3 with 32 heads is an InvalidSettingError naming the rule and the sizes that work", () => {
    const err = (() => {
      try {
        vllmKv(llama8b, { ctx: 4096, tensorParallel: 3 });
      } catch (e) {
        return e;
      }
      return null;
    })();
    expect(err).toBeInstanceOf(InvalidSettingError);
    expect((err as InvalidSettingError).message).toMatch(/Total number of attention heads \(32\) must be divisible by tensor parallel size \(3\)/);
    expect((err as InvalidSettingError).details).toMatchObject({ setting: "tensorParallel", value: 3, valid: [1, 2, 4, 8] });
  });

  it("KV heads: split when tp divides them, replicated when tp is a multiple of them, refused otherwise", () => {
    expect(() => vllmKv(llama8b, { ctx: 4096, tensorParallel: 16 })).not.toThrow(); // 16 = 2 x 8 KV heads: replicated
    // 24 heads, 8 KV heads, tp 3: heads divide but 8 KV heads do not split in 3, nor 3 replicate 8.
    const odd = { ...dense({ name: "odd", nLayer: 2, nHeadKv: 8, headDim: 128, nCtxTrain: 4096 }), nHead: 24 };
    expect(() => vllmKv(odd, { ctx: 4096, tensorParallel: 3 })).toThrow(/8 KV heads are not divisible by tensor parallel size 3/);
    // 12 heads, 4 KV heads, tp 6: 6 >= 4 and 6 is not a multiple of 4.
    const six = { ...dense({ name: "six", nLayer: 2, nHeadKv: 4, headDim: 128, nCtxTrain: 4096 }), nHead: 12 };
    expect(() => vllmKv(six, { ctx: 4096, tensorParallel: 6 })).toThrow(/not a multiple of the 4 KV heads/);
  });
});
