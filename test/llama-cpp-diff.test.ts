// kvbound's next-token distributions held to llama.cpp's (bench/llama-cpp-diff.ts, run in-process)
// on synthetic models of each architecture (test/fixtures/arch-models.ts). llama.cpp runs through
// node-llama-cpp from bench/peers: without it the suite is skipped locally and fails on CI.

import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { MIN_MEDIAN_TOP1, closeLlamaCpp, runDiff, type DiffOptions, type DiffResult } from "../bench/llama-cpp-diff.js";
import { ARCH_NAMES, type ArchName } from "./fixtures/arch-models.js";

const havePeers = existsSync(fileURLToPath(new URL("../bench/peers/node_modules/node-llama-cpp/package.json", import.meta.url)));

/**
 * GeGLU architectures: ggml's CPU GEGLU rounds the gate to f16 and reads GELU from an f16 table
 * (GGML_GELU_FP16, ggml-cpu/vec.h). kvbound reproduces the table, but the table turns the float
 * noise between any two summation orders into f16 steps: kvbound against itself (JS vs wasm
 * matmuls, same table) moves p by up to 1.4e-3 (gemma2) / 1.6e-3 (gemma3), where with an exact
 * GELU the same two runs differ by 2e-5. So these are held to their own noise floor instead of 1e-3:
 * llama.cpp's distance within 2x kvbound's JS-vs-wasm distance at the 90th percentile of positions,
 * 3x at the worst one (a maximum over 512 positions of chaotic f16 flips is itself noisy: measured
 * 1.2-2.2x over seeds 1-3).
 */
const GEGLU: ReadonlySet<ArchName> = new Set<ArchName>(["gemma2", "gemma3"]);

/** F32 weights: both engines compute in f32. Every architecture on 3 seeds over 512 teacher-forced
 *  positions (past gemma's windows, phi3's LongRoPE original context); each RoPE scaling on one. */
const F32_CASES: readonly DiffOptions[] = [
  ...ARCH_NAMES.flatMap((arch) => [1, 2, 3].map((seed) => ({ arch, seed }))),
  { arch: "llama", ropeScaling: "linear" },
  { arch: "llama", ropeScaling: "yarn" },
  { arch: "llama", ropeScaling: "llama3" },
  { arch: "qwen3", ropeScaling: "yarn" },
];

function caseName(o: DiffOptions): string {
  return [o.arch, `seed ${o.seed ?? 1}`, o.ropeScaling ? `rope ${o.ropeScaling}` : "", o.layers ? `${o.layers} layers` : "", `${o.positions ?? 512} positions`].filter(Boolean).join(", ");
}

function expectPeaked(r: DiffResult): void {
  expect(r.medianTop1, "llama.cpp's distributions are too flat for agreement to mean anything").toBeGreaterThanOrEqual(MIN_MEDIAN_TOP1);
  // node-llama-cpp's probabilities are llama.cpp's f32 softmax of all logits (none truncated).
  expect(r.peerSoftmaxMaxErr).toBeLessThan(1e-4);
}

/** GeGLU models: llama.cpp within kvbound's own summation-order noise (see GEGLU). */
function expectWithinNoise(r: DiffResult): void {
  const self = r.kvboundSelf!;
  expect(self.maxAbsDp).toBeLessThan(3e-3);
  expect(r.dpQuantiles!.p90).toBeLessThanOrEqual(2 * self.p90);
  expect(r.maxAbsDp!).toBeLessThanOrEqual(3 * self.maxAbsDp);
}

if (!havePeers && process.env.CI) {
  it("bench/peers is installed (CI runs the llama.cpp comparison)", () => {
    expect.fail("bench/peers/node_modules/node-llama-cpp is missing: run `bash bench/peers/install.sh`");
  });
}

describe.skipIf(!havePeers)("kvbound against llama.cpp on synthetic models", () => {
  afterAll(closeLlamaCpp);

  for (const o of F32_CASES) {
    const geglu = GEGLU.has(o.arch);
    const bound = geglu ? "|Δp| within kvbound's own JS-vs-wasm noise (f16 GELU table)" : "max |Δp| <= 1e-3";
    it(`F32 ${caseName(o)}: ${bound}, same argmax where llama.cpp's margin > 1e-3, same greedy ids`, async () => {
      const r = await runDiff({ ...o, weights: "F32", ...(geglu ? { kvboundNoise: true } : {}) });
      expect(r.error).toBeUndefined();
      expectPeaked(r);
      if (geglu) {
        expectWithinNoise(r);
      } else {
        expect(r.maxAbsDp!).toBeLessThanOrEqual(1e-3);
      }
      expect(r.top1DisagreementsAboveMargin).toBe(0);
      expect(r.greedyEqual).toBe(true);
    });
  }

  it("gemma2: reproducing ggml's f16 GELU table brings kvbound closer to llama.cpp than an exact GELU", async () => {
    const table = await runDiff({ arch: "gemma2", positions: 256 });
    const exact = await runDiff({ arch: "gemma2", positions: 256, gelu: "exact" });
    expect(table.dpQuantiles!.p50 * 2).toBeLessThan(exact.dpQuantiles!.p50);
    expect(table.maxAbsDp!).toBeLessThan(exact.maxAbsDp!);
  });

  it("gemma3 past a 256-token sliding window (positions to 768): the local layers' mask as llama.cpp's", async () => {
    const r = await runDiff({ arch: "gemma3", slidingWindow: 256, positions: 768, kvboundNoise: true });
    expect(r.error).toBeUndefined();
    expectPeaked(r);
    expectWithinNoise(r);
    expect(r.top1DisagreementsAboveMargin).toBe(0);
  });

  // With quantized activations a 1-ulp difference between two engines now and then moves a value
  // across an int8 rounding boundary, and these peaked random models amplify each flip through the
  // layers and, via attention, to later positions: at 4 layers kvbound agrees with llama.cpp on
  // 95-97% of argmaxes, where llama.cpp batched against llama.cpp one token at a time agrees on
  // 97.7-100%. At 2 layers the engine's own spread allows >= 98% pooled, each run >= 0.95. The
  // activations are quantized as llama.cpp's vec_dot_type of each type (ggml-cpu.c
  // type_traits_cpu): Q8_0 for Q8_0 and IQ4_NL, Q8_K for the K-quants and IQ4_XS.
  for (const weights of ["Q8_0", "Q4_K", "Q2_K", "Q3_K", "IQ4_NL", "IQ4_XS"] as const) {
    it(`${weights}, 2 layers, every architecture (llama on seeds 1-3): top-1 agreement >= 0.98 pooled`, async () => {
      let agree = 0, positions = 0;
      const cases: DiffOptions[] = [...ARCH_NAMES.map((arch) => ({ arch })), { arch: "llama", seed: 2 }, { arch: "llama", seed: 3 }];
      for (const o of cases) {
        const r = await runDiff({ ...o, layers: 2, weights, positions: 256 });
        expect(r.error, `${o.arch}: ${r.error?.message}`).toBeUndefined();
        expectPeaked(r);
        expect(r.top1Agreement!, caseName(o)).toBeGreaterThanOrEqual(0.95);
        agree += r.top1Agreement! * r.positions;
        positions += r.positions;
      }
      expect(agree / positions).toBeGreaterThanOrEqual(0.98);
    }, 180_000);
  }
});
