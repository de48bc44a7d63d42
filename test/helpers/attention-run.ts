// A model's attention split over threads (src/cache/wasm/attend-wasm.ts), run the same way in
// Node (test/threads.test.ts) and, in a worker of the relaxed-SIMD test page, in Chromium, whose
// nested workers take the cache's shared memory as mail (src/model/wasm/pool-worker.ts): every
// token's logits of a batched prefill and single-token decode over an evicting window, and how
// many attention jobs the pool ran and split. No Node API: the page bundles it.

import { resolveCacheConfig } from "../../src/cache/config.js";
import { readGgufHeader } from "../../src/gguf/header.js";
import { createModel } from "../../src/model/architectures.js";
import { CacheKv, createModelCache } from "../../src/model/cache-kv.js";
import type { CodecKind } from "../../src/cache/codecs/types.js";
import type { RowCallPool } from "../../src/wasm/row-call.js";

export interface AttentionRun {
  readonly threads: number;
  /** [positions][nVocab] f32. */
  readonly logits: Float32Array;
  /** Attention jobs the model's pool ran, and those its workers took part in. */
  readonly jobs: number;
  readonly split: number;
}

/** `bytes` (a GGUF) on `threads`, every split taken (minSplitWork 0): prefill ids[0..prefill) in `chunk`s, then one at a time. */
export async function runAttention(bytes: Uint8Array, ids: readonly number[], prefill: number, threads: number, codec: CodecKind = "f16", chunk = 16): Promise<AttentionRun> {
  const header = await readGgufHeader(bytes);
  const m = createModel(header, bytes.subarray(header.dataOffset), { threads, minSplitWork: 0 });
  await m.threadsReady();
  const inner = m.rowCallPool;
  let jobs = 0, split = 0;
  const counted: RowCallPool | undefined = inner === null ? undefined : {
    threads: inner.threads,
    minSplitWork: inner.minSplitWork,
    attach: (mod, memory, names) => inner.attach(mod, memory, names),
    detach: (t) => inner.detach(t),
    run: (calls, n, fns, work, table) => {
      const before = m.threadSplits;
      inner.run(calls, n, fns, work, table);
      jobs++;
      if (m.threadSplits > before) split++;
    },
  };
  // 48 tokens with 4 sinks: evictions, and RoPE ranges that differ within a block.
  const config = resolveCacheConfig({ slidingWindowSize: 48, attentionSinkSize: 4, codec });
  const cache = createModelCache(m, config, counted === undefined ? {} : { threads: counted });
  cache.add(0);
  const kv = new CacheKv(cache, 0, m);
  const nVocab = m.hp.nVocab;
  const logits = new Float32Array(ids.length * nVocab);
  const row = new Float32Array(nVocab);
  for (let p = 0; p < ids.length; ) {
    const n = p < prefill ? Math.min(chunk, prefill - p) : 1;
    cache.reserveOrThrow(0, n);
    m.forwardBatch(ids, p, n, kv, row, p, (i, l) => logits.set(l, (p + i) * nVocab));
    p += n;
  }
  const run = { threads: m.threads, logits, jobs, split };
  m.dispose();
  return run;
}
