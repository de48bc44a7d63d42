// The WebGPU memory plan's arithmetic without a GPU (test/webgpu-memory.test.ts holds it equal to
// the buffers an adapter creates): settings, codecs, the binding split, and the MemoryPlan shape.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { resolveCacheConfig } from "../cache/config.js";
import { InvalidSettingError } from "../errors.js";
import { loadModelSpec } from "../spec/load.js";
import { SMOLLM2_135M, writeSyntheticModel } from "../../test/fixtures/synthetic-model.js";
import { runCli } from "../../test/helpers/cli.js";
import { planMemory } from "./plan.js";
import { webgpuMemory } from "./webgpu.js";

const dir = mkdtempSync(join(tmpdir(), "kvbound-webgpu-plan-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const path = join(dir, "smollm2-shape-q8_0.gguf");
writeFileSync(path, writeSyntheticModel({ ...SMOLLM2_135M, nLayer: 2, nVocab: 4096 }, "Q8_0"));
const spec = await loadModelSpec(path);

describe("webgpuMemory (the WebGPU backend's buffers)", () => {
  const config = resolveCacheConfig({ slidingWindowSize: 256, attentionSinkSize: 4, codec: "f32" });

  it("weights are the matrices as stored (Q8_0 rows) plus f32 norms; the output matrix once (token_embd stays on the CPU)", () => {
    const m = webgpuMemory(spec, config);
    const q8 = (rows: number, cols: number) => rows * (cols / 32) * 34;
    const e = 576, kv = 3 * 64, ff = 1536;
    const layer = q8(e, e) + 2 * q8(kv, e) + q8(e, e) + 2 * q8(ff, e) + q8(e, ff) + 2 * e * 4;
    expect(m.weightsBytes).toBe(2 * layer + e * 4 + q8(4096, e));
    expect(m.peakBytes - m.steadyBytes).toBe(4096 * 4);
  });

  it("pages follow the codec: f16 half of f32, int8 a byte a value plus a scale per (token, head)", () => {
    const at = (codec: "f32" | "f16" | "int8") => webgpuMemory(spec, resolveCacheConfig({ slidingWindowSize: 256, attentionSinkSize: 4, codec }));
    const f32 = at("f32"), f16 = at("f16"), int8 = at("int8");
    expect(f16.kBytes * 2).toBe(f32.kBytes);
    const values = f32.kBytes / 4;
    expect(int8.kBytes).toBe(values + (values / 64) * 4);
    expect(() => webgpuMemory(spec, resolveCacheConfig({ contextWindowSize: 256, codec: "fp8" }))).toThrow(InvalidSettingError);
  });

  it("a smaller binding splits matrices into more buffers (more uniforms too), the bytes only by rounding", () => {
    const big = webgpuMemory(spec, config);
    const small = webgpuMemory(spec, config, { maxBindingBytes: 64 * 1024 });
    expect(small.matrices.reduce((n, m) => n + m.chunks.length, 0)).toBeGreaterThan(big.matrices.reduce((n, m) => n + m.chunks.length, 0));
    expect(small.weightsBytes).toBe(big.weightsBytes);
    expect(small.uniformBytes).toBeGreaterThan(big.uniformBytes);
  });

  it("activations scale with the batch rows; pages do not", () => {
    const a = webgpuMemory(spec, config, { maxBatchTokens: 16 });
    const b = webgpuMemory(spec, config, { maxBatchTokens: 64 });
    expect(b.activationBytes).toBeGreaterThan(a.activationBytes);
    expect(b.kBytes).toBe(a.kBytes);
  });

  it("planMemory --engine kvbound --backend webgpu: totalBytes is the peak, f32 pages by default; other engines refuse the setting", () => {
    const p = planMemory(spec, { engine: "kvbound", backend: "webgpu", slidingWindowSize: 256, attentionSinkSize: 4 });
    const m = webgpuMemory(spec, config);
    expect(p.totalBytes).toBe(m.peakBytes);
    expect(p.settings["codec"]).toBe("f32");
    expect(p.settings["backend"]).toBe("webgpu");
    expect(p.kv.totalBytes).toBe(m.kBytes + m.vBytes);
    expect(() => planMemory(spec, { engine: "llama.cpp", backend: "webgpu" })).toThrow(InvalidSettingError);
    expect(() => planMemory(spec, { engine: "kvbound", backend: "cuda" })).toThrow(InvalidSettingError);
    // The CPU backend's plan is unchanged by the new settings' absence.
    expect(planMemory(spec, { engine: "kvbound", backend: "cpu" }).totalBytes).toBe(planMemory(spec, { engine: "kvbound" }).totalBytes);
  });

  it("kvbound plan --engine kvbound --backend webgpu: the same bytes, flags validated", async () => {
    const args = ["plan", path, "--engine", "kvbound", "--backend", "webgpu", "--sliding-window", "256", "--sinks", "4", "--max-batch-tokens", "16", "--max-binding", "64KiB"];
    const r = await runCli(...args, "--json");
    expect(r.code).toBe(0);
    const plan = JSON.parse(r.out) as { totalBytes: number; settings: Record<string, unknown> };
    expect(plan.totalBytes).toBe(webgpuMemory(spec, config, { maxBatchTokens: 16, maxBindingBytes: 65536 }).peakBytes);
    expect(plan.settings["maxBindingBytes"]).toBe(65536);
    const text = await runCli(...args);
    expect(text.out).toMatch(/GPU buffers \(exact\)/);
    expect((await runCli("plan", path, "--engine", "kvbound", "--backend", "tpu")).code).not.toBe(0);
  });
});
