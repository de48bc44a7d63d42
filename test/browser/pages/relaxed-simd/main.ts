// The page side of test/browser/relaxed-simd.test.ts (index.html beside it). Chromium has relaxed
// SIMD on, so here the wasm kernels' relaxed build (int8 dots, i32x4.relaxed_dot_i8x16_i7x16_add_s)
// is the one WasmArena loads; `relaxedSimd: false` keeps the plain build (int16 dots) for the
// comparison. Every result goes back to Node as plain data (f32 outputs as base64 of their bytes),
// where the bits are compared.

import { resolveCacheConfig } from "../../../../src/cache/config.js";
import { readGgufHeader } from "../../../../src/gguf/header.js";
import { createModel } from "../../../../src/model/architectures.js";
import { CacheKv, createModelCache } from "../../../../src/model/cache-kv.js";
import { relaxedSimdAvailable } from "../../../../src/model/wasm/wasm-kernels.js";
import type { AttentionRun } from "../../../helpers/attention-run.js";
import { runQ4K, toBase64, type Q4KRun } from "./matmul.js";
import type { WorkerReply, WorkerRequest } from "./worker.js";

export interface Probe {
  readonly relaxedSimdAvailable: boolean;
  readonly crossOriginIsolated: boolean;
  readonly userAgent: string;
}

/** A runQ4K result as plain data: `out` is base64 of the Float32Array's bytes. */
export interface RunData {
  readonly relaxed: boolean;
  readonly threads: number;
  readonly splits: number;
  readonly out: string;
}

export interface MatmulRuns {
  /** One thread on the page's main thread: plain build, relaxed build, relaxed build with one weight nibble changed. */
  readonly plain: RunData;
  readonly relaxed: RunData;
  readonly perturbed: RunData;
  /** 2 threads in a worker (relaxed build, then plain), or null where the page is not cross-origin isolated. */
  readonly threaded: { readonly relaxed: RunData; readonly plain: RunData } | null;
}

export interface ModelRuns {
  readonly nVocab: number;
  /** model.relaxedSimd of the model made with relaxedSimd false, and of the one made with true. */
  readonly plainRelaxed: boolean;
  readonly relaxedRelaxed: boolean;
  /** base64 of [positions][nVocab] f32: every token's logits (forwardBatch's through onLogits, then each forward's). */
  readonly plain: string;
  readonly relaxed: string;
}

function data(r: Q4KRun): RunData {
  return { relaxed: r.relaxed, threads: r.threads, splits: r.splits, out: toBase64(new Uint8Array(r.out.buffer, r.out.byteOffset, r.out.byteLength)) };
}

function probe(): Probe {
  return { relaxedSimdAvailable: relaxedSimdAvailable(), crossOriginIsolated, userAgent: navigator.userAgent };
}

/** One worker.ts request in a fresh worker (threads need a thread that may wait: not the page's main one). */
function inWorker<R extends Q4KRun | AttentionRun>(req: WorkerRequest): Promise<R> {
  const w = new Worker(new URL("./worker.ts", import.meta.url), { type: "module", name: "kvbound-relaxed-test" });
  return new Promise<R>((resolve, reject) => {
    w.onmessage = (e: MessageEvent<WorkerReply>) => {
      w.terminate();
      if (e.data.ok) resolve(e.data.run as R);
      else reject(new Error(`worker: ${e.data.message}`));
    };
    w.onerror = (e: ErrorEvent) => {
      w.terminate();
      reject(new Error(`worker error: ${e.message}`));
    };
    w.postMessage(req);
  });
}

async function matmul(): Promise<MatmulRuns> {
  const plain = await runQ4K({ relaxedSimd: false, threads: 1 });
  const relaxed = await runQ4K({ relaxedSimd: true, threads: 1 });
  const perturbed = await runQ4K({ relaxedSimd: true, threads: 1, perturb: true });
  // kvbound serve's server (startStaticServer) sends COOP/COEP, so the page is isolated and the
  // threaded run happens; were it not, the main-thread runs above would be all there is.
  let threaded: MatmulRuns["threaded"] = null;
  if (crossOriginIsolated) {
    const tr = await inWorker<Q4KRun>({ relaxedSimd: true, threads: 2 });
    const tp = await inWorker<Q4KRun>({ relaxedSimd: false, threads: 2 });
    threaded = { relaxed: data(tr), plain: data(tp) };
  }
  return { plain: data(plain), relaxed: data(relaxed), perturbed: data(perturbed), threaded };
}

/** The model at `url` made twice (relaxedSimd false, then true; one thread): a forwardBatch of
 *  ids[0..prefill) (none when prefill is 0) then each later id alone, every token's logits. */
async function model(url: string, ids: readonly number[], prefill: number): Promise<ModelRuns> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`fetch ${url}: HTTP ${res.status}`);
  const bytes = new Uint8Array(await res.arrayBuffer());
  const header = await readGgufHeader(bytes);
  const weights = bytes.subarray(header.dataOffset);
  const runs: Array<{ relaxed: boolean; logits: Float32Array }> = [];
  let nVocab = 0;
  for (const relaxedSimd of [false, true]) {
    const m = createModel(header, weights, { threads: 1, relaxedSimd });
    await m.threadsReady();
    nVocab = m.hp.nVocab;
    const cache = createModelCache(m, resolveCacheConfig({ contextWindowSize: 256, codec: "f16" }));
    cache.add(0);
    const kv = new CacheKv(cache, 0, m);
    const all = new Float32Array(ids.length * nVocab);
    const logits = new Float32Array(nVocab);
    if (prefill > 0) {
      cache.reserveOrThrow(0, prefill);
      m.forwardBatch(ids, 0, prefill, kv, logits, 0, (i, l) => all.set(l, i * nVocab));
    }
    for (let p = prefill; p < ids.length; p++) {
      cache.reserveOrThrow(0, 1);
      m.forward(ids[p]!, p, kv, logits);
      all.set(logits, p * nVocab);
    }
    runs.push({ relaxed: m.relaxedSimd, logits: all });
    m.dispose();
  }
  const b64 = (f: Float32Array) => toBase64(new Uint8Array(f.buffer));
  return { nVocab, plainRelaxed: runs[0]!.relaxed, relaxedRelaxed: runs[1]!.relaxed, plain: b64(runs[0]!.logits), relaxed: b64(runs[1]!.logits) };
}

/** test/helpers/attention-run.ts's runAttention over the model at `url` on `threads` threads in a worker; the logits as base64. */
async function attention(url: string, ids: readonly number[], prefill: number, threads: number): Promise<Omit<AttentionRun, "logits"> & { readonly logits: string }> {
  const r = await inWorker<AttentionRun>({ url: new URL(url, location.href).href, ids, prefill, threads });
  return { ...r, logits: toBase64(new Uint8Array(r.logits.buffer, r.logits.byteOffset, r.logits.byteLength)) };
}

declare global {
  interface Window {
    kvboundRelaxed?: { probe: typeof probe; matmul: typeof matmul; model: typeof model; attention: typeof attention };
  }
}

window.kvboundRelaxed = { probe, matmul, model, attention };
document.documentElement.dataset.ready = "true";
