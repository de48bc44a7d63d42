// Exports that do what the plan says. Each export is held to a fact recorded from the engine's own
// source: node-llama-cpp 3.22.1 as installed in bench/peers (read from its files when present),
// llama.cpp's flag history by build (src/plan/llama-cpp-builds.ts, PRs cited there), WebLLM's
// ChatConfig override names.

import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { describe, expect, it } from "vitest";

import { InvalidSettingError } from "../src/errors.js";
import { exportPlan, NODE_LLAMA_CPP_VERSION } from "../src/plan/export.js";
import { LLAMA_CPP_FA_FLAG_BUILD, LLAMA_CPP_FA_VALUE_BUILD, LLAMA_CPP_KV_UNIFIED_FLAG_BUILD } from "../src/plan/llama-cpp-builds.js";
import { planMemory, type PlanRequest } from "../src/plan/plan.js";
import { registrySpec } from "../src/spec/registry.js";
import { LLAMA_31_8B } from "./helpers/spec.js";

const NLC = fileURLToPath(new URL("../bench/peers/node_modules/node-llama-cpp/", import.meta.url));
const haveNlc = existsSync(`${NLC}package.json`);

const plan = (req: PlanRequest) => planMemory(LLAMA_31_8B, req);

describe("node-llama-cpp export: contextSize is per sequence", () => {
  it("--seqs 4 at ctx 8192: contextSize 2048 x 4 sequences = the plan's 4 streams of 2048 cells, no kvUnified key", () => {
    const p = plan({ ctx: 8192, seqs: 4 });
    expect(p.kv.caches[0]).toMatchObject({ cells: 2048, streams: 4 });
    const options = JSON.parse(exportPlan(p, "node-llama-cpp")) as Record<string, unknown>;
    expect(options).toEqual({ contextSize: 2048, sequences: 4, batchSize: 512, flashAttention: true });
    // node-llama-cpp allocates n_ctx = contextSize x sequences, one stream each: the plan's bytes.
    const perCell = p.kv.caches[0]!.bytesPerCell;
    expect((options.contextSize as number) * (options.sequences as number) * perCell).toBe(p.kv.totalBytes);
  });

  it("a unified cache for several sequences is refused (3.22.1 has no kvUnified); one sequence needs no flag", () => {
    expect(() => exportPlan(plan({ ctx: 8192, seqs: 4, kvUnified: true }), "node-llama-cpp")).toThrow(InvalidSettingError);
    expect(() => exportPlan(plan({ ctx: 8192, seqs: 4, kvUnified: true }), "node-llama-cpp")).toThrow(/no kvUnified option/);
    expect(JSON.parse(exportPlan(plan({ ctx: 8192, kvUnified: true }), "node-llama-cpp"))).not.toHaveProperty("kvUnified");
  });

  it("an old build's plan is refused: node-llama-cpp runs the llama.cpp it bundles", () => {
    expect(() => exportPlan(plan({ ctx: 4096, llamaCppBuild: 6000 }), "node-llama-cpp")).toThrow(/llamaCppBuild/);
  });

  it("SWA models: batchSize is one less, as LlamaContext adds 1 for SWA caches without swaFullCache", () => {
    const gptOss = registrySpec("gpt-oss-20b");
    const p = planMemory(gptOss, { ctx: 8192 });
    expect(p.kv.caches.map((c) => c.kind)).toContain("swa");
    expect(JSON.parse(exportPlan(p, "node-llama-cpp")).batchSize).toBe(511);
    // With swaFullCache node-llama-cpp adds nothing.
    expect(JSON.parse(exportPlan(planMemory(gptOss, { ctx: 8192, swaFull: true }), "node-llama-cpp")).batchSize).toBe(512);
  });

  it.skipIf(!haveNlc)(`the installed node-llama-cpp is ${NODE_LLAMA_CPP_VERSION} and its source says what the export assumes`, () => {
    const pkg = JSON.parse(readFileSync(`${NLC}package.json`, "utf8")) as { version: string };
    expect(pkg.version).toBe(NODE_LLAMA_CPP_VERSION);
    const context = readFileSync(`${NLC}dist/evaluator/LlamaContext/LlamaContext.js`, "utf8");
    // n_ctx handed to llama.cpp is contextSize x sequences ...
    expect(context).toMatch(/contextSize: padSafeContextSize\(this\._contextSize \* this\._totalSequences, "up"\)/);
    // ... batchSize + 1 for SWA models without swaFullCache ...
    expect(context).toMatch(/batchSize: this\._batchSize \+ \(\(!this\._swaFullCache && this\.model\.fileInsights\.swaSize != null/);
    // ... and contexts are never unified.
    expect(context).toMatch(/const kvUnified = false;/);
    expect(readFileSync(`${NLC}llama/addon/AddonContext.cpp`, "utf8")).toMatch(/context_params\.kv_unified = false;/);
    // Every option the export writes is a LlamaContextOptions key of this version; kvUnified is not one.
    const types = readFileSync(`${NLC}dist/evaluator/LlamaContext/types.d.ts`, "utf8");
    const optionsBlock = types.slice(types.indexOf("export type LlamaContextOptions = {"), types.indexOf("export type LlamaContextSequenceRepeatPenalty"));
    expect(optionsBlock).not.toMatch(/\bkvUnified\??:/);
    const written = {
      ...JSON.parse(exportPlan(plan({ ctx: 8192, seqs: 2, typeK: "q8_0", typeV: "q8_0" }), "node-llama-cpp")),
      ...JSON.parse(exportPlan(planMemory(registrySpec("gpt-oss-20b"), { ctx: 8192, swaFull: true }), "node-llama-cpp")),
    } as Record<string, unknown>;
    for (const key of Object.keys(written)) expect(optionsBlock, key).toMatch(new RegExp(`\\n\\s+${key}\\??:`));
  });
});

describe("llama.cpp export by build", () => {
  const flags = (req: PlanRequest): string => exportPlan(plan({ ctx: 8192, ...req }), "llama.cpp");

  it("current and b6325+: -fa on|off, --kv-unified", () => {
    expect(flags({})).toBe("-c 8192 -np 1 -ub 512 -ctk f16 -ctv f16 -fa on");
    expect(flags({ flashAttn: false })).toContain("-fa off");
    expect(flags({ llamaCppBuild: LLAMA_CPP_FA_VALUE_BUILD, seqs: 2, kvUnified: true })).toMatch(/-fa on --kv-unified$/);
  });

  it("b2771..b6324: -fa is a bare switch, never '-fa on' or '-fa off'; the plan defaults to flash attention off", () => {
    const b = LLAMA_CPP_FA_VALUE_BUILD - 1;
    const off = plan({ ctx: 8192, llamaCppBuild: b });
    expect(off.settings.flashAttn).toBe(false);
    expect(off.notes.join(" ")).toMatch(/predates -fa auto/);
    expect(exportPlan(off, "llama.cpp")).not.toMatch(/-fa/);
    expect(flags({ llamaCppBuild: b, flashAttn: true })).toMatch(/ -fa$/);
    expect(flags({ llamaCppBuild: LLAMA_CPP_FA_FLAG_BUILD, flashAttn: true })).toMatch(/ -fa$/);
  });

  it("before b2771 there is no flash attention: planning it is an error, the export has no -fa", () => {
    expect(() => plan({ llamaCppBuild: LLAMA_CPP_FA_FLAG_BUILD - 1, flashAttn: true })).toThrow(InvalidSettingError);
    expect(flags({ llamaCppBuild: LLAMA_CPP_FA_FLAG_BUILD - 1 })).not.toMatch(/-fa/);
  });

  it("--kv-unified only from b5913 (before it one shared cache was the only kind); --swa-full only with the SWA cache", () => {
    expect(flags({ llamaCppBuild: LLAMA_CPP_KV_UNIFIED_FLAG_BUILD - 1, seqs: 4, kvUnified: true, flashAttn: true })).not.toMatch(/--kv-unified/);
    expect(flags({ llamaCppBuild: LLAMA_CPP_KV_UNIFIED_FLAG_BUILD, seqs: 4, kvUnified: true, flashAttn: true })).toMatch(/--kv-unified/);
    const gptOss = registrySpec("gpt-oss-20b");
    expect(exportPlan(planMemory(gptOss, { ctx: 8192, swaFull: true, llamaCppBuild: 5400, flashAttn: true }), "llama.cpp")).not.toMatch(/--swa-full/);
    expect(exportPlan(planMemory(gptOss, { ctx: 8192, swaFull: true, llamaCppBuild: 5600, flashAttn: true }), "llama.cpp")).toMatch(/--swa-full/);
  });
});

describe("WebLLM export", () => {
  it("keeps prefill_chunk_size (ChatConfig.prefill_chunk_size, overridable like the windows)", () => {
    const w = planMemory(LLAMA_31_8B, { engine: "webllm", contextWindowSize: 4096, slidingWindowSize: -1, prefillChunkSize: 1024 });
    expect(JSON.parse(exportPlan(w, "webllm"))).toEqual({ context_window_size: 4096, sliding_window_size: -1, attention_sink_size: 0, prefill_chunk_size: 1024 });
    // kvbound plans carry the chunk their SWA sizing used.
    const k = planMemory(LLAMA_31_8B, { engine: "kvbound", slidingWindowSize: 1024, attentionSinkSize: 4, prefillChunkSize: 256 });
    expect(JSON.parse(exportPlan(k, "webllm")).prefill_chunk_size).toBe(256);
    // Unset: WebLLM keeps the model's own chunk.
    expect(JSON.parse(exportPlan(planMemory(LLAMA_31_8B, { engine: "webllm", contextWindowSize: 4096 }), "webllm"))).not.toHaveProperty("prefill_chunk_size");
  });
});
