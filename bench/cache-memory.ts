// Issue 3's memory acceptance: after 1,000,000 appended tokens with a 4096-token sliding window the
// cache's bytes equal those after the first 4096 tokens, and the process heap does not grow.
// A benchmark, not a timed test (about a minute). Needs --expose-gc to sample the heap after a
// forced collection:
//   node --expose-gc --import tsx bench/cache-memory.ts [--tokens 1000000]
// Small model shape (2 layers, 8 query heads, 2 KV heads x 64, RoPE, f16 pages) so that the run
// is dominated by the cache's own bookkeeping rather than by copying K/V bytes.

import { resolveCacheConfig, uniformModelShape } from "../src/cache/config.js";
import { PagedKvCache } from "../src/cache/paged-kv-cache.js";
import { gaussian, seededRandom } from "../src/cache/codecs/synthetic-kv.js";
import { machineInfo, machineLines } from "./lib/machine.js";
import { markdownTable } from "./lib/table.js";

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) {
  console.error("run with --expose-gc: node --expose-gc --import tsx bench/cache-memory.ts");
  process.exit(2);
}
const at = process.argv.indexOf("--tokens");
const TOKENS = at >= 0 ? Number(process.argv[at + 1]) : 1_000_000;
const WINDOW = 4096;
const SINKS = 4;
const N_LAYER = 2;
const N_HEAD = 8;
const N_HEAD_KV = 2;
const HEAD_DIM = 64;
const ATTEND_EVERY = 1000; // one decode attention (every layer) per this many tokens: exercises the read path too
const SAMPLES = 10;

const model = uniformModelShape(N_LAYER, N_HEAD, N_HEAD_KV, HEAD_DIM, HEAD_DIM, { nRot: HEAD_DIM, freqBase: 10000, neox: false });
const cache = new PagedKvCache(resolveCacheConfig({ slidingWindowSize: WINDOW, attentionSinkSize: SINKS, codec: "f16" }), model);
cache.add(0);
const width = N_HEAD_KV * HEAD_DIM;
const g = gaussian(seededRandom(3));
const src = Float32Array.from({ length: 64 * width }, () => g());
const q = Float32Array.from({ length: N_HEAD * HEAD_DIM }, () => g());
const out = new Float32Array(N_HEAD * HEAD_DIM);

const MiB = 2 ** 20;
interface Sample {
  tokens: number;
  held: number;
  pagesUsed: number;
  bytesReserved: number;
  bytesUsed: number;
  evicted: number;
  heapUsed: number;
  arrayBuffers: number;
  rss: number;
}
const samples: Sample[] = [];
function sample(tokens: number): void {
  gc!();
  gc!();
  const m = process.memoryUsage();
  const st = cache.stats();
  samples.push({
    tokens,
    held: st.tokens,
    pagesUsed: st.pagesUsed,
    bytesReserved: st.bytesReserved,
    bytesUsed: st.bytesUsed,
    evicted: st.evictedTokens,
    heapUsed: m.heapUsed,
    arrayBuffers: m.arrayBuffers,
    rss: m.rss,
  });
}

const t0 = performance.now();
// After the window fills, and one page later (the first evictions: from then on one page is split
// between the oldest evicted and the newest appended tokens, so bytesUsed is one page more).
const checkpoints = new Set<number>([WINDOW, WINDOW + 16]);
for (let i = 1; i <= SAMPLES; i++) checkpoints.add(Math.round((TOKENS * i) / SAMPLES));
for (let t = 1; t <= TOKENS; t++) {
  cache.reserve(0, 1);
  const o = (t % 64) * width;
  for (let l = 0; l < N_LAYER; l++) {
    cache.write(l, 0, 0, src, o, src, o);
    if (t % ATTEND_EVERY === 0) cache.attend(l, 0, q, 0, 1, out, 0);
  }
  if (checkpoints.has(t)) sample(t);
}
const seconds = (performance.now() - t0) / 1000;
cache.checkInvariants();

const first = samples[0]!;
const last = samples[samples.length - 1]!;
const rows = samples.map((s) => [
  s.tokens,
  s.held,
  s.evicted,
  s.pagesUsed,
  s.bytesReserved,
  s.bytesUsed,
  (s.heapUsed / MiB).toFixed(2),
  (s.arrayBuffers / MiB).toFixed(2),
  (s.rss / MiB).toFixed(1),
]);
const lines = [
  `#### Memory over ${TOKENS.toLocaleString("en-US")} appended tokens (sliding window ${WINDOW}, ${SINKS} sinks; ${N_LAYER} layers x ${N_HEAD_KV} KV heads x ${HEAD_DIM}, f16, RoPE; ` +
    `one attention per layer every ${ATTEND_EVERY} tokens; heap sampled after two forced GCs)\n`,
  machineLines({ ...machineInfo(), command: `node --expose-gc --import tsx bench/cache-memory.ts${at >= 0 ? ` --tokens ${TOKENS}` : ""}` }, [
    `run time: ${seconds.toFixed(1)} s`,
  ]),
  "",
  markdownTable(
    [
      { title: "tokens appended", align: "right" },
      { title: "held", align: "right" },
      { title: "evicted", align: "right" },
      { title: "pages used", align: "right" },
      { title: "bytesReserved", align: "right" },
      { title: "bytesUsed", align: "right" },
      { title: "heapUsed MiB", align: "right" },
      { title: "arrayBuffers MiB", align: "right" },
      { title: "rss MiB", align: "right" },
    ],
    rows,
  ),
  "",
  `- bytesReserved after ${first.tokens} vs ${last.tokens} tokens: ${first.bytesReserved} vs ${last.bytesReserved} ` +
    `(${first.bytesReserved === last.bytesReserved ? "equal" : "DIFFERENT"})`,
  `- bytesUsed after ${first.tokens} tokens (window just full, no eviction yet): ${first.bytesUsed} (${first.pagesUsed} pages); ` +
    `from the first eviction on (${samples[1]!.tokens} tokens): ${samples[1]!.bytesUsed} (${samples[1]!.pagesUsed} pages: the sink page plus the ` +
    `${WINDOW - SINKS} recent tokens, which straddle one more page, the oldest partly evicted and the newest partly filled); at ${last.tokens}: ${last.bytesUsed} ` +
    `(${samples[1]!.bytesUsed === last.bytesUsed ? "equal to the first-eviction sample" : "DIFFERENT from the first-eviction sample"})`,
  `- heapUsed after ${first.tokens}: ${(first.heapUsed / MiB).toFixed(2)} MiB; max over later samples: ` +
    `${(Math.max(...samples.slice(1).map((s) => s.heapUsed)) / MiB).toFixed(2)} MiB; last: ${(last.heapUsed / MiB).toFixed(2)} MiB ` +
    `(growth first to last: ${((last.heapUsed - first.heapUsed) / 1024).toFixed(1)} KiB; from the ${samples[2]!.tokens}-token sample to the last: ` +
    `${((last.heapUsed - samples[2]!.heapUsed) / 1024).toFixed(1)} KiB)`,
];
console.log(lines.join("\n"));
