// The relaxed-SIMD build of the wasm kernels in Chromium, which has relaxed SIMD on: there
// relaxedSimdAvailable() is true (its relaxed int8 dot passes the probe) and WasmArena loads that
// build, whose matvecQ4K dots int8 activations (i32x4.relaxed_dot_i8x16_i7x16_add_s) where the
// plain build dots int16 ones; both must give the same bits. Node 20 (here and CI) never runs the
// relaxed build (src/model/wasm/relaxed-simd.test.ts), so this is where it is held to that.
// The test page (test/browser/pages/relaxed-simd/) runs matvecQ4K on ragged random Q4_K data with
// the plain build and the relaxed one on its main thread, and on 2 threads in a worker (the page
// is cross-origin isolated: startStaticServer sends COOP/COEP; a page's main thread may not
// Atomics.wait), plus a run with one weight nibble changed (the comparison must see it); then a
// synthetic Q4_K Llama made with relaxedSimd false and true: every token's logits of a 12-token
// forwardBatch and 8 single-token forwards; and the same model on 3 threads in a worker, whose
// cache's attention splits over the pool's nested workers (each takes the cache's shared memory as
// mail), against Node's logits on 1 thread. Without Chromium: skip locally, FAIL under CI.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { buildArchModel, type ArchModel } from "../fixtures/arch-models.js";
import { runBrowser, startWebHarness, type WebHarness } from "../helpers/browser.js";
import type { MatmulRuns, ModelRuns, Probe, RunData } from "./pages/relaxed-simd/main.js";
import { COLS, NTOK, ROWS, runQ4K } from "./pages/relaxed-simd/matmul.js";
import { runAttention } from "../helpers/attention-run.js";

const PAGE_DIR = fileURLToPath(new URL("./pages/relaxed-simd/", import.meta.url));
const MODEL_PATH = "models/llama-q4k.gguf";
const PREFILL = 12;
const DECODE = 8;

function f32Of(b64: string): Float32Array {
  const buf = Buffer.from(b64, "base64");
  return new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
}

/** How two f32 arrays of rows of `width` differ: words whose bits differ, the largest |a - b|, the
 *  first difference, and per row the count of differing words. */
function compare(a: Float32Array, b: Float32Array, width = a.length): { differ: number; maxAbs: number; first: string; perRow: number[] } {
  expect(a.length).toBe(b.length);
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length), ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  let differ = 0, maxAbs = 0, first = "none";
  const perRow = new Array<number>(Math.ceil(a.length / width)).fill(0);
  for (let i = 0; i < ua.length; i++) {
    if (ua[i] === ub[i]) continue;
    if (differ === 0) first = `[${i}] ${a[i]} vs ${b[i]}`;
    differ++;
    perRow[Math.floor(i / width)]!++;
    maxAbs = Math.max(maxAbs, Math.abs(a[i]! - b[i]!));
  }
  return { differ, maxAbs, first, perRow };
}

/** Every value written (the page fills with NaN first), finite, and not all zero. */
function expectRealOutput(v: Float32Array): void {
  expect(v.every((x) => Number.isFinite(x))).toBe(true);
  expect(v.filter((x) => x !== 0).length).toBeGreaterThan(v.length / 2);
}

describe.skipIf(!runBrowser)("relaxed-SIMD kernels in Chromium give the plain build's bits", () => {
  let web: WebHarness;
  let dir: string;
  let arch: ArchModel;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "kvbound-relaxed-"));
    arch = buildArchModel({ arch: "llama", weights: "Q4_K", seed: 3 });
    writeFileSync(join(dir, "llama-q4k.gguf"), arch.bytes);
    web = await startWebHarness({ [MODEL_PATH]: join(dir, "llama-q4k.gguf") }, [], { root: PAGE_DIR, input: { index: join(PAGE_DIR, "index.html") } });
  }, 120_000);

  afterAll(async () => {
    await web?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it("relaxedSimdAvailable() is true on the page, and the page is cross-origin isolated", async () => {
    const { page, errors } = await web.open("index.html", 800, 600);
    const p: Probe = await page.evaluate(() => window.kvboundRelaxed!.probe());
    await page.close();
    console.log(`Chromium (${p.userAgent}): relaxedSimdAvailable ${p.relaxedSimdAvailable}, crossOriginIsolated ${p.crossOriginIsolated}`);
    expect(errors).toEqual([]);
    expect(p.relaxedSimdAvailable).toBe(true);
    expect(p.crossOriginIsolated).toBe(true);
  });

  it(`matvecQ4K, ${ROWS}x${COLS} x ${NTOK} tokens: the relaxed build's bits are the plain build's, on 1 and 2 threads, and Node's`, async () => {
    const { page, errors } = await web.open("index.html", 800, 600);
    const r: MatmulRuns = await page.evaluate(() => window.kvboundRelaxed!.matmul());
    await page.close();
    expect(errors).toEqual([]);
    const check = (run: RunData, relaxed: boolean, threads: number) => {
      expect(run.relaxed).toBe(relaxed);
      expect(run.threads).toBe(threads);
      if (threads > 1) expect(run.splits).toBe(1);
    };
    check(r.plain, false, 1);
    check(r.relaxed, true, 1);
    check(r.perturbed, true, 1);
    const plain = f32Of(r.plain.out);
    expect(plain.length).toBe(ROWS * NTOK);
    expectRealOutput(plain);

    const one = compare(f32Of(r.relaxed.out), plain, ROWS);
    const why = `first ${one.first}, max |diff| ${one.maxAbs}, differing rows per token ${one.perRow.join(" ")}`;
    console.log(`matvecQ4K in Chromium, 1 thread: relaxed vs plain ${one.differ}/${plain.length} values differ (${why})`);
    expect.soft(one.differ, `relaxed vs plain, 1 thread: ${why}`).toBe(0);

    // The negative control: one changed nibble in the relaxed run changes its row's outputs.
    const bad = compare(f32Of(r.perturbed.out), plain);
    expect(bad.differ).toBeGreaterThan(0);
    expect(bad.differ).toBeLessThanOrEqual(NTOK);

    // startStaticServer sends COOP/COEP: the threaded runs happen (in a worker of the page).
    expect(r.threaded).not.toBeNull();
    check(r.threaded!.relaxed, true, 2);
    check(r.threaded!.plain, false, 2);
    for (const [name, run] of [["relaxed", r.threaded!.relaxed], ["plain", r.threaded!.plain]] as const) {
      const two = compare(f32Of(run.out), plain, ROWS);
      console.log(`matvecQ4K in Chromium, 2 threads, ${name} vs 1-thread plain: ${two.differ} values differ (per token ${two.perRow.join(" ")})`);
      expect.soft(two.differ, `${name}, 2 threads: first ${two.first}, max |diff| ${two.maxAbs}, per token ${two.perRow.join(" ")}`).toBe(0);
    }

    // Node 20 runs the plain build (no exact relaxed dot): the same bytes give the same bits there.
    const node = await runQ4K({ relaxedSimd: true, threads: 1 });
    const vsNode = compare(node.out, plain);
    expect(vsNode.differ, `Node (relaxed ${node.relaxed}) vs Chromium plain: first ${vsNode.first}`).toBe(0);
  }, 120_000);

  for (const prefill of [PREFILL, 0]) {
    const what = prefill > 0 ? `a ${prefill}-token forwardBatch and ${DECODE} forwards` : `${PREFILL + DECODE} single-token forwards`;
    it(`a Q4_K Llama: every logit of ${what}, relaxedSimd true vs false`, async () => {
      const ids: number[] = [];
      for (let i = 0; i < PREFILL + DECODE; i++) ids.push(1 + ((i * 7919) % (arch.nVocab - 1)));
      const { page, errors } = await web.open("index.html", 800, 600);
      const r: ModelRuns = await page.evaluate(({ url, ids, prefill }) => window.kvboundRelaxed!.model(url, ids, prefill), { url: MODEL_PATH, ids, prefill });
      await page.close();
      expect(errors).toEqual([]);
      expect(r.nVocab).toBe(arch.nVocab);
      expect(r.plainRelaxed).toBe(false);
      expect(r.relaxedRelaxed).toBe(true);
      const plain = f32Of(r.plain), relaxed = f32Of(r.relaxed);
      expect(plain.length).toBe(ids.length * r.nVocab);
      expectRealOutput(plain);
      const d = compare(relaxed, plain, r.nVocab);
      const why = `first ${d.first}, max |diff| ${d.maxAbs}, differing logits per position ${d.perRow.join(" ")}`;
      console.log(`Q4_K llama in Chromium, ${what}: relaxed vs plain, ${d.differ}/${plain.length} logits differ (${why})`);
      expect(d.differ, `relaxed vs plain logits: ${why}`).toBe(0);
    }, 180_000);
  }

  it("the same Llama on 3 threads in a page's worker: attention split on the pool (its nested workers take the cache's memory as mail), every logit Node's on 1 thread", async () => {
    const ids: number[] = [];
    for (let i = 0; i < 90; i++) ids.push(1 + ((i * 104729) % (arch.nVocab - 1)));
    const { page, errors } = await web.open("index.html", 800, 600);
    const r = await page.evaluate(({ url, ids }) => window.kvboundRelaxed!.attention(url, ids, 60, 3), { url: MODEL_PATH, ids });
    await page.close();
    expect(errors).toEqual([]);
    expect(r.threads).toBe(3);
    // 2 KV heads on 3 threads: halves of a head's rows, every job split.
    expect(r.jobs).toBeGreaterThan(0);
    expect(r.split).toBe(r.jobs);
    const node = await runAttention(arch.bytes, ids, 60, 1);
    expect(node.jobs).toBe(0);
    const d = compare(f32Of(r.logits), node.logits, arch.nVocab);
    console.log(`attention on 3 threads in Chromium (${r.jobs} jobs split) vs Node on 1: ${d.differ}/${node.logits.length} logits differ`);
    expect(d.differ, `first ${d.first}, max |diff| ${d.maxAbs}`).toBe(0);
  }, 180_000);
});
