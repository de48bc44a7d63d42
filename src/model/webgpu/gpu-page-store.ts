// A page store whose pages live in a GPU buffer, encoded as the CPU codec of the same kind stores
// them (src/cache/codecs/): f32 values, f16 values, or int8 codes with one f32 scale per (token,
// head) (the scales first, then the codes, as scaled-byte-pages.ts lays them out), so a page takes
// the bytes the plan counts for it. The cache keeps its page table, policy and stats on the CPU and
// asks this store only for what moves page contents (copy-on-write copies; truncation is free for
// these codecs: a truncated slot is overwritten by the next write).
//
// int4 pages follow int4.ts: a page fills in f32 in one of `openPages` residual buffers and is
// quantized ("sealed") when its last slot is written; the residual pool, each page's fill and
// which pages are open are tracked here on the CPU, as int4.ts tracks them, and the GPU work they
// imply (seal a page, reopen a sealed page into a residual) runs as int4 jobs (kernels.ts
// int4Jobs) in the forward's pass: reopen/evict before the K/V write, seal after it, before
// attention. The forward writes one page per pass for int4 caches (prepareWrites). The WebGPU forward pass writes
// and attends the pages itself (kernels.ts kvWrite / attention); what would read pages back
// synchronously (the JS attention kernels) is refused with a typed error. Snapshots read a
// sequence's pages back first (WebGpuTransformer.readPages: exportRanges, then holdExports) and
// give the CPU codec's bytes, so a session saved on the GPU restores on either backend; importPage
// writes them back through the queue.
/// <reference types="@webgpu/types" />

import { SnapshotError, WebGpuUnsupportedError } from "../../errors.js";
import { resolveOpenPages } from "../../cache/codecs/int4.js";
import { checkImportLength, checkPage } from "../../cache/codecs/shape.js";
import type { CodecKind, KvRole, PageShape, PageStore } from "../../cache/codecs/types.js";
import type { StoreFactory } from "../../cache/paged-kv-cache.js";
import type { GpuKernels } from "./kernels.js";
import type { GpuStoreLayout } from "./wgsl.js";
import { GPU_CODECS, gpuPageBytes, gpuPageStoreBytes, INT4_MAX_JOBS, type GpuCodec } from "../../cache/gpu-page-bytes.js";

export { gpuPageBytes, gpuPageStoreBytes, INT4_MAX_JOBS };

/** An int4 job: [kind (0 seal, 1 reopen), page, residual, fill]. */
const JOB_SEAL = 0, JOB_REOPEN = 1;
/** int4.ts's page export header: int32 fill, int32 open (1) / sealed (0). */
const INT4_HEADER_BYTES = 8;

/** Bytes at `offset` of a store's buffer. */
export interface BufferRange {
  readonly offset: number;
  readonly bytes: number;
}

/** Whether the GPU kernels take pages of `kind` with this head dim; the refusal names why not. */
export function checkGpuCodec(kind: CodecKind, headDim: number): GpuCodec {
  if (!(GPU_CODECS as readonly string[]).includes(kind)) {
    throw new WebGpuUnsupportedError("cache pages of codec", kind, `use codec ${GPU_CODECS.join(", ")} with the WebGPU backend (${kind} pages are not on the GPU yet)`);
  }
  const k = kind as GpuCodec;
  const unit = k === "int4" ? 8 : k === "int8" ? 4 : k === "f16" ? 2 : 1;
  if (headDim % unit !== 0) {
    throw new WebGpuUnsupportedError(`${k} pages of head dim`, headDim, `the GPU kernels pack ${unit} values per 32-bit word; use codec f32`);
  }
  return k;
}

function refuse(what: string): never {
  throw new WebGpuUnsupportedError("reading cache pages on the CPU for", what, "the pages live on the GPU; use --backend cpu for CPU attention");
}

export class GpuPageStore implements PageStore {
  readonly reservedBytes: number;
  readonly buffer: GPUBuffer;
  /** Where the kernels find the values (and scales) in `buffer`. */
  readonly layout: GpuStoreLayout;
  private readonly pageBytes: number;
  /** A page's byte ranges: [start of page 0, bytes per page] per part. */
  private readonly parts: readonly (readonly [number, number])[];
  /** One page: WebGPU copies never read and write the same buffer, so a page copy goes through it. */
  private readonly bounce: GPUBuffer;
  /** A sequence's pages read back for a snapshot (holdExports): what exportPage gives, by page. */
  private exported: ReadonlyMap<number, Uint8Array> | null = null;

  /** int4: the CPU-side state of the residual pool and the jobs of the next pass. */
  private readonly i4: {
    readonly openPages: number;
    readonly fill: Int32Array; // [nPages] valid slots
    readonly resOf: Int32Array; // [nPages] residual buffer, -1 = sealed / empty
    readonly owner: Int32Array; // [openPages] page, -1 = free
    readonly ticks: Float64Array; // [openPages] last write
    clock: number;
    readonly jobs: Uint32Array; // [2][INT4_MAX_JOBS][4]: before the write, after it
    nPre: number;
    nPost: number;
    readonly jobsBuf: GPUBuffer;
    readonly resOfWord: number;
  } | null = null;

  constructor(private readonly gpu: GpuKernels, readonly role: KvRole, readonly shape: PageShape, readonly kind: GpuCodec = "f32", openPages?: number) {
    checkGpuCodec(kind, shape.headDim);
    this.reservedBytes = gpuPageStoreBytes(shape, kind, role, openPages);
    this.pageBytes = gpuPageBytes(kind, shape, role);
    const values = shape.pageSize * shape.nHeadKv * shape.headDim;
    if (kind === "int4") {
      const paramWords = role === "k" ? shape.nPages * shape.nHeadKv * shape.headDim : shape.nPages * shape.pageSize * shape.nHeadKv;
      const nibbleWords = shape.nPages * values / 8;
      const open = resolveOpenPages(shape.nPages, openPages);
      const residualWord = paramWords + nibbleWords;
      const resOfWord = residualWord + open * values;
      this.layout = { codec: kind, role, scalesWord: 0, dataWord: paramWords, residualWord, resOfWord };
      const pagedParams = paramWords * 4 / shape.nPages;
      this.parts = [[0, pagedParams], [paramWords * 4, values / 2]];
      this.i4 = {
        openPages: open, fill: new Int32Array(shape.nPages), resOf: new Int32Array(shape.nPages).fill(-1),
        owner: new Int32Array(open).fill(-1), ticks: new Float64Array(open), clock: 0,
        jobs: new Uint32Array(2 * INT4_MAX_JOBS * 4), nPre: 0, nPost: 0,
        jobsBuf: gpu.storage(2 * INT4_MAX_JOBS * 16, `${role} int4 jobs`), resOfWord,
      };
    } else if (kind === "int8") {
      const scaleBytes = shape.pageSize * shape.nHeadKv * 4;
      const nScales = shape.nPages * shape.pageSize * shape.nHeadKv;
      this.layout = { codec: kind, scalesWord: 0, dataWord: nScales };
      this.parts = [[0, scaleBytes], [nScales * 4, values]];
    } else {
      this.layout = { codec: kind, scalesWord: 0, dataWord: 0 };
      this.parts = [[0, this.pageBytes]];
    }
    if (this.reservedBytes > gpu.maxBindingBytes) {
      throw new WebGpuUnsupportedError("a page store of", `${this.reservedBytes} bytes`, `one layer's ${role.toUpperCase()} pages must fit the adapter's ${gpu.maxBindingBytes}-byte storage binding; lower the cache budget`);
    }
    this.buffer = gpu.storage(this.reservedBytes, `${role} pages`);
    this.bounce = gpu.storage(Math.max(this.pageBytes, kind === "int4" ? values * 4 : 0), `${role} page copy`);
    if (this.i4 !== null) this.syncResOf();
  }

  /** int4: the jobs buffer and how many jobs run before / after this pass's K/V write. */
  get int4Jobs(): { buffer: GPUBuffer; nPre: number; nPost: number } | null {
    return this.i4 === null ? null : { buffer: this.i4.jobsBuf, nPre: this.i4.nPre, nPost: this.i4.nPost };
  }

  private syncResOf(): void {
    const s = this.i4!;
    this.gpu.write(this.buffer, s.resOfWord * 4, new Uint8Array(s.resOf.buffer));
  }

  private job(list: 0 | 1, kind: number, page: number, r: number, n: number): void {
    const s = this.i4!;
    const at = list === 0 ? s.nPre++ : s.nPost++;
    if (at >= INT4_MAX_JOBS) throw new RangeError(`more than ${INT4_MAX_JOBS} int4 page jobs in one pass`);
    s.jobs.set([kind, page, r, n], (list * INT4_MAX_JOBS + at) * 4);
  }

  /** int4.ts acquire: a residual for `page`, sealing the least recently written open page (never `protect`) when none is free. */
  private acquire(page: number, protect: number): number {
    const s = this.i4!;
    let r = s.owner.indexOf(-1);
    if (r < 0) {
      let oldest = Infinity;
      for (let i = 0; i < s.openPages; i++) if (s.owner[i]! !== protect && s.ticks[i]! < oldest) { oldest = s.ticks[i]!; r = i; }
      const victim = s.owner[r]!;
      if (s.fill[victim]! > 0) this.job(0, JOB_SEAL, victim, r, s.fill[victim]!);
      s.resOf[victim] = -1;
    }
    s.owner[r] = page;
    s.resOf[page] = r;
    s.ticks[r] = ++s.clock;
    return r;
  }

  private release(page: number): void {
    const s = this.i4!;
    const r = s.resOf[page]!;
    if (r >= 0) {
      s.owner[r] = -1;
      s.resOf[page] = -1;
    }
  }

  /**
   * int4: plans a pass that writes `slots` (page, slot pairs, [n][2], all of one page, in order;
   * only the last may be the page's last slot) as int4.ts writeToken would: opens the page (a
   * residual; reopening a sealed page's surviving tokens, or sealing an evicted page, before the
   * write) and seals it after the write when full. Uploads the jobs and which pages are open.
   */
  prepareWrites(slots: Uint32Array, n: number): void {
    const s = this.i4;
    if (s === null) return;
    s.nPre = 0;
    s.nPost = 0;
    let sealAfter = -1;
    for (let i = 0; i < n; i++) {
      const page = slots[2 * i]!, slot = slots[2 * i + 1]!;
      let f = s.fill[page]!;
      if (slot < f) f = slot;
      let r = s.resOf[page]!;
      if (r < 0) {
        r = this.acquire(page, page);
        if (f > 0) this.job(0, JOB_REOPEN, page, r, f);
      }
      s.fill[page] = slot + 1;
      s.ticks[r] = ++s.clock;
      if (slot + 1 === this.shape.pageSize) {
        if (i !== n - 1) throw new RangeError("an int4 pass must end at the page's last slot");
        this.job(1, JOB_SEAL, page, r, this.shape.pageSize);
        sealAfter = page;
      }
    }
    this.gpu.write(s.jobsBuf, 0, new Uint8Array(s.jobs.buffer));
    // The write finds the page open; the seal job marks it sealed on the GPU, as here.
    this.syncResOf();
    if (sealAfter >= 0) this.release(sealAfter);
  }

  writeToken(): void {
    refuse("writeToken (the forward pass writes pages on the GPU)");
  }

  // f32 / f16 / int8 slots carry no state: a truncated slot is overwritten by the next write.
  // int4 (int4.ts truncatePage): a page truncated to nothing gives its residual back; a sealed
  // page keeps its codes and is reopened from them when written again.
  truncatePage(page: number, nValid: number): void {
    const s = this.i4;
    if (s === null) return;
    if (nValid <= 0) {
      this.release(page);
      s.fill[page] = 0;
      this.syncResOf();
    } else if (nValid < s.fill[page]!) {
      s.fill[page] = nValid;
    }
  }

  copyPage(dstPage: number, srcPage: number): void {
    if (dstPage === srcPage) return;
    const enc = this.gpu.device.createCommandEncoder();
    const s = this.i4;
    if (s !== null && s.resOf[srcPage]! >= 0) {
      // An open page: its residual's tokens into a residual of the destination (int4.ts copyPage).
      s.nPre = 0;
      s.nPost = 0;
      let rd = s.resOf[dstPage]!;
      if (rd < 0) rd = this.acquire(dstPage, srcPage);
      const n = s.fill[srcPage]!;
      this.encodePreJobs(enc);
      const bytes = n * this.tokenBytes;
      if (bytes > 0) {
        enc.copyBufferToBuffer(this.buffer, this.residualAt(s.resOf[srcPage]!), this.bounce, 0, bytes);
        enc.copyBufferToBuffer(this.bounce, 0, this.buffer, this.residualAt(rd), bytes);
      }
      s.fill[dstPage] = n;
      this.syncResOf();
      this.gpu.device.queue.submit([enc.finish()]);
      return;
    }
    if (s !== null) {
      this.release(dstPage);
      s.fill[dstPage] = s.fill[srcPage]!;
      this.syncResOf();
    }
    let at = 0;
    for (const [base, bytes] of this.parts) {
      enc.copyBufferToBuffer(this.buffer, base + srcPage * bytes, this.bounce, at, bytes);
      at += bytes;
    }
    at = 0;
    for (const [base, bytes] of this.parts) {
      enc.copyBufferToBuffer(this.bounce, at, this.buffer, base + dstPage * bytes, bytes);
      at += bytes;
    }
    this.gpu.device.queue.submit([enc.finish()]);
  }

  /**
   * A compaction's page (PageStore.packPage) on the GPU: the sources' token bytes, part by part
   * (values, int8's scales), into the bounce page in order, then into the page's first n slots; runs
   * of consecutive slots go as one copy. int4 pages hold per-page parameters that a moved token
   * would have to be re-encoded under: refused (the forward refuses int4 with score-based policies).
   */
  packPage(page: number, srcPages: Int32Array, srcSlots: Int32Array, n: number): void {
    if (this.i4 !== null) refuse("moving int4 tokens between pages (compaction)");
    if (n === 0) return;
    const P = this.shape.pageSize;
    const enc = this.gpu.device.createCommandEncoder();
    let at = 0;
    for (const [base, bytes] of this.parts) {
      const tok = bytes / P;
      for (let i = 0; i < n; ) {
        let j = i + 1;
        while (j < n && srcPages[j] === srcPages[i] && srcSlots[j] === srcSlots[i]! + (j - i)) j++;
        enc.copyBufferToBuffer(this.buffer, base + srcPages[i]! * bytes + srcSlots[i]! * tok, this.bounce, at + i * tok, (j - i) * tok);
        i = j;
      }
      enc.copyBufferToBuffer(this.bounce, at, this.buffer, base + page * bytes, n * tok);
      at += bytes;
    }
    this.gpu.device.queue.submit([enc.finish()]);
  }

  dotRun(): void {
    refuse("attention (dotRun)");
  }

  axpyRun(): void {
    refuse("attention (axpyRun)");
  }

  readToken(): void {
    refuse("readToken");
  }

  /** int4: a token's f32 bytes in a residual buffer. */
  private get tokenBytes(): number {
    return this.shape.nHeadKv * this.shape.headDim * 4;
  }

  /** int4: where residual buffer r starts in `buffer`. */
  private residualAt(r: number): number {
    return this.layout.residualWord! * 4 + r * this.shape.pageSize * this.tokenBytes;
  }

  /** int4: encodes (and forgets) the seal jobs an acquire queued, before what `enc` does next. */
  private encodePreJobs(enc: GPUCommandEncoder): void {
    const s = this.i4!;
    if (s.nPre === 0) return;
    this.gpu.write(s.jobsBuf, 0, new Uint8Array(s.jobs.buffer));
    const pass = enc.beginComputePass();
    this.gpu.int4Jobs(this, "pre").encode(pass, 1);
    pass.end();
    s.nPre = 0;
  }

  /**
   * Where `page`'s snapshot bytes are in `buffer`, in the CPU codec's order: f32 / f16 the page,
   * int8 its scales then its codes; int4 (after the header exportPage adds) an open page's tokens
   * in its residual buffer, or a sealed page's parameters then its nibbles.
   */
  exportRanges(page: number): BufferRange[] {
    checkPage(this.shape, page);
    const s = this.i4;
    if (s !== null && s.resOf[page]! >= 0) return [{ offset: this.residualAt(s.resOf[page]!), bytes: s.fill[page]! * this.tokenBytes }];
    return this.parts.map(([base, bytes]) => ({ offset: base + page * bytes, bytes }));
  }

  /**
   * The pages exportPage gives until the next call (null: none), each the bytes of its
   * exportRanges read back, in order. Valid while no forward pass writes the pages.
   */
  holdExports(pages: ReadonlyMap<number, Uint8Array> | null): void {
    this.exported = pages;
  }

  exportPage(page: number): Uint8Array {
    const body = this.exported?.get(page);
    if (body === undefined) {
      throw new WebGpuUnsupportedError("a synchronous snapshot of", `page ${page}`, "its pages are read back from the GPU first: use await Session.saveAsync()");
    }
    const s = this.i4;
    if (s === null) return body;
    const out = new Uint8Array(INT4_HEADER_BYTES + body.length);
    const v = new DataView(out.buffer);
    v.setInt32(0, s.fill[page]!, true);
    v.setInt32(4, s.resOf[page]! >= 0 ? 1 : 0, true);
    out.set(body, INT4_HEADER_BYTES);
    return out;
  }

  /** Writes a page exportPage gave (on either backend: the CPU codec's bytes) through the queue. */
  importPage(page: number, bytes: Uint8Array): void {
    checkPage(this.shape, page);
    const s = this.i4;
    if (s === null) {
      checkImportLength(this.kind, bytes.byteLength, this.pageBytes);
      this.writeParts(page, bytes);
      return;
    }
    if (bytes.byteLength < INT4_HEADER_BYTES) checkImportLength("int4", bytes.byteLength, INT4_HEADER_BYTES);
    const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const n = v.getInt32(0, true), open = v.getInt32(4, true);
    // As int4.ts: an open page holds 1 .. pageSize-1 tokens, a sealed one up to pageSize.
    const P = this.shape.pageSize;
    if ((open !== 0 && open !== 1) || !(n >= open && n <= P - open)) {
      throw new SnapshotError(`an int4 page snapshot has fill ${n} and open flag ${open}; it is corrupt or from another page size`, { field: "page", fill: n, open });
    }
    const body = bytes.subarray(INT4_HEADER_BYTES);
    if (open === 1) {
      checkImportLength("int4", bytes.byteLength, INT4_HEADER_BYTES + n * this.tokenBytes);
      s.nPre = 0;
      s.nPost = 0;
      let r = s.resOf[page]!;
      if (r < 0) r = this.acquire(page, page);
      const enc = this.gpu.device.createCommandEncoder();
      this.encodePreJobs(enc); // a page sealed to free its residual buffer, before this one is written
      this.gpu.device.queue.submit([enc.finish()]);
      this.gpu.write(this.buffer, this.residualAt(r), body);
    } else {
      checkImportLength("int4", bytes.byteLength, INT4_HEADER_BYTES + this.pageBytes);
      this.release(page);
      this.writeParts(page, body);
    }
    s.fill[page] = n;
    this.syncResOf();
  }

  /** `bytes` as one page's parts, in order. */
  private writeParts(page: number, bytes: Uint8Array): void {
    let at = 0;
    for (const [base, n] of this.parts) {
      this.gpu.write(this.buffer, base + page * n, bytes.subarray(at, at + n));
      at += n;
    }
  }
}

/**
 * A StoreFactory for PagedKvCache that puts every page on the GPU (f32, f16, int8 or int4;
 * int4's residual pool holds `openPages`, as the CPU cache passes maxSequences); `stores` receives them in the
 * order the cache creates them (per layer: K, then V).
 */
export function gpuStoreFactory(gpu: GpuKernels, stores: GpuPageStore[], options: { openPages?: number } = {}): StoreFactory {
  return (kind: CodecKind, role: KvRole, shape: PageShape) => {
    const s = new GpuPageStore(gpu, role, shape, checkGpuCodec(kind, shape.headDim), options.openPages);
    stores.push(s);
    return s;
  };
}
