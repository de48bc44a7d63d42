// Microbenchmark of the codec kernels: ns per cached token (one KV head) for dotRun (scores against
// keys) and axpyRun (weighted sum of values), per codec, at headDim 64 and 128, over 8192 cached
// tokens x 8 KV heads (larger than the CPU caches, as in decode attention over a long context).
// Run: npx tsx bench/cache-codecs.ts [--tokens N] [--rounds R] [--codecs int8,int4] (f32 always runs)
// Codecs are timed round-robin, one pass each per round, and each figure is the fastest round:
// other load on the machine (a shared runner) then inflates every codec alike, not one of them.

import { CODEC_KINDS, createPageStore } from "../src/cache/codecs/index.js";
import { gaussian, seededRandom, syntheticKv } from "../src/cache/codecs/synthetic-kv.js";

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

const N_TOKENS = arg("--tokens", 8192);
const ROUNDS = arg("--rounds", 15);
const ONLY = process.argv.includes("--codecs") ? (process.argv[process.argv.indexOf("--codecs") + 1] ?? "").split(",") : null;
const PAGE = 16;
const N_HEAD_KV = 8;

function timePass(fn: () => void): number {
  const t0 = performance.now();
  fn();
  return (performance.now() - t0) * 1e6; // ns
}

const rows: string[] = [];
rows.push(`tokens ${N_TOKENS}, ${N_HEAD_KV} KV heads, page ${PAGE}; ns per (token, head), best of ${ROUNDS} rounds; node ${process.version}`);
rows.push("codec | headDim | store MiB | dotRun ns | axpyRun ns | dot vs f32 | axpy vs f32");
for (const headDim of [64, 128]) {
  const nPages = N_TOKENS / PAGE;
  const shape = { nPages, pageSize: PAGE, nHeadKv: N_HEAD_KV, headDim };
  const keys = syntheticKv({ nTokens: N_TOKENS, nHeadKv: N_HEAD_KV, headDim, seed: 1, outlierChannels: 4 });
  const g = gaussian(seededRandom(2));
  const q = Float32Array.from({ length: headDim }, () => g());
  const w = Float32Array.from({ length: N_TOKENS }, () => 1 / N_TOKENS);
  const scores = new Float32Array(N_TOKENS);
  const out = new Float32Array(headDim);
  const kinds = CODEC_KINDS.filter((kind) => !ONLY || kind === "f32" || ONLY.includes(kind));
  const ts = N_HEAD_KV * headDim;
  const passes = kinds.map((kind) => {
    const k = createPageStore(kind, "k", shape);
    const v = createPageStore(kind, "v", shape);
    for (let t = 0; t < N_TOKENS; t++) {
      k.writeToken(Math.floor(t / PAGE), t % PAGE, keys, t * ts);
      v.writeToken(Math.floor(t / PAGE), t % PAGE, keys, t * ts);
    }
    const dot = (): void => {
      for (let h = 0; h < N_HEAD_KV; h++) for (let p = 0; p < nPages; p++) k.dotRun(p, 0, PAGE, h, q, 0, scores, p * PAGE);
    };
    const axpy = (): void => {
      for (let h = 0; h < N_HEAD_KV; h++) for (let p = 0; p < nPages; p++) v.axpyRun(p, 0, PAGE, h, w, p * PAGE, out, 0);
    };
    dot(); // warm up (JIT)
    axpy();
    return { kind, mib: k.reservedBytes / 2 ** 20, dot, axpy, bestDot: Infinity, bestAxpy: Infinity };
  });
  for (let round = 0; round < ROUNDS; round++) {
    for (const p of passes) {
      p.bestDot = Math.min(p.bestDot, timePass(p.dot) / (N_TOKENS * N_HEAD_KV));
      p.bestAxpy = Math.min(p.bestAxpy, timePass(p.axpy) / (N_TOKENS * N_HEAD_KV));
    }
  }
  const base = passes[0]!;
  for (const p of passes) {
    rows.push(
      `${p.kind.padEnd(5)} | ${String(headDim).padStart(7)} | ${p.mib.toFixed(1).padStart(9)} | ` +
        `${p.bestDot.toFixed(1).padStart(9)} | ${p.bestAxpy.toFixed(1).padStart(10)} | ` +
        `${(p.bestDot / base.bestDot).toFixed(2).padStart(10)} | ${(p.bestAxpy / base.bestAxpy).toFixed(2).padStart(11)}`,
    );
  }
}
console.log(rows.join("\n"));
