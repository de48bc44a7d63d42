// The page tables of one cache group: which pages each sequence holds, which of their slots it
// retains and at which original positions, the pool references that follow, and the runs attention reads.
//
// Bookkeeping only: the K/V bytes in the page stores are CacheGroup's to move. As llama.cpp's
// llama-kv-cells.h does, every mutator asserts its preconditions and throws a plain Error naming the
// broken invariant: these are the cache's own bugs, never a caller's (the boundary checks those
// first, with typed errors). The checks are O(1) per call or per token touched, and allocate
// nothing: eviction and append run for every decoded token.

import type { RunTable } from "./attention.js";
import type { PositionsMode } from "./config.js";
import type { PagePool } from "./page-pool.js";
import { PageEntry, type SequenceState } from "./sequence.js";

/** Largest original position: positions are stored as int32. */
export const MAX_POSITION = 2 ** 31 - 2;

/** Buffers the page table borrows from the group's CacheScratch (cache-scratch.ts). */
export interface PageTableScratch {
  readonly evictIdx: Int32Array; // [window] the policy's chosen retained indices, ascending
  readonly doomed: Int32Array; // [pagesPerSequence + window + 1] entry indices the evictions empty, ascending
  readonly posScratch: Int32Array; // [window]
  readonly runs: RunTable;
}

function broken(invariant: string): never {
  throw new Error(`page table invariant broken: ${invariant}`);
}

export class PageTable {
  private readonly pool: PagePool;
  private readonly pageSize: number;
  /** Tokens one sequence may retain (the scores' and the scratch's capacity). */
  private readonly window: number;
  private readonly reassigned: boolean;
  /** f64 numbers per token in a sequence's scores (the policy's scoresPerToken; the records move whole). */
  private readonly scoresPerToken: number;
  private readonly evictIdx: Int32Array;
  private readonly doomed: Int32Array;
  private readonly posScratch: Int32Array;
  private readonly runs: RunTable;
  /** Whose runs `runs` holds, at which version (attention asks once per layer; rebuilt once per change). */
  private runsSeq: SequenceState | null = null;
  private runsVersion = -1;
  /** Released entries, reused so a decode loop allocates no PageEntry once warm. */
  private readonly spareEntries: PageEntry[] = [];

  constructor(pool: PagePool, pageSize: number, window: number, positions: PositionsMode, scratch: PageTableScratch, scoresPerToken = 1) {
    this.pool = pool;
    this.pageSize = pageSize;
    this.window = window;
    this.reassigned = positions === "reassigned";
    this.scoresPerToken = scoresPerToken;
    this.evictIdx = scratch.evictIdx;
    this.doomed = scratch.doomed;
    this.posScratch = scratch.posScratch;
    this.runs = scratch.runs;
  }

  // -------------------------------------------------------------------------------------------
  // Entries and pages

  /** A fresh page from the pool for a commit; planReserve counted it, so an empty pool is a bug. */
  allocatePage(): number {
    const page = this.pool.allocate();
    if (page === null) broken("the pool ran out during a commit: planReserve counted fewer pages than the commit takes");
    return page;
  }

  /** An empty entry for `page`, whose reference the caller already holds (allocated or retained). */
  private takeEntry(page: number): PageEntry {
    if (!(this.pool.refCount(page) > 0)) broken(`an entry for page ${page}, which is free: allocate or retain it first`);
    const e = this.spareEntries.pop() ?? new PageEntry(this.pageSize);
    e.reset(page);
    e.alive.fill(0);
    return e;
  }

  /** Drops the entry's page reference (PagePool.release throws on a double free) and keeps the entry for reuse. */
  private dropEntry(e: PageEntry): void {
    if (e.page < 0) broken("an entry released twice");
    this.pool.release(e.page);
    e.page = -1;
    this.spareEntries.push(e);
  }

  /** True when no other sequence shares a page of `s`. */
  allExclusive(s: SequenceState): boolean {
    for (let i = 0; i < s.entries.length; i++) if (this.pool.refCount(s.entries.get(i).page) !== 1) return false;
    return true;
  }

  /** The last entry when it has free slots (the next append writes there), else null. */
  openTail(s: SequenceState): PageEntry | null {
    const n = s.entries.length;
    if (n === 0) return null;
    const tail = s.entries.get(n - 1);
    return tail.used < this.pageSize ? tail : null;
  }

  // -------------------------------------------------------------------------------------------
  // Sequences

  /** Gives `dst` (new, empty) every entry of `src`, sharing each page (copy-on-write). Voids src's pending reservation. */
  share(src: SequenceState, dst: SequenceState): void {
    if (dst.entries.length !== 0 || dst.held !== 0) broken(`fork into sequence ${dst.id}, which already holds ${dst.held} tokens`);
    for (let i = 0; i < src.entries.length; i++) {
      const e = src.entries.get(i);
      const c = this.takeEntry(e.page);
      c.copyFrom(e);
      this.pool.retain(e.page);
      dst.entries.push(c);
    }
    dst.held = src.held;
    dst.nextPos = src.nextPos;
    if (src.scores && dst.scores) dst.scores.set(src.scores.subarray(0, src.held * this.scoresPerToken));
    src.pendingCount = 0;
    src.version++;
  }

  /** Drops every page reference of `s` (shared pages stay with their other holders); `s` is then discarded. */
  releaseAll(s: SequenceState): void {
    while (s.entries.length > 0) this.dropEntry(s.entries.pop());
    if (this.runsSeq === s) this.runsSeq = null;
  }

  /** Appends a restored entry on `page` (allocated by the caller) with a snapshot's slot metadata (validated by decodeSnapshot). */
  pushRestored(s: SequenceState, page: number, used: number, alive: Uint8Array, pos: Int32Array): void {
    if (!(used >= 1 && used <= this.pageSize)) broken(`a restored entry with ${used} used slots (1..${this.pageSize})`);
    const e = this.takeEntry(page);
    e.used = used;
    e.alive.set(alive);
    e.pos.set(pos);
    let live = 0;
    let contiguous = true;
    for (let slot = 0; slot < used; slot++) {
      live += alive[slot]!;
      if (slot > 0 && pos[slot] !== pos[slot - 1]! + 1) contiguous = false;
    }
    if (live === 0) broken(`a restored entry on page ${page} with no live slot`);
    e.live = live;
    e.contiguous = contiguous;
    s.entries.push(e);
  }

  // -------------------------------------------------------------------------------------------
  // Eviction (planReserve marks, commitReserve applies)

  /**
   * Walks the entries holding the `e` chosen evictions (evictIdx, ascending) and records in doomed
   * the indices of entries they empty; returns their count. Reads only; stops at the last chosen
   * token, so a sliding window (evictions right after the sinks) touches O(1) entries.
   */
  markDoomed(s: SequenceState, e: number): number {
    if (!(e >= 0 && e <= s.held)) broken(`eviction of ${e} tokens from sequence ${s.id}, which holds ${s.held}`);
    const idx = this.evictIdx;
    let j = 0;
    let base = 0;
    let nDoomed = 0;
    let prev = -1;
    for (let i = 0; i < s.entries.length && j < e; i++) {
      const entry = s.entries.get(i);
      const end = base + entry.live;
      let c = 0;
      while (j < e) {
        const x = idx[j]!;
        if (x >= end) break;
        if (x <= prev) broken(`eviction index ${x} after ${prev}: the policy must choose distinct retained indices in ascending order`);
        prev = x;
        j++;
        c++;
      }
      if (c === entry.live) this.doomed[nDoomed++] = i;
      base = end;
    }
    if (j !== e) broken(`${e - j} of ${e} eviction indices are past the ${s.held} retained tokens of sequence ${s.id}`);
    return nDoomed;
  }

  /** Clears the `e` chosen slots (evictIdx), releases the `nDoomed` entries markDoomed found empty, keeps scores in retained order. */
  applyEvictions(s: SequenceState, e: number, nDoomed: number): void {
    if (!(e >= 0 && e <= s.held)) broken(`eviction of ${e} tokens from sequence ${s.id}, which holds ${s.held}`);
    const idx = this.evictIdx;
    let j = 0;
    let base = 0;
    for (let i = 0; i < s.entries.length && j < e; i++) {
      const entry = s.entries.get(i);
      const end = base + entry.live;
      if (idx[j]! < end) {
        // Only live slots take a rank, so each slot cleared here was alive.
        let rank = base;
        for (let slot = 0; slot < entry.used && j < e; slot++) {
          if (entry.alive[slot] === 0) continue;
          if (rank === idx[j]) {
            entry.alive[slot] = 0;
            entry.live--;
            j++;
          }
          rank++;
        }
      }
      base = end;
    }
    if (j !== e) broken(`${e - j} of ${e} evictions of sequence ${s.id} found no live slot (indices out of order or past the retained tokens)`);
    // Release emptied entries, highest index first so lower indices stay valid.
    const doomed = this.doomed;
    for (let d = nDoomed - 1; d >= 0; d--) {
      const at = doomed[d]!;
      const entry = s.entries.get(at);
      if (entry.live !== 0) broken(`entry ${at} (page ${entry.page}) of sequence ${s.id} released with ${entry.live} live tokens: the plan is stale`);
      this.dropEntry(s.entries.removeAt(at));
    }
    const sc = s.scores;
    if (sc) {
      // Keep scores in retained order: drop the evicted indices in one pass (whole records).
      const S = this.scoresPerToken;
      let w = 0;
      let k = 0;
      for (let t = 0; t < s.held; t++) {
        if (k < e && idx[k] === t) {
          k++;
          continue;
        }
        if (S === 1) sc[w] = sc[t]!;
        else if (w !== t) sc.copyWithin(w * S, t * S, t * S + S);
        w++;
      }
    }
    s.held -= e;
    s.version++;
  }

  /**
   * The metadata half of a compaction, after CacheGroup packed the stores the same way: the live
   * tokens, in order, fill the sequence's first ceil(held / pageSize) entries; the rest are released.
   * Every page must be this sequence's alone (they are rewritten in place).
   */
  compact(s: SequenceState): void {
    if (!this.allExclusive(s)) broken(`compaction of sequence ${s.id}, which shares a page with a fork`);
    if (s.held > this.posScratch.length) broken(`compaction of ${s.held} tokens, more than the window ${this.posScratch.length}`);
    const P = this.pageSize;
    const nEntries = s.entries.length;
    const packed = Math.ceil(s.held / P);
    const posTmp = this.posScratch;
    let n = 0;
    for (let i = 0; i < nEntries; i++) {
      const e = s.entries.get(i);
      for (let slot = 0; slot < e.used; slot++) if (e.alive[slot] === 1) posTmp[n++] = e.pos[slot]!;
    }
    if (n !== s.held) broken(`sequence ${s.id} holds ${s.held} tokens but its entries have ${n} live slots`);
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
    s.version++;
  }

  // -------------------------------------------------------------------------------------------
  // Append and pop

  /** Points the open tail at `page`, the private copy the caller made of the shared tail page (copy-on-write). */
  replaceTailPage(s: SequenceState, page: number): void {
    const tail = this.openTail(s);
    if (tail === null) broken(`copy-on-write for sequence ${s.id}, which has no open tail page`);
    if (!(this.pool.refCount(tail.page) > 1)) broken(`copy-on-write of page ${tail.page}, which is not shared`);
    if (this.pool.refCount(page) !== 1) broken(`copy-on-write into page ${page}, which is not freshly allocated`);
    this.pool.release(tail.page);
    tail.page = page;
  }

  /**
   * Appends `n` slots at the tail with the next positions, taking fresh pages from the pool (the
   * plan counted them), and records them as the pending reservation write() fills. The open tail,
   * if any, must be this sequence's alone (copy-on-write first) and the window must have room.
   */
  append(s: SequenceState, n: number): void {
    const P = this.pageSize;
    if (!(n >= 0 && s.held + n <= this.window)) broken(`append of ${n} to the ${s.held} tokens of sequence ${s.id} passes the window ${this.window}: evict first`);
    if (s.nextPos + n > MAX_POSITION) broken(`positions of sequence ${s.id} would pass ${MAX_POSITION}`);
    let tail = s.entries.length > 0 ? s.entries.get(s.entries.length - 1) : null;
    // Positions only grow: the newest slot written (live or evicted) came before nextPos.
    if (tail !== null && tail.pos[tail.used - 1]! >= s.nextPos) broken(`sequence ${s.id} appends position ${s.nextPos} after ${tail.pos[tail.used - 1]}`);
    if (tail !== null && tail.used < P) {
      if (this.pool.refCount(tail.page) !== 1) broken(`append into page ${tail.page}, shared by ${this.pool.refCount(tail.page)} sequences: copy it first`);
      s.pendingEntry = s.entries.length - 1;
      s.pendingSlot = tail.used;
    } else {
      s.pendingEntry = s.entries.length;
      s.pendingSlot = 0;
    }
    for (let t = 0; t < n; t++) {
      if (tail === null || tail.used === P) {
        tail = this.takeEntry(this.allocatePage());
        s.entries.push(tail);
      }
      const slot = tail.used++;
      if (tail.alive[slot] !== 0) broken(`append into live slot ${slot} of page ${tail.page}`);
      const pos = s.nextPos++;
      if (slot > 0 && tail.pos[slot - 1] !== pos - 1) tail.contiguous = false;
      tail.pos[slot] = pos;
      tail.alive[slot] = 1;
      tail.live++;
      const sc = s.scores;
      if (sc !== null) {
        const S = this.scoresPerToken;
        if (S === 1) sc[s.held] = 0;
        else sc.fill(0, s.held * S, s.held * S + S);
      }
      s.held++;
    }
    s.pendingCount = n;
    s.version++;
  }

  /**
   * Pops the `n` newest retained tokens (undo); the next append continues at the oldest popped
   * position. Returns the new tail when its written slots shrank and its page is this sequence's
   * alone (the caller clears the stores past `used`), else null.
   */
  pop(s: SequenceState, n: number): PageEntry | null {
    if (!(n >= 0 && n <= s.held)) broken(`pop of ${n} tokens from sequence ${s.id}, which holds ${s.held}`);
    s.pendingCount = 0;
    if (n === 0) return null;
    let left = n;
    let oldestPopped = s.nextPos;
    while (left > 0) {
      if (s.entries.length === 0) broken(`sequence ${s.id} holds ${s.held} tokens but its entries ran out ${left} short`);
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
    s.held -= n;
    s.nextPos = oldestPopped;
    s.version++;
    // The new tail reuses its slots after its last live one.
    if (s.entries.length === 0) return null;
    const t = s.entries.get(s.entries.length - 1);
    let last = t.used - 1;
    while (last >= 0 && t.alive[last] === 0) last--;
    if (last + 1 === t.used) return null;
    t.used = last + 1;
    return this.pool.refCount(t.page) === 1 ? t : null;
  }

  // -------------------------------------------------------------------------------------------
  // Reading

  /** The sequence's runs, rebuilt only when it changed since the last call. */
  runsFor(s: SequenceState): RunTable {
    if (this.runsSeq === s && this.runsVersion === s.version) return this.runs;
    const runs = this.runs;
    // A run holds at least one token, so held <= capacity bounds the table.
    if (s.held > runs.capacity) broken(`sequence ${s.id} holds ${s.held} tokens, more than the run table's ${runs.capacity}`);
    runs.n = 0;
    const reassigned = this.reassigned;
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
    if (index !== s.held) broken(`sequence ${s.id} holds ${s.held} tokens but its runs cover ${index}`);
    this.runsSeq = s;
    this.runsVersion = s.version;
    return runs;
  }

  /** Attention positions of the retained tokens, in retained order, into `out`; returns the count. */
  positions(s: SequenceState, out: Int32Array): number {
    const runs = this.runsFor(s);
    let n = 0;
    for (let r = 0; r < runs.n; r++) for (let t = 0; t < runs.length[r]!; t++) out[n++] = runs.pos[r]! + t;
    return n;
  }

  /** Original (text) positions of the retained tokens, in retained order; returns the count. */
  originalPositions(s: SequenceState, out: Int32Array): number {
    const runs = this.runsFor(s);
    let n = 0;
    for (let r = 0; r < runs.n; r++) for (let t = 0; t < runs.length[r]!; t++) out[n++] = runs.rotPos[r]! + t;
    return n;
  }

  /**
   * Checks every invariant the group relies on and throws an Error naming the first broken one:
   * reference counts equal the page tables' references, free pages are referenced by nobody and
   * listed once, live counts match the slot flags, held counts match `tokens` (the group's
   * counter), positions rise in retained order and stay below nextPos, contiguous entries are.
   */
  checkInvariants(seqs: Iterable<SequenceState>, tokens: number): void {
    const pool = this.pool;
    const refs = new Int32Array(pool.nPages);
    let total = 0;
    for (const s of seqs) {
      let live = 0;
      let lastPos = -1;
      for (let i = 0; i < s.entries.length; i++) {
        const e = s.entries.get(i);
        if (!(e.page >= 0 && e.page < pool.nPages)) throw new Error(`seq ${s.id} entry ${i}: page ${e.page} is out of range`);
        refs[e.page] = refs[e.page]! + 1;
        let l = 0;
        for (let slot = 0; slot < e.used; slot++) {
          l += e.alive[slot]!;
          if (e.contiguous && e.pos[slot] !== e.pos[0]! + slot) throw new Error(`seq ${s.id} page ${e.page}: marked contiguous but slot ${slot} is at ${e.pos[slot]}`);
          if (e.alive[slot] === 1) {
            if (e.pos[slot]! <= lastPos) throw new Error(`seq ${s.id} page ${e.page}: position ${e.pos[slot]} after ${lastPos} in retained order`);
            lastPos = e.pos[slot]!;
          }
        }
        for (let slot = e.used; slot < this.pageSize; slot++) if (e.alive[slot] !== 0) throw new Error(`seq ${s.id} page ${e.page}: live slot past used`);
        if (l !== e.live) throw new Error(`seq ${s.id} page ${e.page}: live ${e.live} but ${l} slots alive`);
        if (l === 0) throw new Error(`seq ${s.id} page ${e.page}: an empty entry was not released`);
        live += l;
      }
      if (live !== s.held) throw new Error(`seq ${s.id}: held ${s.held} but ${live} live slots`);
      if (lastPos >= s.nextPos) throw new Error(`seq ${s.id}: retained position ${lastPos} is not below nextPos ${s.nextPos}`);
      total += live;
    }
    if (total !== tokens) throw new Error(`token counter ${tokens} != ${total}`);
    const seen = new Uint8Array(pool.nPages);
    for (const p of pool.freeList()) {
      if (seen[p]) throw new Error(`page ${p} is on the free list twice`);
      seen[p] = 1;
      if (refs[p] !== 0) throw new Error(`page ${p} is free but referenced ${refs[p]} times`);
    }
    for (let p = 0; p < pool.nPages; p++) {
      if (refs[p] !== pool.refCount(p)) throw new Error(`page ${p}: refcount ${pool.refCount(p)} but ${refs[p]} references`);
      if (refs[p] === 0 && !seen[p]) throw new Error(`page ${p} leaked: unreferenced and not free`);
    }
  }
}
