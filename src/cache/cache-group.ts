// One group of layers of the paged KV cache: a page pool shared by the group's K and V stores, a
// page table per sequence, a policy that decides what leaves, and attention that reads pages in
// place. PagedKvCache (paged-kv-cache.ts) composes one group per kind of layer. This file wires
// them and moves the K/V bytes; the slot bookkeeping is page-table.ts's, the buffers cache-scratch.ts's.
//
// The token path, per step:
//   reserve(seq, n)            policy evicts, pages are found (or the call is refused, untouched)
//   write(layer, seq, i, k, v) for every layer and i < n, in increasing i (keys pre-RoPE)
//   attend(layer, seq, q, n)   the n new tokens' queries over everything retained
//   (a backend that attends over the pages itself, the GPU, instead hands a score-based policy
//   its reduced weights through observeSummed, and moves tokens of a compaction with packPage)
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
import { createPageStore } from "./codecs/index.js";
import type { CodecKind, KvRole, PageShape, PageStore } from "./codecs/types.js";
import type { CacheConfig, CacheModelShape } from "./config.js";
import { attendRuns, type AttendShape, type AttentionWeightsHook, type RunTable } from "./attention.js";
import { CacheScratch, cacheKernelMemory } from "./cache-scratch.js";
import { AttendJobs, attendRunsWasm, type WasmAttendSplit, type WasmAttendTarget } from "./wasm/attend-wasm.js";
import { CacheKernelMemory, splitsByHead } from "./wasm/store-memory.js";
import { RowCall, type KernelTable, type RowCallPool, type RowKernelFn } from "../wasm/row-call.js";
import { layerPageShape, PagePool, planPoolLayout, type PoolLayout } from "./page-pool.js";
import { MAX_POSITION, PageTable } from "./page-table.js";
import { createPolicy, type EvictionPolicy } from "./policies/index.js";
import { okResult, ReservePlan, type ReserveResult } from "./reserve-plan.js";
import { Rope } from "./rope.js";
import type { KvRun } from "./runs.js";
import { PageEntry, SequenceState } from "./sequence.js";
import { StatsCounters, type CacheStats, type SequenceStats } from "./stats.js";
import { decodeSnapshot, encodeSnapshot, snapshotPolicyName, type SnapshotHeader } from "./snapshot.js";

export { cacheKernelLayout, cacheScratchBytes } from "./cache-scratch.js";
export { MAX_POSITION } from "./page-table.js";
export type { ReserveResult } from "./reserve-plan.js";

/** attention.as storeRows. */
type StoreRowsFn = (dst: number, src: number, nTok: number, rowLen: number, kind: number, cosSin: number, half: number, neox: number, headDim: number) => void;

/** writeRows' kernel and staging (the fused job's queries, rows out and cos/sin), and where each layer's pages start. */
interface RowStore {
  readonly store: StoreRowsFn;
  readonly jobs: AttendJobs;
  /** codecs.as KIND_F32 (0) or KIND_F16 (1). */
  readonly kind: number;
  readonly kData: readonly number[];
  readonly vData: readonly number[];
}

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
  /**
   * A thread pool (the model's) that the wasm attention splits over by KV head, where the codec
   * allows (f32, f16, fp8): the kernel memory is then a SharedArrayBuffer's, attached to the pool's
   * workers. Results do not change.
   */
  readonly threads?: RowCallPool;
}

/** Lets a pool's workers drop a collected cache's memory. */
const detachOnCollect =
  typeof FinalizationRegistry === "function" ? new FinalizationRegistry<{ pool: RowCallPool; table: KernelTable }>(({ pool, table }) => pool.detach(table)) : null;

export class CacheGroup {
  readonly config: CacheConfig;
  readonly model: CacheModelShape;
  readonly layout: PoolLayout;
  readonly policy: EvictionPolicy;
  private readonly pool: PagePool;
  private readonly table: PageTable;
  private readonly kStores: PageStore[] = [];
  private readonly vStores: PageStore[] = [];
  private readonly ropes: (Rope | null)[] = [];
  private readonly seqs = new Map<number, SequenceState>();
  private readonly counters = new StatsCounters();
  private readonly pageSize: number;
  private readonly window: number;
  /** Every buffer besides the stores, allocated once. */
  private readonly scratch: CacheScratch;
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
  /** Where writeRows stores a batch in one kernel call per page: f32 and f16 pages in the kernel memory. */
  private readonly rowStore: RowStore | null = null;
  /** packStores' sources of one page ([pageSize] each), made on its first compaction. */
  private packSources: { pages: Int32Array; slots: Int32Array } | null = null;
  /** The last planReserve's decision, applied by commitReserve. */
  private readonly plan = new ReservePlan();

  constructor(config: CacheConfig, model: CacheModelShape, options: PagedKvCacheOptions = {}) {
    this.config = config;
    this.model = model;
    this.layout = planPoolLayout(config, model);
    this.policy = createPolicy(config.policy);
    this.pageSize = config.pageSize;
    this.window = config.windowTokens;
    const nPages = this.layout.nPages;
    this.pool = new PagePool(nPages);
    // (this.pool is the page pool; `threads` the thread pool attention may split over.)
    const threads = options.threads !== undefined && options.threads.threads > 1 && splitsByHead(config.codec) ? options.threads : null;
    const mem =
      options.kernels === "js" || options.createStore !== undefined || this.policy.usesScores ? null : cacheKernelMemory(config, model, threads !== null);
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
    this.scratch = new CacheScratch(config, model, this.layout, mem);
    if (mem !== null) {
      // The scratch's byte count takes the stores to be what the layout reserved for them.
      if (this.reservedBytes !== this.layout.reservedBytes) {
        throw new Error(`stores in the kernel memory reserved ${this.reservedBytes} bytes, the layout ${this.layout.reservedBytes}`);
      }
      const L = mem.layout;
      const kernels = mem.kernels(config.codec);
      const invSum = this.scratch.kernelInvSum!;
      let split: WasmAttendSplit | null = null;
      if (threads !== null && mem.shared) {
        const names = CacheKernelMemory.splitKernelNames(config.codec);
        const table = threads.attach(mem.module, mem.memory, names);
        detachOnCollect?.register(this, { pool: threads, table });
        const calls = [new RowCall(), new RowCall(), new RowCall()];
        split = { pool: threads, table, fns: names.map((n) => mem.exports[n] as RowKernelFn), calls, softmaxValues: calls.slice(1) };
      }
      const attend = mem.attendKernel(config.codec);
      const jobs = attend !== null ? new AttendJobs(attend, mem, this.scratch.kernelFloats!) : null;
      for (let l = 0; l < model.layers.length; l++) {
        mem.writeDescriptor(L.kDesc[l]!, this.kStores[l]!);
        mem.writeDescriptor(L.vDesc[l]!, this.vStores[l]!);
        const kHeadDesc = L.kHeadDesc[l]!, vHeadDesc = L.vHeadDesc[l]!;
        if (kHeadDesc >= 0) {
          mem.writeHeadDescriptors(kHeadDesc, this.kStores[l]!);
          mem.writeHeadDescriptors(vHeadDesc, this.vStores[l]!);
        }
        // (Per-head descriptors, the fused kernel and a split all come with splitsByHead(codec).)
        this.wasmTargets.push({ mem, k: kernels, v: kernels, kDesc: L.kDesc[l]!, vDesc: L.vDesc[l]!, invSum, kHeadDesc, vHeadDesc, jobs, split });
      }
      this.kernelMemory = mem;
      if (jobs !== null && (config.codec === "f32" || config.codec === "f16")) {
        this.rowStore = {
          store: mem.exports.storeRows as StoreRowsFn,
          jobs,
          kind: config.codec === "f16" ? 1 : 0,
          kData: this.kStores.map((st) => st.kernelLayout!().data),
          vData: this.vStores.map((st) => st.kernelLayout!().data),
        };
      }
    }
    this.table = new PageTable(this.pool, this.pageSize, this.window, this.policy.positions, this.scratch, this.policy.scoresPerToken);
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
   * the run table, eviction and compaction buffers, a score-based policy's per-token scores for
   * maxSequences sequences; with wasm kernels, everything in the kernel memory that is not a store.
   * Per-sequence page tables (a few bytes per page) are not counted.
   * cacheScratchBytes(config, model) predicts it without creating a cache (both from scratchLengths).
   */
  get scratchBytes(): number {
    return this.scratch.bytes;
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
    this.table.releaseAll(s);
    this.scratch.releaseScores(s.scores);
    this.counters.tokens -= s.held;
    this.seqs.delete(seqId);
  }

  /** A copy of `srcId` named `dstId` sharing every page (copy-on-write). Voids srcId's pending reservation. */
  fork(srcId: number, dstId: number): void {
    const src = this.seq(srcId);
    this.checkNewId(dstId, "fork");
    const dst = this.newSequence(dstId);
    this.table.share(src, dst);
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
    this.plan.clear();
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
      this.plan.set(s, 0, 0, 0, false);
      return okResult(0);
    }
    const over = s.held + n - this.window;
    if (over > 0 && this.policy.config.kind === "context") return { ok: false, reason: "length", held: s.held, window: this.window };
    const e = Math.max(0, over);
    if (e > 0) {
      const view = this.evictionView;
      view.held = s.held;
      view.scores = s.scores ?? EMPTY_SCORES;
      this.policy.selectEvictions(view, e, n, this.scratch.evictIdx);
    }

    // Dry run: which entries the evictions empty, and how many pages the append then needs.
    const nDoomed = this.table.markDoomed(s, e);
    const doomed = this.scratch.doomed;
    let freed = 0;
    for (let d = 0; d < nDoomed; d++) if (this.pool.refCount(s.entries.get(doomed[d]!).page) === 1) freed++;
    let tailIdx = s.entries.length - 1;
    for (let d = nDoomed - 1; d >= 0 && tailIdx >= 0 && doomed[d] === tailIdx; d--) tailIdx--;
    const tail = tailIdx >= 0 ? s.entries.get(tailIdx) : null;
    const tailFree = tail ? P - tail.used : 0;
    const cow = tail !== null && tailFree > 0 && this.pool.refCount(tail.page) > 1 ? 1 : 0;
    const fresh = Math.ceil(Math.max(0, n - tailFree) / P);
    const entriesAfter = s.entries.length - nDoomed + fresh;
    const available = this.pool.freePages + freed;
    let compact = false;
    if (this.policy.holes && (entriesAfter > this.layout.pagesPerSequence || fresh + cow > available) && this.table.allExclusive(s)) {
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
    this.plan.set(s, n, e, nDoomed, compact);
    return okResult(e);
  }

  /** Applies the plan of the last ok planReserve (evictions, compaction, append). */
  commitReserve(): void {
    const { seq: s, n, evictions: e, nDoomed, compact, version } = this.plan;
    if (s === null || s.version !== version || this.seqs.get(s.id) !== s) {
      throw new CacheOperationError("commitReserve without a current planReserve: plan and commit with no other call between", { operation: "commitReserve" });
    }
    this.plan.clear();
    if (e > 0) {
      this.table.applyEvictions(s, e, nDoomed);
      this.counters.tokens -= e;
      s.evictionEvents++;
      s.evictedTokens += e;
      this.counters.evictionEvents++;
      this.counters.evictedTokens += e;
    }
    if (compact) {
      this.compactStores(s);
      this.table.compact(s);
      this.counters.compactions++;
    }
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
      const tmp = this.scratch.kScratch;
      for (let j = 0; j < n; j++) tmp[j] = k[kOff + j]!;
      rope.rotate(tmp, 0, shape.nHeadKv, entry.pos[slot]!);
      src = tmp;
      off = 0;
    }
    this.kStores[layer]!.writeToken(entry.page, slot, src, off);
    this.vStores[layer]!.writeToken(entry.page, slot, v, vOff);
  }

  /**
   * write() of tokens i0 .. i0 + n of the last reserve, token t's K at k[kOff + t * nHeadKv *
   * headDimK] (pre-RoPE) and V at v[vOff + t * nHeadKv * headDimV]. With f32 or f16 pages in the
   * kernel memory, one call of attention.as storeRows per run of slots in a page (up to the fused
   * job's staging) rotates and stores them, to the bits write() stores.
   */
  writeRows(layer: number, seqId: number, i0: number, n: number, k: Float32Array, kOff: number, v: Float32Array, vOff: number): void {
    const shape = this.model.layers[layer]!;
    const kRow = shape.nHeadKv * shape.headDimK, vRow = shape.nHeadKv * shape.headDimV;
    const rs = this.rowStore;
    // (storeRows converts 8 values at a time.)
    if (rs === null || kRow % 8 !== 0 || vRow % 8 !== 0) {
      for (let t = 0; t < n; t++) this.write(layer, seqId, i0 + t, k, kOff + t * kRow, v, vOff + t * vRow);
      return;
    }
    this.checkLayer(layer);
    const s = this.seq(seqId);
    if (!(Number.isInteger(i0) && Number.isInteger(n) && i0 >= 0 && n >= 0 && i0 + n <= s.pendingCount)) {
      throw new CacheOperationError(`tokens ${i0}..${i0 + n} were not all reserved (the last reserve gave ${s.pendingCount}); call reserve first`, {
        operation: "write",
        seqId,
        i: i0 + n - 1,
      });
    }
    const P = this.pageSize;
    const rope = this.ropes[layer]!;
    const half = rope === null ? 0 : rope.spec.nRot / 2;
    const { queries, out, cosSin } = rs.jobs;
    const cap = Math.min(Math.floor(queries.length / kRow), Math.floor(out.length / vRow), half > 0 ? Math.floor(cosSin.length / (2 * half)) : Infinity);
    const L = this.kernelMemory!.layout;
    const bytes = rs.kind === 1 ? 2 : 4;
    for (let t = 0; t < n; ) {
      const at = s.pendingSlot + i0 + t;
      const entry = s.entries.get(s.pendingEntry + Math.floor(at / P));
      const slot = at % P;
      const m = Math.min(n - t, P - slot, cap);
      queries.set(k.subarray(kOff + t * kRow, kOff + (t + m) * kRow));
      out.set(v.subarray(vOff + t * vRow, vOff + (t + m) * vRow));
      for (let j = 0; j < m && rope !== null; j++) rope.cosSin64(entry.pos[slot + j]!, cosSin, 2 * half * j);
      const cell = entry.page * P + slot;
      rs.store(rs.kData[layer]! + cell * kRow * bytes, L.jobQueries, m, kRow, rs.kind, L.jobCosSin, half, rope?.spec.neox ? 1 : 0, shape.headDimK);
      rs.store(rs.vData[layer]! + cell * vRow * bytes, L.jobOut, m, vRow, rs.kind, 0, 0, 0, shape.headDimV);
      t += m;
    }
  }

  /**
   * Where token `i` (< n of the last reserve) is stored, for a backend that writes the pages itself
   * (WebGPU): out[0] = page, out[1] = slot, out[2] = the position its key is rotated by.
   */
  pendingSlot(seqId: number, i: number, out: Int32Array): void {
    const s = this.seq(seqId);
    if (!(i >= 0 && i < s.pendingCount)) {
      throw new CacheOperationError(`token ${i} was not reserved (the last reserve gave ${s.pendingCount}); call reserve first`, { operation: "pendingSlot", seqId, i });
    }
    const at = s.pendingSlot + i;
    const entry = s.entries.get(s.pendingEntry + Math.floor(at / this.pageSize));
    const slot = at % this.pageSize;
    out[0] = entry.page;
    out[1] = slot;
    out[2] = entry.pos[slot]!;
  }

  /** The runs attention reads for the sequence (the cache's own table: read it before the next change). */
  attentionRuns(seqId: number): RunTable {
    return this.table.runsFor(this.seq(seqId));
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
    const runs = this.table.runsFor(s);
    const shape = this.model.layers[layer]!;
    this.hookSeq = s;
    this.hookLayer = layer;
    const attendShape = this.attendShapes[layer]!;
    const rope = this.ropes[layer]!;
    const sc = scale ?? 1 / Math.sqrt(shape.headDimK);
    const wasm = this.wasmTargets[layer];
    if (wasm !== undefined) {
      attendRunsWasm(out, outOff, q, qOff, nQuery, attendShape, runs, s.held, wasm, rope, sc, this.scratch.attention);
    } else {
      attendRuns(out, outOff, q, qOff, nQuery, attendShape, runs, s.held, this.kStores[layer]!, this.vStores[layer]!, rope, sc, this.scratch.attention, this.hook);
    }
  }

  /**
   * Attention weights reduced outside the cache (the GPU backend, whose attention reads the pages
   * itself) folded into the sequence's policy scores as attend's hook folds them: `w[t]` (t <
   * nVisible) is query `queryIndex` of the last `nQuery`'s weight on retained token t, averaged over
   * heads and summed over every layer of this group, or, when the policy's observedQueries is
   * "sum", summed over the call's queries too (one call, queryIndex nQuery - 1). Call per query in
   * increasing order: the queries policy.observedQueries names (the earlier ones of a windowed H2O
   * advance its clock only: their `w` is not read).
   */
  observeSummed(seqId: number, queryIndex: number, nQuery: number, w: Float32Array, nVisible: number): void {
    const s = this.seq(seqId);
    if (!this.policy.usesScores) return;
    if (!Number.isSafeInteger(nVisible) || nVisible < 1 || nVisible > s.held || queryIndex < 0 || queryIndex >= nQuery || nQuery > s.held) {
      throw new CacheOperationError(`observeSummed of query ${queryIndex} of ${nQuery} over ${nVisible} tokens is invalid: the sequence holds ${s.held}`, {
        operation: "observe",
        seqId,
        nQuery,
      });
    }
    // Layer 0 with the layers' sum: every policy's per-layer fold is additive after its first layer.
    this.policy.observe(s.scores!, 0, this.model.layers.length, queryIndex, nQuery, w, nVisible);
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
    const shrunk = this.table.pop(s, n);
    if (shrunk !== null) this.truncateStores(shrunk.page, shrunk.used);
    this.counters.tokens -= n;
  }

  // -------------------------------------------------------------------------------------------
  // Reading

  /** Attention positions of the retained tokens, in retained order, into `out`; returns the count. */
  positions(seqId: number, out: Int32Array): number {
    return this.table.positions(this.seq(seqId), out);
  }

  /**
   * A score-based policy's score of each retained token (the first number of its record), in
   * retained order, into `out`; returns the count (0 for policies without scores).
   */
  policyScores(seqId: number, out: Float64Array): number {
    const s = this.seq(seqId);
    if (s.scores === null) return 0;
    const stride = this.policy.scoresPerToken;
    for (let t = 0; t < s.held; t++) out[t] = s.scores[t * stride]!;
    return s.held;
  }

  /** Original (text) positions of the retained tokens, in retained order; returns the count. */
  originalPositions(seqId: number, out: Int32Array): number {
    return this.table.originalPositions(this.seq(seqId), out);
  }

  /** The runs attention reads (diagnostics; allocates). */
  runsOf(seqId: number): KvRun[] {
    return this.table.runsFor(this.seq(seqId)).toArray();
  }

  /** Decodes retained token `index` of a layer: K as stored (rotated by its original position), V. */
  readToken(layer: number, seqId: number, index: number, kOut: Float32Array, vOut: Float32Array): void {
    this.checkLayer(layer);
    const s = this.seq(seqId);
    if (!(index >= 0 && index < s.held)) {
      throw new CacheOperationError(`token ${index} is out of range: the sequence holds ${s.held}`, { operation: "readToken", seqId });
    }
    const runs = this.table.runsFor(s);
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
      bytesReserved: this.reservedBytes, // the stores' own: a GPU store has no CPU side buffer
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

  /** The pages a sequence's snapshot holds, in its order (a backend reads them back first: WebGPU). */
  sequencePages(seqId: number): number[] {
    const s = this.seq(seqId);
    const out: number[] = [];
    for (let i = 0; i < s.entries.length; i++) out.push(s.entries.get(i).page);
    return out;
  }

  /**
   * Checks every invariant the cache relies on and throws an Error naming the first broken one
   * (PageTable.checkInvariants: reference counts, the free list, live and held counts, positions).
   */
  checkInvariants(): void {
    this.table.checkInvariants(this.seqs.values(), this.counters.tokens);
  }

  // -------------------------------------------------------------------------------------------
  // Snapshots

  /** One sequence as bytes (see snapshot.ts for the format). */
  snapshot(seqId: number): Uint8Array {
    const s = this.seq(seqId);
    const entries: PageEntry[] = [];
    for (let i = 0; i < s.entries.length; i++) entries.push(s.entries.get(i));
    return encodeSnapshot(this.snapshotHeader(), s, entries, this.kStores, this.vStores, this.policy.scoresPerToken);
  }

  /**
   * Restores a snapshot as a new sequence `seqId`. Returns false (nothing changed) when the pool
   * lacks the pages; throws SnapshotError for corrupt bytes or a mismatching model/config.
   */
  restore(seqId: number, bytes: Uint8Array): boolean {
    const snap = decodeSnapshot(bytes, this.snapshotHeader(), this.layout.pagesPerSequence + this.window, this.window, this.policy.scoresPerToken);
    this.checkNewId(seqId, "restore");
    if (snap.entries.length > this.pool.freePages) return false;
    const s = this.newSequence(seqId);
    for (const se of snap.entries) {
      const page = this.table.allocatePage();
      this.table.pushRestored(s, page, se.used, se.alive, se.pos);
      for (let l = 0; l < this.nLayer; l++) {
        this.kStores[l]!.importPage(page, se.k[l]!);
        this.vStores[l]!.importPage(page, se.v[l]!);
      }
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
      policy: snapshotPolicyName(this.config.policy),
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
    return new SequenceState(seqId, this.scratch.takeScores());
  }

  private truncateStores(page: number, nValid: number): void {
    for (let l = 0; l < this.kStores.length; l++) {
      this.kStores[l]!.truncatePage(page, nValid);
      this.vStores[l]!.truncatePage(page, nValid);
    }
  }

  /**
   * The store half of a compaction (PageTable.compact does the metadata, after this): packs the
   * sequence's live tokens into as few pages as possible, in order, reusing its own pages front to
   * back (all exclusive: the plan checked). Tokens for packed page d come only from entries >= d,
   * so each page's tokens are gathered before it is overwritten. Quantized codecs re-encode the
   * decoded values (one more rounding step for int8/int4/fp8; exact for f32 and f16).
   */
  private compactStores(s: SequenceState): void {
    const P = this.pageSize;
    const nEntries = s.entries.length;
    const packed = Math.ceil(s.held / P);
    const gather = this.scratch.gather;
    for (let l = 0; l < this.nLayer; l++) {
      for (const store of [this.kStores[l]!, this.vStores[l]!]) {
        if (store.packPage !== undefined) {
          this.packStores(s, store, packed);
          continue;
        }
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
            if (src.alive[rs] === 1) store.readToken(src.page, rs, gather, (n++) * stride);
            rs++;
          }
          const page = s.entries.get(d).page;
          store.truncatePage(page, 0);
          for (let t = 0; t < n; t++) store.writeToken(page, t, gather, t * stride);
        }
      }
    }
  }

  /** compactStores for a store that moves tokens itself (packPage: pages the CPU does not read). */
  private packStores(s: SequenceState, store: PageStore, packed: number): void {
    const P = this.pageSize;
    const nEntries = s.entries.length;
    const src = (this.packSources ??= { pages: new Int32Array(P), slots: new Int32Array(P) });
    let ri = 0;
    let rs = 0;
    for (let d = 0; d < packed; d++) {
      let n = 0;
      while (n < P && ri < nEntries) {
        const e = s.entries.get(ri);
        if (rs >= e.used) {
          ri++;
          rs = 0;
          continue;
        }
        if (e.alive[rs] === 1) {
          src.pages[n] = e.page;
          src.slots[n++] = rs;
        }
        rs++;
      }
      const page = s.entries.get(d).page;
      store.truncatePage(page, 0);
      store.packPage!(page, src.pages, src.slots, n);
    }
  }

  /** Appends n slots at the tail (the plan counted the pages): copies a shared tail first, clears fresh pages. */
  private append(s: SequenceState, n: number): void {
    const table = this.table;
    const tail = table.openTail(s);
    if (tail !== null && this.pool.refCount(tail.page) > 1) {
      const page = table.allocatePage();
      for (let l = 0; l < this.nLayer; l++) {
        this.kStores[l]!.copyPage(page, tail.page);
        this.vStores[l]!.copyPage(page, tail.page);
      }
      this.truncateStores(page, tail.used);
      table.replaceTailPage(s, page);
      this.counters.copyOnWritePages++;
    }
    const firstNew = s.entries.length;
    table.append(s, n);
    for (let i = firstNew; i < s.entries.length; i++) this.truncateStores(s.entries.get(i).page, 0);
    this.counters.tokens += n;
  }
}

const EMPTY_SCORES = new Float64Array(0);
