// `npm run bench:cache`: the timed benchmarks of issue 3's acceptance, every figure a ratio of two
// variants measured in this one run (the machine is shared: load moves every variant alike when
// the variants are interleaved round by round, and medians shrug off a stray slow round).
//
//   1. append + evict: ns per token of reserve(1) + write of every layer, in steady state (window
//      full, one eviction per token), sliding windows 4096 and 65536 with 4 sinks. Flat means the
//      65536/4096 ratio is <= 1.2.
//   2. decode attention over 8k and 32k cached tokens (f32, one query token, GQA) against a plain
//      copy (Float32Array.set) of the same K+V bytes: "effective bandwidth" = K+V bytes the
//      attention reads per second; target >= 50% of the copy's bytes per second.
//   3. f16, int8, fp8 and 4-bit attention vs f32 at the same length (time ratio; < 1 is faster).
//
// Shape: Llama-3-8B's attention (32 query heads, 8 KV heads x 128, RoPE base 500000, normal
// layout) with 4 of its 32 layers for the append benchmark (per-token cost is linear in layers; 4
// keep the 65536-token f16 cache at 1 GiB) and 1 layer for attention (attention is per layer).
// The memory benchmark (1M tokens, heap samples) is bench/cache-memory.ts.
//
// Run: npx tsx bench/cache.ts [--quick] [--only append,attention]

import { resolveCacheConfig, uniformModelShape, type CacheModelShape } from "../src/cache/config.js";
import type { CodecKind } from "../src/cache/codecs/types.js";
import { PagedKvCache } from "../src/cache/paged-kv-cache.js";
import type { RopeSpec } from "../src/cache/rope.js";
import { gaussian, seededRandom } from "../src/cache/codecs/synthetic-kv.js";
import { machineInfo, machineLines } from "./lib/machine.js";
import { fmt, markdownTable } from "./lib/table.js";
import { median } from "./lib/timing.js";

const QUICK = process.argv.includes("--quick");
const onlyAt = process.argv.indexOf("--only");
const ONLY = onlyAt >= 0 ? (process.argv[onlyAt + 1] ?? "").split(",") : null;
const runs = (name: string): boolean => ONLY === null || ONLY.includes(name);

const N_HEAD = 32;
const N_HEAD_KV = 8;
const HEAD_DIM = 128;
const ROPE: RopeSpec = { nRot: HEAD_DIM, freqBase: 500000, neox: false };
const TOKEN_FLOATS = N_HEAD_KV * HEAD_DIM;
const SINKS = 4;

/** 64 tokens of seeded activations, cycled as the K and V written (the values do not affect the time of f32/f16 paths). */
function activations(seed: number, tokens: number, width: number): Float32Array {
  const g = gaussian(seededRandom(seed));
  const a = new Float32Array(tokens * width);
  for (let i = 0; i < a.length; i++) a[i] = g();
  return a;
}
const SRC_TOKENS = 64;
const SRC = activations(1, SRC_TOKENS, TOKEN_FLOATS);

/** Fills a sequence to `n` tokens in prefill chunks, writing every layer. */
function fill(cache: PagedKvCache, n: number): void {
  const nLayer = cache.nLayer;
  const chunk = cache.config.prefillChunkSize;
  let t = 0;
  while (t < n) {
    const c = Math.min(chunk, n - t);
    cache.reserveOrThrow(0, c);
    for (let l = 0; l < nLayer; l++) {
      for (let i = 0; i < c; i++) {
        cache.write(l, 0, i, SRC, ((t + i) % SRC_TOKENS) * TOKEN_FLOATS, SRC, ((t + i + 7) % SRC_TOKENS) * TOKEN_FLOATS);
      }
    }
    t += c;
  }
}

function newCache(model: CacheModelShape, codec: CodecKind, window: { sliding: number } | { context: number }, kernels: "wasm" | "js" = "wasm"): PagedKvCache {
  const config =
    "sliding" in window
      ? resolveCacheConfig({ slidingWindowSize: window.sliding, attentionSinkSize: SINKS, codec })
      : resolveCacheConfig({ contextWindowSize: window.context, codec });
  const cache = new PagedKvCache(config, model, { kernels });
  cache.add(0);
  return cache;
}

/** A stopwatch reading both clocks: wall time, and this process's CPU time (user + system). On a
 *  shared machine the process is descheduled at random; CPU time leaves that out, so the tables'
 *  figures are CPU time and the wall-time ratio is given beside them as a check. */
interface Lap {
  readonly cpuMs: number;
  readonly wallMs: number;
}
function lap<T>(fn: () => T): Lap {
  const c0 = process.cpuUsage();
  const w0 = performance.now();
  fn();
  const wallMs = performance.now() - w0;
  const c = process.cpuUsage(c0);
  return { cpuMs: (c.user + c.system) / 1000, wallMs };
}

const MiB = 2 ** 20;
const out: string[] = [];
const say = (s: string): void => {
  out.push(s);
  console.log(s);
};

const machine = machineInfo();
say(`### Cache benchmarks: ${machine.date.slice(0, 10)}\n`);
say(machineLines(machine, [`load average at start: ${(await import("node:os")).loadavg().map((x) => x.toFixed(2)).join(", ")}`]));
say("");

// ---------------------------------------------------------------------------------------------
// 1. Append + evict per token
if (runs("append")) {
  const N_LAYER = 4;
  const model = uniformModelShape(N_LAYER, N_HEAD, N_HEAD_KV, HEAD_DIM, HEAD_DIM, ROPE);
  const windows = [4096, 65536] as const;
  const codecs: CodecKind[] = ["f16", "f32", "int4"];
  const BLOCK = QUICK ? 512 : 1024;
  const ROUNDS = QUICK ? 9 : 25;
  const rows: (string | number)[][] = [];
  for (const codec of codecs) {
    // One cache per window, both alive, filled to steady state, then timed in alternating blocks.
    const caches = windows.map((w) => {
      const c = newCache(model, codec, { sliding: w });
      fill(c, w + BLOCK); // past the window: evictions already happen
      return c;
    });
    let tok = 0;
    const block = (cache: PagedKvCache): Lap =>
      lap(() => {
        for (let j = 0; j < BLOCK; j++) {
          cache.reserve(0, 1);
          const o = (tok++ % SRC_TOKENS) * TOKEN_FLOATS;
          for (let l = 0; l < N_LAYER; l++) cache.write(l, 0, 0, SRC, o, SRC, o);
        }
      });
    for (const c of caches) block(c); // warm-up (JIT)
    const laps: Lap[][] = windows.map(() => []);
    const pair: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      // Alternate which window goes first so that neither always follows the other.
      const order = r % 2 === 0 ? [0, 1] : [1, 0];
      for (const i of order) laps[i]!.push(block(caches[i]!));
      pair.push(laps[1]![r]!.cpuMs / laps[0]![r]!.cpuMs);
    }
    for (const c of caches) c.checkInvariants();
    const st = caches.map((c) => c.stats());
    const m0 = (median(laps[0]!.map((x) => x.cpuMs)) * 1e3) / BLOCK; // µs per token
    const m1 = (median(laps[1]!.map((x) => x.cpuMs)) * 1e3) / BLOCK;
    const wallRatio = median(laps[1]!.map((x) => x.wallMs)) / median(laps[0]!.map((x) => x.wallMs));
    rows.push([
      codec,
      `${fmt(st[0]!.bytesReserved / MiB)} / ${fmt(st[1]!.bytesReserved / MiB)}`,
      fmt(m0),
      fmt(m1),
      (m1 / m0).toFixed(2),
      median(pair).toFixed(2),
      `${Math.min(...pair).toFixed(2)}-${Math.max(...pair).toFixed(2)}`,
      wallRatio.toFixed(2),
    ]);
  }
  say(
    `#### Append + evict per token (sliding window, ${SINKS} sinks; ${N_LAYER} layers x ${N_HEAD_KV} KV heads x ${HEAD_DIM}, RoPE; ` +
      `steady state: every token evicts one; ${ROUNDS} interleaved rounds of ${BLOCK} tokens per window)\n`,
  );
  say(
    markdownTable(
      [
        { title: "codec" },
        { title: "cache MiB (4096 / 65536)", align: "right" },
        { title: "CPU µs/token @4096", align: "right" },
        { title: "CPU µs/token @65536", align: "right" },
        { title: "ratio 65536/4096", align: "right" },
        { title: "median of per-round ratios", align: "right" },
        { title: "per-round range", align: "right" },
        { title: "wall-time ratio", align: "right" },
      ],
      rows,
    ),
  );
  say("");
}

// ---------------------------------------------------------------------------------------------
// 2 + 3. Decode attention vs a plain copy, and per codec vs f32
if (runs("attention")) {
  const model = uniformModelShape(1, N_HEAD, N_HEAD_KV, HEAD_DIM, HEAD_DIM, ROPE);
  // Each codec with the kernels the cache picks (wasm SIMD here), then f32 in the JS kernels (the
  // fallback without wasm SIMD) for reference.
  const entries: { codec: CodecKind; kernels: "wasm" | "js" }[] = [
    ...(["f32", "f16", "int8", "fp8", "int4"] as const).map((codec) => ({ codec, kernels: "wasm" as const })),
    { codec: "f32", kernels: "js" },
  ];
  const q = activations(2, 1, N_HEAD * HEAD_DIM);
  const o = new Float32Array(N_HEAD * HEAD_DIM);
  const bwRows: (string | number)[][] = [];
  const codecRows: (string | number)[][] = [];
  for (const n of [8192, 32768]) {
    const ROUNDS = QUICK ? 5 : n > 10000 ? 9 : 15;
    const caches = entries.map(({ codec, kernels }) => {
      const c = newCache(model, codec, { context: n }, kernels);
      fill(c, n);
      return c;
    });
    const f32Bytes = n * TOKEN_FLOATS * 4 * 2; // K + V
    // The copy baseline: the same bytes, one Float32Array.set (a memcpy) into a second buffer.
    const src = new Float32Array(f32Bytes / 4);
    const dst = new Float32Array(src.length);
    // Written in full: untouched pages of a fresh buffer all map the kernel's one zero page, and a
    // copy out of them reads the same 4 KiB over and over (measured about 2x too fast at 256 MiB).
    for (let i = 0; i < src.length; i += SRC.length) src.set(SRC.subarray(0, Math.min(SRC.length, src.length - i)), i);
    dst.fill(1);
    const copy = (): Lap => lap(() => dst.set(src));
    const attend = (c: PagedKvCache): Lap => lap(() => c.attend(0, 0, q, 0, 1, o, 0));
    copy();
    for (const c of caches) attend(c);
    const copyLaps: Lap[] = [];
    const byCodec: Lap[][] = caches.map(() => []);
    for (let r = 0; r < ROUNDS; r++) {
      copyLaps.push(copy());
      // Alternate the order so that no codec always runs right after the copy (cold caches).
      for (let j = 0; j < caches.length; j++) {
        const i = r % 2 === 0 ? j : caches.length - 1 - j;
        byCodec[i]!.push(attend(caches[i]!));
      }
    }
    const copyMs = copyLaps.map((x) => x.cpuMs);
    const copyMed = median(copyMs);
    const f32Med = median(byCodec[0]!.map((x) => x.cpuMs));
    const copyGBs = f32Bytes / copyMed / 1e6;
    for (let i = 0; i < caches.length; i++) {
      if (entries[i]!.codec !== "f32") continue;
      const med = median(byCodec[i]!.map((x) => x.cpuMs));
      const wallShare = median(copyLaps.map((x) => x.wallMs)) / median(byCodec[i]!.map((x) => x.wallMs));
      const attGBs = f32Bytes / med / 1e6;
      bwRows.push([n, caches[i]!.kernels, fmt(f32Bytes / MiB), fmt(copyMed), fmt(copyGBs), fmt(med), fmt(attGBs), `${((attGBs / copyGBs) * 100).toFixed(1)}%`, `${(wallShare * 100).toFixed(1)}%`]);
    }
    for (let i = 0; i < caches.length; i++) {
      const c = caches[i]!;
      const med = median(byCodec[i]!.map((x) => x.cpuMs));
      const bytesPerToken = c.stats().bytesReserved / c.stats().pagesTotal / c.config.pageSize; // K+V bytes per token, 1 layer
      codecRows.push([
        n,
        entries[i]!.codec,
        c.kernels,
        fmt(bytesPerToken, 4),
        fmt(med),
        (med / f32Med).toFixed(2),
        fmt((n * bytesPerToken) / med / 1e6),
      ]);
    }
  }
  say(
    `#### Decode attention vs a plain copy (f32, 1 query token, ${N_HEAD} heads / ${N_HEAD_KV} KV heads x ${HEAD_DIM}, RoPE, one layer; ` +
      `bandwidth = K+V bytes / time; the copy is one Float32Array.set of the same number of bytes)\n`,
  );
  say(
    markdownTable(
      [
        { title: "cached tokens", align: "right" },
        { title: "kernels" },
        { title: "K+V MiB", align: "right" },
        { title: "copy CPU ms", align: "right" },
        { title: "copy GB/s", align: "right" },
        { title: "attend CPU ms", align: "right" },
        { title: "attend GB/s", align: "right" },
        { title: "attend / copy", align: "right" },
        { title: "same, wall time", align: "right" },
      ],
      bwRows,
    ),
  );
  say("");
  say(`#### Attention per codec vs f32 at the same length (median CPU ms of one decode step, same shape; time vs f32 in the wasm kernels)\n`);
  say(
    markdownTable(
      [
        { title: "cached tokens", align: "right" },
        { title: "codec" },
        { title: "kernels" },
        { title: "store bytes/token (K+V, 1 layer)", align: "right" },
        { title: "attend CPU ms", align: "right" },
        { title: "time vs f32", align: "right" },
        { title: "stored GB/s", align: "right" },
      ],
      codecRows,
    ),
  );
  say("");
}
