// Property test: seeded random sequences of cache operations (add, append, fork, evict, truncate,
// remove, snapshot/restore, attend, and refused operations) against a plain-array reference that
// knows only the policies' rules. After every step: the same retained tokens and positions, and
// the cache's own invariants (reference counts, no leaked or double-freed page).

import { describe, expect, it } from "vitest";
import {
  CacheOperationError,
  KvboundError,
  LayerOutOfRangeError,
  SequenceNotFoundError,
  SnapshotError,
} from "../src/errors.js";
import { resolveCacheConfig, type CacheConfig, type CacheConfigInput, type CacheModelShape } from "../src/cache/config.js";
import { PagedKvCache } from "../src/cache/paged-kv-cache.js";
import { appendTokens, makeTokenKv, retainedIds, rng } from "./cache-helpers.js";

const BASE_MODEL: CacheModelShape = {
  nHead: 2,
  layers: [
    { nHeadKv: 1, headDimK: 4, headDimV: 4 },
    { nHeadKv: 2, headDimK: 2, headDimV: 2 },
  ],
  rope: { nRot: 2, freqBase: 10000, neox: true },
};

/** Head dims that suit the wasm attention kernels: the stores live in the cache's wasm memory. */
const WASM_MODEL: CacheModelShape = {
  nHead: 4,
  layers: [
    { nHeadKv: 2, headDimK: 8, headDimV: 8 },
    { nHeadKv: 1, headDimK: 16, headDimV: 8 },
  ],
  rope: { nRot: 8, freqBase: 10000, neox: true },
};

interface RefSeq {
  ids: number[];
  pos: number[];
  scores: number[];
  /** H2O with a score window: per token, queries seen and the last N per-query weights (ring). */
  rings: { seen: number; ring: number[] }[];
  nextPos: number;
}

/** The reference: what each policy keeps, written from the policies' definitions, on plain arrays. */
class Reference {
  readonly seqs = new Map<number, RefSeq>();
  constructor(readonly config: CacheConfig) {}

  /** Indices (ascending) the policy evicts before n new tokens arrive. */
  evictions(s: RefSeq, e: number, n: number): number[] {
    const p = this.config.policy;
    const range = (lo: number): number[] => Array.from({ length: e }, (_, j) => lo + j);
    const lowest = (lo: number, hi: number): number[] => {
      const taken = new Set<number>();
      for (let j = 0; j < e; j++) {
        let best = -1;
        for (let i = lo; i < hi; i++) if (!taken.has(i) && (best < 0 || s.scores[i]! < s.scores[best]!)) best = i;
        taken.add(best);
      }
      return [...taken].sort((a, b) => a - b);
    };
    switch (p.kind) {
      case "context":
        throw new Error("context never evicts");
      case "sliding":
        return range(p.sinks);
      case "fifo":
        return range(0);
      case "prefix-recent":
        return range(p.prefix);
      case "h2o":
        return lowest(p.sinks, s.ids.length - Math.max(0, p.recent - n));
      case "tova":
        return lowest(p.sinks, s.ids.length);
      default:
        return p satisfies never;
    }
  }

  append(s: RefSeq, newIds: number[]): "ok" | "length" {
    const W = this.config.windowTokens;
    const e = s.ids.length + newIds.length - W;
    if (e > 0) {
      if (this.config.policy.kind === "context") return "length";
      const drop = new Set(this.evictions(s, e, newIds.length));
      const keep = (_: unknown, i: number): boolean => !drop.has(i);
      s.ids = s.ids.filter(keep);
      s.pos = s.pos.filter(keep);
      s.scores = s.scores.filter(keep);
      s.rings = s.rings.filter(keep);
    }
    const n = this.scoreWindow();
    for (const id of newIds) {
      s.ids.push(id);
      s.pos.push(s.nextPos++);
      s.scores.push(0);
      s.rings.push({ seen: 0, ring: new Array<number>(n ?? 0).fill(0) });
    }
    return "ok";
  }

  truncate(s: RefSeq, n: number): void {
    if (n === 0) return;
    s.nextPos = s.pos[s.ids.length - n]!;
    s.ids.length -= n;
    s.pos.length -= n;
    s.scores.length -= n;
    s.rings.length -= n;
  }

  scoreWindow(): number | null {
    const p = this.config.policy;
    return p.kind === "h2o" ? p.scoreWindow : null;
  }

  /** attend with all-zero queries: every visible token gets weight 1/nVisible in every head. */
  attendZero(s: RefSeq, layer: number, nLayer: number, nQuery: number): void {
    const p = this.config.policy;
    const held = s.ids.length;
    for (let qi = 0; qi < nQuery; qi++) {
      const nVis = held - nQuery + qi + 1;
      const w = Math.fround(1 / nVis); // f32 softmax weight, averaged over 2 identical heads
      const n = this.scoreWindow();
      if (p.kind === "h2o" && n === null) for (let t = 0; t < nVis; t++) s.scores[t] = s.scores[t]! + w;
      if (p.kind === "h2o" && n !== null) {
        // The score is the sum of the last n queries' weights: layer 0 takes the slot n queries old
        // out and writes this query's; later layers add to the slot of the same query; every n
        // queries the sum is recomputed from the ring (the arithmetic of score-window.ts, on arrays).
        const counted = qi >= nQuery - n;
        for (let t = 0; t < nVis; t++) {
          const r = s.rings[t]!;
          if (layer === 0) {
            const k = r.seen % n;
            const old = r.ring[k]!;
            const v = counted ? w : 0;
            r.ring[k] = v;
            r.seen++;
            if (k === n - 1) {
              let sum = 0;
              for (const x of r.ring) sum += x;
              s.scores[t] = sum;
            } else s.scores[t] = s.scores[t]! - old + v;
          } else if (counted) {
            const k = (r.seen - nQuery + qi) % n;
            r.ring[k] = r.ring[k]! + w;
            s.scores[t] = s.scores[t]! + w;
          }
        }
      }
      if (p.kind === "tova" && qi === nQuery - 1) {
        for (let t = 0; t < nVis; t++) s.scores[t] = layer === 0 ? w * (1 / nLayer) : s.scores[t]! + w * (1 / nLayer);
      }
    }
  }
}

/** Cheap equality (expect().toEqual is too slow for 10,000 steps); reports the first difference. */
function same(got: ArrayLike<number>, want: ArrayLike<number>, what: string): void {
  let ok = got.length === want.length;
  for (let i = 0; ok && i < want.length; i++) ok = got[i] === want[i];
  if (!ok) expect(Array.from(got), what).toEqual(Array.from(want));
}

function expectSame(cache: PagedKvCache, ref: Reference): void {
  cache.checkInvariants();
  const ids = cache.sequenceIds().sort((a, b) => a - b);
  same(ids, [...ref.seqs.keys()].sort((a, b) => a - b), "sequence ids");
  const buf = new Int32Array(ref.config.windowTokens);
  for (const [id, s] of ref.seqs) {
    same(retainedIds(cache, id), s.ids, `seq ${id} retained ids`);
    const n = cache.originalPositions(id, buf);
    same(buf.subarray(0, n), s.pos, `seq ${id} original positions`);
    cache.positions(id, buf);
    const reassigned = ref.config.policy.positions === "reassigned";
    for (let i = 0; i < n; i++) {
      if (buf[i] !== (reassigned ? i : s.pos[i])) same(buf.subarray(0, n), reassigned ? s.pos.map((_, j) => j) : s.pos, `seq ${id} positions`);
    }
    is(cache.sequenceStats(id).nextPosition, s.nextPos, `seq ${id} next position`);
  }
}

function check(cond: boolean, what: string): void {
  if (!cond) throw new Error(`property failed: ${what}`);
}

function is(got: unknown, want: unknown, what: string): void {
  if (got !== want) throw new Error(`property failed: ${what}: got ${String(got)}, want ${String(want)}`);
}

function expectRefused(fn: () => unknown, cls: new (...a: never[]) => KvboundError): void {
  try {
    fn();
  } catch (err) {
    if (err instanceof cls) return;
    throw err;
  }
  throw new Error(`expected ${cls.name}`);
}

/** Runs `nOps` random operations; returns counts of what happened (so a test can check coverage). */
function run(input: CacheConfigInput, nOps: number, seed: number, mayExhaust: boolean, MODEL: CacheModelShape = BASE_MODEL): Record<string, number> {
  const config = resolveCacheConfig({ codec: "f32", maxSequences: 4, ...input });
  const cache = new PagedKvCache(config, MODEL);
  const counts: Record<string, number> = { [`kernels:${cache.kernels}`]: 1 };
  const ref = new Reference(config);
  const rand = rng(seed);
  const pick = (n: number): number => Math.floor(rand() * n);
  const bump = (k: string): void => {
    counts[k] = (counts[k] ?? 0) + 1;
  };
  let nextId = 0;
  let nextSeq = 0;
  const live = (): number[] => [...ref.seqs.keys()];
  const newRefSeq = (): RefSeq => ({ ids: [], pos: [], scores: [], rings: [], nextPos: 0 });
  const maxChunk = config.windowTokens - (config.policy.kind === "context" ? 0 : config.attentionSinkSize);

  for (let op = 0; op < nOps; op++) {
    const seqs = live();
    const r = rand();
    const sid = seqs.length > 0 ? seqs[pick(seqs.length)]! : -1;
    if (seqs.length === 0 || (r < 0.05 && seqs.length < config.maxSequences)) {
      const id = nextSeq++;
      cache.add(id);
      ref.seqs.set(id, newRefSeq());
      bump("add");
    } else if (r < 0.55) {
      const s = ref.seqs.get(sid)!;
      const n = 1 + pick(rand() < 0.8 ? 2 : Math.min(maxChunk, 12));
      const kvs = [];
      const ids: number[] = [];
      for (let i = 0; i < n; i++) {
        ids.push(nextId);
        kvs.push(makeTokenKv(MODEL, nextId++, rand));
      }
      const heldBefore = s.ids.length;
      const res = cache.reserve(sid, n);
      if (res.ok) {
        for (let l = 0; l < cache.nLayer; l++) for (let i = 0; i < n; i++) cache.write(l, sid, i, kvs[i]!.k[l]!, 0, kvs[i]!.v[l]!, 0);
        is(ref.append(s, ids), "ok", "ref.append(s, ids)");
        is(res.evicted, Math.max(0, heldBefore + n - config.windowTokens), "res.evicted");
        bump(res.evicted > 0 ? "append+evict" : "append");
      } else if (res.reason === "length") {
        is(ref.append(s, ids), "length", "ref.append(s, ids)");
        bump("refused:length");
      } else {
        // Refused for pages: the reference is untouched and must still equal the cache.
        is(mayExhaust, true, "mayExhaust");
        check(res.neededPages > res.freePages, "res.neededPages > res.freePages");
        bump("refused:exhausted");
      }
    } else if (r < 0.62) {
      const s = ref.seqs.get(sid)!;
      const n = pick(Math.min(s.ids.length, 6) + 1);
      cache.truncate(sid, n);
      ref.truncate(s, n);
      bump("truncate");
    } else if (r < 0.68) {
      if (seqs.length < config.maxSequences) {
        const id = nextSeq++;
        cache.fork(sid, id);
        ref.seqs.set(id, structuredClone(ref.seqs.get(sid)!));
        bump("fork");
      } else {
        expectRefused(() => cache.fork(sid, nextSeq), CacheOperationError);
        bump("refused:fork");
      }
    } else if (r < 0.72) {
      cache.remove(sid);
      ref.seqs.delete(sid);
      bump("remove");
    } else if (r < 0.78) {
      // Snapshot, then restore it under a new id (or in place of the original).
      const bytes = cache.snapshot(sid);
      if (rand() < 0.3) {
        const bad = bytes.slice();
        const at = pick(bad.length);
        bad[at] = bad[at]! ^ (1 + pick(255));
        expectRefused(() => cache.restore(nextSeq, bad), SnapshotError);
        bump("refused:corrupt-snapshot");
      } else {
        if (seqs.length >= config.maxSequences || rand() < 0.5) {
          const saved = ref.seqs.get(sid)!;
          cache.remove(sid);
          ref.seqs.delete(sid);
          // Its exclusive pages were just freed; shared ones were not, so a budget may refuse.
          if (cache.restore(sid, bytes)) {
            ref.seqs.set(sid, saved);
            bump("snapshot+restore-in-place");
          } else {
            is(mayExhaust, true, "mayExhaust");
            bump("refused:restore-exhausted");
          }
        } else {
          const id = nextSeq++;
          if (cache.restore(id, bytes)) {
            ref.seqs.set(id, structuredClone(ref.seqs.get(sid)!));
            bump("snapshot+restore-copy");
          } else {
            is(mayExhaust, true, "mayExhaust");
            bump("refused:restore-exhausted");
          }
        }
      }
    } else if (r < 0.9) {
      const s = ref.seqs.get(sid)!;
      if (s.ids.length > 0) {
        const nQuery = 1 + pick(Math.min(3, s.ids.length));
        for (let l = 0; l < cache.nLayer; l++) {
          const shape = MODEL.layers[l]!;
          const q = new Float32Array(nQuery * MODEL.nHead * shape.headDimK);
          const out = new Float32Array(nQuery * MODEL.nHead * shape.headDimV);
          cache.attend(l, sid, q, 0, nQuery, out, 0);
          ref.attendZero(s, l, cache.nLayer, nQuery);
        }
        bump("attend");
      }
    } else {
      // Refused operations: each must throw its typed error and change nothing.
      const k = new Float32Array(32);
      const which = pick(5);
      if (which === 0) expectRefused(() => cache.write(0, nextSeq + 100, 0, k, 0, k, 0), SequenceNotFoundError);
      else if (which === 1) expectRefused(() => cache.write(cache.nLayer, sid, 0, k, 0, k, 0), LayerOutOfRangeError);
      else if (which === 2) expectRefused(() => cache.reserve(sid, maxChunk + 1), CacheOperationError);
      else if (which === 3) expectRefused(() => cache.truncate(sid, ref.seqs.get(sid)!.ids.length + 1), CacheOperationError);
      else expectRefused(() => cache.attend(0, nextSeq + 100, k, 0, 1, k, 0), SequenceNotFoundError);
      bump("refused:typed");
    }
    expectSame(cache, ref);
  }
  counts.compactions = cache.stats().compactions;
  counts.cow = cache.stats().copyOnWritePages;
  return counts;
}

/** Bytes of `pages` pages for BASE_MODEL at f32: per page, per layer, K + V. */
function budgetFor(pages: number, pageSize: number): number {
  // Hand count: layer 0 K 1x4 + V 1x4, layer 1 K 2x2 + V 2x2 = 16 floats per token = 64 bytes.
  return pages * pageSize * 64;
}

describe("cache property test (10,000 operations per configuration)", () => {
  const cases: Array<[string, CacheConfigInput, boolean]> = [
    ["sliding, window-sized pool", { slidingWindowSize: 13, attentionSinkSize: 3, pageSize: 4 }, false],
    ["fifo original positions, tight budget", { slidingWindowSize: 10, pageSize: 2, budgetBytes: budgetFor(14, 2), policy: { kind: "fifo", positions: "original" } }, true],
    ["prefix-recent, page 1", { slidingWindowSize: 9, pageSize: 1, policy: { kind: "prefix-recent", prefix: 4 } }, false],
    ["context, budget", { contextWindowSize: 20, pageSize: 4, budgetBytes: budgetFor(12, 4) }, true],
    ["h2o with holes and compaction", { slidingWindowSize: 14, attentionSinkSize: 2, pageSize: 4, policy: { kind: "h2o", recent: 3 } }, true],
    ["h2o score window 3", { slidingWindowSize: 14, attentionSinkSize: 2, pageSize: 4, policy: { kind: "h2o", heavy: 8, scoreWindow: 3 } }, true],
    ["tova reassigned, budget", { slidingWindowSize: 11, pageSize: 2, budgetBytes: budgetFor(20, 2), policy: { kind: "tova", sinks: 1, positions: "reassigned" } }, true],
  ];
  for (const [name, input, mayExhaust] of cases) {
    it(name, () => {
      const counts = run(input, 10_000, name.length * 7919, mayExhaust);
      // Coverage: the interesting paths actually ran.
      for (const k of ["add", "append", "fork", "truncate", "remove", "attend", "refused:typed"]) expect(counts[k] ?? 0).toBeGreaterThan(0);
      if (input.contextWindowSize === undefined) expect(counts["append+evict"] ?? 0).toBeGreaterThan(100);
      if (name.startsWith("h2o")) expect(counts.compactions).toBeGreaterThan(0);
      if ((input.pageSize ?? 16) > 1) expect(counts.cow).toBeGreaterThan(0);
    });
  }

  // The same operations over stores in the wasm kernels' memory (regions of one buffer instead of
  // a buffer each): copy-on-write, truncation, snapshots and compaction must not care.
  const wasmCases: Array<[string, CacheConfigInput, boolean]> = [
    ["wasm memory: sliding, page 4", { slidingWindowSize: 13, attentionSinkSize: 3, pageSize: 4 }, false],
    ["wasm memory: context, budget", { contextWindowSize: 20, pageSize: 4, budgetBytes: 12 * 4 * (2 * 8 + 2 * 8 + 16 + 8) * 4 }, true],
  ];
  for (const [name, input, mayExhaust] of wasmCases) {
    it(name, () => {
      const counts = run(input, 10_000, name.length * 7919, mayExhaust, WASM_MODEL);
      expect(counts["kernels:wasm"]).toBe(1);
      for (const k of ["add", "append", "fork", "truncate", "remove", "attend", "refused:typed"]) expect(counts[k] ?? 0).toBeGreaterThan(0);
      expect(counts.cow).toBeGreaterThan(0);
    });
  }
});
