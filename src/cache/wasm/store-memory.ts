// One WebAssembly instance of the attention kernels (attention.as) per cache, whose memory holds
// the cache's page stores, their descriptors, the run table and the attention scratch, laid out
// once and never grown afterwards (growing would detach every view). The codecs write their pages
// through views of this memory; the kernels read them in place.
//
// layoutCacheMemory is the whole layout as a pure function of the sizes, so that the planner
// predicts the memory the cache reserves without creating one.

import { ArenaLayout, compileEmbedded, MAX_WASM32_MEMORY_BYTES, WASM_PAGE_BYTES, type MemoryKind } from "../../wasm/embedded.js";

/** Largest kernel memory one cache lays out (about 4 GiB); past it the cache keeps plain buffers. */
export const MAX_CACHE_MEMORY_BYTES = MAX_WASM32_MEMORY_BYTES;
import type { CodecKind, PageStore } from "../codecs/types.js";
import { int4WasmSupports } from "../codecs/int4.js";
import { ATTENTION_WASM_BASE64 } from "./attention-wasm.js";

type ScoresFn = (desc: number, rt: number, cap: number, r0: number, r1: number, nVis: number, nHeadKv: number, q: number, G: number, dk: number, scores: number, W: number) => void;
export type AttendFn = (params: number, unit0: number, nUnits: number) => void;
type ValuesFn = (desc: number, rt: number, cap: number, r0: number, r1: number, nVis: number, nHeadKv: number, w: number, G: number, W: number, out: number, dv: number) => void;

export interface AttentionExports {
  softmaxRows(scores: number, W: number, nRows: number, group: number, nb: number, self0: number, nVisLast: number, invSum: number): void;
  readonly [name: string]: unknown;
}

/** One codec's pair of kernels. */
export interface CodecKernels {
  readonly scores: ScoresFn;
  readonly values: ValuesFn;
}

/** The fused job's kernel (attention.as attendUnits) of the codecs that split by head. */
const ATTEND_NAMES: Partial<Record<CodecKind, string>> = { f32: "attendF32", f16: "attendF16", fp8: "attendFp8" };

const KERNEL_NAMES: Record<CodecKind, readonly [string, string]> = {
  f32: ["scoresF32", "valuesF32"],
  f16: ["scoresF16", "valuesF16"],
  int8: ["scoresInt8", "valuesInt8"],
  fp8: ["scoresFp8", "valuesFp8"],
  int4: ["scoresInt4", "valuesInt4"],
};

const compiled = new Map<MemoryKind, WebAssembly.Module | null>();

/** The module, for a plain memory or a shared one (which threads split attention over). */
function attentionModule(memory: MemoryKind = "unshared"): WebAssembly.Module | null {
  if (!compiled.has(memory)) compiled.set(memory, compileEmbedded(ATTENTION_WASM_BASE64, memory));
  return compiled.get(memory)!;
}

/** Whether this runtime can run the wasm attention kernels at all. */
export function wasmAttentionAvailable(): boolean {
  return attentionModule() !== null;
}

/** Codecs whose kernels a thread can run over a range of KV heads (per-head descriptors): one code
 *  per value at `BYTES_PER_VALUE`, any scales per (token, head). int8's integer dots and int4's
 *  layout stay on one thread. */
const BYTES_PER_VALUE: Partial<Record<CodecKind, number>> = { f32: 4, f16: 2, fp8: 1 };

/** Parts a KV head's rows may be split in over threads (attend-wasm.ts): each has a descriptor and a tile. */
export const SPLIT_PARTS = 2;

/** Whether attention over this codec splits by KV head (and the layout holds per-head descriptors). */
export function splitsByHead(codec: CodecKind): boolean {
  return BYTES_PER_VALUE[codec] !== undefined;
}

/** Whether the wasm kernels handle a codec at these head dims (the cache falls back to JS otherwise):
 *  the kernels read keys four channels (int8, int4: eight) and values eight channels at a time. */
export function wasmAttentionSupports(codec: CodecKind, headDimK: number, headDimV: number): boolean {
  if (codec === "int4") return int4WasmSupports(headDimK) && int4WasmSupports(headDimV);
  if (codec === "int8") return headDimK % 8 === 0 && headDimV % 8 === 0;
  return headDimK % 4 === 0 && headDimV % 8 === 0;
}

/** Words of one store descriptor (common.as): 8 fixed + codec-specific extras. */
export const DESCRIPTOR_WORDS = 16;

/** Byte offsets of everything in a cache's kernel memory. */
export interface CacheMemoryLayout {
  /** Per layer: K store, V store, and their descriptors. */
  readonly kStore: readonly number[];
  readonly vStore: readonly number[];
  readonly kDesc: readonly number[];
  readonly vDesc: readonly number[];
  /** Per layer, where the codec splits by head: SPLIT_PARTS descriptors per KV head for K, then for
   *  V, each starting at its head, its kernel scratch a tile of its own (-1: none). */
  readonly kHeadDesc: readonly number[];
  readonly vHeadDesc: readonly number[];
  /** The tiles: `headTileBytes` for each part of the most KV heads of a layer. */
  readonly headTiles: number;
  readonly headTileBytes: number;
  /** The run table: 4 x capacity int32 (page, slotStart, length, index). */
  readonly runTable: number;
  /** Attention scratch (AttentionScratch's float arrays), float counts in `scratchFloats`. */
  readonly scores: number;
  readonly qBlock: number;
  readonly outBlock: number;
  readonly invSum: number;
  /** Kernel scratch (descriptor word 7): for K stores the query rows rounded to int16 plus their
   *  f32 scales (int8, int4) or one key decoded to f32 (f16, fp8), for V stores packed int16 weight
   *  pairs (128 per row), a scale per row and 256 token scales (int4, int8) or two tokens' values
   *  decoded to f32 (f16, fp8). */
  readonly q16: number;
  readonly wq: number;
  /** Where the codec splits by head, a fused job's (attend-wasm.ts attendJobs) parameters, queries,
   *  rows out and cos/sin (-1: none). */
  readonly jobParams: number;
  readonly jobQueries: number;
  readonly jobOut: number;
  readonly jobCosSin: number;
  /** Bytes the memory must hold (before rounding to 64 KiB wasm pages). */
  readonly bytes: number;
}

/** Float counts of the attention scratch (AttentionScratch). */
export interface ScratchFloats {
  readonly scores: number;
  readonly qBlock: number;
  readonly outBlock: number;
  readonly invSum: number;
  /** One KV head's kernel scratch when threads split heads: a key, or two tokens' values, as f32. */
  readonly headTile: number;
  /** A fused job's queries, rows out, and cos/sin (f64, two floats each). */
  readonly jobQueries: number;
  readonly jobOut: number;
  readonly jobCosSin: number;
}

/** Bytes of a fused job's parameters (attend-wasm.ts ATTEND_PARAM, attention.as A_*). */
export const ATTEND_PARAM_BYTES = 32 * 4;

/** One layer's stores: K and V bytes, and the KV heads that get descriptors of their own (0: none). */
export interface LayerStoreBytes {
  readonly k: number;
  readonly v: number;
  readonly splitHeads: number;
}

/** Lays out stores (bytes per layer, K and V), the run table and the scratch, 64-byte aligned. */
export function layoutCacheMemory(storeBytes: readonly LayerStoreBytes[], runCapacity: number, scratch: ScratchFloats): CacheMemoryLayout {
  const a = new ArenaLayout();
  const kStore: number[] = [];
  const vStore: number[] = [];
  const kDesc: number[] = [];
  const vDesc: number[] = [];
  const kHeadDesc: number[] = [];
  const vHeadDesc: number[] = [];
  let maxHeads = 0;
  for (const s of storeBytes) {
    kStore.push(a.reserve(s.k));
    vStore.push(a.reserve(s.v));
    kDesc.push(a.reserve(DESCRIPTOR_WORDS * 4));
    vDesc.push(a.reserve(DESCRIPTOR_WORDS * 4));
    kHeadDesc.push(s.splitHeads > 0 ? a.reserve(s.splitHeads * SPLIT_PARTS * DESCRIPTOR_WORDS * 4) : -1);
    vHeadDesc.push(s.splitHeads > 0 ? a.reserve(s.splitHeads * SPLIT_PARTS * DESCRIPTOR_WORDS * 4) : -1);
    maxHeads = Math.max(maxHeads, s.splitHeads);
  }
  const headTiles = a.reserve(maxHeads * SPLIT_PARTS * scratch.headTile * 4);
  const runTable = a.reserve(4 * 4 * runCapacity);
  const scores = a.reserve(scratch.scores * 4);
  const qBlock = a.reserve(scratch.qBlock * 4);
  const outBlock = a.reserve(scratch.outBlock * 4);
  const invSum = a.reserve(scratch.invSum * 4);
  const q16 = a.reserve(scratch.qBlock * 2 + scratch.invSum * 4);
  // (f16 and fp8 values also decode two tokens' values there, a head tile: codecs.as decodeOnce.)
  const wq = a.reserve(Math.max(scratch.invSum * (128 * 4 + 4) + 256 * 4, scratch.headTile * 4));
  const fused = maxHeads > 0;
  const jobParams = fused ? a.reserve(ATTEND_PARAM_BYTES) : -1;
  const jobQueries = fused ? a.reserve(scratch.jobQueries * 4) : -1;
  const jobOut = fused ? a.reserve(scratch.jobOut * 4) : -1;
  const jobCosSin = fused ? a.reserve(scratch.jobCosSin * 4) : -1;
  return {
    kStore, vStore, kDesc, vDesc, kHeadDesc, vHeadDesc, headTiles, headTileBytes: scratch.headTile * 4, runTable,
    scores, qBlock, outBlock, invSum, q16, wq, jobParams, jobQueries, jobOut, jobCosSin, bytes: a.bytes,
  };
}

/** The memory a layout reserves: whole 64 KiB wasm pages. */
export function cacheMemoryBytes(layout: CacheMemoryLayout): number {
  return Math.ceil(layout.bytes / 65536) * 65536;
}

/** A cache's kernel instance over a memory of the layout's size (never grown). */
export class CacheKernelMemory {
  readonly exports: AttentionExports;
  readonly layout: CacheMemoryLayout;
  readonly memory: WebAssembly.Memory;
  /** The module the instance runs (compiled for a shared memory when `memory` is one). */
  readonly module: WebAssembly.Module;

  private constructor(module: WebAssembly.Module, memory: WebAssembly.Memory, layout: CacheMemoryLayout) {
    this.module = module;
    this.memory = memory;
    this.exports = new WebAssembly.Instance(module, { env: { memory } }).exports as unknown as AttentionExports;
    this.layout = layout;
  }

  /**
   * An instance holding `layout`, over a SharedArrayBuffer when `shared` (and the runtime allows:
   * else a plain memory); null when wasm is unavailable, the codec has no kernels, or the memory
   * cannot be had.
   */
  static create(layout: CacheMemoryLayout, codec: CodecKind, shared = false): CacheKernelMemory | null {
    if (layout.bytes > MAX_CACHE_MEMORY_BYTES) return null;
    const names = KERNEL_NAMES[codec];
    const pages = Math.ceil(layout.bytes / WASM_PAGE_BYTES);
    for (const kind of shared ? (["shared", "unshared"] as const) : (["unshared"] as const)) {
      const mod = attentionModule(kind);
      if (mod === null) continue;
      if (!WebAssembly.Module.exports(mod).some((e) => e.name === names[0])) return null;
      try {
        // maximum = initial: never grown (the stores' views stay valid), and a shared memory reserves no more.
        const memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: kind === "shared" });
        return new CacheKernelMemory(mod, memory, layout);
      } catch {
        // RangeError: the engine could not reserve the memory (or a shared one): try the next kind
      }
    }
    return null;
  }

  get buffer(): ArrayBuffer {
    return this.memory.buffer as ArrayBuffer;
  }

  /** Whether the memory is a SharedArrayBuffer's (worker threads may run the kernels over it). */
  get shared(): boolean {
    return !(this.memory.buffer instanceof ArrayBuffer);
  }

  /** Bytes of the instance's memory. */
  get bytes(): number {
    return this.memory.buffer.byteLength;
  }

  kernels(codec: CodecKind): CodecKernels {
    const [s, v] = KERNEL_NAMES[codec];
    return { scores: this.exports[s] as ScoresFn, values: this.exports[v] as ValuesFn };
  }

  /** A codec's fused job kernel (attend<Codec>(params, unit0, nUnits)): where it splits by head. */
  attendKernel(codec: CodecKind): AttendFn | null {
    const name = ATTEND_NAMES[codec];
    return name === undefined ? null : (this.exports[name] as AttendFn);
  }

  /** The table threads run (attend-wasm.ts SPLIT_FN): a codec's kernels, softmaxUnits, the kernels over units, and the fused job. */
  static splitKernelNames(codec: CodecKind): readonly string[] {
    const [s, v] = KERNEL_NAMES[codec];
    return [s, v, "softmaxUnits", `${s}Units`, `${v}Units`, ATTEND_NAMES[codec]!];
  }

  /**
   * Writes `store`'s per-unit descriptors at `at` (layout.kHeadDesc / vHeadDesc): unit u is part
   * u % SPLIT_PARTS of head h = u / SPLIT_PARTS: its descriptor with data and scales moved to head
   * h, and a tile of its own as kernel scratch.
   */
  writeHeadDescriptors(at: number, store: PageStore): void {
    const per = BYTES_PER_VALUE[store.kind]!;
    const { nHeadKv, headDim } = store.shape;
    for (let u = 0; u < nHeadKv * SPLIT_PARTS; u++) {
      const h = Math.floor(u / SPLIT_PARTS);
      const d = at + u * DESCRIPTOR_WORDS * 4;
      this.writeDescriptor(d, store);
      const w = new Int32Array(this.buffer, d, DESCRIPTOR_WORDS);
      w[0] = w[0]! + h * headDim * per;
      if (w[1] !== 0) w[1] = w[1]! + 4 * h;
      w[7] = this.layout.headTiles + u * this.layout.headTileBytes;
    }
  }

  /** Writes a store's descriptor (common.as) at byte offset `at`. */
  writeDescriptor(at: number, store: PageStore): void {
    const l = store.kernelLayout!();
    const { pageSize, nHeadKv, headDim } = store.shape;
    const d = new Int32Array(this.buffer, at, DESCRIPTOR_WORDS);
    d.fill(0);
    d[0] = l.data;
    d[1] = l.scales;
    d[2] = nHeadKv * headDim;
    d[3] = pageSize * nHeadKv * headDim;
    d[4] = headDim;
    d[5] = pageSize;
    d[6] = nHeadKv;
    d[7] = store.role === "k" ? this.layout.q16 : this.layout.wq;
    const extra = l.extra ?? [];
    if (extra.length > DESCRIPTOR_WORDS - 8) throw new RangeError(`a store descriptor holds ${DESCRIPTOR_WORDS - 8} extra words, not ${extra.length}`);
    for (let i = 0; i < extra.length; i++) d[8 + i] = extra[i]!;
  }
}
