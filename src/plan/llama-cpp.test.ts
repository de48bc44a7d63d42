// Tests of the llama.cpp KV rule against figures llama.cpp itself printed (each names its source)
// and against hand computations written out here. ModelSpecs are built by hand on purpose: the
// GGUF/config converters are tested elsewhere.

import { describe, expect, it } from "vitest";
import {
  CacheTypeBlockSizeError,
  InvalidSettingError,
  QuantizedVRequiresFlashAttentionError,
  UnknownCacheTypeError,
} from "../errors.js";
import type { LayerSpec, ModelSpec } from "../spec/model-spec.js";
import { testSpec } from "../../test/helpers/spec.js";
import { formatMiB, LLAMA_CPP_CACHE_TYPES, llamaCppKv } from "./llama-cpp.js";
import { LLAMA_CPP_RULE_HISTORY, llamaCppRules } from "./llama-cpp-builds.js";
import type { KvCachePlan, PlanSettings } from "./types.js";

const MiB = 1024 * 1024;

const model = testSpec;

function plan(spec: ModelSpec, settings: PlanSettings = {}) {
  return llamaCppKv(spec, settings);
}

function cache(caches: readonly KvCachePlan[], kind: KvCachePlan["kind"]): KvCachePlan {
  const c = caches.find((x) => x.kind === kind);
  if (!c) throw new Error(`no ${kind} cache`);
  return c;
}

const llama32_1b = model({ name: "Llama-3.2-1B", nLayer: 16, nHeadKv: 8, headDim: 64, nCtxTrain: 131072 });
const mistralSmall24b = model({ name: "Mistral-Small-24B", nLayer: 40, nHeadKv: 8, headDim: 128 });
const gptOss20b = model({ name: "gpt-oss-20b", arch: "gpt-oss", nLayer: 24, nHeadKv: 8, headDim: 64, swa: { window: 128, pattern: 2 } });
// stories260K: dim 64, 8 heads, 4 KV heads -> head 8, 5 layers.
const stories260k = model({ name: "stories260K", nLayer: 5, nHeadKv: 4, headDim: 8, nCtxTrain: 512 });

describe("llamaCppKv: published llama.cpp figures (current rules)", () => {
  // Source: the task's acceptance figures from llama.cpp logs, `llama_kv_cache: size = 64.00 MiB`
  // etc. Hand check: 16 layers x 512 values x 2 (K,V) x 2048 cells x 2 B = 64 MiB at f16;
  // q8_0 34 B per 32 values -> 34/64 of that = 34 MiB; q4_0 18 B per 32 -> 18 MiB.
  it("Llama-3.2-1B at n_ctx 2048: 64.00 / 34.00 / 18.00 MiB", () => {
    expect(formatMiB(plan(llama32_1b, { ctx: 2048 }).kv.totalBytes)).toBe("64.00 MiB");
    expect(formatMiB(plan(llama32_1b, { ctx: 2048, typeK: "q8_0", typeV: "q8_0" }).kv.totalBytes)).toBe("34.00 MiB");
    expect(formatMiB(plan(llama32_1b, { ctx: 2048, typeK: "q4_0", typeV: "q4_0" }).kv.totalBytes)).toBe("18.00 MiB");
    expect(plan(llama32_1b, { ctx: 2048 }).kv.totalBytes).toBe(16 * 512 * 2 * 2048 * 2);
  });

  // Source: acceptance figures (Mistral-Small-24B logs). 6656 = 26 x 256, so no padding:
  // 40 x 1024 x 2 x 6656 x 2 B = 1040 MiB; q8_0 x 17/32 = 552.5; q4_0 x 9/32 = 292.5.
  it("Mistral-Small-24B at 6656: 1040 / 552.5 / 292.5 MiB", () => {
    expect(plan(mistralSmall24b, { ctx: 6656 }).kv.totalBytes).toBe(1040 * MiB);
    expect(plan(mistralSmall24b, { ctx: 6656, typeK: "q8_0", typeV: "q8_0" }).kv.totalBytes).toBe(552.5 * MiB);
    expect(plan(mistralSmall24b, { ctx: 6656, typeK: "q4_0", typeV: "q4_0" }).kv.totalBytes).toBe(292.5 * MiB);
  });

  // Source: acceptance figures (gpt-oss-20b, -c 131072 -ub 2048): full cache 131072 cells,
  // 12 layers, 3072.00 MiB; SWA cache 2304 cells = PAD(128 + 2048, 256), 54.00 MiB.
  it("gpt-oss-20b at 131072 with ubatch 2048: full 3072 MiB + SWA 2304 cells / 54 MiB", () => {
    const r = plan(gptOss20b, { ctx: 131072, ubatch: 2048 });
    const full = cache(r.kv.caches, "full");
    const swa = cache(r.kv.caches, "swa");
    expect([full.cells, full.layers, full.kBytes + full.vBytes]).toEqual([131072, 12, 3072 * MiB]);
    expect([swa.cells, swa.layers, swa.kBytes + swa.vBytes]).toEqual([2304, 12, 54 * MiB]);
    expect(formatMiB(swa.kBytes + swa.vBytes)).toBe("54.00 MiB");
  });

  // Source: acceptance figure (stories260K, -c 128): n_ctx padded to 256 cells, 0.16 MiB.
  // 256 x 5 layers x 32 values x 2 x 2 B = 163840 B = 0.15625 MiB -> "0.16".
  it("stories260K at -c 128: 256 cells, 0.16 MiB", () => {
    const r = plan(stories260k, { ctx: 128 });
    expect(r.kv.caches[0]!.cells).toBe(256);
    expect(r.kv.totalBytes).toBe(163840);
    expect(formatMiB(r.kv.totalBytes)).toBe("0.16 MiB");
  });

  // Source: a llama-server sweep on an RTX 4090 (public notes quoting `llama_kv_cache: size`,
  // found via code search): Qwen3-4B (36 layers, 8 KV heads, head 128) gives 144.00 MiB at
  // -c 1024 and 5760.00 MiB at -c 40960, "exact to the byte".
  it("Qwen3-4B: 144.00 MiB at -c 1024, 5760.00 MiB at -c 40960", () => {
    const qwen3_4b = model({ name: "Qwen3-4B", arch: "qwen3", nLayer: 36, nHeadKv: 8, headDim: 128 });
    expect(formatMiB(plan(qwen3_4b, { ctx: 1024 }).kv.totalBytes)).toBe("144.00 MiB");
    expect(formatMiB(plan(qwen3_4b, { ctx: 40960 }).kv.totalBytes)).toBe("5760.00 MiB");
  });

  // Source: public llama-server probe logs for Qwen-7B-Chat (32 layers, 32 KV heads x 128):
  // `llama_kv_cache: size = 1360.00 MiB (512 cells, 32 layers, 10/10 seqs), K (q8_0): 680.00 MiB`
  // for -c 4096 -np 10 -ctk q8_0 -ctv q8_0: PAD(4096/10 = 409, 256) = 512 cells per stream;
  // and `-c 32768 -np 10` f16 allocating 16640.00 MiB (33280 cells), 16384.00 MiB with --kv-unified.
  it("Qwen-7B-Chat: -np 10 streams are padded per stream", () => {
    const qwen7b = model({ name: "Qwen-7B-Chat", arch: "qwen", nLayer: 32, nHeadKv: 32, headDim: 128 });
    const r = plan(qwen7b, { ctx: 4096, seqs: 10, typeK: "q8_0", typeV: "q8_0" });
    const c = r.kv.caches[0]!;
    expect([c.cells, c.layers, c.streams]).toEqual([512, 32, 10]);
    expect(formatMiB(r.kv.totalBytes)).toBe("1360.00 MiB");
    expect(formatMiB(c.kBytes)).toBe("680.00 MiB");
    expect(plan(qwen7b, { ctx: 32768, seqs: 10 }).kv.totalBytes).toBe(16640 * MiB);
    expect(plan(qwen7b, { ctx: 32768, seqs: 10, kvUnified: true }).kv.totalBytes).toBe(16384 * MiB);
    expect(plan(qwen7b, { ctx: 5120, seqs: 10, kvUnified: true, typeK: "q8_0", typeV: "q8_0" }).kv.totalBytes).toBe(1360 * MiB);
  });

  // Source: unslothai/unsloth PR 7530 (measured against llama.cpp build 10107): gemma-3-270m at
  // ctx 1024 allocates 1536 cells / 27.0 MiB with 3 slots but 1024 cells / 18.0 MiB with 4 slots.
  // gemma-3-270m: 18 layers, 1 KV head, head 256, window 512, pattern 6 (3 full, 15 SWA layers).
  it("gemma-3-270m: 3 slots round ctx 1024 up to 1536 cells (27 MiB), 4 slots stay at 1024 (18 MiB)", () => {
    const gemma270m = model({ name: "gemma-3-270m", arch: "gemma3", nLayer: 18, nHeadKv: 1, headDim: 256, swa: { window: 512, pattern: 6 } });
    const three = plan(gemma270m, { ctx: 1024, seqs: 3 });
    expect(three.extra?.["nCtx"]).toBe(1536);
    expect(three.kv.totalBytes).toBe(27 * MiB);
    const four = plan(gemma270m, { ctx: 1024, seqs: 4 });
    expect(four.extra?.["nCtx"]).toBe(1024);
    expect(four.kv.totalBytes).toBe(18 * MiB);
    // Hand check of the 3-slot split: streams of PAD(1024/3, 256) = 512 cells; SWA min(512, 512 + 512).
    expect(cache(three.kv.caches, "full")).toMatchObject({ cells: 512, layers: 3, streams: 3 });
    expect(cache(three.kv.caches, "swa")).toMatchObject({ cells: 512, layers: 15, streams: 3 });
  });
});

describe("llamaCppKv: build history", () => {
  // Source: issue ggml-org/llama.cpp#14847 (build b5913, TinyLlama: 22 layers, 4 KV heads x 64,
  // flash_attn = 0): `llama_kv_cache_unified: size = 88.00 MiB (4096 cells, 22 layers, 1 seqs),
  // K (f16): 44.00 MiB`.
  it("TinyLlama at b5913, -c 4096, flash attention off: 88.00 MiB", () => {
    const tiny = model({ name: "TinyLlama-1.1B", nLayer: 22, nHeadKv: 4, headDim: 64 });
    const r = plan(tiny, { ctx: 4096, flashAttn: false, llamaCppBuild: 5913 });
    expect(r.kv.caches[0]!.cells).toBe(4096);
    expect(formatMiB(r.kv.totalBytes)).toBe("88.00 MiB");
    expect(formatMiB(r.kv.kBytes)).toBe("44.00 MiB");
  });

  it("before PR 16812 the cache pads to 256 with flash attention and to 32 without", () => {
    // Hand computation from get_padding(): -c 1000 -> 1024 (FA) / 1024 (no FA: 1000 -> 1024 = 32 x 32)
    // -c 2000 -> 2048 with FA, 2016 without.
    expect(plan(llama32_1b, { ctx: 2000, llamaCppBuild: 6000, flashAttn: true }).kv.caches[0]!.cells).toBe(2048);
    // b6000 predates -fa auto (b6325, PR 15434): without -fa it runs with flash attention off.
    expect(plan(llama32_1b, { ctx: 2000, llamaCppBuild: 6000 }).kv.caches[0]!.cells).toBe(2016);
    expect(plan(llama32_1b, { ctx: 2000, llamaCppBuild: 6000, flashAttn: false }).kv.caches[0]!.cells).toBe(2016);
    // Streams era: per stream PAD(ceil(2000 / 3) = 667, 32) = 672 cells without FA.
    const r = plan(llama32_1b, { ctx: 2000, seqs: 3, llamaCppBuild: 6000, flashAttn: false });
    expect([r.kv.caches[0]!.cells, r.kv.caches[0]!.streams]).toEqual([672, 3]);
    // Before streams (b5900) the 3 sequences share one cache of 2016 cells.
    const shared = plan(llama32_1b, { ctx: 2000, seqs: 3, llamaCppBuild: 5900, flashAttn: false });
    expect([shared.kv.caches[0]!.cells, shared.kv.caches[0]!.streams]).toEqual([2016, 1]);
  });

  it("between PR 16812 and PR 17046 nothing is padded", () => {
    const rules = llamaCppRules(6900);
    expect(rules.pr).toBe("ggml-org/llama.cpp#16812");
    expect(plan(llama32_1b, { ctx: 2000, llamaCppBuild: 6900 }).kv.caches[0]!.cells).toBe(2000);
    // gpt-oss SWA: min(base, 128 + 512) unpadded = 640 cells.
    expect(cache(plan(gptOss20b, { ctx: 8192, llamaCppBuild: 6900 }).kv.caches, "swa").cells).toBe(640);
  });

  it("SWA cache size across the iSWA history (hand computation from each rule)", () => {
    // n_swa 128, ctx 8192, 4 sequences, ubatch 512, n_batch 2048, FA on (pad 256; -fa given, as
    // these builds predate -fa auto).
    const s = { ctx: 8192, seqs: 4, flashAttn: true };
    expect(plan(gptOss20b, { ...s, llamaCppBuild: 5400 }).kv.caches.map((c) => c.kind)).toEqual(["full"]); // no iSWA yet
    expect(cache(plan(gptOss20b, { ...s, llamaCppBuild: 5500 }).kv.caches, "swa").cells).toBe(2560); // PAD(4 x 128 + 2048)
    expect(cache(plan(gptOss20b, { ...s, llamaCppBuild: 5600 }).kv.caches, "swa").cells).toBe(1024); // PAD(4 x 128 + 512)
    expect(cache(plan(gptOss20b, { ...s, llamaCppBuild: 6000 }).kv.caches, "swa").cells).toBe(768); // PAD(128 + 512), per stream
    expect(cache(plan(gptOss20b, s).kv.caches, "swa").cells).toBe(768); // PAD(min(2048, 128 + 512))
    expect(cache(plan(gptOss20b, { ...s, kvUnified: true }).kv.caches, "swa").cells).toBe(1024); // PAD(min(8192, 4 x 128 + 512))
    expect(cache(plan(gptOss20b, { ...s, swaFull: true }).kv.caches, "swa").cells).toBe(2048); // the per-stream size
  });

  it("MLA stores V until PR 19067, K only after", () => {
    // DeepSeek-V2-Lite shape: 27 layers, kv_lora_rank 512, rope 64 -> K row 576, V row 512.
    const ds = model({
      name: "DeepSeek-V2-Lite",
      arch: "deepseek2",
      nLayer: 27,
      nHeadKv: 1,
      headDim: 576,
      headDimV: 512,
      mla: { kvLoraRank: 512, ropeDim: 64 },
    });
    const now = plan(ds, { ctx: 4096 });
    expect(now.kv.caches[0]!.kind).toBe("mla");
    expect([now.kv.kBytes, now.kv.vBytes]).toEqual([27 * 576 * 2 * 4096, 0]);
    const before = plan(ds, { ctx: 4096, llamaCppBuild: 7000 });
    expect([before.kv.kBytes, before.kv.vBytes]).toEqual([27 * 576 * 2 * 4096, 27 * 512 * 2 * 4096]);
  });

  it("rule history is ordered and the newest entry is the default", () => {
    for (let i = 1; i < LLAMA_CPP_RULE_HISTORY.length; i++) {
      expect(LLAMA_CPP_RULE_HISTORY[i]!.fromBuild).toBeGreaterThan(LLAMA_CPP_RULE_HISTORY[i - 1]!.fromBuild);
    }
    expect(llamaCppRules(undefined)).toBe(LLAMA_CPP_RULE_HISTORY[LLAMA_CPP_RULE_HISTORY.length - 1]);
    expect(llamaCppRules(1).fromBuild).toBe(0);
  });
});

describe("llamaCppKv: layouts", () => {
  it("without flash attention V rows are padded to the widest layer's (TAG_V_CACHE_VARIABLE)", () => {
    const layers: LayerSpec[] = [
      { kind: "attention", nHeadKv: 2, headDimK: 64, headDimV: 64, swa: false },
      { kind: "attention", nHeadKv: 4, headDimK: 64, headDimV: 64, swa: false },
    ];
    const spec = model({ name: "variable", nLayer: 2, nHeadKv: 0, headDim: 0, layers });
    const fa = plan(spec, { ctx: 256 });
    const noFa = plan(spec, { ctx: 256, flashAttn: false });
    expect(fa.kv.vBytes).toBe((128 + 256) * 2 * 256);
    expect(noFa.kv.vBytes).toBe((256 + 256) * 2 * 256);
    expect(noFa.kv.kBytes).toBe(fa.kv.kBytes);
  });

  it("layers that reuse another layer's KV allocate nothing", () => {
    const layers: LayerSpec[] = [
      { kind: "attention", nHeadKv: 1, headDimK: 64, headDimV: 64, swa: false },
      { kind: "attention", nHeadKv: 1, headDimK: 64, headDimV: 64, swa: false, kvFrom: 0 },
    ];
    const r = plan(model({ name: "shared", nLayer: 2, nHeadKv: 0, headDim: 0, layers }), { ctx: 256 });
    expect(r.kv.caches[0]!.layers).toBe(1);
    expect(r.kv.totalBytes).toBe(64 * 2 * 2 * 256);
  });

  it("recurrent state: max(1, seqs) cells of f32 R and S per layer; hybrids report both caches", () => {
    // Mamba-130m-like: d_conv 4, d_inner 1536, d_state 16 -> r = 3 x 1536, s = 16 x 1536.
    const mambaLayers: LayerSpec[] = [];
    for (let i = 0; i < 24; i++) mambaLayers.push({ kind: "recurrent", rElems: 3 * 1536, sElems: 16 * 1536 });
    const mamba = plan(model({ name: "mamba", nLayer: 24, nHeadKv: 0, headDim: 0, layers: mambaLayers }), { seqs: 2 });
    const rc = cache(mamba.kv.caches, "recurrent");
    expect([rc.cells, rc.layers]).toEqual([2, 24]);
    expect(rc.rBytes).toBe(24 * 3 * 1536 * 4 * 2);
    expect(rc.sBytes).toBe(24 * 16 * 1536 * 4 * 2);
    expect(mamba.kv.totalBytes).toBe(rc.rBytes! + rc.sBytes!);

    const hybridLayers: LayerSpec[] = [
      { kind: "recurrent", rElems: 100, sElems: 1000 },
      { kind: "attention", nHeadKv: 2, headDimK: 64, headDimV: 64, swa: false },
    ];
    const hybrid = plan(model({ name: "hybrid", nLayer: 2, nHeadKv: 0, headDim: 0, layers: hybridLayers }), { ctx: 512 });
    expect(hybrid.kv.caches.map((c) => c.kind)).toEqual(["full", "recurrent"]);
    expect(hybrid.kv.totalBytes).toBe(128 * 2 * 2 * 512 + 1100 * 4);
  });

  it("ctx 0 means the training context; seqs and ubatch defaults", () => {
    const r = plan(stories260k, { ctx: 0 });
    expect(r.settings["ctx"]).toBe(512);
    expect(r.kv.caches[0]!.cells).toBe(512);
    expect(plan(llama32_1b).kv.caches[0]!.cells).toBe(4096);
    expect(plan(llama32_1b).settings).toMatchObject({ seqs: 1, kvUnified: false, ubatch: 512, flashAttn: true, swaFull: false, typeK: "f16", typeV: "f16" });
  });

  it("bytesPerCell is the K+V row bytes over the cache's layers", () => {
    const c = plan(llama32_1b, { ctx: 2048, typeK: "q8_0", typeV: "f16" }).kv.caches[0]!;
    expect(c.bytesPerCell).toBe(16 * (544 + 1024));
    expect(c.kBytes + c.vBytes).toBe(c.bytesPerCell * c.cells * c.streams);
  });
});

describe("llamaCppKv: validation", () => {
  it("rejects bad ctx, seqs, ubatch and build with InvalidSettingError naming the setting", () => {
    const cases: Array<[PlanSettings, string]> = [
      [{ ctx: -5 }, "ctx"],
      [{ ctx: 1e12 }, "ctx"],
      [{ ctx: 1.5 }, "ctx"],
      [{ seqs: 0 }, "seqs"],
      [{ seqs: 257 }, "seqs"],
      [{ ubatch: 0 }, "ubatch"],
      [{ llamaCppBuild: -1 }, "llamaCppBuild"],
    ];
    for (const [settings, setting] of cases) {
      try {
        plan(llama32_1b, settings);
        expect.unreachable(`${JSON.stringify(settings)} should throw`);
      } catch (err) {
        expect(err).toBeInstanceOf(InvalidSettingError);
        expect((err as InvalidSettingError).details["setting"]).toBe(setting);
      }
    }
  });

  it("ctx 0 without a training context is an InvalidSettingError", () => {
    expect(() => plan(mistralSmall24b, { ctx: 0 })).toThrow(InvalidSettingError);
  });

  it("unknown cache types", () => {
    expect(() => plan(llama32_1b, { typeK: "q2_k" })).toThrow(UnknownCacheTypeError);
    expect(() => plan(llama32_1b, { typeV: "fp8" })).toThrow(UnknownCacheTypeError);
    expect(LLAMA_CPP_CACHE_TYPES).toContain("iq4_nl");
    // Case-insensitive, as llama.cpp's own names are lower case.
    expect(plan(llama32_1b, { ctx: 2048, typeK: "Q8_0", typeV: "q8_0" }).kv.totalBytes).toBe(34 * MiB);
  });

  it("quantized V needs flash attention; quantized K does not", () => {
    expect(() => plan(llama32_1b, { typeV: "q8_0", flashAttn: false })).toThrow(QuantizedVRequiresFlashAttentionError);
    expect(() => plan(llama32_1b, { typeV: "bf16", flashAttn: false })).not.toThrow();
    expect(() => plan(llama32_1b, { typeK: "q4_0", flashAttn: false })).not.toThrow();
  });

  it("a block size that does not divide the head size is refused (head 80 / head 8 with q4_0)", () => {
    const phi2 = model({ name: "phi-2", nLayer: 32, nHeadKv: 32, headDim: 80 });
    expect(() => plan(phi2, { typeK: "q4_0" })).toThrow(CacheTypeBlockSizeError);
    expect(() => plan(stories260k, { typeV: "q8_0" })).toThrow(CacheTypeBlockSizeError);
    expect(() => plan(phi2, { typeK: "bf16" })).not.toThrow();
  });
});

describe("formatMiB", () => {
  it("prints like printf(\"%.2f\") of the float value, ties to even", () => {
    expect(formatMiB(0)).toBe("0.00 MiB");
    expect(formatMiB(MiB)).toBe("1.00 MiB");
    expect(formatMiB(0.125 * MiB)).toBe("0.12 MiB"); // exact tie: glibc rounds to even
    expect(formatMiB(0.375 * MiB)).toBe("0.38 MiB");
    expect(formatMiB(163840)).toBe("0.16 MiB");
    expect(formatMiB(552.5 * MiB)).toBe("552.50 MiB");
  });
});
