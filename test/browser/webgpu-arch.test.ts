// The WebGPU forward pass in Chromium (SwiftShader's adapter: --enable-unsafe-webgpu
// --use-webgpu-adapter=swiftshader) on the acceptance shapes of test/webgpu-arch.test.ts: a Llama
// of 2 layers (SmolLM2-135M's architecture) and Gemma 3 (post-norms, per-head QK norm, sliding
// windows in a cache group of their own), built as GGUF bytes here, served to a test page
// (test/browser/pages/webgpu-arch/) that runs them on its navigator.gpu teacher-forced over 256
// positions. Its logits come back and are compared with the CPU backend's on the same bytes and
// tokens, computed here: top-1 agreement >= 0.99 on peaked distributions (median CPU top-1
// probability >= 0.3). Without Chromium: skip locally, FAIL under CI.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { resolveCacheConfig } from "../../src/cache/config.js";
import { readGgufHeader } from "../../src/gguf/header.js";
import { createModel } from "../../src/model/architectures.js";
import { CacheKv, createModelCache } from "../../src/model/cache-kv.js";
import { buildArchModel, xorshift32, type ArchModel, type ArchName } from "../fixtures/arch-models.js";
import { runBrowser, startWebHarness, WEBGPU_ARGS, type WebHarness } from "../helpers/browser.js";
import type { ArchRun } from "./pages/webgpu-arch/main.js";

const POSITIONS = 256;
const PAGE_DIR = fileURLToPath(new URL("./pages/webgpu-arch/", import.meta.url));
const CASES: ReadonlyArray<{ arch: ArchName; nLayer?: number; groups?: number }> = [{ arch: "llama", nLayer: 2 }, { arch: "gemma3", groups: 2 }];

function argmaxOf(a: Float32Array, from: number, n: number): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (a[from + i]! > a[from + best]!) best = i;
  return best;
}

function top1ProbOf(a: Float32Array, from: number, n: number): number {
  const m = a[from + argmaxOf(a, from, n)]!;
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.exp(a[from + i]! - m);
  return 1 / sum;
}

/** The CPU backend's logits [positions][nVocab] for `ids`, teacher-forced: the Node test's CPU settings. */
async function cpuLogits(bytes: Uint8Array, ids: readonly number[]): Promise<Float32Array> {
  const header = await readGgufHeader(bytes);
  const data = bytes.subarray(header.dataOffset);
  // Exact GELU on the CPU: the GPU computes GeGLU's tanh form in f32 (ggml's f16 table would differ by f16 steps).
  const config = resolveCacheConfig({ contextWindowSize: 512, codec: "f32" });
  const cpu = createModel(header, data, { kernels: "js", activations: "f32", gelu: "exact", nCtx: 1024 });
  const cache = createModelCache(cpu, config);
  cache.add(0);
  const kv = new CacheKv(cache, 0, cpu);
  const n = cpu.hp.nVocab;
  const out = new Float32Array(ids.length * n);
  for (let p = 0; p < ids.length; p++) {
    cache.reserveOrThrow(0, 1);
    cpu.forward(ids[p]!, p, kv, out.subarray(p * n, (p + 1) * n));
  }
  return out;
}

describe.skipIf(!runBrowser)("WebGPU forward in Chromium vs CPU on synthetic architectures (teacher-forced)", () => {
  let web: WebHarness;
  let dir: string;
  const models = new Map<ArchName, ArchModel>();

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "kvbound-arch-"));
    const files: Record<string, string> = {};
    for (const c of CASES) {
      const m = buildArchModel({ arch: c.arch, seed: 7, ...(c.nLayer !== undefined ? { nLayer: c.nLayer } : {}) });
      models.set(c.arch, m);
      writeFileSync(join(dir, `${c.arch}.gguf`), m.bytes);
      files[`models/${c.arch}.gguf`] = join(dir, `${c.arch}.gguf`);
    }
    web = await startWebHarness(files, WEBGPU_ARGS, { root: PAGE_DIR, input: { index: join(PAGE_DIR, "index.html") } });
  }, 120_000);

  afterAll(async () => {
    await web?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  for (const c of CASES) {
    it(`${c.arch}${c.nLayer !== undefined ? ` (${c.nLayer} layers)` : ""}: top-1 agreement >= 0.99 over ${POSITIONS} positions on the page's navigator.gpu`, async () => {
      const m = models.get(c.arch)!;
      // The Node test's teacher-forced tokens.
      const next = xorshift32(11);
      const ids: number[] = [];
      for (let i = 0; i < POSITIONS; i++) ids.push(next() % m.nVocab);

      const { page, errors } = await web.open("index.html", 800, 600);
      const run: ArchRun = await page.evaluate(({ url, ids }) => window.kvboundArch!.runArch(url, ids), { url: `models/${c.arch}.gguf`, ids });
      await page.close();
      const cpu = await cpuLogits(m.bytes, ids);

      const n = run.nVocab;
      const buf = Buffer.from(run.logits, "base64");
      const gpu = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
      expect(n).toBe(m.nVocab);
      expect(gpu.length).toBe(POSITIONS * n);
      if (c.groups !== undefined) expect(run.groups).toBe(c.groups);

      let agree = 0, maxDiff = 0;
      const probs: number[] = [];
      for (let p = 0; p < POSITIONS; p++) {
        const o = p * n;
        if (argmaxOf(cpu, o, n) === argmaxOf(gpu, o, n)) agree++;
        probs.push(top1ProbOf(cpu, o, n));
        for (let i = 0; i < n; i++) maxDiff = Math.max(maxDiff, Math.abs(cpu[o + i]! - gpu[o + i]!));
      }
      probs.sort((x, y) => x - y);
      const median = probs[POSITIONS >> 1]!;
      console.log(
        `Chromium (${run.adapter || "adapter without a description"}) ${c.arch}: top-1 agreement ${agree}/${POSITIONS}, median CPU top-1 prob ${median.toFixed(3)}, ` +
          `max |logit diff| ${maxDiff.toExponential(2)}, ${(run.forwardMs / POSITIONS).toFixed(1)} ms/token on the page`,
      );
      expect(errors).toEqual([]);
      expect(median).toBeGreaterThanOrEqual(0.3);
      expect(agree / POSITIONS).toBeGreaterThanOrEqual(0.99);
    }, 300_000);
  }
});
