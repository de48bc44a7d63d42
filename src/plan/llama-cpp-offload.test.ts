// The llama.cpp device rule (llama-cpp-offload.ts) against llama.cpp's source as written and
// against published llama.cpp logs with per-device buffer lines. The rules quoted below were read in
// ggml-org/llama.cpp:
//   [LT]  src/llama-model.cpp, llama_model::load_tensors (read at 00342301d0; current master has
//         the same code with `n_layer_all + 1` since PR 18148):
//           splits[i] = cumulative tensor_split (default: each device's free memory) / split_sum
//           i_gpu_start    = max(n_layer + 1 - n_gpu_layers, 0)      (before PR 18148: n_layer - ngl)
//           act_gpu_layers = min(n_gpu_layers, n_layer + 1)
//           slot il on the CPU if il < i_gpu_start || il - i_gpu_start >= act_gpu_layers,
//           else on devices[upper_bound(splits, float(il - i_gpu_start) / act_gpu_layers)]
//           dev_input = CPU ("very little benefit to offloading the input layer");
//           dev_layer[il] = slot il; dev_output = slot n_layer
//   [KV]  src/llama-kv-cache.cpp, llama_kv_cache::llama_kv_cache: per layer
//           `if (offload) { auto * dev = model.dev_layer(il); buft = ggml_backend_dev_buffer_type(dev); }`
//           with K and V tensors [n_embd_k_gqa, kv_size, n_stream] in that buffer
//   [FIT] common/fit.cpp, common_params_fit_impl (read at 08033df02c): targets = free - margin
//           (--fit-target, default 1024 MiB, common.h fit_params_target); no change when every
//           device meets its target; else, with n_gpu_layers / tensor_split not set by the user,
//           "iteratively fill the back to front with dense layers": for id = nd-1 .. 0 the most
//           layers that keep device id under its target; n_gpu_layers = sum, tensor_split[id] = count
//   [Q]   src/llama-quant.cpp, llama_tensor_get_type_impl (read at 007dbbf3fd): Q4_K_M keeps Q4_K
//           except attn_v and ffn_down where use_more_bits(i, n) (i < n/8 || i >= 7n/8 ||
//           (i - n/8) % 3 == 2) gives Q6_K; output.weight Q6_K; 1-D tensors are never quantized.
// Block sizes (ggml-common.h): Q4_K 144 B per 256 values, Q6_K 210 B per 256, F32 4 B.

import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { describe, expect, it } from "vitest";

import { InvalidSettingError } from "../errors.js";
import { loadModelSpec } from "../spec/load.js";
import { registrySpec } from "../spec/registry.js";
import type { ModelSpec } from "../spec/model-spec.js";
import { testSpec } from "../../test/helpers/spec.js";
import { exportPlan } from "./export.js";
import { fitContexts, fitOffload } from "./fit.js";
import { formatMiB } from "./llama-cpp.js";
import { llamaCppSlotDevices, llamaCppSplitPoints } from "./llama-cpp-offload.js";
import { llamaCppLayerWeights } from "./llama-cpp-tensors.js";
import { planMemory } from "./plan.js";
import type { DevicePlan, MemoryPlan, PlanSettings } from "./types.js";
import { planVerdict } from "./verdict.js";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/** llama.cpp's "%.2f MiB" of a buffer size (model/compute buffers are printed from a double). */
const mib2 = (bytes: number): string => (bytes / MiB).toFixed(2);

function plan(spec: ModelSpec, settings: PlanSettings): MemoryPlan {
  return planMemory(spec, { engine: "llama.cpp", ...settings });
}

function device(p: MemoryPlan, name: string): DevicePlan {
  const d = p.devices?.find((x) => x.name === name);
  if (d === undefined) throw new Error(`no device ${name}`);
  return d;
}

const range = (a: number, b: number): number[] => Array.from({ length: b - a + 1 }, (_, i) => a + i);

// ---------------------------------------------------------------------------------------------
// Llama-3.1-8B Q4_K_M, by hand from [Q]: 32 layers of 4096 (32 heads, 8 KV heads of 128), FFN 14336,
// vocab 128256, untied output.
const q4k = (values: number): number => (values / 256) * 144;
const q6k = (values: number): number => (values / 256) * 210;
const NORMS = 2 * 4096 * 4; // attn_norm + ffn_norm, F32
/** A layer whose attn_v and ffn_down stay Q4_K. */
const L4 = NORMS + q4k(2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336);
/** A use_more_bits layer: attn_v (4096 x 1024) and ffn_down (14336 x 4096) in Q6_K. */
const L6 = NORMS + q4k(2 * 4096 * 4096 + 4096 * 1024 + 2 * 4096 * 14336) + q6k(4096 * 1024 + 14336 * 4096);
const MORE_BITS = new Set([0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]);
const layerBytes = (il: number): number => (MORE_BITS.has(il) ? L6 : L4);
const sumLayers = (ils: readonly number[]): number => ils.reduce((a, il) => a + layerBytes(il), 0);
const TOKEN_EMBD = q4k(4096 * 128256); // input layer, Q4_K (not tied)
const OUTPUT = q6k(4096 * 128256) + 4096 * 4; // output.weight Q6_K + output_norm F32
/** [KV]: one f16 layer at 32768 cells: 32768 x (1024 K + 1024 V) x 2 B = 128 MiB. */
const KV_LAYER_32K = 32768 * 2048 * 2;
/** Estimated compute, see llama-cpp-offload.ts computeBuffers: logits 512 x 128256 f32 next to a hidden state. */
const LOGITS_PART = 4 * 512 * (4096 + 128256);
/** The CPU's: token embeddings 512 x 4096 f32, the KQ mask 32768 x 512 f32, positions; + logits output buffer. */
const CPU_COMPUTE_32K = 4 * 512 * 4096 + 4 * 32768 * 512 + 4 * 512 + 4 * 128256;

describe("layer slots: load_tensors' get_layer_buft_list [LT]", () => {
  it("one GPU: -ngl 33 of a 32-layer model puts every slot there; -ngl 26 starts at slot 33 - 26 = 7", () => {
    const one = llamaCppSplitPoints([8 * GiB]);
    expect(llamaCppSlotDevices(32, 33, one, true)).toEqual(new Array(33).fill(0));
    const s = llamaCppSlotDevices(32, 26, one, true);
    expect(s.slice(0, 7)).toEqual(new Array(7).fill(-1)); // il < i_gpu_start = 7
    expect(s.slice(7)).toEqual(new Array(26).fill(0)); // layers 7-31 and the output slot 32
  });

  it("before PR 18148 -ngl 20 covers layers 12-31 and leaves the output slot on the CPU (i_gpu_start = 32 - 20)", () => {
    const s = llamaCppSlotDevices(32, 20, llamaCppSplitPoints([1]), false);
    expect(s.slice(0, 12)).toEqual(new Array(12).fill(-1));
    expect(s.slice(12, 32)).toEqual(new Array(20).fill(0));
    // slot 32: il - i_gpu_start = 20 >= act_gpu_layers = 20, so the CPU (the Mistral log below says
    // "load_tensors: layer 32 assigned to device CPU").
    expect(s[32]).toBe(-1);
  });

  it("two GPUs: slots go by cumulative split fractions over the offloaded slots, the output slot counted", () => {
    // Equal split: points [0.5, 1]; slot il goes to GPU0 while il/33 < 0.5, i.e. slots 0-16.
    const even = llamaCppSlotDevices(32, 33, llamaCppSplitPoints([8 * GiB, 8 * GiB]), true);
    expect(even.filter((d) => d === 0)).toHaveLength(17);
    expect(even.slice(17)).toEqual(new Array(16).fill(1));
    // 3,1: points [0.75, 1]; 24/33 = 0.727 < 0.75 <= 25/33: slots 0-24 on GPU0, 25-32 on GPU1.
    const s31 = llamaCppSlotDevices(32, 33, llamaCppSplitPoints([3, 1]), true);
    expect(s31.lastIndexOf(0)).toBe(24);
    expect(s31.slice(25)).toEqual(new Array(8).fill(1));
    // -ngl 20 over two GPUs: i_gpu_start 13, act 20, (il - 13)/20 < 0.5 for il 13-22.
    const part = llamaCppSlotDevices(32, 20, llamaCppSplitPoints([1, 1]), true);
    expect(part.slice(0, 13)).toEqual(new Array(13).fill(-1));
    expect(part.slice(13, 23)).toEqual(new Array(10).fill(0));
    expect(part.slice(23)).toEqual(new Array(10).fill(1));
  });
});

describe("weights by layer slot [Q]", () => {
  it("Llama-3.1-8B Q4_K_M (registry, no tensor table): derived from the mix, 16 use_more_bits layers", () => {
    const w = llamaCppLayerWeights(registrySpec("llama-3.1-8b"))!;
    expect(w.source).toBe("quant-mix");
    expect(w.input).toBe(TOKEN_EMBD);
    expect(w.output).toBe(OUTPUT);
    for (let il = 0; il < 32; il++) expect(w.layers[il], `layer ${il}`).toBe(layerBytes(il));
    // 281.81 MiB of token embeddings and 4403.49 MiB for every layer + the output layer: the
    // "CPU buffer size" / "CUDA0 buffer size" lines of the fully offloaded log below.
    expect(mib2(w.input)).toBe("281.81");
    expect(mib2(sumLayers(range(0, 31)) + OUTPUT)).toBe("4403.49");
    // The whole file (without the 256 B rope_freqs table the registry does not know about):
    // 4.58 GiB, llama.cpp's "model size = 4.58 GiB (4.89 BPW)" for this model.
    const total = w.input + w.output + sumLayers(range(0, 31));
    expect((total / GiB).toFixed(2)).toBe("4.58");
  });

  it("a GGUF tensor table: blocks by index, token_embd to the CPU, rope_freqs once per buffer, a tied output copied", () => {
    const spec: ModelSpec = {
      ...testSpec({ name: "tied", nLayer: 2, nHeadKv: 1, headDim: 8, nEmbd: 8, nHead: 1, nFf: 16, nVocab: 10 }),
      weights: { bytes: 1000, quant: "F16", source: "gguf-tensors" },
      tensorBytes: {
        "token_embd.weight": 160,
        "output_norm.weight": 32,
        "rope_freqs.weight": 16,
        "blk.0.attn_q.weight": 128,
        "blk.0.ffn_down.weight": 256,
        "blk.1.attn_q.weight": 128,
        "blk.1.ffn_down.weight": 256,
      },
    };
    const w = llamaCppLayerWeights(spec)!;
    expect(w).toMatchObject({ input: 160, output: 32, shared: 16, outputTied: true, tiedBytes: 160, layers: [384, 384], layerMatrix: [256, 256] });
    // -ngl 2: layer 1 and the output slot on GPU0; the tied output is created again there.
    const p = plan(spec, { ctx: 256, gpus: [GiB], nGpuLayers: 2, fitTargetBytes: 0 });
    expect(device(p, "GPU0")).toMatchObject({ layers: [1], output: true, weights: 384 + 16 + 32 + 160 });
    expect(device(p, "CPU")).toMatchObject({ layers: [0], output: false, weights: 160 + 384 + 16 });
  });
});

const STORIES = fileURLToPath(new URL("../../../shared/models/stories260K.gguf", import.meta.url));

describe.skipIf(!existsSync(STORIES))("a real GGUF's tensor table (stories260K)", () => {
  it("every tensor lands on exactly one device: the devices' weights add up to the file's tensor bytes", async () => {
    const spec = await loadModelSpec(STORIES);
    expect(spec.tensorBytes).toBeDefined();
    const w = llamaCppLayerWeights(spec)!;
    expect(w.source).toBe("gguf-tensors");
    expect(w.outputTied).toBe(false); // the file has its own output.weight
    const p = plan(spec, { ctx: 128, gpus: [GiB], nGpuLayers: 3, fitTargetBytes: 0 });
    expect(device(p, "GPU0").layers).toEqual([3, 4]); // i_gpu_start = 5 + 1 - 3 = 3; slot 5 = output
    const sum = p.devices!.reduce((a, d) => a + d.weights, 0);
    expect(sum).toBe(spec.weights!.bytes);
    let blk3 = 0;
    for (const [name, bytes] of Object.entries(spec.tensorBytes!)) if (name.startsWith("blk.3.")) blk3 += bytes;
    expect(w.layers[3]).toBe(blk3);
  });
});

describe("acceptance: Llama-3.1-8B Q4_K_M at 32k on one 8 GiB GPU", () => {
  const spec = registrySpec("llama-3.1-8b");
  const p = plan(spec, { ctx: 32768, gpus: [8 * GiB] });
  const gpu = device(p, "GPU0");
  const cpu = device(p, "CPU");

  it("--fit picks -ngl 26: layers 7-31 and the output layer on GPU0, layers 0-6 and the embeddings in RAM", () => {
    expect(p.settings["ngl"]).toBe(26);
    expect(gpu.layers).toEqual(range(7, 31)); // i_gpu_start = 32 + 1 - 26 = 7 [LT]
    expect(gpu.output).toBe(true); // slot 32 is inside [7, 7 + 26)
    expect(cpu.layers).toEqual(range(0, 6));
    expect(cpu.input).toBe(true); // dev_input is always the CPU [LT]
  });

  it("GPU0: its layers' weights + the output layer, 25 layers of KV, the logits compute (estimate)", () => {
    expect(gpu.weights).toBe(sumLayers(range(7, 31)) + OUTPUT); // 11 Q6_K-heavy layers, 14 plain ones
    expect(gpu.weights).toBe(11 * L6 + 14 * L4 + OUTPUT);
    expect(gpu.kv).toBe(25 * KV_LAYER_32K); // 3200 MiB: each layer's K/V on its own device [KV]
    expect(gpu.compute).toBe(LOGITS_PART); // 258.50 MiB
    expect(gpu.total).toBe(gpu.weights + gpu.kv + gpu.compute);
    expect(mib2(gpu.total)).toBe("6965.43");
    // [FIT]: it keeps the 1024 MiB target free; one more layer (layer 6, Q6_K-heavy) would not.
    expect(gpu.total + 1024 * MiB).toBeLessThanOrEqual(8 * GiB);
    expect(gpu.total + L6 + KV_LAYER_32K + 1024 * MiB).toBeGreaterThan(8 * GiB);
    const one_more = plan(spec, { ctx: 32768, gpus: [8 * GiB], nGpuLayers: 27 });
    expect(device(one_more, "GPU0").fits).toBe(false);
  });

  it("RAM: 7 layers (5 of them use_more_bits) + token embeddings, 7 layers of KV, inputs + logits buffer", () => {
    expect(cpu.weights).toBe(TOKEN_EMBD + 5 * L6 + 2 * L4);
    expect(cpu.kv).toBe(7 * KV_LAYER_32K); // 896 MiB
    expect(cpu.compute).toBe(CPU_COMPUTE_32K);
  });

  it("the flags that realize it, and the verdict per device", () => {
    expect(exportPlan(p, "llama.cpp")).toBe("-c 32768 -np 1 -ub 512 -ctk f16 -ctv f16 -fa on -ngl 26");
    const v = planVerdict(p, 8 * GiB);
    expect(v.rule).toBe("devices");
    expect(v.fits).toBe(true);
    expect(v.line).toContain("-ngl 26: GPU0 6.80 GiB of 8.00 GiB");
  });

  it("fitOffload: f16 needs 7 layers in RAM; q8_0 and q4_0 caches let all 33 slots onto the GPU", () => {
    const r = fitOffload(spec, 32768, { gpus: [8 * GiB] });
    expect(r.options.map((o) => [o.label, o.nGpuLayers, o.fits])).toEqual([
      ["f16 K+V", 26, true],
      ["q8_0 K+V", 33, true],
      ["q4_0 K+V", 33, true],
    ]);
    // q8_0: 34 B per 32 values -> 32768 x 2048 x 34/32 per layer, all 32 layers on GPU0.
    const q8 = r.options[1]!.devices.find((d) => d.name === "GPU0")!;
    expect(q8.kv).toBe(32 * 32768 * 2048 * (34 / 32));
    expect(q8.weights).toBe(sumLayers(range(0, 31)) + OUTPUT);
    expect(r.options[0]!.note).toContain("in RAM: layers 0-6 (7 of 32), the token embeddings");
  });

  it("fitContexts at full offload: the largest -c per KV type for the 8 GiB GPU", () => {
    const f = fitContexts(spec, { engine: "llama.cpp", budgetBytes: 8 * GiB, gpus: [8 * GiB] });
    const f16 = f.options.find((o) => o.label === "f16 K+V")!;
    // Every slot on GPU0: weights 4403.49 MiB + 128 KiB of KV per token + 258.50 MiB compute must
    // stay under 7 GiB: (7168 - 4403.49 - 258.50) MiB / 128 KiB = 20048 tokens, 19968 on the 256 grid.
    expect(f16.maxCtx).toBe(19968);
    const at = plan(spec, { ctx: 19968, gpus: [8 * GiB], nGpuLayers: 33 });
    expect(device(at, "GPU0").fits).toBe(true);
    expect(device(plan(spec, { ctx: 20224, gpus: [8 * GiB], nGpuLayers: 33 }), "GPU0").fits).toBe(false);
  });
});

describe("acceptance: Llama-3.1-8B Q4_K_M at 32k split over two GPUs", () => {
  const spec = registrySpec("llama-3.1-8b");

  it("2 x 8 GiB: everything fits, so --fit changes nothing: 33 slots split by free memory 17 / 16", () => {
    const p = plan(spec, { ctx: 32768, gpus: [8 * GiB, 8 * GiB] });
    expect(p.settings["ngl"]).toBe(33);
    expect(p.settings["tensorSplit"]).toEqual([17, 16]);
    const g0 = device(p, "GPU0");
    const g1 = device(p, "GPU1");
    expect(g0.layers).toEqual(range(0, 16)); // slot il/33 < 0.5 [LT]
    expect(g1.layers).toEqual(range(17, 31));
    expect(g1.output).toBe(true);
    // GPU0: layers 0-16 (use_more_bits: 0-3, 6, 9, 12, 15 = 8), 17 layers of KV, FFN activations
    // (no output layer here: gate + up 2 x 512 x 14336 f32 + 2 hidden states, an estimate).
    expect(g0.weights).toBe(8 * L6 + 9 * L4);
    expect(g0.kv).toBe(17 * KV_LAYER_32K);
    expect(g0.compute).toBe(4 * 512 * (2 * 14336 + 2 * 4096));
    // GPU1: layers 17-31 (18, 21, 24, 27-31 = 8 use_more_bits) + the output layer.
    expect(g1.weights).toBe(8 * L6 + 7 * L4 + OUTPUT);
    expect(g1.kv).toBe(15 * KV_LAYER_32K);
    expect(g1.compute).toBe(LOGITS_PART);
    expect(device(p, "CPU")).toMatchObject({ layers: [], weights: TOKEN_EMBD, kv: 0 });
    expect(exportPlan(p, "llama.cpp")).toBe("-c 32768 -np 1 -ub 512 -ctk f16 -ctv f16 -fa on -ngl 33 --tensor-split 17,16");
  });

  it("2 x 4 GiB: --fit fills GPU1 first (with the output layer), then GPU0, each to its target; the rest stays in RAM", () => {
    const p = plan(spec, { ctx: 32768, gpus: [4 * GiB, 4 * GiB] });
    const split = p.settings["tensorSplit"] as number[];
    expect(p.settings["ngl"]).toBe(split[0]! + split[1]!);
    expect(split).toEqual([11, 10]);
    const g0 = device(p, "GPU0");
    const g1 = device(p, "GPU1");
    // Contiguous, back to front: CPU 0-11 | GPU0 12-22 | GPU1 23-31 + output.
    expect(device(p, "CPU").layers).toEqual(range(0, 11));
    expect(g0.layers).toEqual(range(12, 22));
    expect(g1.layers).toEqual(range(23, 31));
    expect(g1.output).toBe(true);
    for (const g of [g0, g1]) expect(g.total + 1024 * MiB).toBeLessThanOrEqual(4 * GiB);
    // One more slot on either GPU would break its target [FIT]: GPU1 would take layer 22, GPU0 layer 11.
    expect(g1.total + layerBytes(22) + KV_LAYER_32K + 1024 * MiB).toBeGreaterThan(4 * GiB);
    expect(g0.total + layerBytes(11) + KV_LAYER_32K + 1024 * MiB).toBeGreaterThan(4 * GiB);
    expect(exportPlan(p, "llama.cpp")).toContain("-ngl 21 --tensor-split 11,10");
  });

  it("a given --tensor-split is kept (--fit does not touch it with several GPUs) and realized as slot counts", () => {
    const p = plan(spec, { ctx: 4096, gpus: [8 * GiB, 8 * GiB], tensorSplit: [3, 1] });
    expect(p.settings["ngl"]).toBe(33);
    expect(p.settings["tensorSplit"]).toEqual([25, 8]); // slots 0-24 | 25-32, as in the slot test
  });
});

describe("published llama.cpp logs with per-device buffers", () => {
  // MagicWand18/Securetag-AI-Agent runpod-deploy/logcompleto.md (2025-12-01): Ollama 0.5.4's
  // llama.cpp runner on an RTX 4090 loading Meta Llama 3.1 8B Instruct Q4_K_M ("type f32: 66,
  // q4_K: 193, q6_K: 33" tensors: [Q]'s mix plus rope_freqs) with
  // `--ctx-size 8192 --batch-size 512 --n-gpu-layers 33 --parallel 4`, flash_attn = 0:
  //   llm_load_tensors: offloaded 33/33 layers to GPU
  //   llm_load_tensors:          CPU model buffer size =   281.81 MiB
  //   llm_load_tensors:        CUDA0 model buffer size =  4403.49 MiB
  //   llama_kv_cache_init:      CUDA0 KV buffer size =  1024.00 MiB
  //   llama_new_context_with_model:      CUDA0 compute buffer size =   560.00 MiB
  //   llama_new_context_with_model:  CUDA_Host compute buffer size =    24.01 MiB
  // Ollama 0.5.4 (December 2024) bundles llama.cpp from before per-sequence streams (one 8192-cell
  // cache for the 4 slots) and before PR 18148 (-ngl 33 = n_layer + 1 also takes the output layer).
  it("Llama 3.1 8B Q4_K_M, -ngl 33 -c 8192 -np 4, no flash attention (Ollama 0.5.4)", () => {
    const p = plan(registrySpec("llama-3.1-8b"), { ctx: 8192, seqs: 4, ubatch: 512, flashAttn: false, llamaCppBuild: 4400, gpus: [24 * GiB], nGpuLayers: 33 });
    const gpu = device(p, "GPU0");
    const cpu = device(p, "CPU");
    expect(gpu.layers).toHaveLength(32);
    expect(gpu.output).toBe(true);
    expect(mib2(cpu.weights)).toBe("281.81");
    expect(mib2(gpu.weights)).toBe("4403.49");
    expect(formatMiB(gpu.kv)).toBe("1024.00 MiB");
    // The compute estimate: KQ scores 8192 x 512 x 32 f32 + the f32 mask copy + 4 hidden states.
    expect(gpu.compute).toBe(4 * 512 * (4 * 4096 + 8192 * (32 + 1)));
    expect(mib2(gpu.compute)).toBe("560.00");
    // The CPU's compute estimate (without the 4 x 128256 x 4 B logits buffer, printed apart as
    // "output buffer") is within 0.01 MiB of the 24.01 MiB host buffer.
    const hostCompute = cpu.compute - 4 * 128256 * 4;
    expect(Math.abs(hostCompute / MiB - 24.01)).toBeLessThan(0.015);
  });

  // Guy Tel-Zur, "A GPU-Accelerated RAG-Based Telegram Assistant for Supporting Parallel Processing
  // Students" (EduHPC25, arXiv 2509.11947), Appendix B: llama-cpp-python on an RTX 4060 Laptop GPU
  // loading mistral-7b-instruct-v0.1.Q4_K_M.gguf (32 layers of 4096, FFN 14336, vocab 32000, 7.24 B
  // params, "file size = 4.07 GiB (4.83 BPW)", "q4_K: 193, q6_K: 33, f32: 65") with
  // n_ctx 768, n_batch = n_ubatch 256, n_gpu_layers 20, flash_attn 1, build with kv_cache_unified:
  //   load_tensors: layer 0..11 assigned to device CPU; 12..31 to CUDA0; layer 32 assigned to device CPU
  //   load_tensors: CUDA0 model buffer size = 2495.31 MiB
  //   llama_context: CPU output buffer size = 0.12 MiB
  //   llama_kv_cache_unified: CUDA0 KV buffer size = 60.00 MiB
  //   llama_kv_cache_unified: CPU KV buffer size = 36.00 MiB
  //   llama_context: CUDA0 compute buffer size = 137.79 MiB
  //   llama_context: CUDA_Host compute buffer size = 4.76 MiB
  // (Its "CPU_Mapped model buffer size = 4165.37 MiB" is the mmap span of the file from the first to
  // the last CPU tensor, token_embd to output.weight: nearly the whole file, see the plan's note.)
  it("Mistral-7B-Instruct-v0.1 Q4_K_M, -ngl 20 -c 768 -ub 256 -fa (arXiv 2509.11947)", () => {
    // By [Q] the same layers as Llama-3.1-8B's; embeddings 32000 x 4096 Q4_K, output Q6_K.
    const mistral = testSpec({
      name: "Mistral-7B-Instruct-v0.1",
      nLayer: 32,
      nHeadKv: 8,
      headDim: 128,
      nEmbd: 4096,
      nHead: 32,
      nFf: 14336,
      nVocab: 32000,
      nCtxTrain: 32768,
      params: 32 * 218_112_000 + 2 * 32000 * 4096 + 4096, // 7,241,732,096: untied
      weights: { bytes: 4_367_704_064, quant: "Q4_K_M", source: "registry" },
    });
    const w = llamaCppLayerWeights(mistral)!;
    expect(w.source).toBe("quant-mix");
    expect(((w.input + w.output + w.layers.reduce((a, b) => a + b, 0)) / GiB).toFixed(2)).toBe("4.07");
    const p = plan(mistral, { ctx: 768, ubatch: 256, flashAttn: true, llamaCppBuild: 6300, gpus: [8 * GiB], nGpuLayers: 20 });
    const gpu = device(p, "GPU0");
    const cpu = device(p, "CPU");
    expect(gpu.layers).toEqual(range(12, 31));
    expect(cpu.layers).toEqual(range(0, 11));
    expect(cpu.output).toBe(true); // "layer 32 assigned to device CPU"
    expect(mib2(gpu.weights)).toBe("2495.31");
    expect(formatMiB(gpu.kv)).toBe("60.00 MiB"); // 20 x 768 x 2048 x 2 B
    expect(formatMiB(cpu.kv)).toBe("36.00 MiB"); // 12 layers
    // Estimate: GPU0 runs the 256-token matmul of the host-memory output.weight (Q6_K, 4096 x 32000)
    // next to the logits 256 x 32000 f32 and a hidden state: 102.54 + 31.25 + 4.00 MiB.
    expect(gpu.compute).toBe(q6k(4096 * 32000) + 4 * 256 * (4096 + 32000));
    expect(mib2(gpu.compute)).toBe("137.79");
    const outputBuffer = 4 * 32000; // "CPU output buffer size = 0.12 MiB"
    expect(mib2(outputBuffer)).toBe("0.12");
    expect(Math.abs((cpu.compute - outputBuffer) / MiB - 4.76)).toBeLessThan(0.015);
  });
});

describe("options", () => {
  const spec = registrySpec("llama-3.1-8b");

  it("-nkvo keeps every layer's KV in RAM", () => {
    const p = plan(spec, { ctx: 8192, gpus: [24 * GiB], nGpuLayers: 33, kvOffload: false });
    expect(device(p, "GPU0").kv).toBe(0);
    expect(device(p, "CPU").kv).toBe(p.kv.totalBytes);
    expect(exportPlan(p, "llama.cpp")).toContain("-ngl 33 -nkvo");
  });

  it("--ram judges the host side too", () => {
    const p = plan(spec, { ctx: 32768, gpus: [8 * GiB], ramBytes: 1 * GiB });
    expect(device(p, "CPU").fits).toBe(false);
    const v = planVerdict(p, 1);
    expect(v.fits).toBe(false);
    expect(v.line).toMatch(/^does not fit: CPU needs/);
  });

  it("old builds: -ngl defaults to all layers from b6325 (no --fit before ~b7400), to 0 before", () => {
    expect(plan(spec, { ctx: 32768, gpus: [8 * GiB], llamaCppBuild: 7000 }).settings["ngl"]).toBe(33);
    expect(plan(spec, { ctx: 32768, gpus: [8 * GiB], llamaCppBuild: 6000 }).settings["ngl"]).toBe(0);
  });

  it("refuses what llama.cpp would not take", () => {
    expect(() => plan(spec, { gpus: [] })).toThrow(InvalidSettingError);
    expect(() => plan(spec, { gpus: [8 * GiB], tensorSplit: [1, 1] })).toThrow(InvalidSettingError);
    expect(() => plan(spec, { gpus: [8 * GiB], nGpuLayers: -1 })).toThrow(InvalidSettingError);
    expect(() => planMemory(spec, { engine: "vllm", gpus: [8 * GiB] })).toThrow(InvalidSettingError);
  });

  it("without gpus the plan has no devices and the JSON contract is unchanged", () => {
    const p = plan(spec, { ctx: 4096 });
    expect(p.devices).toBeUndefined();
    expect(Object.keys(p.settings)).not.toContain("ngl");
  });
});
