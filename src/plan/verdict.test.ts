// The one verdict (verdict.ts): the rule per engine, what it leaves out, contexts past the
// training context; and a guard that no other file decides "fits" on its own.

import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

import { describe, expect, it } from "vitest";

import { InvalidSettingError } from "../errors.js";
import { LLAMA_31_8B, testSpec } from "../../test/helpers/spec.js";
import { cheapestFor, fitContexts } from "./fit.js";
import { planMemory, planPastTrainingContext } from "./plan.js";
import { planVerdict } from "./verdict.js";

const GIB = 1024 ** 3;

describe("planVerdict: llama.cpp / WebLLM / kvbound compare the plan's total with the budget", () => {
  it("fits and by how much", () => {
    const p = planMemory(LLAMA_31_8B, { ctx: 8192 });
    const ok = planVerdict(p, 16 * GIB);
    expect(ok).toMatchObject({ fits: true, rule: "total", neededBytes: p.totalBytes, availableBytes: 16 * GIB, headroomBytes: 16 * GIB - p.totalBytes });
    expect(ok.line).toMatch(/^fits: .* of 16\.00 GiB \(\d+%\)$/);
    const miss = planVerdict(p, 4 * GIB);
    expect(miss.fits).toBe(false);
    expect(miss.headroomBytes).toBe(4 * GIB - p.totalBytes);
    expect(miss.line).toMatch(/^does not fit: needs .* more \(.* of 4\.00 GiB\)$/);
  });

  it("unknown weights: the verdict says what it does not count", () => {
    // A config.json without a safetensors index and without a parameter count: no weight bytes.
    const noWeights = { ...LLAMA_31_8B, weights: null, params: null };
    const p = planMemory(noWeights, { ctx: 8192 });
    expect(p.weights).toBeNull();
    const v = planVerdict(p, 16 * GIB);
    expect(v.fits).toBe(true);
    expect(v.uncounted).toEqual(["weights"]);
    expect(v.line).toMatch(/^fits: .*; not counting the weights \(unknown\)$/);
    // fit says it too, once for every figure.
    expect(fitContexts(noWeights, { budgetBytes: 16 * GIB }).notes.join("\n")).toMatch(/unknown, so left out of every figure here: the weights;/);
    expect(cheapestFor(noWeights, 8192, { budgetBytes: 16 * GIB })).toMatchObject({ fits: true, note: expect.stringMatching(/not counting the weights/) });
  });
});

describe("planVerdict: vLLM asks whether one request at max_model_len fits the KV pool", () => {
  it("follows the pool vLLM builds from the GPU, not the plan's total", () => {
    const p = planMemory(LLAMA_31_8B, { engine: "vllm", ctx: 32768, budgetBytes: 24 * GIB });
    const v = planVerdict(p, 24 * GIB);
    expect(v.rule).toBe("vllm-one-request");
    expect(v.fits).toBe(p.extra?.fitsOneRequest);
    expect(v.neededBytes).toBe(p.extra?.bytesPerRequest);
    expect(v.availableBytes).toBe(p.extra?.availableKvBytes);
    expect(v.line).toMatch(/^fits: one request needs .* of KV; vLLM has .* for KV in 24\.00 GiB, max concurrency/);
    // 8 GiB: the weights (4.58 GiB) leave less than one 128k request (16 GiB of f16 KV) needs.
    const tight = planMemory(LLAMA_31_8B, { engine: "vllm", ctx: 131072, budgetBytes: 8 * GIB });
    expect(planVerdict(tight, 8 * GIB)).toMatchObject({ fits: false, rule: "vllm-one-request" });
  });

  it("a vLLM plan made without the budget, or for another budget, cannot be judged", () => {
    const none = planMemory(LLAMA_31_8B, { engine: "vllm", ctx: 8192 });
    expect(() => planVerdict(none, 24 * GIB)).toThrow(InvalidSettingError);
    const other = planMemory(LLAMA_31_8B, { engine: "vllm", ctx: 8192, budgetBytes: 24 * GIB });
    expect(() => planVerdict(other, 80 * GIB)).toThrow(/made for 24\.00 GiB/);
  });
});

describe("contexts past the training context", () => {
  it("--ctx 200k on Llama-3.1-8B (trained at 131072): a note in the plan, and the verdict fits 'memory only'", () => {
    const p = planMemory(LLAMA_31_8B, { ctx: 200 * 1024 });
    expect(p.notes.join("\n")).toMatch(/past the training context: 204800 tokens per sequence > the model's 131072; llama\.cpp warns "possible training context overflow"/);
    expect(planPastTrainingContext(p)).toMatchObject({ tokens: 204800, nCtxTrain: 131072 });
    expect(planVerdict(p, 64 * GIB).line).toMatch(/^fits: .*; memory only: 204800 tokens per sequence is past the model's training context of 131072$/);
    // Per sequence, as llama.cpp compares n_ctx_seq: 4 streams of 65536 are within it.
    expect(planPastTrainingContext(planMemory(LLAMA_31_8B, { ctx: 262144, seqs: 4 }))).toBeNull();
    expect(planPastTrainingContext(planMemory(LLAMA_31_8B, { ctx: 131072 }))).toBeNull();
  });

  it("vLLM: max_model_len past it is noted with vLLM's refusal", () => {
    const p = planMemory(LLAMA_31_8B, { engine: "vllm", ctx: 200 * 1024 });
    expect(p.notes.join("\n")).toMatch(/vLLM refuses it .* unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1/);
  });

  it("a 16M-token window on a model trained at 512 tokens (stories260K's shape)", () => {
    const stories = testSpec({ name: "stories260K", nLayer: 5, nHeadKv: 4, headDim: 8, nEmbd: 64, nHead: 8, nFf: 172, nVocab: 512, nCtxTrain: 512 });
    for (const engine of ["kvbound", "webllm"] as const) {
      const p = planMemory(stories, { engine, contextWindowSize: -1, slidingWindowSize: 16 * 1024 * 1024, attentionSinkSize: 4 });
      expect(p.notes.join("\n"), engine).toMatch(/past the training context: a 16777216-token window > the model's 512/);
      expect(planVerdict(p, 64 * GIB).pastTraining).not.toBeNull();
    }
  });

  it("fit never proposes past it without saying so: cheapestFor flags it, fitContexts stays within it on llama.cpp's grid", () => {
    const c = cheapestFor(LLAMA_31_8B, 200 * 1024, { budgetBytes: 64 * GIB });
    expect(c.fits).toBe(true);
    if (c.fits) {
      expect(c.pastTraining).toMatchObject({ tokens: 204800, nCtxTrain: 131072 });
      expect(c.note).toMatch(/memory only: 204800 tokens per sequence is past the model's training context of 131072/);
    }
    // A training context off the 256-cell grid: the largest -c stays at or under it after padding.
    const odd = { ...LLAMA_31_8B, nCtxTrain: 1000 };
    const fit = fitContexts(odd, { budgetBytes: 64 * GIB });
    for (const o of fit.options) {
      if (o.maxCtx === null) continue;
      expect(o.maxCtx, o.label).toBe(768);
      expect(planPastTrainingContext(planMemory(odd, { ...o.settings, ctx: o.maxCtx }))).toBeNull();
    }
  });

  it("no training context: fit says the search went to the planner's limit", () => {
    const unknown = { ...LLAMA_31_8B, nCtxTrain: null };
    expect(fitContexts(unknown, { budgetBytes: 4 * GIB }).notes.join("\n")).toMatch(/states no training context/);
  });
});

describe("one verdict", () => {
  // Every "does it fit" decision goes through planVerdict: no other file compares a plan's total
  // with a budget or reads vLLM's fitsOneRequest.
  it("no other source file decides fits on its own", () => {
    const root = fileURLToPath(new URL("../..", import.meta.url));
    const files: string[] = [];
    const walk = (dir: string): void => {
      for (const name of readdirSync(dir)) {
        const path = join(dir, name);
        if (statSync(path).isDirectory()) walk(path);
        else if (/\.ts$/.test(name) && !/\.test\.ts$/.test(name)) files.push(path);
      }
    };
    walk(join(root, "src/plan"));
    walk(join(root, "src/cli"));
    walk(join(root, "web/src"));
    const offenders: string[] = [];
    for (const f of files) {
      const rel = relative(root, f);
      if (rel === "src/plan/verdict.ts" || rel === "src/plan/vllm.ts") continue;
      const text = readFileSync(f, "utf8");
      if (/totalBytes\s*<=\s*budget|fitsOneRequest/.test(text)) offenders.push(rel);
    }
    expect(offenders).toEqual([]);
    // The planner page renders the verdict's own line.
    expect(readFileSync(join(root, "web/src/planner/render.ts"), "utf8")).toMatch(/planVerdict\(plan, budgetBytes\)/);
  });
});
