// The paged, bounded KV cache of a model: one CacheGroup (cache-group.ts) per kind of layer, as
// llama.cpp composes two caches in llama-kv-cache-iswa. Layers without a window of their own share
// the main group, which keeps the user's policy, window and positions; layers with the model's own
// sliding window (gemma2/gemma3 local layers) live in a FIFO group per window that keeps only the
// tokens that window can reach. Every sequence exists in every group; a reserve is planned in all
// groups before any of them changes, so a refusal changes nothing.
//
//   layers:  0 1 2 3 4 5 6 7 8 9 10 11       (gemma3: 5 local : 1 global)
//   main     . . . . . G . . . . .  G        context window / sinks + recent / H2O ... (user)
//   swa 1024 L L L L L . L L L L L  .        FIFO of n_swa - 1 + prefill chunk, original positions

import { CacheConfigError, CacheExhaustedError, CacheOperationError, ContextWindowSizeExceededError, LayerOutOfRangeError, SnapshotError } from "../errors.js";
import { cacheScratchBytes as groupScratchBytes, CacheGroup, type PagedKvCacheOptions, type ReserveResult } from "./cache-group.js";
import { resolveCacheConfig, type CacheConfig, type CacheLayerShape, type CacheModelShape } from "./config.js";
import { planPoolLayout, type PoolLayout } from "./page-pool.js";
import type { EvictionPolicy } from "./policies/index.js";
import type { KvRun } from "./runs.js";
import type { RunTable } from "./attention.js";
import type { CacheStats, SequenceStats } from "./stats.js";

export type { PagedKvCacheOptions, ReserveResult, StoreFactory } from "./cache-group.js";
export { cacheKernelLayout, MAX_POSITION } from "./cache-group.js";

/** One group of layers: which model layers, with which config and shape. */
export interface CacheGroupPlan {
  /** "main": the user's policy; "swa": a model-native sliding window of `slidingWindow` tokens. */
  readonly kind: "main" | "swa";
  /** Model layer indices, ascending. */
  readonly layers: readonly number[];
  readonly config: CacheConfig;
  /** The group's layers only. */
  readonly shape: CacheModelShape;
  /** The model's n_swa for "swa" groups; 0 for main. */
  readonly slidingWindow: number;
}

/**
 * The groups a cache of `model` under `config` holds; the cache and the planner both call this.
 * A native-SWA group keeps n_swa - 1 + prefillChunkSize tokens (llama.cpp sizes its SWA cache
 * n_swa + n_ubatch): the first query of a chunk still sees its n_swa - 1 predecessors. Under a
 * context window no larger than that, it keeps the context window instead (it never evicts then).
 * budgetBytes, when set, is the whole cache's: the SWA groups take their window-sized pools and
 * the main group what is left.
 */
export function planCacheGroups(config: CacheConfig, model: CacheModelShape): CacheGroupPlan[] {
  if (model.layers.length === 0) throw new CacheConfigError("the model has no K/V layers; the cache needs at least one", { field: "layers", value: 0 });
  const mainLayers: number[] = [];
  const bySwa = new Map<number, number[]>();
  for (let l = 0; l < model.layers.length; l++) {
    const sw = model.layers[l]!.slidingWindow ?? 0;
    if (!Number.isSafeInteger(sw) || sw < 0) {
      throw new CacheOperationError(`layer ${l} sliding window ${sw} is invalid: use a positive integer of tokens`, { operation: "create", layer: l });
    }
    if (sw === 0) mainLayers.push(l);
    else {
      const list = bySwa.get(sw) ?? [];
      list.push(l);
      bySwa.set(sw, list);
    }
  }
  const shapeOf = (layers: readonly number[]): CacheModelShape => {
    const ls: CacheLayerShape[] = [];
    for (const l of layers) ls.push(model.layers[l]!);
    return model.rope === undefined ? { nHead: model.nHead, layers: ls } : { nHead: model.nHead, layers: ls, rope: model.rope };
  };
  if (bySwa.size === 0) return [{ kind: "main", layers: mainLayers, config, shape: model, slidingWindow: 0 }];

  const swa: CacheGroupPlan[] = [];
  let swaBytes = 0;
  for (const [sw, layers] of [...bySwa.entries()].sort((a, b) => a[0] - b[0])) {
    const keep = sw - 1 + config.prefillChunkSize;
    const common = { pageSize: config.pageSize, codec: config.codec, maxSequences: config.maxSequences, prefillChunkSize: config.prefillChunkSize };
    const groupConfig =
      config.policy.kind === "context" && config.windowTokens <= keep
        ? resolveCacheConfig({ ...common, contextWindowSize: config.windowTokens })
        : resolveCacheConfig({ ...common, slidingWindowSize: keep, attentionSinkSize: 0, policy: { kind: "fifo", positions: "original" } });
    const shape = shapeOf(layers);
    swaBytes += planPoolLayout(groupConfig, shape).reservedBytes;
    swa.push({ kind: "swa", layers, config: groupConfig, shape, slidingWindow: sw });
  }
  let mainConfig = config;
  if (config.budgetBytes !== null) {
    const left = config.budgetBytes - swaBytes;
    if (left <= 0) {
      throw new CacheOperationError(
        `budgetBytes ${config.budgetBytes} cannot hold the model's sliding-window layers (${swaBytes} bytes); raise the budget`,
        { operation: "create", budgetBytes: config.budgetBytes, swaBytes },
      );
    }
    mainConfig = Object.freeze({ ...config, budgetBytes: left });
  }
  return [{ kind: "main", layers: mainLayers, config: mainConfig, shape: shapeOf(mainLayers), slidingWindow: 0 }, ...swa];
}

/** Bytes every group's stores reserve, summed: what `new PagedKvCache(config, model).reservedBytes` is. */
export function cacheReservedBytes(config: CacheConfig, model: CacheModelShape): number {
  let b = 0;
  for (const g of planCacheGroups(config, model)) b += planPoolLayout(g.config, g.shape).reservedBytes;
  return b;
}

/** PagedKvCache.scratchBytes for (config, model), computed without allocating (see CacheGroup's). */
export function cacheScratchBytes(config: CacheConfig, model: CacheModelShape): number {
  let b = 0;
  for (const g of planCacheGroups(config, model)) b += groupScratchBytes(g.config, g.shape);
  return b;
}

/** Per-group figures in CacheStats.groups. */
export type CacheGroupStats = CacheStats & { readonly kind: "main" | "swa"; readonly layers: readonly number[]; readonly slidingWindow: number };

/** Multi-group snapshots: "KVBG", u32 group count, then per group u32 length + that group's snapshot. */
const GROUPS_MAGIC = 0x4742564b;

export class PagedKvCache {
  readonly config: CacheConfig;
  readonly model: CacheModelShape;
  readonly groups: readonly CacheGroup[];
  readonly groupPlans: readonly CacheGroupPlan[];
  /** The main group (the user's policy): its sequences' lengths and positions are the cache's. */
  private readonly main: CacheGroup;
  private readonly layerGroup: Int32Array; // [nLayer] group index
  private readonly layerLocal: Int32Array; // [nLayer] layer index inside its group

  constructor(config: CacheConfig, model: CacheModelShape, options: PagedKvCacheOptions = {}) {
    this.config = config;
    this.model = model;
    this.groupPlans = planCacheGroups(config, model);
    this.groups = this.groupPlans.map((g) => new CacheGroup(g.config, g.shape, options));
    this.main = this.groups[0]!;
    this.layerGroup = new Int32Array(model.layers.length);
    this.layerLocal = new Int32Array(model.layers.length);
    this.groupPlans.forEach((g, gi) => {
      g.layers.forEach((l, i) => {
        this.layerGroup[l] = gi;
        this.layerLocal[l] = i;
      });
    });
  }

  get nLayer(): number {
    return this.model.layers.length;
  }

  /** The main group's pool layout (the whole cache's when it has one group). */
  get layout(): PoolLayout {
    return this.main.layout;
  }

  get policy(): EvictionPolicy {
    return this.main.policy;
  }

  /** "wasm" when every group that holds layers runs its attention in the wasm kernels. */
  get kernels(): "wasm" | "js" {
    for (const g of this.groups) if (g.nLayer > 0 && g.kernels === "js") return "js";
    return "wasm";
  }

  get kernelMemoryBytes(): number {
    let b = 0;
    for (const g of this.groups) b += g.kernelMemoryBytes;
    return b;
  }

  get scratchBytes(): number {
    let b = 0;
    for (const g of this.groups) b += g.scratchBytes;
    return b;
  }

  get reservedBytes(): number {
    let b = 0;
    for (const g of this.groups) b += g.reservedBytes;
    return b;
  }

  // Sequences: the same ids in every group.

  has(seqId: number): boolean {
    return this.main.has(seqId);
  }

  sequenceIds(): number[] {
    return this.main.sequenceIds();
  }

  length(seqId: number): number {
    return this.main.length(seqId);
  }

  add(seqId: number): void {
    this.main.add(seqId);
    for (let g = 1; g < this.groups.length; g++) this.groups[g]!.add(seqId);
  }

  remove(seqId: number): void {
    this.main.remove(seqId);
    for (let g = 1; g < this.groups.length; g++) this.groups[g]!.remove(seqId);
  }

  fork(srcId: number, dstId: number): void {
    this.main.fork(srcId, dstId);
    for (let g = 1; g < this.groups.length; g++) this.groups[g]!.fork(srcId, dstId);
  }

  assertPromptFits(seqId: number, nTokens: number): void {
    this.main.assertPromptFits(seqId, nTokens);
  }

  // Token path

  /** Makes room for n tokens in every group, or refuses with nothing changed (the first group's refusal). */
  reserve(seqId: number, n: number): ReserveResult {
    if (this.groups.length === 1) return this.main.reserve(seqId, n);
    if (n > this.config.prefillChunkSize) {
      throw new CacheOperationError(
        `reserve of ${n} tokens is invalid with the model's sliding-window layers: use 0..${this.config.prefillChunkSize} (prefillChunkSize) per call`,
        { operation: "reserve", seqId, n },
      );
    }
    const first = this.main.planReserve(seqId, n);
    if (!first.ok) return first;
    // Plans are per group (each has its own pool and scratch), so all are planned, then committed.
    for (let g = 1; g < this.groups.length; g++) {
      const r = this.groups[g]!.planReserve(seqId, n);
      if (!r.ok) return r;
    }
    for (const g of this.groups) g.commitReserve();
    return first;
  }

  reserveOrThrow(seqId: number, n: number): number {
    const r = this.reserve(seqId, n);
    if (r.ok) return r.evicted;
    if (r.reason === "length") throw new ContextWindowSizeExceededError(n, r.held, r.window);
    throw new CacheExhaustedError(r.neededPages, r.freePages, this.config.budgetBytes ?? this.reservedBytes);
  }

  write(layer: number, seqId: number, i: number, k: Float32Array, kOff: number, v: Float32Array, vOff: number): void {
    this.checkLayer(layer);
    this.groups[this.layerGroup[layer]!]!.write(this.layerLocal[layer]!, seqId, i, k, kOff, v, vOff);
  }

  /** write() of tokens i0 .. i0 + n of the last reserve, rows side by side in k and v (CacheGroup.writeRows). */
  writeRows(layer: number, seqId: number, i0: number, n: number, k: Float32Array, kOff: number, v: Float32Array, vOff: number): void {
    this.checkLayer(layer);
    this.groups[this.layerGroup[layer]!]!.writeRows(this.layerLocal[layer]!, seqId, i0, n, k, kOff, v, vOff);
  }

  attend(layer: number, seqId: number, q: Float32Array, qOff: number, nQuery: number, out: Float32Array, outOff: number, scale?: number): void {
    this.checkLayer(layer);
    this.groups[this.layerGroup[layer]!]!.attend(this.layerLocal[layer]!, seqId, q, qOff, nQuery, out, outOff, scale);
  }

  /** The main group's policy score per retained token, in retained order (CacheGroup.policyScores); returns the count. */
  policyScores(seqId: number, out: Float64Array): number {
    return this.main.policyScores(seqId, out);
  }

  /** Attention weights reduced outside the cache (the GPU) into `layer`'s group's policy scores (CacheGroup.observeSummed). */
  observeSummed(layer: number, seqId: number, queryIndex: number, nQuery: number, w: Float32Array, nVisible: number): void {
    this.checkLayer(layer);
    this.groups[this.layerGroup[layer]!]!.observeSummed(seqId, queryIndex, nQuery, w, nVisible);
  }

  /** Where token i of the last reserve is stored in `layer`'s group: [page, slot, rotation position] (see CacheGroup). */
  pendingSlot(layer: number, seqId: number, i: number, out: Int32Array): void {
    this.checkLayer(layer);
    this.groups[this.layerGroup[layer]!]!.pendingSlot(seqId, i, out);
  }

  /** The runs attention reads in `layer`'s group (the cache's own table: read it before the next change). */
  attentionRuns(layer: number, seqId: number): RunTable {
    this.checkLayer(layer);
    return this.groups[this.layerGroup[layer]!]!.attentionRuns(seqId);
  }

  /**
   * Whether truncate(seqId, n) keeps every group able to continue: a sliding-window group must
   * still hold the n_swa - 1 tokens before the new end (it may have evicted them).
   */
  canTruncate(seqId: number, n: number): boolean {
    const held = this.main.length(seqId);
    if (!Number.isSafeInteger(n) || n < 0 || n > held) return false;
    const end = this.main.sequenceStats(seqId).nextPosition - n;
    for (let g = 1; g < this.groups.length; g++) {
      const gh = this.groups[g]!.length(seqId);
      if (gh - n < Math.min(end, this.groupPlans[g]!.slidingWindow - 1)) return false;
    }
    return true;
  }

  /** Pops the n newest tokens from every group (see canTruncate; throws when a group cannot). */
  truncate(seqId: number, n: number): void {
    if (this.groups.length > 1 && !this.canTruncate(seqId, n)) {
      throw new CacheOperationError(
        `truncate of ${n} tokens is invalid: the sequence holds ${this.main.length(seqId)} and its sliding-window layers no longer hold the tokens before the new end; clear the sequence instead`,
        { operation: "truncate", seqId, n },
      );
    }
    for (const g of this.groups) g.truncate(seqId, n);
  }

  // Reading: positions and runs are the main group's.

  positions(seqId: number, out: Int32Array): number {
    return this.main.positions(seqId, out);
  }

  originalPositions(seqId: number, out: Int32Array): number {
    return this.main.originalPositions(seqId, out);
  }

  runsOf(seqId: number): KvRun[] {
    return this.main.runsOf(seqId);
  }

  /** Retained token `index` of a layer, counted in that layer's group. */
  readToken(layer: number, seqId: number, index: number, kOut: Float32Array, vOut: Float32Array): void {
    this.checkLayer(layer);
    this.groups[this.layerGroup[layer]!]!.readToken(this.layerLocal[layer]!, seqId, index, kOut, vOut);
  }

  /** The main group's figures with bytes and pages summed over every group, and each group's own. */
  stats(): CacheStats & { readonly groups: readonly CacheGroupStats[] } {
    const groups = this.groups.map((g, i) => {
      const p = this.groupPlans[i]!;
      return { ...g.stats(), kind: p.kind, layers: p.layers, slidingWindow: p.slidingWindow };
    });
    const m = groups[0]!;
    let pagesTotal = 0, pagesUsed = 0, pagesFree = 0, bytesReserved = 0, bytesUsed = 0, copyOnWritePages = 0, compactions = 0;
    for (const g of groups) {
      pagesTotal += g.pagesTotal;
      pagesUsed += g.pagesUsed;
      pagesFree += g.pagesFree;
      bytesReserved += g.bytesReserved;
      bytesUsed += g.bytesUsed;
      copyOnWritePages += g.copyOnWritePages;
      compactions += g.compactions;
    }
    const { kind: _k, layers: _l, slidingWindow: _s, ...main } = m;
    return { ...main, pagesTotal, pagesUsed, pagesFree, bytesReserved, bytesUsed, copyOnWritePages, compactions, groups };
  }

  /** The sequence as the main group holds it (its length and positions are the cache's; per-group figures: stats().groups). */
  sequenceStats(seqId: number): SequenceStats {
    return this.main.sequenceStats(seqId);
  }

  /** Reference count of a main-group page (tests). */
  pageRefCount(page: number): number {
    return this.main.pageRefCount(page);
  }

  checkInvariants(): void {
    for (const g of this.groups) g.checkInvariants();
  }

  // Snapshots: a one-group cache writes its group's snapshot as is.

  /** Per cache group, the pages `snapshot(seqId)` reads (CacheGroup.sequencePages). */
  sequencePages(seqId: number): number[][] {
    return this.groups.map((g) => g.sequencePages(seqId));
  }

  snapshot(seqId: number): Uint8Array {
    if (this.groups.length === 1) return this.main.snapshot(seqId);
    const parts = this.groups.map((g) => g.snapshot(seqId));
    let total = 8;
    for (const p of parts) total += 4 + p.length;
    const out = new Uint8Array(total);
    const dv = new DataView(out.buffer);
    dv.setUint32(0, GROUPS_MAGIC, true);
    dv.setUint32(4, parts.length, true);
    let o = 8;
    for (const p of parts) {
      dv.setUint32(o, p.length, true);
      out.set(p, o + 4);
      o += 4 + p.length;
    }
    return out;
  }

  /** Restores every group's part, or nothing (false when a pool lacks pages; SnapshotError when corrupt). */
  restore(seqId: number, bytes: Uint8Array): boolean {
    if (this.groups.length === 1) return this.main.restore(seqId, bytes);
    const parts = splitGroupSnapshot(bytes, this.groups.length);
    for (let g = 0; g < this.groups.length; g++) {
      let ok: boolean;
      try {
        ok = this.groups[g]!.restore(seqId, parts[g]!);
      } catch (err) {
        for (let h = 0; h < g; h++) this.groups[h]!.remove(seqId);
        throw err;
      }
      if (!ok) {
        for (let h = 0; h < g; h++) this.groups[h]!.remove(seqId);
        return false;
      }
    }
    return true;
  }

  restoreOrThrow(seqId: number, bytes: Uint8Array): void {
    if (!this.restore(seqId, bytes)) throw new CacheExhaustedError(-1, this.main.stats().pagesFree, this.config.budgetBytes ?? this.reservedBytes);
  }

  private checkLayer(layer: number): void {
    if (!Number.isInteger(layer) || layer < 0 || layer >= this.model.layers.length) throw new LayerOutOfRangeError(layer, this.model.layers.length);
  }
}

function splitGroupSnapshot(bytes: Uint8Array, nGroups: number): Uint8Array[] {
  if (bytes.length < 8) throw new SnapshotError(`snapshot is ${bytes.length} bytes, shorter than any valid one`, { field: "length" });
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (dv.getUint32(0, true) !== GROUPS_MAGIC) {
    throw new SnapshotError(`not a snapshot of a cache with ${nGroups} layer groups (magic mismatch); restore into a cache built with the same model`, { field: "magic" });
  }
  const n = dv.getUint32(4, true);
  if (n !== nGroups) throw new SnapshotError(`snapshot has ${n} layer groups, this cache ${nGroups}; restore into a cache built with the same model`, { field: "groups" });
  const parts: Uint8Array[] = [];
  let o = 8;
  for (let g = 0; g < n; g++) {
    if (o + 4 > bytes.length) throw new SnapshotError(`snapshot truncated in group ${g}`, { field: "length" });
    const len = dv.getUint32(o, true);
    if (o + 4 + len > bytes.length) throw new SnapshotError(`snapshot truncated in group ${g}`, { field: "length" });
    parts.push(bytes.subarray(o + 4, o + 4 + len));
    o += 4 + len;
  }
  if (o !== bytes.length) throw new SnapshotError(`snapshot has ${bytes.length - o} trailing bytes`, { field: "length" });
  return parts;
}
