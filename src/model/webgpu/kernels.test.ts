// Each WebGPU kernel against its JS reference on small, odd shapes (SwiftShader is slow). Skipped
// where no adapter exists; under CI a missing adapter fails (device.ts gpuForTests).

import { beforeAll, describe, expect, it } from "vitest";
import { seededRandom } from "../../cache/codecs/synthetic-kv.js";
import { f32ToF16Bits } from "../../cache/codecs/half.js";
import { resolveCacheConfig, type CacheConfigInput, type CacheModelShape } from "../../cache/config.js";
import { PagedKvCache } from "../../cache/paged-kv-cache.js";
import { Rope, type RopeSpec } from "../../cache/rope.js";
import type { WeightMatrix } from "../kernels/matvec.js";
import { dequantizeRow, type WeightTypeName } from "../kernels/quant-rows.js";
import { gegluExactRows, rmsNorm, swigluRows } from "../transformer.js";
import { AttentionMeta } from "./attention-meta.js";
import { gpuForTests } from "./device.js";
import { pageStoreBytes } from "../../cache/codecs/index.js";
import { GpuPageStore, gpuPageBytes, gpuPageStoreBytes } from "./gpu-page-store.js";
import { GpuKernels, GpuStep } from "./kernels.js";
import type { GpuCodec } from "./wgsl.js";

const ctx = await gpuForTests();

const rng = seededRandom;

const BLOCK: Partial<Record<WeightTypeName, [number, number]>> = {
  F32: [1, 4], F16: [1, 2], Q8_0: [32, 34], Q4_0: [32, 18], Q4_K: [256, 144], Q6_K: [256, 210],
};

/** Random valid blocks: random bytes with every f16 scale overwritten by a sane value. */
function randomMatrix(type: WeightTypeName, rows: number, cols: number, rand: () => number): WeightMatrix {
  const [bs, ts] = BLOCK[type]!;
  const rowBytes = (cols / bs) * ts;
  const u8 = new Uint8Array(rows * rowBytes);
  for (let i = 0; i < u8.length; i++) u8[i] = Math.floor(rand() * 256);
  const half = (o: number, v: number) => { const h = f32ToF16Bits(v); u8[o] = h & 0xff; u8[o + 1] = h >> 8; };
  for (let b = 0; b < u8.length / ts; b++) {
    const o = b * ts;
    if (type === "F32") new DataView(u8.buffer).setFloat32(o, rand() * 2 - 1, true);
    else if (type === "F16") half(o, rand() * 2 - 1);
    else if (type === "Q6_K") half(o + 208, rand() * 0.01);
    else {
      half(o, rand() * 0.02);
      if (type === "Q4_K") half(o + 2, rand() * 0.02);
    }
  }
  return { name: type, type, rows, cols, rowBytes, u8, i8: new Int8Array(u8.buffer), f32: type === "F32" ? new Float32Array(u8.buffer) : null };
}

function randomF32(n: number, rand: () => number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (rand() * 2 - 1) * scale;
  return a;
}

function maxAbsDiff(a: Float32Array, b: Float32Array, n = b.length): number {
  let m = 0;
  for (let i = 0; i < n; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe.skipIf(ctx === null)("WebGPU kernels against the JS references", () => {
  let gpu: GpuKernels, step: GpuStep;
  beforeAll(() => {
    gpu = new GpuKernels(ctx!);
    step = new GpuStep(gpu.device);
  });
  const upload = (a: Float32Array) => {
    const b = gpu.storage(a.byteLength, "test");
    gpu.write(b, 0, new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
    return b;
  };

  const shapes: [WeightTypeName, number, number][] = [["F32", 7, 67], ["F16", 5, 66], ["Q8_0", 7, 96], ["Q4_0", 6, 64], ["Q4_K", 5, 512], ["Q6_K", 3, 256]];
  for (const [type, rows, cols] of shapes) {
    it(`matmul ${type} (${rows}x${cols}, 5 tokens; split into row chunks too; thread and workgroup variants) within 1e-5 of dequantize-then-dot`, async () => {
      const rand = rng(11);
      const m = randomMatrix(type, rows, cols, rand);
      const nTok = 5;
      const x = randomF32(nTok * cols, rand);
      const ref = new Float32Array(nTok * rows);
      const row = new Float32Array(cols);
      for (let r = 0; r < rows; r++) {
        dequantizeRow(type, m.u8, r * m.rowBytes, row, 0, cols);
        for (let t = 0; t < nTok; t++) {
          let s = 0;
          for (let c = 0; c < cols; c++) s += row[c]! * x[t * cols + c]!;
          ref[t * rows + r] = s;
        }
      }
      let scale = 0;
      for (const v of ref) scale = Math.max(scale, Math.abs(v));
      const xb = upload(x);
      for (const limit of [ctx!.maxBindingBytes, 2 * m.rowBytes + 4]) {
        const k = new GpuKernels(ctx!, limit);
        const gm = k.uploadMatrix(m);
        expect(gm.chunks.length).toBe(limit === ctx!.maxBindingBytes ? 1 : Math.ceil(rows / 2));
        const out = k.storage(nTok * rows * 4, "out");
        step.write(nTok);
        for (const variant of ["thread", "workgroup"] as const) {
          k.run([k.matmul(out, xb, gm, cols, rows, step, variant)], nTok);
          const got = await k.read(out, nTok * rows * 4);
          expect(maxAbsDiff(got, ref) / scale, `limit ${limit} ${variant}`).toBeLessThan(1e-5);
        }
      }
    });
  }

  it("rmsNorm per token, per head and of the last token only", async () => {
    const rand = rng(3);
    const n = 70, nTok = 3, eps = 1e-5;
    const x = randomF32(nTok * n, rand), w = randomF32(n, rand);
    const ref = new Float32Array(nTok * n);
    for (let t = 0; t < nTok; t++) rmsNorm(ref, x, w, eps, t * n, n);
    const xb = upload(x), wb = upload(w), out = gpu.storage(nTok * n * 4, "out");
    step.write(nTok);
    gpu.run([gpu.rmsNorm(out, xb, wb, n, eps, step)], nTok);
    expect(maxAbsDiff(await gpu.read(out, nTok * n * 4), ref)).toBeLessThan(1e-5);
    // heads of 10 values (QK norm)
    const hd = 10, heads = n / hd;
    const wh = w.subarray(0, hd), refH = new Float32Array(nTok * n);
    for (let r = 0; r < nTok * heads; r++) rmsNorm(refH, x, wh, eps, r * hd, hd);
    const whb = upload(wh.slice());
    gpu.run([gpu.rmsNorm(out, xb, whb, hd, eps, step, { perTok: heads })], nTok);
    expect(maxAbsDiff(await gpu.read(out, nTok * n * 4), refH)).toBeLessThan(1e-5);
    gpu.run([gpu.rmsNorm(out, xb, wb, n, eps, step, { lastOnly: true })], nTok);
    expect(maxAbsDiff(await gpu.read(out, n * 4), ref.subarray((nTok - 1) * n))).toBeLessThan(1e-5);
  });

  it("SwiGLU, GeGLU, residual add and soft-capping", async () => {
    const rand = rng(5);
    const n = 131, nTok = 2;
    const g = randomF32(nTok * n, rand, 6), u = randomF32(nTok * n, rand);
    const ub = upload(u);
    step.write(nTok);
    const check = async (op: "swiglu" | "geglu" | "add" | "softcap", ref: Float32Array, tol: number) => {
      const gb = upload(g);
      gpu.run([gpu.elementwise(op, gb, ub, n, step, { cap: 2.5 })], nTok);
      expect(maxAbsDiff(await gpu.read(gb, nTok * n * 4), ref), op).toBeLessThan(tol);
    };
    const sw = g.slice(); swigluRows(sw, u, nTok * n);
    await check("swiglu", sw, 1e-5);
    const ge = g.slice(); gegluExactRows(ge, u, nTok * n);
    await check("geglu", ge, 1e-5);
    const add = g.map((v, i) => v + u[i]!);
    await check("add", add, 1e-6);
    const cap = g.map((v) => 2.5 * Math.tanh(v / 2.5));
    await check("softcap", cap, 1e-5);
  });

  it("GPU pages take the bytes per page the CPU codecs take (the plan counts them)", () => {
    for (const codec of ["f32", "f16", "int8", "int4"] as const) {
      for (const role of ["k", "v"] as const) {
        const shape = (nPages: number) => ({ nPages, pageSize: 16, nHeadKv: 2, headDim: 64 });
        // One page more: the CPU store's bytes grow by its page (int4: and 8 bytes of page bookkeeping).
        const cpuPage = pageStoreBytes(codec, role, shape(9), { openPages: 4 }) - pageStoreBytes(codec, role, shape(8), { openPages: 4 }) - (codec === "int4" ? 8 : 0);
        expect(gpuPageBytes(codec, shape(1), role), `${codec} ${role}`).toBe(cpuPage);
        // int4: one more page also costs the GPU its word of open-page state.
        expect(gpuPageStoreBytes(shape(9), codec, role, 4) - gpuPageStoreBytes(shape(8), codec, role, 4)).toBe(cpuPage + (codec === "int4" ? 4 : 0));
      }
    }
  });

  const attentionCase = (name: string, input: CacheConfigInput, layer: { slidingWindow?: number; softcap?: number }, neox: boolean, steps: number[], codec: GpuCodec = "f32", tol = 1e-5) =>
    it(`K/V write + attention over ${codec} pages: ${name}`, async () => {
      // A score-based policy: attention leaves normalized weights and the statistics kernel reduces
      // them (ATTENTION_STATS_WGSL) to what the CPU hook folds into the policy's scores this step.
      const policy = input.policy?.kind;
      const sumAll = policy === "h2o";
      const rand = rng(9);
      const nHead = 4, nHeadKv = 2, hd = codec === "int4" ? 16 : 8;
      const rope: RopeSpec = { nRot: hd, freqBase: 10000, neox };
      const model: CacheModelShape = { nHead, layers: [{ nHeadKv, headDimK: hd, headDimV: hd, ...layer }], rope };
      // The reference: the same codec's CPU pages and JS kernels (PagedKvCache.attend).
      const cache = new PagedKvCache(resolveCacheConfig({ ...input, codec, pageSize: 16 }), model, { kernels: "js" });
      cache.add(0);
      const g = cache.groupPlans.findIndex((p) => p.layers.includes(0));
      const group = cache.groups[g]!;
      const nPages = group.layout.nPages;
      const width = nHeadKv * hd, qDim = nHead * hd;
      const maxTok = Math.max(...steps);
      const pageShape = { nPages, pageSize: 16, nHeadKv, headDim: hd };
      const kStore = new GpuPageStore(gpu, "k", pageShape, codec), vStore = new GpuPageStore(gpu, "v", pageShape, codec);
      const kPages = kStore.buffer, vPages = vStore.buffer, layouts = { k: kStore.layout, v: vStore.layout };
      const kb = gpu.storage(maxTok * width * 4, "k"), vb = gpu.storage(maxTok * width * 4, "v"), qb = gpu.storage(maxTok * qDim * 4, "q");
      const slotsB = gpu.storage(maxTok * 8, "slots"), kcsB = gpu.storage(maxTok * hd * 4, "k cs");
      const window = group.config.windowTokens;
      const maxRuns = group.attentionRuns(0).capacity;
      const metaT = new AttentionMeta(maxRuns, maxTok, rope.nRot / 2);
      const metaB = gpu.storage(metaT.meta.byteLength, "meta"), csB = gpu.storage(metaT.cs.byteLength, "cs");
      const scores = gpu.storage(maxTok * nHead * window * 4, "scores"), out = gpu.storage(maxTok * qDim * 4, "out");
      const ropeObj = new Rope(rope, hd);
      const write = gpu.kvWrite(kPages, vPages, kb, vb, slotsB, kcsB, { nHeadKv, headDim: hd, nRot: rope.nRot, neox, pageSize: 16, layouts }, step);
      const attend = gpu.attention(out, qb, kPages, vPages, metaB, csB, scores, {
        nHead, nHeadKv, headDim: hd, nRot: rope.nRot, neox, pageSize: 16, window, maxRuns,
        slidingWindow: layer.slidingWindow ?? 0, scale: 1 / Math.sqrt(hd), softcap: layer.softcap ?? 0, layouts, normalize: policy !== undefined,
      }, step);
      const statsB = gpu.storage(window * 4, "stats");
      const statsOp = gpu.attentionStats(statsB, scores, { nHead, window, sumAll }, step);
      const before = new Float64Array(window), after = new Float64Array(window);
      let worstStat = 0;
      const slot = new Int32Array(3), slots = new Uint32Array(maxTok * 2), kcs = new Float32Array(maxTok * hd);
      let worst = 0;
      for (const n of steps) {
        const r = cache.reserve(0, n);
        expect(r.ok).toBe(true);
        const k = randomF32(n * width, rand), v = randomF32(n * width, rand), q = randomF32(n * qDim, rand, 2);
        for (let i = 0; i < n; i++) {
          cache.write(0, 0, i, k, i * width, v, i * width);
          cache.pendingSlot(0, 0, i, slot);
          slots[2 * i] = slot[0]!;
          slots[2 * i + 1] = slot[1]!;
          ropeObj.cosSin(slot[2]!, kcs, i * hd);
        }
        const ref = new Float32Array(n * qDim);
        cache.policyScores(0, before);
        cache.attend(0, 0, q, 0, n, ref, 0, 1 / Math.sqrt(hd));
        const held = cache.length(0);
        const groupHeld = group.length(0);
        metaT.fill(cache.attentionRuns(0, 0), groupHeld, n, ropeObj);
        gpu.write(qb, 0, new Uint8Array(q.buffer));
        gpu.write(metaB, 0, new Uint8Array(metaT.meta.buffer));
        gpu.write(csB, 0, new Uint8Array(metaT.cs.buffer, 0, Math.max(4, metaT.nRows * hd * 4)));
        // int4 writes a page per pass (its seal job runs after the write), as the forward does.
        for (let c0 = 0; c0 < n; ) {
          let c1 = n;
          if (codec === "int4") for (c1 = c0 + 1; c1 < n && slots[2 * c1] === slots[2 * c0] && slots[2 * c1 - 1]! < 15; c1++);
          const m = c1 - c0;
          gpu.write(kb, 0, new Uint8Array(k.buffer, c0 * width * 4, m * width * 4));
          gpu.write(vb, 0, new Uint8Array(v.buffer, c0 * width * 4, m * width * 4));
          gpu.write(slotsB, 0, new Uint8Array(slots.buffer, c0 * 8, m * 8));
          gpu.write(kcsB, 0, new Uint8Array(kcs.buffer, c0 * hd * 4, m * hd * 4));
          kStore.prepareWrites(slots.subarray(2 * c0, 2 * c1), m);
          vStore.prepareWrites(slots.subarray(2 * c0, 2 * c1), m);
          step.write(m, groupHeld, metaT.nRuns);
          gpu.run([gpu.int4Jobs(kStore, "pre"), gpu.int4Jobs(vStore, "pre"), write, gpu.int4Jobs(kStore, "post"), gpu.int4Jobs(vStore, "post")], m);
          c0 = c1;
        }
        // TOVA: one row, the step's last query (row = qi - pad).
        step.write(n, groupHeld, metaT.nRuns, n - 1);
        if (policy === undefined) gpu.run([attend], n);
        else {
          const enc = gpu.device.createCommandEncoder();
          enc.clearBuffer(statsB);
          gpu.device.queue.submit([enc.finish()]);
          gpu.run([attend, statsOp], n);
          // The CPU hook's contribution this step: H2O adds every query's weights; TOVA sets the last query's.
          const got = await gpu.read(statsB, groupHeld * 4);
          const nHeld = cache.policyScores(0, after);
          expect(nHeld).toBe(groupHeld);
          for (let t = 0; t < groupHeld; t++) {
            const want = sumAll ? after[t]! - before[t]! : after[t]!;
            worstStat = Math.max(worstStat, Math.abs(got[t]! - want));
          }
        }
        const got = await gpu.read(out, n * qDim * 4);
        worst = Math.max(worst, maxAbsDiff(got, ref));
        expect(held).toBeGreaterThan(0);
      }
      if (codec !== "f32") console.log(`GPU ${codec} pages vs CPU ${codec} pages (JS attend), ${name}: max |diff| ${worst.toExponential(2)}`);
      expect(worst).toBeLessThan(tol);
      if (policy !== undefined) {
        console.log(`attention stats (${policy}) vs the CPU hook, ${name}: max |diff| ${worstStat.toExponential(2)}`);
        expect(worstStat).toBeLessThan(1e-5);
      }
    });
  attentionCase("context window, normal RoPE, prefill then decode", { contextWindowSize: 96 }, {}, false, [5, 1, 20, 1, 1, 17, 3]);
  attentionCase("sinks + sliding window (evictions, re-assigned positions), NeoX", { slidingWindowSize: 40, attentionSinkSize: 4 }, {}, true, [7, 1, 16, 1, 9, 1, 1, 12, 5, 1, 1]);
  attentionCase("model's own sliding window and soft-capping", { contextWindowSize: 64 }, { slidingWindow: 6, softcap: 3 }, false, [9, 1, 1, 8, 1]);
  attentionCase("H2O statistics (normalized weights, summed over queries) with evictions", { slidingWindowSize: 40, attentionSinkSize: 4, policy: { kind: "h2o", recent: 8 } }, {}, true, [7, 1, 16, 1, 9, 1, 1, 12, 5, 1, 1]);
  attentionCase("TOVA statistics (the last query's weights) with evictions, soft-capping", { slidingWindowSize: 40, attentionSinkSize: 4, policy: { kind: "tova" } }, { softcap: 3 }, false, [7, 1, 16, 1, 9, 1, 1, 12, 5, 1, 1]);
  for (const codec of ["f16", "int8", "int4"] as const) {
    // One f16 ulp (or int8 / int4 code) apart where RoPE in f32 on the GPU lands a value next to a rounding boundary.
    const tol = codec === "f16" ? 2e-4 : codec === "int8" ? 5e-4 : 2e-3;
    attentionCase("context window, normal RoPE, prefill then decode", { contextWindowSize: 96 }, {}, false, [5, 1, 20, 1, 1, 17, 3], codec, tol);
    attentionCase("sinks + sliding window (evictions, re-assigned positions), NeoX", { slidingWindowSize: 40, attentionSinkSize: 4 }, {}, true, [7, 1, 16, 1, 9, 1, 1, 12, 5, 1, 1], codec, tol);
  }
});
