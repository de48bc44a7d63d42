// One group of layers of the paged KV cache: a page pool shared by the group's K and V stores, a
// page table per sequence, a policy that decides what leaves, and attention that reads pages in
// place. PagedKvCache (paged-kv-cache.ts) composes one group per kind of layer.
//
// The token path, per step:
//   reserve(seq, n)            policy evicts, pages are found (or the call is refused, untouched)
//   write(layer, seq, i, k, v) for every layer and i < n, in increasing i (keys pre-RoPE)
//   attend(layer, seq, q, n)   the n new tokens' queries over everything retained
//
// Layout: each retained token lives in (page, slot). A sequence's page table is a deque of
// entries in text order; an entry records which of its slots this sequence still retains
// (token-granular eviction) and each slot's original position. A page is freed when no sequence
// retains a token in it (page-granular freeing). Pages are shared between forks by reference
// count and copied only when a sharer appends into one (copy-on-write).
//
//   seq 0: [p3: s0..s3 live, s4..s15 evicted][p9: 16 live][p4: 7 live, 9 free]
//          '-- sinks ----'                     '-- recent window ------------'

import {
  CacheExhaustedError,
  CacheOperationError,
  ContextWindowSizeExceededError,
  LayerOutOfRangeError,
  SequenceNotFoundError,
} from "../errors.js";
import { createPageStore, pageStoreBytes } from "./codecs/index.js";
import type { CodecKind, KvRole, PageShape, PageStore } from "./codecs/types.js";
import type { CacheConfig, CacheModelShape } from "./config.js";
import { AttentionScratch, attendRuns, attentionScratchFloats, RunTable, type AttendShape, type AttentionWeightsHook } from "./attention.js";
import { attendRunsWasm, type WasmAttendTarget } from "./wasm/attend-wasm.js";
import { CacheKernelMemory, layoutCacheMemory, MAX_CACHE_MEMORY_BYTES, wasmAttentionSupports, type CacheMemoryLayout } from "./wasm/store-memory.js";
import { layerPageShape, PagePool, planPoolLayout, type PoolLayout } from "./page-pool.js";
import { createPolicy, type EvictionPolicy } from "./policies/index.js";
import { Rope } from "./rope.js";
import type { KvRun } from "./runs.js";
import { PageEntry, SequenceState } from "./sequence.js";
import { StatsCounters, type CacheStats, type SequenceStats } from "./stats.js";
import { decodeSnapshot, encodeSnapshot, type SnapshotHeader } from "./snapshot.js";

export type StoreFactory = (kind: CodecKind, role: KvRole, shape: PageShape) => PageStore;

export interface PagedKvCacheOptions {
  /** Replaces the codec factory (tests, instrumented stores). Must reserve what pageStoreBytes says. */
  readonly createStore?: StoreFactory;
  /**
   * "wasm" (default): the stores, run table and attention scratch live in one WebAssembly memory
   * and attention runs in the SIMD kernels of src/cache/wasm/, when this runtime, the codec and the
   * head dims allow it (else as "js"). "js": every buffer is a plain ArrayBuffer and attention runs
   * in the JS kernels. Score-based policies (h2o, tova) and `createStore` always take the JS
   * kernels (they read the stores where they are).
   */
  readonly kernels?: "wasm" | "js";
}

/** What `reserve` did. Refusals change nothing. */
export type ReserveResult =
  | { readonly ok: true; readonly evicted: number }
  /** context policy: the window is full. A prompt boundary throws ContextWindowSizeExceededError;
   *  a decoding loop finishes with reason "length". */
  | { readonly ok: false; readonly reason: "length"; readonly held: number; readonly window: number }
  /** The pool has too few free pages (a budget shared by sequences, or forks holding pages). */
  | { readonly ok: false; readonly reason: "exhausted"; readonly neededPages: number; readonly freePages: number };

/** Largest original position: positions are stored as int32. */
export const MAX_POSITION = 2 ** 31 - 2;

export class CacheGroup {
  readonly config: CacheConfig;
  readonly model: CacheModelShape;
  readonly layout: PoolLayout;
  readonly policy: EvictionPolicy;
  private readonly pool: PagePool;
  private readonly kStores: PageStore[] = [];
  private readonly vStores: PageStore[] = [];
  private readonly ropes: (Rope | null)[] = [];
  private readonly seqs = new Map<number, SequenceState>();
  private readonly spareEntries: PageEntry[] = [];
  private readonly counters = new StatsCounters();
  private readonly pageSize: number;
  private readonly window: number;
  // Scratch, allocated once.
  private readonly evictIdx: Int32Array; // [window] retained indices chosen by the policy
  private readonly doomed: Int32Array; // [pages per sequence + 1] entry indices released by a reserve
  private readonly kScratch: Float32Array; // [max nHeadKv * headDimK]
  private readonly gather: Float32Array; // [pageSize][max token stride] compaction buffer
  private readonly posScratch: Int32Array; // [window] compaction positions
  private readonly runs: RunTable;
  private runsSeq: SequenceState | null = null;
  private runsVersion = -1;
  private readonly attnScratch: AttentionScratch;
  private hookSeq: SequenceState | null = null;
  private hookLayer = 0;
  private readonly hook: AttentionWeightsHook | null;
  /** What the policy sees of the sequence when it picks evictions (one object, refilled per reserve). */
  private readonly evictionView: { held: number; scores: Float64Array } = { held: 0, scores: EMPTY_SCORES };
  /** Per layer: attention's view of the layer's shape (built once, not per call). */
  private readonly attendShapes: AttendShape[] = [];
  /** Per layer, when attention runs in the wasm kernels (options.kernels). */
  private readonly wasmTargets: WasmAttendTarget[] = [];
  private readonly kernelMemory: CacheKernelMemory | null = null;
  /** The last planReserve's decision, applied by commitReserve (one object, refilled). */
  private readonly plan = { seq: null as SequenceState | null, n: 0, e: 0, nDoomed: 0, compact: false, version: -1 };

  constructor(config: CacheConfig, model: CacheModelShape, options: PagedKvCacheOptions = {}) {
    this.config = config;
    this.model = model;
    this.layout = planPoolLayout(config, model);
    this.policy = createPolicy(config.policy);
    this.pageSize = config.pageSize;
    this.window = config.windowTokens;
    const nPages = this.layout.nPages;
    this.pool = new PagePool(nPages);
    const { maxK, maxV, maxStride } = layerMaxima(model);
    const usesScores = this.policy.usesScores;
    const mem =
      options.kernels === "js" || options.createStore !== undefined || usesScores ? null : cacheKernelMemory(config, model);
    const make: StoreFactory =
      options.createStore ??
      ((kind, role, shape) => createPageStore(kind, role, shape, this.layout.storeOptions));
    const ropeByKey = new Map<string, Rope>();
    for (let l = 0; l < model.layers.length; l++) {
      const layer = model.layers[l]!;
      const kShape = layerPageShape(nPages, config.pageSize, layer.nHeadKv, layer.headDimK);
      const vShape = layerPageShape(nPages, config.pageSize, layer.nHeadKv, layer.headDimV);
      this.attendShapes.push({
        nHead: model.nHead,
        nHeadKv: layer.nHeadKv,
        headDimK: layer.headDimK,
        headDimV: layer.headDimV,
        slidingWindow: layer.slidingWindow ?? 0,
        softcap: layer.softcap ?? 0,
      });
      if (mem !== null) {
        const buffer = mem.buffer;
        this.kStores.push(createPageStore(config.codec, "k", kShape, { ...this.layout.storeOptions, region: { buffer, byteOffset: mem.layout.kStore[l]! } }));
        this.vStores.push(createPageStore(config.codec, "v", vShape, { ...this.layout.storeOptions, region: { buffer, byteOffset: mem.layout.vStore[l]! } }));
      } else {
        this.kStores.push(make(config.codec, "k", kShape));
        this.vStores.push(make(config.codec, "v", vShape));
      }
      const spec = layer.rope === undefined ? model.rope : layer.rope;
      if (spec) {
        // Layers with the same RoPE and head dim share one Rope (and its cos/sin table).
        const key = `${layer.headDimK}/${JSON.stringify(spec)}`;
        let rope = ropeByKey.get(key);
        if (!rope) {
          rope = new Rope(spec, layer.headDimK);
          ropeByKey.set(key, rope);
        }
        this.ropes.push(rope);
      } else {
        this.ropes.push(null);
      }
    }
    this.evictIdx = new Int32Array(this.window);
    this.doomed = new Int32Array(this.layout.pagesPerSequence + this.window + 1);
    this.kScratch = new Float32Array(maxStride);
    this.gather = new Float32Array(config.pageSize * maxStride);
    this.posScratch = new Int32Array(this.window);
    if (mem !== null) {
      const L = mem.layout;
      this.runs = new RunTable(this.window, { buffer: mem.buffer, byteOffset: L.runTable });
      this.attnScratch = new AttentionScratch(model.nHead, this.window, maxK, maxV, {
        buffer: mem.buffer,
        scores: L.scores,
        qBlock: L.qBlock,
        outBlock: L.outBlock,
      });
      const kernels = mem.kernels(config.codec);
      const invSum = new Float32Array(mem.buffer, L.invSum, attentionScratchFloats(model.nHead, this.window, maxK, maxV).invSum);
      for (let l = 0; l < model.layers.length; l++) {
        mem.writeDescriptor(L.kDesc[l]!, this.kStores[l]!);
        mem.writeDescriptor(L.vDesc[l]!, this.vStores[l]!);
        this.wasmTargets.push({ mem, k: kernels, v: kernels, kDesc: L.kDesc[l]!, vDesc: L.vDesc[l]!, invSum });
      }
      this.kernelMemory = mem;
    } else {
      this.runs = new RunTable(this.window);
      this.attnScratch = new AttentionScratch(model.nHead, this.window, maxK, maxV);
    }
    const nLayer = model.layers.length;
    this.hook = this.policy.usesScores
      ? (qi, nQuery, w, nVisible) => this.policy.observe(this.hookSeq!.scores!, this.hookLayer, nLayer, qi, nQuery, w, nVisible)
      : null;
  }

  get nLayer(): number {
    return this.model.layers.length;
  }

  /** Which kernels attention runs in (options.kernels, and what this runtime, codec and shape allow). */
  get kernels(): "wasm" | "js" {
    return this.kernelMemory === null ? "js" : "wasm";
  }

  /** Bytes of the wasm kernels' memory (the stores, run table, attention scratch, rounded to 64 KiB pages); 0 with JS kernels. */
  get kernelMemoryBytes(): number {
    return this.kernelMemory?.bytes ?? 0;
  }

  /**
   * Bytes the cache allocated besides its stores, at construction (constant): the attention scratch,
   * the run table, eviction and compaction buffers; with wasm kernels, everything in the kernel
   * memory that is not a store. Per-sequence page tables (a few bytes per page) are not counted.
   * cacheScratchBytes(config, model) predicts it without creating a cache.
   */
  get scratchBytes(): number {
    const a = this.attnScratch;
    const r = this.runs;
    let b = this.evictIdx.byteLength + this.doomed.byteLength + this.kScratch.byteLength + this.gather.byteLength + this.posScratch.byteLength;
    b += r.pos.byteLength + r.rotPos.byteLength + a.qRot.byteLength + a.wAvg.byteLength + a.invSum.byteLength;
    if (this.kernelMemory !== null) return b + this.kernelMemory.layout.bytes - this.reservedBytes;
    return b + r.page.buffer.byteLength + a.scores.byteLength;
  }

  /** Bytes the stores reserved (constant). */
  get reservedBytes(): number {
    let b = 0;
    for (let l = 0; l < this.kStores.length; l++) b += this.kStores[l]!.reservedBytes + this.vStores[l]!.reservedBytes;
    return b;
  }

  // -------------------------------------------------------------------------------------------
  // Sequences

  has(seqId: number): boolean {
    return this.seqs.has(seqId);
  }

  sequenceIds(): number[] {
    return [...this.seqs.keys()];
  }

  /** Tokens retained by a sequence. */
  length(seqId: number): number {
    return this.seq(seqId).held;
  }

  add(seqId: number): void {
    this.checkNewId(seqId, "add");
    this.seqs.set(seqId, this.newSequence(seqId));
  }

  /** Removes a sequence and drops its page references (shared pages stay with their other holders). */
  remove(seqId: number): void {
    const s = this.seq(seqId);
    while (s.entries.length > 0) this.dropEntry(s.entries.pop());
    this.counters.tokens -= s.held;
    this.seqs.delete(seqId);
    if (this.runsSeq === s) this.runsSeq = null;
  }

  /** A copy of `srcId` named `dstId` sharing every page (copy-on-write). Voids srcId's pending reservation. */
  fork(srcId: number, dstId: number): void {
    const src = this.seq(srcId);
    this.checkNewId(dstId, "fork");
    const dst = this.newSequence(dstId);
    for (let i = 0; i < src.entries.length; i++) {
      const e = src.entries.get(i);
      const c = this.takeEntry(e.page);
      c.copyFrom(e);
      this.pool.retain(e.page);
      dst.entries.push(c);
    }
    dst.held = src.held;
    dst.nextPos = src.nextPos;
    if (src.scores && dst.scores) dst.scores.set(src.scores.subarray(0, src.held));
    src.pendingCount = 0;
    src.version++;
    this.counters.tokens += dst.held;
    this.seqs.set(dstId, dst);
  }

  /**
   * Throws ContextWindowSizeExceededError when a prompt of `nTokens` cannot fit a context window
   * beside what the sequence holds (checked before anything is written). Evicting policies always fit.
   */
  assertPromptFits(seqId: number, nTokens: number): void {
    const s = this.seq(seqId);
    if (this.config.policy.kind === "context" && s.held + nTokens > this.window) {
      throw new ContextWindowSizeExceededError(nTokens, s.held, this.window);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Token path

  /**
   * Makes room for `n` new tokens at the end of the sequence: the policy evicts, pages are found,
   * positions assigned; then write() fills their K/V per layer. A refusal (window full under the
   * context policy, or pool exhausted) changes nothing. n <= window - pinned tokens (prefillChunkSize).
   */
  reserve(seqId: number, n: number): ReserveResult {
    const r = this.planReserve(seqId, n);
    if (r.ok) this.commitReserve();
    return r;
  }

  /**
   * The read-only half of reserve (as llama.cpp's find_slot is apart from apply_ubatch): which
   * tokens the policy evicts and whether the pages suffice. Changes nothing but the sequence's
   * pending reservation; an ok plan is applied by commitReserve(), before any other call.
   */
  planReserve(seqId: number, n: number): ReserveResult {
    this.plan.seq = null;
    const s = this.seq(seqId);
    const P = this.pageSize;
    const maxN = this.window - this.policy.pinned;
    if (!Number.isSafeInteger(n) || n < 0 || n > maxN) {
      throw new CacheOperationError(
        `reserve of ${n} tokens is invalid: use 0..${maxN} per call (split the prompt into prefillChunkSize chunks)`,
        { operation: "reserve", seqId, n },
      );
    }
    if (s.nextPos + n > MAX_POSITION) {
      throw new CacheOperationError(`positions would pass ${MAX_POSITION}; start a new sequence`, { operation: "reserve", seqId });
    }
    s.pendingCount = 0;
    if (n === 0) {
      this.setPlan(s, 0, 0, 0, false);
      return okResult(0);
    }
    const over = s.held + n - this.window;
    if (over > 0 && this.policy.config.kind === "context") return { ok: false, reason: "length", held: s.held, window: this.window };
    const e = Math.max(0, over);
    if (e > 0) {
      const view = this.evictionView;
      view.held = s.held;
      view.scores = s.scores ?? EMPTY_SCORES;
      this.policy.selectEvictions(view, e, n, this.evictIdx);
    }

    // Dry run: which entries the evictions empty, and how many pages the append then needs.
    const nDoomed = this.markDoomed(s, e);
    let freed = 0;
    for (let d = 0; d < nDoomed; d++) if (this.pool.refCount(s.entries.get(this.doomed[d]!).page) === 1) freed++;
    let tailIdx = s.entries.length - 1;
    for (let d = nDoomed - 1; d >= 0 && tailIdx >= 0 && this.doomed[d] === tailIdx; d--) tailIdx--;
    const tail = tailIdx >= 0 ? s.entries.get(tailIdx) : null;
    const tailFree = tail ? P - tail.used : 0;
    const cow = tail !== null && tailFree > 0 && this.pool.refCount(tail.page) > 1 ? 1 : 0;
    const fresh = Math.ceil(Math.max(0, n - tailFree) / P);
    const entriesAfter = s.entries.length - nDoomed + fresh;
    const available = this.pool.freePages + freed;
    let compact = false;
    if (this.policy.holes && (entriesAfter > this.layout.pagesPerSequence || fresh + cow > available) && this.allExclusive(s)) {
      // Compaction packs the L survivors into ceil(L/P) pages and frees the rest.
      const L = s.held - e;
      const packed = Math.ceil(L / P);
      const need = Math.ceil((L + n) / P) - packed;
      const released = s.entries.length - nDoomed - packed;
      if (need > this.pool.freePages + freed + released) {
        return { ok: false, reason: "exhausted", neededPages: need, freePages: this.pool.freePages + freed + released };
      }
      compact = true;
    } else if (fresh + cow > available) {
      return { ok: false, reason: "exhausted", neededPages: fresh + cow, freePages: available };
    }
    this.setPlan(s, n, e, nDoomed, compact);
    return okResult(e);
  }

  private setPlan(s: SequenceState, n: number, e: number, nDoomed: number, compact: boolean): void {
    const p = this.plan;
    p.seq = s;
    p.n = n;
    p.e = e;
    p.nDoomed = nDoomed;
    p.compact = compact;
    p.version = s.version;
  }

  /** Applies the plan of the last ok planReserve (evictions, compaction, append). */
  commitReserve(): void {
    const { seq: s, n, e, nDoomed, compact, version } = this.plan;
    if (s === null || s.version !== version || this.seqs.get(s.id) !== s) {
      throw new CacheOperationError("commitReserve without a current planReserve: plan and commit with no other call between", { operation: "commitReserve" });
    }
    this.plan.seq = null;
    if (e > 0) {
      this.applyEvictions(s, e, nDoomed);
      s.evictionEvents++;
      s.evictedTokens += e;
      this.counters.evictionEvents++;
      this.counters.evictedTokens += e;
    }
    if (compact) this.compact(s);
    if (n > 0) this.append(s, n);
  }

  /** reserve() for callers at the boundary: refusals become typed errors. */
  reserveOrThrow(seqId: number, n: number): number {
    const r = this.reserve(seqId, n);
    if (r.ok) return r.evicted;
    if (r.reason === "length") throw new ContextWindowSizeExceededError(n, r.held, r.window);
    throw new CacheExhaustedError(r.neededPages, r.freePages, this.config.budgetBytes ?? this.layout.reservedBytes);
  }

  /**
   * Stores token `i` (< n of the last reserve) of layer `layer`: k pre-RoPE [nHeadKv][headDimK] at
   * k[kOff], v [nHeadKv][headDimV] at v[vOff]. Within a layer, write tokens in increasing i.
   */
  write(layer: number, seqId: number, i: number, k: Float32Array, kOff: number, v: Float32Array, vOff: number): void {
    this.checkLayer(layer);
    const s = this.seq(seqId);
    if (!(i >= 0 && i < s.pendingCount)) {
      throw new CacheOperationError(`token ${i} was not reserved (the last reserve gave ${s.pendingCount}); call reserve first`, {
        operation: "write",
        seqId,
        i,
      });
    }
    const P = this.pageSize;
    const at = s.pendingSlot + i;
    const entry = s.entries.get(s.pendingEntry + Math.floor(at / P));
    const slot = at % P;
    const shape = this.model.layers[layer]!;
    const rope = this.ropes[layer]!;
    let src = k;
    let off = kOff;
    if (rope !== null) {
      const n = shape.nHeadKv * shape.headDimK;
      const tmp = this.kScratch;
      for (let j = 0; j < n; j++) tmp[j] = k[kOff + j]!;
      rope.rotate(tmp, 0, shape.nHeadKv, entry.pos[slot]!);
      src = tmp;
      off = 0;
    }
    this.kStores[layer]!.writeToken(entry.page, slot, src, off);
    this.vStores[layer]!.writeToken(entry.page, slot, v, vOff);
  }

  /**
   * Attention of the last `nQuery` retained tokens (the ones the last reserve added) over the
   * sequence: q pre-RoPE [nQuery][nHead][headDimK] at q[qOff]; out [nQuery][nHead][headDimV] at
   * out[outOff]. Causal in retained order; GQA; scale default 1/sqrt(headDimK). Score-based
   * policies receive the weights through their hook.
   */
  attend(layer: number, seqId: number, q: Float32Array, qOff: number, nQuery: number, out: Float32Array, outOff: number, scale?: number): void {
    this.checkLayer(layer);
    const s = this.seq(seqId);
    if (!Number.isSafeInteger(nQuery) || nQuery < 1 || nQuery > s.held) {
      throw new CacheOperationError(`attend of ${nQuery} queries over ${s.held} retained tokens is invalid: use 1..${s.held}`, {
        operation: "attend",
        seqId,
        nQuery,
      });
    }
    const runs = this.runsFor(s);
    const shape = this.model.layers[layer]!;
    this.hookSeq = s;
    this.hookLayer = layer;
    const attendShape = this.attendShapes[layer]!;
    const rope = this.ropes[layer]!;
    const sc = scale ?? 1 / Math.sqrt(shape.headDimK);
    const wasm = this.wasmTargets[layer];
    if (wasm !== undefined) {
      attendRunsWasm(out, outOff, q, qOff, nQuery, attendShape, runs, s.held, wasm, rope, sc, this.attnScratch);
    } else {
      attendRuns(out, outOff, q, qOff, nQuery, attendShape, runs, s.held, this.kStores[layer]!, this.vStores[layer]!, rope, sc, this.attnScratch, this.hook);
    }
  }

  /** Pops the `n` newest retained tokens (undo); the next token continues at the oldest popped position. */
  truncate(seqId: number, n: number): void {
    const s = this.seq(seqId);
    if (!Number.isSafeInteger(n) || n < 0 || n > s.held) {
      throw new CacheOperationError(`truncate of ${n} tokens is invalid: the sequence holds ${s.held}`, {
        operation: "truncate",
        seqId,
        n,
      });
    }
    s.pendingCount = 0;
    if (n === 0) return;
    let left = n;
    let oldestPopped = s.nextPos;
    while (left > 0) {
      const e = s.entries.get(s.entries.length - 1);
      for (let slot = e.used - 1; slot >= 0 && left > 0; slot--) {
        if (e.alive[slot] === 1) {
          e.alive[slot] = 0;
          e.live--;
          left--;
          oldestPopped = e.pos[slot]!;
        }
      }
      if (e.live === 0) this.dropEntry(s.entries.pop());
    }
    // The new tail reuses its slots after its last live one.
    if (s.entries.length > 0) {
      const t = s.entries.get(s.entries.length - 1);
      let last = t.used - 1;
      while (last >= 0 && t.alive[last] === 0) last--;
      if (last + 1 < t.used) {
        t.used = last + 1;
        if (this.pool.refCount(t.page) === 1) this.truncateStores(t.page, t.used);
      }
    }
    s.held -= n;
    s.nextPos = oldestPopped;
    s.version++;
    this.counters.tokens -= n;
  }

  // -------------------------------------------------------------------------------------------
  // Reading

  /** Attention positions of the retained tokens, in retained order, into `out`; returns the count. */
  positions(seqId: number, out: Int32Array): number {
    const runs = this.runsFor(this.seq(seqId));
    let n = 0;
    for (let r = 0; r < runs.n; r++) for (let t = 0; t < runs.length[r]!; t++) out[n++] = runs.pos[r]! + t;
    return n;
  }

  /** Original (text) positions of the retained tokens, in retained order; returns the count. */
  originalPositions(seqId: number, out: Int32Array): number {
    const runs = this.runsFor(this.seq(seqId));
    let n = 0;
    for (let r = 0; r < runs.n; r++) for (let t = 0; t < runs.length[r]!; t++) out[n++] = runs.rotPos[r]! + t;
    return n;
  }

  /** The runs attention reads (diagnostics; allocates). */
  runsOf(seqId: number): KvRun[] {
    return this.runsFor(this.seq(seqId)).toArray();
  }

  /** Decodes retained token `index` of a layer: K as stored (rotated by its original position), V. */
  readToken(layer: number, seqId: number, index: number, kOut: Float32Array, vOut: Float32Array): void {
    this.checkLayer(layer);
    const s = this.seq(seqId);
    if (!(index >= 0 && index < s.held)) {
      throw new CacheOperationError(`token ${index} is out of range: the sequence holds ${s.held}`, { operation: "readToken", seqId });
    }
    const runs = this.runsFor(s);
    let r = 0;
    while (runs.index[r]! + runs.length[r]! <= index) r++;
    const slot = runs.slotStart[r]! + (index - runs.index[r]!);
    this.kStores[layer]!.readToken(runs.page[r]!, slot, kOut, 0);
    this.vStores[layer]!.readToken(runs.page[r]!, slot, vOut, 0);
  }

  stats(): CacheStats {
    const c = this.counters;
    return {
      policy: this.config.policy.kind,
      codec: this.config.codec,
      windowTokens: this.window,
      pageSize: this.pageSize,
      sequences: this.seqs.size,
      tokens: c.tokens,
      pagesTotal: this.pool.nPages,
      pagesUsed: this.pool.usedPages,
      pagesFree: this.pool.freePages,
      bytesReserved: this.layout.reservedBytes,
      bytesUsed: this.pool.usedPages * this.layout.bytesPerPage,
      evictionEvents: c.evictionEvents,
      evictedTokens: c.evictedTokens,
      copyOnWritePages: c.copyOnWritePages,
      compactions: c.compactions,
    };
  }

  sequenceStats(seqId: number): SequenceStats {
    const s = this.seq(seqId);
    return {
      seqId,
      tokens: s.held,
      pages: s.entries.length,
      nextPosition: s.nextPos,
      evictionEvents: s.evictionEvents,
      evictedTokens: s.evictedTokens,
    };
  }

  /** Reference count of a page (tests). */
  pageRefCount(page: number): number {
    return this.pool.refCount(page);
  }

  /**
   * Checks every invariant the cache relies on and throws an Error naming the first broken one:
   * reference counts equal the page tables' references, free pages are referenced by nobody and
   * listed once, live counts match the slot flags, held counts match.
   */
  checkInvariants(): void {
    const refs = new Int32Array(this.pool.nPages);
    let tokens = 0;
    for (const s of this.seqs.values()) {
      let live = 0;
      for (let i = 0; i < s.entries.length; i++) {
        const e = s.entries.get(i);
        refs[e.page] = refs[e.page]! + 1;
        let l = 0;
        for (let slot = 0; slot < e.used; slot++) l += e.alive[slot]!;
        for (let slot = e.used; slot < this.pageSize; slot++) if (e.alive[slot] !== 0) throw new Error(`seq ${s.id} page ${e.page}: live slot past used`);
        if (l !== e.live) throw new Error(`seq ${s.id} page ${e.page}: live ${e.live} but ${l} slots alive`);
        if (l === 0) throw new Error(`seq ${s.id} page ${e.page}: an empty entry was not released`);
        live += l;
      }
      if (live !== s.held) throw new Error(`seq ${s.id}: held ${s.held} but ${live} live slots`);
      tokens += live;
    }
    if (tokens !== this.counters.tokens) throw new Error(`token counter ${this.counters.tokens} != ${tokens}`);
    const seen = new Uint8Array(this.pool.nPages);
    for (const p of this.pool.freeList()) {
      if (seen[p]) throw new Error(`page ${p} is on the free list twice`);
      seen[p] = 1;
      if (refs[p] !== 0) throw new Error(`page ${p} is free but referenced ${refs[p]} times`);
    }
    for (let p = 0; p < this.pool.nPages; p++) {
      if (refs[p] !== this.pool.refCount(p)) throw new Error(`page ${p}: refcount ${this.pool.refCount(p)} but ${refs[p]} references`);
      if (refs[p] === 0 && !seen[p]) throw new Error(`page ${p} leaked: unreferenced and not free`);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Snapshots

  /** One sequence as bytes (see snapshot.ts for the format). */
  snapshot(seqId: number): Uint8Array {
    const s = this.seq(seqId);
    const entries: PageEntry[] = [];
    for (let i = 0; i < s.entries.length; i++) entries.push(s.entries.get(i));
    return encodeSnapshot(this.snapshotHeader(), s, entries, this.kStores, this.vStores);
  }

  /**
   * Restores a snapshot as a new sequence `seqId`. Returns false (nothing changed) when the pool
   * lacks the pages; throws SnapshotError for corrupt bytes or a mismatching model/config.
   */
  restore(seqId: number, bytes: Uint8Array): boolean {
    const snap = decodeSnapshot(bytes, this.snapshotHeader(), this.layout.pagesPerSequence + this.window, this.window);
    this.checkNewId(seqId, "restore");
    if (snap.entries.length > this.pool.freePages) return false;
    const s = this.newSequence(seqId);
    for (const se of snap.entries) {
      const page = this.pool.allocate()!;
      const e = this.takeEntry(page);
      e.used = se.used;
      e.alive.set(se.alive);
      e.pos.set(se.pos);
      let live = 0;
      let contiguous = true;
      for (let slot = 0; slot < se.used; slot++) {
        live += se.alive[slot]!;
        if (slot > 0 && se.pos[slot] !== se.pos[slot - 1]! + 1) contiguous = false;
      }
      e.live = live;
      e.contiguous = contiguous;
      for (let l = 0; l < this.nLayer; l++) {
        this.kStores[l]!.importPage(page, se.k[l]!);
        this.vStores[l]!.importPage(page, se.v[l]!);
      }
      s.entries.push(e);
    }
    s.held = snap.held;
    s.nextPos = snap.nextPos;
    if (s.scores && snap.scores) s.scores.set(snap.scores);
    this.counters.tokens += s.held;
    this.seqs.set(seqId, s);
    return true;
  }

  /** restore() at the boundary: a full pool becomes CacheExhaustedError. */
  restoreOrThrow(seqId: number, bytes: Uint8Array): void {
    if (!this.restore(seqId, bytes)) {
      throw new CacheExhaustedError(-1, this.pool.freePages, this.config.budgetBytes ?? this.layout.reservedBytes);
    }
  }

  private snapshotHeader(): SnapshotHeader {
    return {
      codec: this.config.codec,
      pageSize: this.pageSize,
      policy: this.config.policy.kind,
      positions: this.config.policy.positions,
      windowTokens: this.window,
      nHead: this.model.nHead,
      layers: this.model.layers.map((l) => `${l.nHeadKv}x${l.headDimK}/${l.headDimV}`).join(","),
      rope: this.model.rope ? JSON.stringify(this.model.rope) : "none",
    };
  }

  // -------------------------------------------------------------------------------------------
  // Internals

  private seq(seqId: number): SequenceState {
    const s = this.seqs.get(seqId);
    if (!s) throw new SequenceNotFoundError(seqId);
    return s;
  }

  private checkLayer(layer: number): void {
    if (!Number.isInteger(layer) || layer < 0 || layer >= this.model.layers.length) throw new LayerOutOfRangeError(layer, this.model.layers.length);
  }

  private checkNewId(seqId: number, operation: string): void {
    if (!Number.isSafeInteger(seqId) || seqId < 0) {
      throw new CacheOperationError(`sequence id ${seqId} is invalid: use a non-negative integer`, { operation, seqId });
    }
    if (this.seqs.has(seqId)) throw new CacheOperationError(`sequence ${seqId} already exists; remove it first or pick another id`, { operation, seqId });
    if (this.seqs.size >= this.config.maxSequences) {
      throw new CacheOperationError(`the cache holds ${this.seqs.size} sequences, its maxSequences; remove one or raise maxSequences`, {
        operation,
        seqId,
      });
    }
  }

  private newSequence(seqId: number): SequenceState {
    return new SequenceState(seqId, this.policy.usesScores ? this.window : 0);
  }

  private takeEntry(page: number): PageEntry {
    const e = this.spareEntries.pop() ?? new PageEntry(this.pageSize);
    e.reset(page);
    e.alive.fill(0);
    return e;
  }

  private dropEntry(e: PageEntry): void {
    this.pool.release(e.page);
    e.page = -1;
    this.spareEntries.push(e);
  }

  private allExclusive(s: SequenceState): boolean {
    for (let i = 0; i < s.entries.length; i++) if (this.pool.refCount(s.entries.get(i).page) !== 1) return false;
    return true;
  }

  private truncateStores(page: number, nValid: number): void {
    for (let l = 0; l < this.kStores.length; l++) {
      this.kStores[l]!.truncatePage(page, nValid);
      this.vStores[l]!.truncatePage(page, nValid);
    }
  }

  /**
   * Walks the entries holding the `e` chosen evictions (this.evictIdx, ascending) and records in
   * this.doomed the indices of entries they empty. Reads only; stops at the last chosen token, so
   * a sliding window (evictions right after the sinks) touches O(1) entries.
   */
  private markDoomed(s: SequenceState, e: number): number {
    let j = 0;
    let base = 0;
    let nDoomed = 0;
    for (let i = 0; i < s.entries.length && j < e; i++) {
      const entry = s.entries.get(i);
      const end = base + entry.live;
      let c = 0;
      while (j < e && this.evictIdx[j]! < end) {
        j++;
        c++;
      }
      if (c === entry.live) this.doomed[nDoomed++] = i;
      base = end;
    }
    return nDoomed;
  }

  private applyEvictions(s: SequenceState, e: number, nDoomed: number): void {
    let j = 0;
    let base = 0;
    for (let i = 0; i < s.entries.length && j < e; i++) {
      const entry = s.entries.get(i);
      const end = base + entry.live;
      if (j < e && this.evictIdx[j]! < end) {
        let rank = base;
        for (let slot = 0; slot < entry.used && j < e; slot++) {
          if (entry.alive[slot] === 0) continue;
          if (rank === this.evictIdx[j]) {
            entry.alive[slot] = 0;
            entry.live--;
            j++;
          }
          rank++;
        }
      }
      base = end;
    }
    // Release emptied entries, highest index first so lower indices stay valid.
    for (let d = nDoomed - 1; d >= 0; d--) this.dropEntry(s.entries.removeAt(this.doomed[d]!));
    const sc = s.scores;
    if (sc) {
      // Keep scores in retained order: drop the evicted indices in one pass.
      let w = 0;
      let k = 0;
      for (let t = 0; t < s.held; t++) {
        if (k < e && this.evictIdx[k] === t) {
          k++;
          continue;
        }
        sc[w++] = sc[t]!;
      }
    }
    s.held -= e;
    this.counters.tokens -= e;
    s.version++;
  }

  /**
   * Packs the sequence's live tokens into as few pages as possible, in order, reusing its own pages
   * front to back (all exclusive: the caller checked). Tokens for packed page d come only from
   * entries >= d, so each page's tokens are gathered before it is overwritten. Quantized codecs
   * re-encode the decoded values (one more rounding step for int8/int4/fp8; exact for f32 and f16).
   */
  private compact(s: SequenceState): void {
    const P = this.pageSize;
    const nEntries = s.entries.length;
    const packed = Math.ceil(s.held / P);
    for (let l = 0; l < this.nLayer; l++) {
      for (const store of [this.kStores[l]!, this.vStores[l]!]) {
        const stride = store.shape.nHeadKv * store.shape.headDim;
        let ri = 0;
        let rs = 0;
        for (let d = 0; d < packed; d++) {
          let n = 0;
          while (n < P && ri < nEntries) {
            const src = s.entries.get(ri);
            if (rs >= src.used) {
              ri++;
              rs = 0;
              continue;
            }
            if (src.alive[rs] === 1) store.readToken(src.page, rs, this.gather, (n++) * stride);
            rs++;
          }
          const page = s.entries.get(d).page;
          store.truncatePage(page, 0);
          for (let t = 0; t < n; t++) store.writeToken(page, t, this.gather, t * stride);
        }
      }
    }
    // Metadata: the same walk over positions, written into a scratch of packed entries.
    const posTmp = this.posScratch;
    let n = 0;
    for (let i = 0; i < nEntries; i++) {
      const e = s.entries.get(i);
      for (let slot = 0; slot < e.used; slot++) if (e.alive[slot] === 1) posTmp[n++] = e.pos[slot]!;
    }
    while (s.entries.length > packed) this.dropEntry(s.entries.pop());
    for (let d = 0; d < packed; d++) {
      const e = s.entries.get(d);
      const cnt = Math.min(P, s.held - d * P);
      e.alive.fill(0);
      e.used = cnt;
      e.live = cnt;
      e.contiguous = true;
      for (let t = 0; t < cnt; t++) {
        e.alive[t] = 1;
        e.pos[t] = posTmp[d * P + t]!;
        if (t > 0 && e.pos[t] !== e.pos[t - 1]! + 1) e.contiguous = false;
      }
    }
    this.counters.compactions++;
    s.version++;
  }

  /** Appends n slots at the tail (pages were checked by the caller). */
  private append(s: SequenceState, n: number): void {
    const P = this.pageSize;
    let tail = s.entries.length > 0 ? s.entries.get(s.entries.length - 1) : null;
    if (tail !== null && tail.used < P && this.pool.refCount(tail.page) > 1) {
      const page = this.pool.allocate()!;
      for (let l = 0; l < this.nLayer; l++) {
        this.kStores[l]!.copyPage(page, tail.page);
        this.vStores[l]!.copyPage(page, tail.page);
      }
      if (tail.used < P) this.truncateStores(page, tail.used);
      this.pool.release(tail.page);
      tail.page = page;
      this.counters.copyOnWritePages++;
    }
    if (tail !== null && tail.used < P) {
      s.pendingEntry = s.entries.length - 1;
      s.pendingSlot = tail.used;
    } else {
      s.pendingEntry = s.entries.length;
      s.pendingSlot = 0;
    }
    for (let t = 0; t < n; t++) {
      if (tail === null || tail.used === P) {
        const page = this.pool.allocate()!;
        this.truncateStores(page, 0);
        tail = this.takeEntry(page);
        s.entries.push(tail);
      }
      const slot = tail.used++;
      const pos = s.nextPos++;
      if (slot > 0 && tail.pos[slot - 1] !== pos - 1) tail.contiguous = false;
      tail.pos[slot] = pos;
      tail.alive[slot] = 1;
      tail.live++;
      if (s.scores) s.scores[s.held] = 0;
      s.held++;
    }
    s.pendingCount = n;
    s.version++;
    this.counters.tokens += n;
  }

  /** The sequence's runs, rebuilt only when it changed since the last call. */
  private runsFor(s: SequenceState): RunTable {
    if (this.runsSeq === s && this.runsVersion === s.version) return this.runs;
    const runs = this.runs;
    runs.n = 0;
    const reassigned = this.policy.positions === "reassigned";
    let index = 0;
    for (let i = 0; i < s.entries.length; i++) {
      const e = s.entries.get(i);
      if (e.contiguous && e.live === e.used) {
        runs.push(e.page, 0, e.used, reassigned ? index : e.pos[0]!, e.pos[0]!, index);
        index += e.used;
        continue;
      }
      let slot = 0;
      while (slot < e.used) {
        if (e.alive[slot] === 0) {
          slot++;
          continue;
        }
        const start = slot;
        slot++;
        while (slot < e.used && e.alive[slot] === 1 && e.pos[slot] === e.pos[slot - 1]! + 1) slot++;
        const len = slot - start;
        runs.push(e.page, start, len, reassigned ? index : e.pos[start]!, e.pos[start]!, index);
        index += len;
      }
    }
    this.runsSeq = s;
    this.runsVersion = s.version;
    return runs;
  }
}

const EMPTY_SCORES = new Float64Array(0);

/** The widest head dims and K/V token strides over the layers (what the shared buffers are sized by). */
function layerMaxima(model: CacheModelShape): { maxK: number; maxV: number; maxStride: number } {
  let maxK = 0;
  let maxV = 0;
  let maxStride = 0;
  for (const layer of model.layers) {
    maxK = Math.max(maxK, layer.headDimK);
    maxV = Math.max(maxV, layer.headDimV);
    maxStride = Math.max(maxStride, layer.nHeadKv * layer.headDimK, layer.nHeadKv * layer.headDimV);
  }
  return { maxK, maxV, maxStride };
}

/** Successful reserve results for small eviction counts, frozen, made on first use: a decode loop in
 *  a full window gets the same `{ ok: true, evicted: 1 }` every token instead of a new object. */
const OK_RESULTS: ReserveResult[] = [];
const OK_RESULTS_CACHED = 64;
function okResult(evicted: number): ReserveResult {
  if (evicted > OK_RESULTS_CACHED) return { ok: true, evicted };
  return (OK_RESULTS[evicted] ??= Object.freeze({ ok: true as const, evicted }));
}

/**
 * Where the wasm kernels' memory would put this cache's stores, run table and attention scratch,
 * or null when attention stays in JS whatever the runtime: a score-based policy (h2o, tova), a
 * codec / head dim without wasm kernels, or more than MAX_CACHE_MEMORY_BYTES (about 4 GiB) in all. The planner's kvbound rule sizes the memory with it.
 */
export function cacheKernelLayout(config: CacheConfig, model: CacheModelShape): CacheMemoryLayout | null {
  if (createPolicy(config.policy).usesScores) return null;
  const pool = planPoolLayout(config, model);
  const bytes: { k: number; v: number }[] = [];
  const { maxK, maxV } = layerMaxima(model);
  for (const layer of model.layers) {
    if (!wasmAttentionSupports(config.codec, layer.headDimK, layer.headDimV)) return null;
    bytes.push({
      k: pageStoreBytes(config.codec, "k", layerPageShape(pool.nPages, config.pageSize, layer.nHeadKv, layer.headDimK), pool.storeOptions),
      v: pageStoreBytes(config.codec, "v", layerPageShape(pool.nPages, config.pageSize, layer.nHeadKv, layer.headDimV), pool.storeOptions),
    });
  }
  const layout = layoutCacheMemory(bytes, config.windowTokens, attentionScratchFloats(model.nHead, config.windowTokens, maxK, maxV));
  // Past what one instance may hold the cache keeps plain buffers (CacheKernelMemory.create refuses).
  return layout.bytes > MAX_CACHE_MEMORY_BYTES ? null : layout;
}

/**
 * PagedKvCache.scratchBytes for (config, model), computed without allocating: with wasm kernels
 * wherever cacheKernelLayout says they run (this runtime has WebAssembly SIMD), JS otherwise.
 */
export function cacheScratchBytes(config: CacheConfig, model: CacheModelShape): number {
  const pool = planPoolLayout(config, model);
  const W = config.windowTokens;
  const { maxK, maxV, maxStride } = layerMaxima(model);
  // evictIdx, doomed, kScratch, gather, posScratch
  let b = 4 * W + 4 * (pool.pagesPerSequence + W + 1) + 4 * maxStride + 4 * config.pageSize * maxStride + 4 * W;
  // RunTable pos + rotPos; AttentionScratch qRot, wAvg, invSum
  b += 8 * W + 4 * model.nHead * maxK + 4 * W + 8 * model.nHead;
  const kernel = cacheKernelLayout(config, model);
  if (kernel !== null) return b + kernel.bytes - pool.reservedBytes;
  // JS kernels: the run table's four shared arrays and one query's scores.
  return b + 16 * W + 4 * model.nHead * W;
}

/** The wasm kernel memory for this cache, or null when attention stays in JS (cacheKernelLayout, or no wasm SIMD here, or too much memory). */
function cacheKernelMemory(config: CacheConfig, model: CacheModelShape): CacheKernelMemory | null {
  const layout = cacheKernelLayout(config, model);
  return layout === null ? null : CacheKernelMemory.create(layout, config.codec);
}
