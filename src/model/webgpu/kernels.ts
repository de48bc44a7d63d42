// The WebGPU kernels as operations: each op is built once over fixed buffers (its bind group and
// its own uniform made at build time) and encoded into a compute pass per step with the step's
// token count; the step's sizes live in one shared uniform (GpuStep). Weight matrices are
// uploaded as stored, split by rows into chunks no larger than one storage binding may be.
/// <reference types="@webgpu/types" />

import { WebGpuDeviceError, WebGpuUnsupportedError } from "../../errors.js";
import type { WeightMatrix } from "../kernels/matvec.js";
import { gpuErrorKind, type GpuContext } from "./device.js";
import { INT4_MAX_JOBS, type GpuPageStore } from "./gpu-page-store.js";
import { ATTENTION_STATS_WGSL, attentionWgsl, ELEMENTWISE_WGSL, int4JobsWgsl, GPU_WEIGHT_TYPES, kvWriteWgsl, MATMUL_TILE, matmulWgsl, MAX_GPU_HEAD_DIM, RMSNORM_WGSL, WG, type GpuStoreLayout, type MatmulVariant } from "./wgsl.js";


/** Plain f32 pages (a buffer of values only). */
export const F32_LAYOUT: GpuStoreLayout = { codec: "f32", scalesWord: 0, dataWord: 0 };

/** The K and V stores' layouts (kernels are built per pair). */
export interface GpuKvLayouts {
  readonly k: GpuStoreLayout;
  readonly v: GpuStoreLayout;
}

const storeKey = (l: GpuStoreLayout) => `${l.codec}:${l.role ?? ""}:${l.scalesWord}:${l.dataWord}:${l.residualWord ?? 0}:${l.resOfWord ?? 0}`;
const layoutKey = (l: GpuKvLayouts) => `${storeKey(l.k)}/${storeKey(l.v)}`;

/** Workgroups along x before a grid folds into y (under every adapter's 65535 per dimension). */
const FOLD = 32768;

/** Units (values / blocks) per row up to which a matmul runs a thread per row (kernels.ts matmul). */
export const THREAD_ROW_UNITS = 1024;

/** One encoded kernel dispatch over fixed buffers; nTok is the step's batch size. */
export interface GpuOp {
  encode(pass: GPUComputePassEncoder, nTok: number): void;
}

/** Rows [row0, row0 + rows) of a matrix in a buffer of their own. */
export interface GpuMatrixChunk {
  readonly buffer: GPUBuffer;
  readonly row0: number;
  readonly rows: number;
}

export interface GpuMatrix {
  readonly name: string;
  readonly type: WeightMatrix["type"];
  readonly rows: number;
  readonly cols: number;
  readonly rowBytes: number;
  readonly chunks: readonly GpuMatrixChunk[];
  /** Bytes of the chunks' buffers (each rounded up to 4). */
  readonly bytes: number;
}

/**
 * The per-step sizes every kernel reads: struct Step { nTok, held, nRuns, pad }; pad is an i32
 * (the attention statistics' row offset: ATTENTION_STATS_WGSL).
 */
export class GpuStep {
  readonly buffer: GPUBuffer;
  private readonly data = new Uint32Array(4);
  private readonly signed = new Int32Array(this.data.buffer);
  /** `buffer`: a 16-byte UNIFORM | COPY_DST buffer to use (GpuKernels.step makes one it owns). */
  constructor(private readonly device: GPUDevice, buffer?: GPUBuffer) {
    this.buffer = buffer ?? device.createBuffer({ size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, label: "step" });
  }
  write(nTok: number, held = 0, nRuns = 0, pad = 0): void {
    this.data[0] = nTok;
    this.data[1] = held;
    this.data[2] = nRuns;
    this.signed[3] = pad;
    this.device.queue.writeBuffer(this.buffer, 0, this.data);
  }
}

/** Fixed sizes of one attention layer (ATTENTION_WGSL's struct P). */
export interface GpuAttentionShape {
  readonly nHead: number;
  readonly nHeadKv: number;
  readonly headDim: number;
  /** 0: no RoPE (the cos/sin rows are ignored). */
  readonly nRot: number;
  readonly neox: boolean;
  readonly pageSize: number;
  /** Scores scratch row length: the most tokens a sequence holds. */
  readonly window: number;
  readonly maxRuns: number;
  readonly slidingWindow: number;
  readonly scale: number;
  readonly softcap: number;
  /** How the pages are encoded (default f32 values). */
  readonly layouts?: GpuKvLayouts;
  /** Leave the normalized weights in `scores` for attentionStats (a score-based policy's cache). */
  readonly normalize?: boolean;
}

/** "bias": a[t][i] += b[i], the same n values added to every token's row. */
export type ElementwiseOp = "swiglu" | "geglu" | "add" | "softcap" | "bias";
const ELEMENTWISE_CODE: Record<ElementwiseOp, number> = { swiglu: 0, geglu: 1, add: 2, softcap: 3, bias: 4 };

function grid1d(pass: GPUComputePassEncoder, threads: number): void {
  const groups = Math.max(1, Math.ceil(threads / WG));
  pass.dispatchWorkgroups(Math.min(groups, FOLD), Math.ceil(groups / FOLD));
}

export class GpuKernels {
  readonly device: GPUDevice;
  readonly maxBindingBytes: number;
  private readonly pipelines = new Map<string, GPUComputePipeline>();
  /** Bytes of every buffer this object created (weights, activations, pages, uniforms). */
  allocatedBytes = 0;
  /** Buffers this object created and has not destroyed (release / destroy destroy them). */
  private readonly owned = new Set<GPUBuffer>();
  /** Where buffers created inside collect() are also listed. */
  private scope: GPUBuffer[] | null = null;
  /** Error scopes not yet popped and read (guard), and the first error they reported. */
  private pending: Promise<void>[] = [];
  private failure: WebGpuDeviceError | null = null;

  /** `maxBindingBytes` below the device's splits matrices sooner (tests of the split). */
  constructor(readonly ctx: GpuContext, maxBindingBytes = ctx.maxBindingBytes) {
    this.device = ctx.device;
    this.maxBindingBytes = Math.min(maxBindingBytes, ctx.maxBindingBytes);
  }

  private pipeline(key: string, code: () => string): GPUComputePipeline {
    let p = this.pipelines.get(key);
    if (p === undefined) {
      p = this.guard(`building the ${key} pipeline`, () => {
        const module = this.device.createShaderModule({ code: code(), label: key });
        return this.device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main" }, label: key });
      });
      this.pipelines.set(key, p);
    }
    return p;
  }

  /**
   * Runs `fn` (GPU calls) inside validation and out-of-memory error scopes; what they catch comes
   * back asynchronously and is thrown by the next check() (every forward step awaits one) or, once
   * known, by the next allocation. `what` names the work in the error.
   */
  guard<T>(what: string, fn: () => T): T {
    const d = this.device;
    d.pushErrorScope("out-of-memory");
    d.pushErrorScope("validation");
    try {
      return fn();
    } finally {
      const validation = d.popErrorScope();
      const oom = d.popErrorScope();
      this.pending.push(
        Promise.all([validation, oom]).then(
          ([v, o]) => {
            const e = o ?? v;
            if (e !== null && this.failure === null) this.failure = new WebGpuDeviceError(gpuErrorKind(e), what, e.message);
          },
          (err: unknown) => {
            if (this.failure === null) this.failure = new WebGpuDeviceError("lost", what, (err as Error).message ?? String(err));
          },
        ),
      );
    }
  }

  /**
   * Throws the first GPU error reported since the last check (by an error scope of guard, or the
   * device's uncapturederror event: device.ts watchGpuErrors), once; resolves when there is none.
   */
  async check(): Promise<void> {
    while (this.pending.length > 0) {
      const p = this.pending;
      this.pending = [];
      await Promise.all(p);
    }
    this.throwFailure();
  }

  private throwFailure(): void {
    const e = this.failure ?? this.ctx.errors?.take() ?? null;
    this.failure = null;
    if (e !== null) throw e;
  }

  private created(b: GPUBuffer): GPUBuffer {
    this.owned.add(b);
    this.scope?.push(b);
    return b;
  }

  /**
   * Runs `fn`, listing in `into` every buffer created meanwhile (a cache's: released with it);
   * `onThrow` runs when fn throws (to release what it made), before the error goes on.
   */
  collect<T>(into: GPUBuffer[], fn: () => T, onThrow?: () => void): T {
    const outer = this.scope;
    this.scope = into;
    try {
      return fn();
    } catch (err) {
      this.scope = outer;
      onThrow?.();
      throw err;
    } finally {
      this.scope = outer;
    }
  }

  /** Destroys `buffers` (those this object created and still holds). */
  release(buffers: readonly GPUBuffer[]): void {
    for (const b of buffers) if (this.owned.delete(b)) b.destroy();
  }

  /** Destroys every buffer this object created (the model's end); pipelines go with the device. */
  destroy(): void {
    for (const b of this.owned) b.destroy();
    this.owned.clear();
  }

  /** A step uniform this object owns. */
  step(): GpuStep {
    return new GpuStep(this.device, this.createBuffer({ size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, label: "step" }));
  }

  /** createBuffer inside an error scope, owned by this object; an error already reported is thrown first. */
  private createBuffer(desc: GPUBufferDescriptor): GPUBuffer {
    this.throwFailure();
    return this.created(this.guard(`allocating buffer "${desc.label ?? ""}" of ${desc.size} bytes`, () => this.device.createBuffer(desc)));
  }

  /** A storage buffer of at least `bytes` (rounded up to 4, at least 16). */
  storage(bytes: number, label: string): GPUBuffer {
    const size = Math.max(16, Math.ceil(bytes / 4) * 4);
    const b = this.createBuffer({ size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC, label });
    this.allocatedBytes += size;
    return b;
  }

  /** A uniform buffer holding `words` (u32 or f32 bit patterns, written through views of one buffer). */
  private uniform(words: ArrayBuffer, label: string): GPUBuffer {
    const size = Math.max(16, Math.ceil(words.byteLength / 16) * 16);
    const b = this.createBuffer({ size, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, label });
    this.allocatedBytes += size;
    this.device.queue.writeBuffer(b, 0, words);
    return b;
  }

  /** Writes bytes of any length (the tail padded to 4) at `offset` (a multiple of 4). */
  write(buffer: GPUBuffer, offset: number, bytes: Uint8Array): void {
    const aligned = bytes.byteLength & ~3;
    if (aligned > 0) this.device.queue.writeBuffer(buffer, offset, bytes.buffer, bytes.byteOffset, aligned);
    if (aligned < bytes.byteLength) {
      const tail = new Uint8Array(4);
      tail.set(bytes.subarray(aligned));
      this.device.queue.writeBuffer(buffer, offset + aligned, tail);
    }
  }

  /** Uploads a matrix as stored, in row chunks that each fit one storage binding. */
  uploadMatrix(m: WeightMatrix): GpuMatrix {
    if (GPU_WEIGHT_TYPES[m.type] === undefined) {
      throw new WebGpuUnsupportedError("weight type", `${m.type} (tensor ${m.name})`, `use --backend cpu, or a file in F32, F16, Q8_0, Q4_0, Q4_K or Q6_K`);
    }
    const perChunk = Math.floor((this.maxBindingBytes - 4) / m.rowBytes);
    if (perChunk < 1) throw new WebGpuUnsupportedError("a row of", `${m.rowBytes} bytes (tensor ${m.name})`, `it exceeds the adapter's ${this.maxBindingBytes}-byte storage binding`);
    const chunks: GpuMatrixChunk[] = [];
    let bytes = 0;
    for (let row0 = 0; row0 < m.rows; row0 += perChunk) {
      const rows = Math.min(perChunk, m.rows - row0);
      const buffer = this.storage(rows * m.rowBytes, `${m.name}[${row0}:${row0 + rows}]`);
      this.write(buffer, 0, m.u8.subarray(row0 * m.rowBytes, (row0 + rows) * m.rowBytes));
      bytes += buffer.size;
      chunks.push({ buffer, row0, rows });
    }
    return { name: m.name, type: m.type, rows: m.rows, cols: m.cols, rowBytes: m.rowBytes, chunks, bytes };
  }

  /** out[t][outStride] row values = m . x[t] (x rows xStride apart), for the step's tokens. */
  matmul(out: GPUBuffer, x: GPUBuffer, m: GpuMatrix, xStride: number, outStride: number, step: GpuStep, variant?: MatmulVariant): GpuOp {
    const t = GPU_WEIGHT_TYPES[m.type]!;
    // A thread per row while rows are short (no barriers); a workgroup per row for long ones.
    const v: MatmulVariant = variant ?? (m.cols / t.unitValues <= THREAD_ROW_UNITS ? "thread" : "workgroup");
    if (m.cols % t.unitValues !== 0) throw new WebGpuUnsupportedError("a row length of", `${m.cols} for ${m.type}`, `the ${m.type} kernel reads whole ${t.unitValues}-value units`);
    const pipeline = this.pipeline(`matmul-${m.type}-${v}`, () => matmulWgsl(m.type, v));
    const parts = m.chunks.map((c) => {
      const u = this.uniform(Uint32Array.of(c.rows, m.cols / t.unitValues, m.rowBytes, xStride, outStride, c.row0, FOLD, 0).buffer, `${m.name} params`);
      const bind = this.device.createBindGroup({
        layout: pipeline.getBindGroupLayout(0),
        entries: [
          { binding: 0, resource: { buffer: out } },
          { binding: 1, resource: { buffer: x } },
          { binding: 2, resource: { buffer: c.buffer } },
          { binding: 3, resource: { buffer: u } },
          { binding: 4, resource: { buffer: step.buffer } },
        ],
      });
      return { bind, rows: c.rows };
    });
    return {
      encode(pass, nTok) {
        pass.setPipeline(pipeline);
        for (const part of parts) {
          pass.setBindGroup(0, part.bind);
          const groups = v === "thread" ? Math.ceil(part.rows / WG) : part.rows;
          pass.dispatchWorkgroups(Math.min(groups, FOLD), Math.ceil(groups / FOLD), Math.ceil(nTok / MATMUL_TILE));
        }
      },
    };
  }

  /**
   * RMSNorm of n-value rows: perTok rows per token (heads, for QK norm) of the step's tokens, or
   * with lastOnly the last token's row only, written to out's first row.
   */
  rmsNorm(out: GPUBuffer, x: GPUBuffer, w: GPUBuffer, n: number, eps: number, step: GpuStep, o: { xStride?: number; outStride?: number; perTok?: number; lastOnly?: boolean } = {}): GpuOp {
    const pipeline = this.pipeline("rmsnorm", () => RMSNORM_WGSL);
    const words = new ArrayBuffer(32);
    const perTok = o.perTok ?? 1;
    new Uint32Array(words).set([n, o.xStride ?? n * perTok, o.outStride ?? n * perTok, perTok, o.lastOnly ? 1 : 0]);
    new Float32Array(words)[5] = eps;
    const bind = this.bind(pipeline, [out, x, w, this.uniform(words, "rmsnorm params"), step.buffer]);
    const lastOnly = o.lastOnly ?? false;
    return {
      encode(pass, nTok) {
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, bind);
        pass.dispatchWorkgroups(lastOnly ? perTok : nTok * perTok);
      },
    };
  }

  /** a = op(a, b) over n values per token (perStep: n values in all). */
  elementwise(op: ElementwiseOp, a: GPUBuffer, b: GPUBuffer, n: number, step: GpuStep, o: { cap?: number; perStep?: boolean } = {}): GpuOp {
    const pipeline = this.pipeline("elementwise", () => ELEMENTWISE_WGSL);
    const words = new ArrayBuffer(32);
    new Uint32Array(words).set([n, ELEMENTWISE_CODE[op], o.perStep ? 1 : 0, FOLD]);
    new Float32Array(words)[4] = o.cap ?? 0;
    const bind = this.bind(pipeline, [a, b, this.uniform(words, `${op} params`), step.buffer]);
    const perStep = o.perStep ?? false;
    return {
      encode(pass, nTok) {
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, bind);
        grid1d(pass, perStep ? n : n * nTok);
      },
    };
  }

  /**
   * Writes the step's K (RoPE'd by cs rows [nTok][nRot/2][2]) and V rows (kStride apart) into the
   * page slots `slots` ([nTok][2] page, slot) of pages [nPages][pageSize][nHeadKv][headDim],
   * encoded as `shape.layouts` says (default f32).
   */
  kvWrite(
    kPages: GPUBuffer, vPages: GPUBuffer, k: GPUBuffer, v: GPUBuffer, slots: GPUBuffer, cs: GPUBuffer,
    shape: { nHeadKv: number; headDim: number; nRot: number; neox: boolean; pageSize: number; kStride?: number; layouts?: GpuKvLayouts },
    step: GpuStep,
  ): GpuOp {
    const lay = shape.layouts ?? { k: F32_LAYOUT, v: F32_LAYOUT };
    const pipeline = this.pipeline(`kv-write-${layoutKey(lay)}`, () => kvWriteWgsl(lay.k, lay.v));
    const width = shape.nHeadKv * shape.headDim;
    const u = this.uniform(Uint32Array.of(shape.nHeadKv, shape.headDim, shape.nRot, shape.neox ? 1 : 0, shape.pageSize, shape.kStride ?? width, shape.nRot > 0 ? 1 : 0, FOLD).buffer, "kv-write params");
    const bind = this.bind(pipeline, [kPages, vPages, k, v, slots, cs, u, step.buffer]);
    return {
      encode(pass, nTok) {
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, bind);
        grid1d(pass, shape.nHeadKv * nTok);
      },
    };
  }

  /**
   * Attention of the step's queries (q [nTok][qStride], pre-RoPE) over the paged K/V the meta
   * buffer's runs name (ATTENTION_WGSL); scores is scratch of [nTok][nHead][window] floats.
   */
  attention(
    out: GPUBuffer, q: GPUBuffer, kPages: GPUBuffer, vPages: GPUBuffer, meta: GPUBuffer, cs: GPUBuffer, scores: GPUBuffer,
    shape: GpuAttentionShape, step: GpuStep, o: { qStride?: number; outStride?: number } = {},
  ): GpuOp {
    if (shape.headDim > MAX_GPU_HEAD_DIM) throw new WebGpuUnsupportedError("head dim", shape.headDim, `the attention kernel holds at most ${MAX_GPU_HEAD_DIM}`);
    const lay = shape.layouts ?? { k: F32_LAYOUT, v: F32_LAYOUT };
    const pipeline = this.pipeline(`attention-${layoutKey(lay)}`, () => attentionWgsl(lay.k, lay.v));
    const words = new ArrayBuffer(64);
    new Uint32Array(words).set([
      shape.nHead, shape.nHeadKv, shape.headDim, shape.nRot, shape.neox ? 1 : 0, shape.pageSize, shape.window, shape.maxRuns,
      shape.slidingWindow, o.qStride ?? shape.nHead * shape.headDim, o.outStride ?? shape.nHead * shape.headDim, shape.normalize ? 1 : 0,
    ]);
    new Float32Array(words).set([shape.scale, shape.softcap], 12);
    const bind = this.bind(pipeline, [out, q, kPages, vPages, meta, cs, scores, this.uniform(words, "attention params"), step.buffer]);
    const nHead = shape.nHead;
    return {
      encode(pass, nTok) {
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, bind);
        pass.dispatchWorkgroups(nHead, nTok);
      },
    };
  }

  /**
   * Adds a layer's attention statistic (ATTENTION_STATS_WGSL) from the normalized `scores`
   * ([nTok][nHead][window], attention with normalize) into `stats` ([rows][window]): every query
   * into row 0 (sumAll), or query qi into row qi - the step's pad.
   */
  attentionStats(stats: GPUBuffer, scores: GPUBuffer, shape: { nHead: number; window: number; sumAll: boolean }, step: GpuStep): GpuOp {
    const pipeline = this.pipeline("attention-stats", () => ATTENTION_STATS_WGSL);
    const bind = this.bind(pipeline, [stats, scores, this.uniform(Uint32Array.of(shape.nHead, shape.window, shape.sumAll ? 1 : 0, FOLD).buffer, "attention stats params"), step.buffer]);
    return {
      encode(pass) {
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, bind);
        grid1d(pass, shape.window);
      },
    };
  }

  private readonly jobOps = new WeakMap<GpuPageStore, Record<"pre" | "post", GpuOp>>();

  /**
   * An int4 store's page jobs of the pass (gpu-page-store.ts prepareWrites): "pre" (reopen /
   * evict) before the K/V write, "post" (seal) after it; as many as the store planned at encode
   * time, none for other codecs.
   */
  int4Jobs(store: GpuPageStore, which: "pre" | "post"): GpuOp {
    let ops = this.jobOps.get(store);
    if (ops === undefined) {
      const lay = store.layout;
      const jobs = store.int4Jobs;
      if (jobs === null) {
        const none: GpuOp = { encode() {} };
        ops = { pre: none, post: none };
      } else {
        const pipeline = this.pipeline(`int4-jobs-${layoutKey({ k: lay, v: lay })}-${lay.role}`, () => int4JobsWgsl(lay));
        const { pageSize, nHeadKv, headDim } = store.shape;
        const units = Math.max(pageSize * nHeadKv, nHeadKv * headDim / 8);
        const make = (base: number): GpuOp => {
          const bind = this.bind(pipeline, [store.buffer, jobs.buffer, this.uniform(Uint32Array.of(pageSize, nHeadKv, headDim, base).buffer, "int4 jobs params")]);
          return {
            encode(pass) {
              const j = store.int4Jobs!;
              const n = base === 0 ? j.nPre : j.nPost;
              if (n === 0) return;
              pass.setPipeline(pipeline);
              pass.setBindGroup(0, bind);
              pass.dispatchWorkgroups(Math.ceil(units / WG), n);
            },
          };
        };
        ops = { pre: make(0), post: make(INT4_MAX_JOBS) };
      }
      this.jobOps.set(store, ops);
    }
    return ops[which];
  }

  private bind(pipeline: GPUComputePipeline, buffers: GPUBuffer[]): GPUBindGroup {
    return this.device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: buffers.map((buffer, binding) => ({ binding, resource: { buffer } })),
    });
  }

  /** Runs ops in one compute pass and submits it. */
  run(ops: readonly GpuOp[], nTok: number): void {
    const enc = this.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    for (const op of ops) op.encode(pass, nTok);
    pass.end();
    this.device.queue.submit([enc.finish()]);
  }

  /** Copies `bytes` of `src` from `offset` back to the CPU (after everything submitted before). */
  async read(src: GPUBuffer, bytes: number, offset = 0): Promise<Float32Array> {
    return this.readMany([{ buffer: src, bytes, offset }]);
  }

  /**
   * Copies several ranges back through one staging buffer and one map (a step's logits and its
   * attention statistics): the result holds them in order, each rounded up to 4 bytes.
   */
  async readMany(ranges: readonly { buffer: GPUBuffer; bytes: number; offset?: number }[]): Promise<Float32Array> {
    let size = 0;
    for (const r of ranges) size += Math.ceil(r.bytes / 4) * 4;
    const staging = this.device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const enc = this.device.createCommandEncoder();
    let at = 0;
    for (const r of ranges) {
      const n = Math.ceil(r.bytes / 4) * 4;
      enc.copyBufferToBuffer(r.buffer, r.offset ?? 0, staging, at, n);
      at += n;
    }
    this.device.queue.submit([enc.finish()]);
    try {
      await staging.mapAsync(GPUMapMode.READ);
      const out = new Float32Array(staging.getMappedRange().slice(0));
      staging.unmap();
      return out;
    } finally {
      staging.destroy();
    }
  }
}
