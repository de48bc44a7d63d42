// The forward pass of every supported architecture: a pre-norm decoder computed from a
// TransformerPlan (src/model/archs/): RMSNorm, Q/K/V (fused or not, biases, per-head QK norm),
// attention through a KV backend (which applies each layer's RoPE, window, scale and soft-cap),
// optional post-norms, a SwiGLU or GeGLU FFN, final norm and optional logit soft-capping.
// One token (forward) or a batch of prompt tokens (forwardBatch: each weight matrix read once per
// batch); every buffer is allocated once in the constructor, so decoding allocates nothing.
// Matmuls run on the WebAssembly SIMD kernels (src/model/wasm) when the runtime has them, on the
// JS kernels otherwise; so do SwiGLU, the RMSNorms and the residual adds (elementwise.as). With
// `threads` > 1 the matmuls are split by rows over worker threads sharing the wasm memory, and SwiGLU
// with them (each thread gates the gate/up rows it computed).

import type { GgufHeader } from "../gguf/header.js";
import { ModelConfigError } from "../errors.js";
import { expNonPositive } from "../cache/fast-exp.js";
import { f32ToF16Bits, F16_TO_F32 } from "../cache/codecs/half.js";
import type { RopeSpec } from "../cache/rope.js";
import type { CausalLM, KvBackend, LayerAttention, LongRopeChoice, ModelHParams } from "./causal-lm.js";
import type { MatrixRef, TransformerPlan } from "./archs/plan.js";
import { Acts, actQuant, bindWasm, fillWasmRows, linear, quantizeActs, readWasmRow, swigluRows as swigluOnPool, wasmLinear, wasmRowReader, type Linear, type Q8Scratch, type WasmRowReader } from "./kernels/linear.js";
import { DEFAULT_MAX_BATCH_TOKENS, layoutModelWasm, MAX_BATCH_TOKENS_LIMIT } from "../wasm/model-layout.js";
import { matvec, type WeightMatrix } from "./kernels/matvec.js";
import { dequantizeRow } from "./kernels/quant-rows.js";
import { defaultThreads, MAX_THREADS, WasmArena, wasmKernelsAvailable } from "./wasm/wasm-kernels.js";
import type { PoolStats } from "./wasm/matmul-pool.js";
import { ELEMENTWISE_WASM_BASE64 } from "./wasm/elementwise-wasm.js";
import { compileEmbedded } from "../wasm/embedded.js";
import type { RowCallPool } from "../wasm/row-call.js";
import { WeightSet } from "./weights.js";

export type { KvBackend } from "./causal-lm.js";

/** src/model/wasm/elementwise.as: f32 buffers at byte offsets into the arena's memory, any n. */
interface ElementwiseExports {
  /** g[i] = silu(g[i]) * u[i] */
  swiglu(g: number, u: number, n: number): void;
  /** out = x / rms(x) * w, one row (out may be x) */
  rmsNorm(out: number, x: number, w: number, n: number, eps: number): void;
  /** a[i] += b[i] */
  addRows(a: number, b: number, n: number): void;
}

const elementwiseCompiled: { shared?: WebAssembly.Module | null; unshared?: WebAssembly.Module | null } = {};

/**
 * The elementwise kernels over `arena`'s memory, or null when this runtime cannot compile them
 * (the JS loops run then). The instance imports the memory, so it adds only its code (~1.5 KiB)
 * and no bytes to the arena: modelMemory's prediction is unchanged. They run on the calling thread.
 */
function elementwiseOn(arena: WasmArena): ElementwiseExports | null {
  // ~1.5 KiB: under the 4 KiB browsers compile synchronously on the main thread.
  const kind = arena.shared ? "shared" : "unshared";
  if (elementwiseCompiled[kind] === undefined) elementwiseCompiled[kind] = compileEmbedded(ELEMENTWISE_WASM_BASE64, kind);
  const mod = elementwiseCompiled[kind]!;
  if (mod === null) return null;
  return new WebAssembly.Instance(mod, { env: { memory: arena.memory } }).exports as unknown as ElementwiseExports;
}

/** How the forward pass computes (see TransformerModel's constructor). */
export interface ModelOptions {
  /** Overrides RoPE settings read from the metadata (e.g. `angleF32` to reproduce an f32 reference). */
  readonly rope?: Partial<RopeSpec>;
  /**
   * "wasm" (default when the runtime has WebAssembly SIMD): F32 matrices, and with q8 activations
   * Q8_0, Q4_0, Q5_0, IQ4_NL, IQ4_XS, Q2_K, Q3_K, Q4_K and Q6_K ones, are copied into the model's
   * wasm memory (repacked: bytes per 32 values 34 for Q8_0/Q4_0/Q5_0/IQ4_NL, 36 for IQ4_XS, 24 for
   * Q4_K, 40 for Q6_K/Q3_K, 48 for Q2_K; see `wasmBytes` in src/wasm/model-layout.ts)
   * and multiplied there with SIMD; other types keep the JS kernels. "js": every matrix read in
   * place from the file bytes, no copy.
   */
  readonly kernels?: "wasm" | "js";
  /**
   * "q8" (default): the input of a quantized matmul is quantized once, as llama.cpp does (Q8_0 for
   * Q8_0/Q4_0/Q5_0, Q8_K for Q4_K/Q6_K), and dotted int8 x int8; logits move by about the
   * activation rounding (on random-weight models ~1% of the largest logit with Q8_0, ~2-3% with
   * Q8_K, whose one scale per 256 values rounds coarser). "f32": f32
   * activations against the weights as stored (the reference numerics), on the JS kernels for
   * every quantized type. F32 weights always take f32 activations.
   */
  readonly activations?: "q8" | "f32";
  /**
   * GeGLU models: "ggml" (default) rounds the gate to f16 and reads GELU from ggml's f16 table, as
   * llama.cpp's CPU backend does; "exact" computes the tanh GELU in float64 (reference numerics: the
   * table's f16 steps amplify float noise between two otherwise equal computations).
   */
  readonly gelu?: "ggml" | "exact";
  /** Most tokens one forwardBatch call takes (activation rows allocated for it). Default 64. */
  readonly maxBatchTokens?: number;
  /**
   * Threads the wasm matmuls are split over, by rows (1..MAX_THREADS): the calling thread plus
   * threads - 1 workers sharing the model's wasm memory (a SharedArrayBuffer), started on the first
   * matmul worth splitting; results are bit-identical to one thread. Default `defaultThreads()`:
   * the cores available, at most MAX_DEFAULT_THREADS. 1: no workers, no SharedArrayBuffer. Where
   * threads cannot run (no SharedArrayBuffer: a page without COOP/COEP; a page's main thread; the
   * JS kernels) the model runs one thread and says why in `threadsNote`.
   */
  readonly threads?: number;
  /**
   * Multiply-adds (rows x cols x tokens of the matmuls that go together) from which the threads split
   * a matmul; below it the calling thread runs it alone. Default MIN_SPLIT_WORK (where splitting
   * measured faster: bench/threads-threshold.ts); 0 splits every matmul (tests).
   */
  readonly minSplitWork?: number;
  /**
   * Whether the wasm kernels may be the relaxed-SIMD build where the runtime runs relaxed SIMD
   * right (Chrome 114+; not Node 20, whose flagged relaxed dot is wrong: wasm-kernels.ts
   * relaxedSimdAvailable): the same bits, faster Q4_K dots. Default true; false keeps plain SIMD.
   */
  readonly relaxedSimd?: boolean;
  /**
   * A streaming load (loadModel): `data` holds only the resident tensors, each at this offset; a
   * tensor absent here must be one the model copies into wasm memory, and the loader fills it
   * afterwards through `streamed` / `fillStreamed`. Unset: `data` is the whole tensor data region.
   */
  readonly tensorOffsets?: ReadonlyMap<string, number>;
}

/** A matrix (or rows of a fused tensor) whose only copy is in wasm memory, still to be filled from the file. */
export interface StreamedMatrix {
  /** The GGUF tensor, and the first of its rows this matrix is. */
  readonly tensor: string;
  readonly row0: number;
  readonly rows: number;
  readonly cols: number;
  readonly type: WeightMatrix["type"];
  readonly rowBytes: number;
  /** Where it is placed in the arena. */
  readonly at: number;
}

interface LayerWeights {
  attnNorm: Float32Array;
  wq: Linear; wk: Linear; wv: Linear; wo: Linear;
  bq: Float32Array | null; bk: Float32Array | null; bv: Float32Array | null;
  qNorm: Float32Array | null; kNorm: Float32Array | null;
  attnPostNorm: Float32Array | null;
  ffnNorm: Float32Array;
  wGate: Linear; wUp: Linear; wDown: Linear;
  ffnPostNorm: Float32Array | null;
}

/** Rows [row0, row0 + rows) of a matrix as a matrix of its own: a view of the same bytes (rows are contiguous). */
function rowsOf(m: WeightMatrix, row0: number, rows: number): WeightMatrix {
  if (row0 === 0 && rows === m.rows) return m;
  if (row0 < 0 || row0 + rows > m.rows) {
    throw new ModelConfigError(`tensor ${m.name} has ${m.rows} rows; rows ${row0}..${row0 + rows} are outside it`, { field: m.name });
  }
  const u8 = m.u8.subarray(row0 * m.rowBytes, (row0 + rows) * m.rowBytes);
  return {
    name: `${m.name}[${row0}:${row0 + rows}]`,
    type: m.type,
    rows,
    cols: m.cols,
    rowBytes: m.rowBytes,
    u8,
    i8: new Int8Array(u8.buffer, u8.byteOffset, u8.byteLength),
    f32: m.f32 ? new Float32Array(u8.buffer, u8.byteOffset, u8.byteLength / 4) : null,
  };
}

export class TransformerModel implements CausalLM {
  readonly hp: ModelHParams;
  readonly attention: readonly LayerAttention[];
  readonly maxBatchTokens: number;
  readonly kernels: "wasm" | "js";
  readonly activations: "q8" | "f32";
  readonly wasmBytes: number;
  readonly longRope: LongRopeChoice | null;
  /** Threads asked for (ModelOptions.threads or its default). */
  readonly threadsWanted: number;
  private readonly plan: TransformerPlan;
  private readonly exactGelu: boolean;
  private readonly arena: WasmArena | null;
  private readonly tokEmbd: WeightMatrix;
  /** The tied embedding read back from its wasm copy when the file bytes were not kept (else null). */
  private readonly embdWasm: WasmRowReader | null = null;
  /** Matrices placed in wasm memory whose bytes the loader still has to stream in (empty once built from whole bytes). */
  readonly streamed: readonly StreamedMatrix[];
  /** The arena's activation region [at, at + bytes): see loadStaging. */
  private readonly activationRegion: { readonly at: number; readonly bytes: number } = { at: 0, bytes: 0 };
  private readonly outNorm: Float32Array;
  private readonly output: Linear;
  private readonly layers: LayerWeights[] = [];
  // Activations [maxBatchTokens][width], allocated once (in wasm memory when there is one).
  private readonly x: Acts; // residual stream [nEmbd]
  private readonly xb: Acts; // normed input / matmul output [nEmbd]
  private readonly q: Acts; // [nHead*headDim]
  private readonly k: Acts; // [nHeadKv*headDim]
  private readonly v: Acts; // [nHeadKv*headDim]
  private readonly att: Acts; // [nHead*headDim]
  private readonly hb: Acts; // [nFf]
  private readonly hb2: Acts; // [nFf]
  private readonly logitsRow: Acts; // [1][nVocab]
  private readonly q8: Q8Scratch | null;
  /** The elementwise wasm kernels (null on the JS kernels: the JS loops below run instead). */
  private readonly ew: ElementwiseExports | null;
  /**
   * Where a norm weight is staged for ew.rmsNorm, which reads it from wasm memory: the weights stay
   * in the file's bytes and each norm copies its vector (nEmbd, or headDim for QK norms) into this
   * row of the arena first (a few hundred floats per call). Null on the JS kernels.
   */
  private readonly normStage: Float32Array | null;

  /** `data` holds the tensor data region (byte 0 is the header's dataOffset); `plan` from the architecture table. */
  constructor(readonly header: GgufHeader, data: Uint8Array, plan: TransformerPlan, options: ModelOptions = {}) {
    const hp = plan.hp;
    this.plan = plan;
    this.exactGelu = options.gelu === "exact";
    this.hp = hp;
    this.attention = plan.attention;
    this.longRope = plan.longRope ?? null;
    const B = options.maxBatchTokens ?? DEFAULT_MAX_BATCH_TOKENS;
    if (!Number.isInteger(B) || B < 1 || B > MAX_BATCH_TOKENS_LIMIT) {
      throw new ModelConfigError(`maxBatchTokens ${B} is invalid: use 1..${MAX_BATCH_TOKENS_LIMIT}`, { field: "maxBatchTokens" });
    }
    this.maxBatchTokens = B;
    const threads = options.threads ?? defaultThreads();
    if (!Number.isInteger(threads) || threads < 1 || threads > MAX_THREADS) {
      throw new ModelConfigError(`threads ${threads} is invalid: use 1..${MAX_THREADS}`, { field: "threads" });
    }
    this.threadsWanted = threads;
    const w = new WeightSet(header, data, options.tensorOffsets ?? null);
    const qDim = hp.nHead * hp.headDim;
    const kvDim = hp.nHeadKv * hp.headDim;
    const tokEmbd = w.matrix("token_embd.weight", hp.nEmbd, hp.nVocab);
    this.tokEmbd = tokEmbd;
    this.outNorm = w.vector("output_norm.weight", hp.nEmbd);
    const output = plan.output === "token_embd.weight" ? tokEmbd : w.matrix(plan.output, hp.nEmbd, hp.nVocab);
    const opt = (name: string | null, n: number) => (name !== null && w.has(name) ? w.vector(name, n) : null);
    // A fused tensor is read once and split into row views; whole tensors are read as they are.
    const fused = new Map<string, WeightMatrix>();
    const mat = (ref: MatrixRef, cols: number): WeightMatrix => {
      if (ref.fusedRows === undefined) return w.matrix(ref.tensor, cols, ref.rows);
      let whole = fused.get(ref.tensor);
      if (whole === undefined) {
        whole = w.matrix(ref.tensor, cols, ref.fusedRows);
        fused.set(ref.tensor, whole);
      }
      return rowsOf(whole, ref.row0, ref.rows);
    };
    type RawLayer = Omit<LayerWeights, "wq" | "wk" | "wv" | "wo" | "wGate" | "wUp" | "wDown"> & Record<"wq" | "wk" | "wv" | "wo" | "wGate" | "wUp" | "wDown", WeightMatrix>;
    const raw: RawLayer[] = [];
    for (let l = 0; l < hp.nLayer; l++) {
      const t = plan.layers[l]!;
      raw.push({
        attnNorm: w.vector(t.attnNorm, hp.nEmbd),
        wq: mat(t.q, hp.nEmbd),
        wk: mat(t.k, hp.nEmbd),
        wv: mat(t.v, hp.nEmbd),
        wo: w.matrix(t.o, qDim, hp.nEmbd),
        bq: opt(t.qBias, qDim),
        bk: opt(t.kBias, kvDim),
        bv: opt(t.vBias, kvDim),
        qNorm: opt(t.qNorm, hp.headDim),
        kNorm: opt(t.kNorm, hp.headDim),
        attnPostNorm: t.attnPostNorm === null ? null : w.vector(t.attnPostNorm, hp.nEmbd),
        ffnNorm: w.vector(t.ffnNorm, hp.nEmbd),
        wGate: mat(t.gate, hp.nEmbd),
        wUp: mat(t.up, hp.nEmbd),
        wDown: w.matrix(t.down, hp.nFf, hp.nEmbd),
        ffnPostNorm: t.ffnPostNorm === null ? null : w.vector(t.ffnPostNorm, hp.nEmbd),
      });
    }

    // Lay out the wasm memory: matrices with a wasm kernel, then activations; grow once.
    let arena: WasmArena | null = (options.kernels ?? "wasm") === "wasm" && wasmKernelsAvailable() ? new WasmArena({ threads, ...(options.minSplitWork !== undefined ? { minSplitWork: options.minSplitWork } : {}), ...(options.relaxedSimd !== undefined ? { relaxedSimd: options.relaxedSimd } : {}) }) : null;
    let placed = new Map<WeightMatrix, number>();
    const q8Acts = (options.activations ?? "q8") === "q8";
    let ptrs: number[] = [];
    let q8: Q8Scratch | null = null;
    let activationRegion = { at: 0, bytes: 0 };
    if (arena !== null) {
      // The order of modelWasmMatrices: the planner replays this layout from tensor types.
      const matrices: WeightMatrix[] = [];
      for (const L of raw) matrices.push(L.wq, L.wk, L.wv, L.wo, L.wGate, L.wUp, L.wDown);
      matrices.push(output);
      const layout = layoutModelWasm(hp, B, matrices, q8Acts, arena);
      placed = layout.placed;
      ptrs = layout.acts;
      q8 = layout.q8;
      activationRegion = { at: layout.activationsAt, bytes: layout.activationBytes };
      if (!arena.commit()) {
        arena = null;
        q8 = null;
        placed.clear();
      }
    }
    if (arena === null) ptrs = [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1];
    this.arena = arena;
    if (arena !== null) this.activationRegion = activationRegion;
    this.kernels = arena === null ? "js" : "wasm";
    this.wasmBytes = arena === null ? 0 : arena.bytes;
    this.activations = arena !== null && q8Acts ? "q8" : "f32";
    this.q8 = this.activations === "q8" ? q8 : null;
    const bound = new Map<WeightMatrix, Linear>();
    const streamed: StreamedMatrix[] = [];
    // Rows of fused tensors: which tensor and row a view starts at (rowsOf names it `tensor[a:b]`).
    const fusedOf = new Map<WeightMatrix, { tensor: string; row0: number }>();
    for (const L of raw) {
      for (const m of [L.wq, L.wk, L.wv, L.wGate, L.wUp]) {
        const at = /^(.*)\[(\d+):\d+\]$/.exec(m.name);
        if (at !== null) fusedOf.set(m, { tensor: at[1]!, row0: Number(at[2]) });
      }
    }
    const bind = (m: WeightMatrix): Linear => {
      let L = bound.get(m);
      if (L === undefined) {
        const at = placed.get(m);
        const src = fusedOf.get(m) ?? { tensor: m.name, row0: 0 };
        if (w.isStreamed(src.tensor)) {
          // Streaming load: the loader fills the placed regions later; a matrix that was not placed
          // has no bytes anywhere, which the loader's residency rule (modelMemory) must never allow.
          if (arena === null || at === undefined || wasmLinear(m, at).kind === "js") {
            throw new ModelConfigError(`tensor ${src.tensor} was not kept in memory but the ${this.kernels} kernels read it from there; load it with kernels "js" or from bytes`, { field: src.tensor });
          }
          streamed.push({ tensor: src.tensor, row0: src.row0, rows: m.rows, cols: m.cols, type: m.type, rowBytes: m.rowBytes, at });
          L = wasmLinear(m, at);
        } else {
          L = arena !== null && at !== undefined ? bindWasm(m, arena, at) : { kind: "js", w: m };
        }
        bound.set(m, L);
      }
      return L;
    };
    for (const L of raw) {
      this.layers.push({
        ...L,
        wq: bind(L.wq), wk: bind(L.wk), wv: bind(L.wv), wo: bind(L.wo),
        wGate: bind(L.wGate), wUp: bind(L.wUp), wDown: bind(L.wDown),
      });
    }
    this.output = bind(output);
    this.streamed = streamed;
    if (w.isStreamed("token_embd.weight")) {
      // Tied embeddings with no file copy kept: embedding rows come from the output's wasm copy.
      if (output !== tokEmbd || arena === null) throw new ModelConfigError("token_embd.weight was not kept in memory but is read by row; load it from bytes", { field: "token_embd.weight" });
      this.embdWasm = wasmRowReader(arena, this.output);
    }
    const acts = (i: number, width: number, rows = B) => new Acts(rows, width, ptrs[i]!, arena);
    this.x = acts(0, hp.nEmbd);
    this.xb = acts(1, hp.nEmbd);
    this.q = acts(2, qDim);
    this.k = acts(3, kvDim);
    this.v = acts(4, kvDim);
    this.att = acts(5, qDim);
    this.hb = acts(6, hp.nFf);
    this.hb2 = acts(7, hp.nFf);
    this.logitsRow = acts(8, hp.nVocab, 1);
    this.ew = arena !== null ? elementwiseOn(arena) : null;
    this.normStage = this.ew !== null && arena !== null ? arena.f32(ptrs[9]!, Math.max(hp.nEmbd, hp.headDim)) : null;
  }

  /** The matmuls' thread pool, which the model's caches split attention over too (null: one thread). */
  get rowCallPool(): RowCallPool | null {
    return this.arena?.rowCallPool ?? null;
  }

  /** Threads the matmuls are split over (1 on the JS kernels or where threads cannot run: see threadsNote). */
  get threads(): number {
    return this.arena?.threads ?? 1;
  }

  /** Whether the wasm kernels are the relaxed-SIMD build (ModelOptions.relaxedSimd). */
  get relaxedSimd(): boolean {
    return this.arena?.relaxedSimd ?? false;
  }

  /** Why fewer threads run than were asked for (no SharedArrayBuffer, ...), or null. */
  get threadsNote(): string | null {
    if (this.threadsWanted > 1 && this.arena === null) return "the JS kernels run on one thread";
    return this.arena?.threadsNote ?? null;
  }

  /** Starts the matmul workers now (else the first big matmul does) and resolves once they are up. */
  async threadsReady(): Promise<void> {
    await this.arena?.whenThreadsReady();
  }

  /** Matmuls split over threads so far (diagnostics, tests). */
  get threadSplits(): number {
    return this.arena?.splits ?? 0;
  }

  /** Jobs split over threads (the cache's attention included) and what they cost this thread: its time in them and its waits for the workers (diagnostics: bench/kernel-profile.ts). Null on one thread. */
  get threadStats(): Readonly<PoolStats> | null {
    return this.arena?.threadStats ?? null;
  }

  /** Stops the matmul workers (they would stop when the model is collected, or with the process);
   *  the model still runs afterwards, on the calling thread alone. */
  dispose(): void {
    this.arena?.dispose();
  }

  /**
   * Where a streaming load may put file rows before fillStreamed converts them: the arena's
   * activation buffers and q8 scratch, which nothing reads before the first forward pass (each
   * pass writes them before reading), so the load needs no buffer of its own. Load time only;
   * empty without an arena. Holds at least one row of any matrix: a row has at most 4 bytes per
   * value, and the region holds more than twice the widest activation (x2 nFf, qDim, nEmbd) in f32.
   */
  loadStaging(): Uint8Array {
    return this.arena === null ? new Uint8Array(0) : this.arena.u8(this.activationRegion.at, this.activationRegion.bytes);
  }

  /**
   * Converts file rows `firstRow ..` (`rowsBytes`: whole rows of m's tensor type, as in the file,
   * relative to m's own first row) into m's wasm copy. The loader's streaming step; load time only.
   */
  fillStreamed(m: StreamedMatrix, rowsBytes: Uint8Array, firstRow: number): void {
    const nRows = rowsBytes.byteLength / m.rowBytes;
    if (!Number.isInteger(nRows) || firstRow < 0 || firstRow + nRows > m.rows || this.arena === null) {
      throw new ModelConfigError(`rows ${firstRow}+${rowsBytes.byteLength / m.rowBytes} of ${m.tensor} do not fit its ${m.rows} rows`, { field: m.tensor });
    }
    const u8 = rowsBytes;
    const chunk: WeightMatrix = {
      name: m.tensor, type: m.type, rows: nRows, cols: m.cols, rowBytes: m.rowBytes, u8,
      i8: new Int8Array(u8.buffer, u8.byteOffset, u8.byteLength),
      f32: m.type === "F32" ? new Float32Array(u8.buffer, u8.byteOffset, u8.byteLength / 4) : null,
    };
    fillWasmRows(chunk, this.arena, m.at, m.rows, firstRow);
  }

  /** Rows 0..n of out = RMSNorm(rows of x) * w (x row t read at row t + xRow; the wasm kernel when staged). */
  private normRows(out: Acts, x: Acts, w: Float32Array, n: number, xRow = 0): void {
    const width = x.width, eps = this.hp.normEps;
    const stage = this.normStage;
    if (this.ew === null || stage === null) {
      for (let t = 0; t < n; t++) rmsNorm(out.a, x.a, w, eps, t * width, width, (t + xRow) * width);
      return;
    }
    stage.set(w, 0);
    const rowBytes = width * 4;
    for (let t = 0; t < n; t++) this.ew.rmsNorm(out.ptr + t * rowBytes, x.ptr + (t + xRow) * rowBytes, stage.byteOffset, width, eps);
  }

  /** In-place RMSNorm of each head (headDim values) of rows 0..n of a (QK norm). */
  private normHeads(a: Acts, w: Float32Array, nHeads: number, n: number): void {
    const hd = this.hp.headDim, eps = this.hp.normEps;
    const ew = this.ew;
    const stage = this.normStage;
    if (ew === null || stage === null) {
      for (let t = 0; t < n; t++) for (let h = 0; h < nHeads; h++) rmsNorm(a.a, a.a, w, eps, t * a.width + h * hd, hd);
      return;
    }
    stage.set(w);
    const at = stage.byteOffset;
    for (let t = 0; t < n; t++) {
      for (let h = 0; h < nHeads; h++) {
        const p = a.ptr + (t * a.width + h * hd) * 4;
        ew.rmsNorm(p, p, at, hd, eps);
      }
    }
  }

  /**
   * Runs one token at position `pos` through every layer, writing its K/V to `kv`.
   * When `logits` is given ([nVocab]) it receives the output; skipping it saves the vocab matmul
   * for prompt tokens whose logits nobody reads.
   */
  forward(token: number, pos: number, kv: KvBackend, logits: Float32Array | null): void {
    this.checkToken(token);
    this.embed(token, 0);
    this.layersFor(1, pos, kv, false);
    if (logits) this.logitsOf(0, logits);
  }

  /**
   * Runs tokens[start .. start+n) (n <= maxBatchTokens) at positions firstPos.. through every
   * layer as one batch: each weight matrix is read once for all n tokens. With a backend that
   * has the batch methods (CacheKv: the caller reserved exactly these n slots), attention is
   * causal among them; otherwise the tokens go one by one. `logits` receives the last token's; with
   * `onLogits`, every token's in turn (CausalLM.forwardBatch), each computed from its row of the
   * residual stream by the same output matmul as forward's (one row at a time: the arena holds one
   * logits row, so the batch adds no vocabulary-sized buffer).
   */
  forwardBatch(
    tokens: ArrayLike<number>,
    start: number,
    n: number,
    kv: KvBackend,
    logits: Float32Array | null,
    firstPos = 0,
    onLogits?: (i: number, logits: Float32Array) => void,
  ): void {
    if (!Number.isInteger(n) || n < 1 || n > this.maxBatchTokens || start < 0 || start + n > tokens.length) {
      throw new ModelConfigError(`forwardBatch of ${n} tokens from ${start} is invalid: use 1..${this.maxBatchTokens} tokens inside the ${tokens.length} given`, { field: "n" });
    }
    if (onLogits !== undefined && logits === null) {
      throw new ModelConfigError("forwardBatch with onLogits needs a logits buffer ([nVocab]) to fill for each token", { field: "logits" });
    }
    if (kv.writeBatch === undefined || kv.attendBatch === undefined) {
      for (let i = 0; i < n; i++) {
        this.forward(tokens[start + i]!, firstPos + i, kv, onLogits !== undefined || i === n - 1 ? logits : null);
        onLogits?.(i, logits!);
      }
      return;
    }
    for (let i = 0; i < n; i++) this.checkToken(tokens[start + i]!);
    for (let i = 0; i < n; i++) this.embed(tokens[start + i]!, i);
    this.layersFor(n, firstPos, kv, true);
    if (onLogits !== undefined) {
      for (let i = 0; i < n; i++) {
        this.logitsOf(i, logits!);
        onLogits(i, logits!);
      }
    } else if (logits) this.logitsOf(n - 1, logits);
  }

  private checkToken(token: number): void {
    if (!Number.isInteger(token) || token < 0 || token >= this.hp.nVocab) {
      throw new ModelConfigError(`token id ${token} is outside the vocabulary (0..${this.hp.nVocab - 1})`, { field: "token" });
    }
  }

  /** Row t of x = the token's embedding, times the plan's embedding scale (f32, as ggml_scale). */
  private embed(token: number, t: number): void {
    const row = this.x.row[t]!;
    if (this.embdWasm !== null) readWasmRow(this.embdWasm, token, row);
    else embedRow(this.tokEmbd, token, row);
    const s = this.plan.embedScale;
    if (s !== 1) for (let i = 0; i < row.length; i++) row[i] = row[i]! * s;
  }

  /**
   * Quantizes rows 0..n of x as L's kernel takes them (actQuant: Q8_0 or Q8_K, llama.cpp's
   * vec_dot_type); null when L takes f32 activations. Inside a batch (arena.batch) it is queued with
   * the matmuls that read it: one job. The one scratch is reused by the next matrix only while
   * sameQuant says so (layersFor).
   */
  private quant(x: Acts, n: number, L: Linear): Q8Scratch | null {
    const to = actQuant(L.kind);
    if (this.q8 === null || to === null) return null;
    this.arena!.drain(); // a queued matmul may still read the scratch
    quantizeActs(this.arena!, x, n, this.q8, to);
    return this.q8;
  }

  /** The layers over rows 0..n of x (the embedded tokens). */
  private layersFor(n: number, pos: number, kv: KvBackend, batch: boolean): void {
    const hp = this.hp;
    const arena = this.arena;
    const { x, xb, q, k, v, att, hb, hb2 } = this;
    const nEmbd = hp.nEmbd, nFf = hp.nFf, hd = hp.headDim;
    const qDim = hp.nHead * hd, kvDim = hp.nHeadKv * hd;
    const xa = x.a, xba = xb.a, hba = hb.a, hb2a = hb2.a;
    const ew = this.ew;
    const gelu = this.plan.activation === "gelu";
    const exactGelu = this.exactGelu;
    for (let l = 0; l < hp.nLayer; l++) {
      const L = this.layers[l]!;
      this.normRows(xb, x, L.attnNorm, n);
      arena?.batch(); // q, k, v read the same input: one job for the threads, their quantization first
      let s = this.quant(xb, n, L.wq);
      linear(arena, q, L.wq, xb, n, s);
      if (!sameQuant(L.wk, L.wq)) s = this.quant(xb, n, L.wk);
      linear(arena, k, L.wk, xb, n, s);
      if (!sameQuant(L.wv, L.wk)) s = this.quant(xb, n, L.wv);
      linear(arena, v, L.wv, xb, n, s);
      arena?.flush();
      if (L.bq || L.bk || L.bv) {
        for (let t = 0; t < n; t++) {
          if (L.bq) addRow(q.a, t * qDim, L.bq, qDim);
          if (L.bk) addRow(k.a, t * kvDim, L.bk, kvDim);
          if (L.bv) addRow(v.a, t * kvDim, L.bv, kvDim);
        }
      }
      if (L.qNorm) this.normHeads(q, L.qNorm, hp.nHead, n);
      if (L.kNorm) this.normHeads(k, L.kNorm, hp.nHeadKv, n);
      if (batch) {
        kv.writeBatch!(l, n, k.a, v.a);
        kv.attendBatch!(l, q.a, n, att.a);
      } else {
        kv.write(l, k.row[0]!, v.row[0]!);
        kv.attend(l, q.row[0]!, pos, att.row[0]!);
      }
      arena?.batch(); // the quantization and the matmul: one job
      linear(arena, xb, L.wo, att, n, this.quant(att, n, L.wo));
      arena?.flush();
      if (L.attnPostNorm) this.normRows(xb, xb, L.attnPostNorm, n);
      if (ew !== null) ew.addRows(x.ptr, xb.ptr, n * nEmbd);
      else addRow(xa, 0, xba, n * nEmbd);

      this.normRows(xb, x, L.ffnNorm, n);
      arena?.batch();
      s = this.quant(xb, n, L.wGate);
      linear(arena, hb, L.wGate, xb, n, s);
      if (!sameQuant(L.wUp, L.wGate)) s = this.quant(xb, n, L.wUp);
      linear(arena, hb2, L.wUp, xb, n, s);
      // SwiGLU in the gate/up job: each thread gates the rows it computed (no wake-up of its own).
      const fused = !gelu && arena !== null && hb.ptr >= 0 && hb2.ptr >= 0;
      if (fused) swigluOnPool(arena, hb, hb2, n);
      arena?.flush();
      const m = n * nFf;
      if (gelu) (exactGelu ? gegluExactRows : gegluRows)(hba, hb2a, m);
      else if (!fused && ew !== null) ew.swiglu(hb.ptr, hb2.ptr, m);
      else if (!fused) swigluRows(hba, hb2a, m);
      arena?.batch();
      linear(arena, xb, L.wDown, hb, n, this.quant(hb, n, L.wDown));
      arena?.flush();
      if (L.ffnPostNorm) this.normRows(xb, xb, L.ffnPostNorm, n);
      if (ew !== null) ew.addRows(x.ptr, xb.ptr, n * nEmbd);
      else addRow(xa, 0, xba, n * nEmbd);
    }
  }

  /** logits = output(norm(x row t)), soft-capped when the plan says so. */
  private logitsOf(t: number, logits: Float32Array): void {
    this.normRows(this.xb, this.x, this.outNorm, 1, t);
    if (this.arena === null) {
      matvec(logits, this.xb.row[0]!, this.output.w);
    } else {
      linear(this.arena, this.logitsRow, this.output, this.xb, 1, this.quant(this.xb, 1, this.output));
      logits.set(this.logitsRow.a);
    }
    const cap = this.plan.finalSoftcap;
    if (cap > 0) for (let i = 0; i < logits.length; i++) logits[i] = cap * Math.tanh(logits[i]! / cap);
  }
}

/** Whether b can read the quantized input that a's quant() left (Q4_K after Q6_K: both Q8_K). */
function sameQuant(a: Linear, b: Linear): boolean {
  return actQuant(a.kind) === actQuant(b.kind);
}

function embedRow(table: WeightMatrix, token: number, out: Float32Array): void {
  const f32 = table.f32;
  if (f32) {
    // A loop, not set(subarray): subarray allocates a view per token.
    const n = table.cols, o = token * n;
    for (let i = 0; i < n; i++) out[i] = f32[o + i]!;
  } else dequantizeRow(table.type, table.u8, token * table.rowBytes, out, 0, table.cols);
}

/** out[off..off+n) = x[xOff..xOff+n) / rms * w (xOff defaults to off) */
export function rmsNorm(out: Float32Array, x: Float32Array, w: Float32Array, eps: number, off: number, n: number, xOff = off): void {
  let ss = 0;
  for (let i = 0; i < n; i++) ss += x[xOff + i]! * x[xOff + i]!;
  const s = 1 / Math.sqrt(ss / n + eps);
  for (let i = 0; i < n; i++) out[off + i] = x[xOff + i]! * s * w[i]!;
}

/** g[i] = silu(g[i]) * u[i] for i < n: the reference for elementwise.as's swiglu. */
export function swigluRows(g: Float32Array, u: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) {
    const x = g[i]!;
    // SiLU x * sigmoid(x) through expNonPositive (fast-exp.ts, inlined, ~4x Math.exp): e = exp(-|x|)
    // <= 1, sigmoid(x) = 1 / (1 + e) for x >= 0 and e / (1 + e) below.
    const e = expNonPositive(x >= 0 ? -x : x);
    g[i] = ((x >= 0 ? x : x * e) / (1 + e)) * u[i]!;
  }
}

/** a[off..off+n) += b[0..n) */
function addRow(a: Float32Array, off: number, b: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) a[off + i] = a[off + i]! + b[i]!;
}

/**
 * GELU (tanh form) as ggml's CPU backend computes it for GeGLU (ggml_vec_geglu_f32 with
 * GGML_GELU_FP16): the input rounded to f16, looked up in a table of f16(gelu(f16 value)), times
 * the up value; saturated outside [-10, 10]. Reproducing the table keeps gemma's outputs within
 * f32 rounding of llama.cpp's (the exact GELU differs by up to ~1e-3 relative).
 */
let geluF16: Float32Array | null = null;
function geluTable(): Float32Array {
  if (geluF16 !== null) return geluF16;
  const t = new Float32Array(65536);
  const c = Math.fround(Math.sqrt(2 / Math.PI));
  for (let h = 0; h < 65536; h++) {
    const x = F16_TO_F32[h]!;
    // ggml_gelu_f32: 0.5f*x*(1.0f + tanhf(SQRT_2_OVER_PI*x*(1.0f + GELU_COEF_A*x*x))), in float
    const inner = Math.fround(c * Math.fround(x * Math.fround(1 + Math.fround(Math.fround(0.044715 * x) * x))));
    const g = Math.fround(Math.fround(0.5 * x) * Math.fround(1 + Math.fround(Math.tanh(inner))));
    t[h] = F16_TO_F32[f32ToF16Bits(g)]!;
  }
  geluF16 = t;
  return t;
}

/** g[i] = gelu(g[i]) * u[i] for i < n (ggml's f16-table GELU). */
export function gegluRows(g: Float32Array, u: Float32Array, n: number): void {
  const table = geluTable();
  for (let i = 0; i < n; i++) {
    const x = g[i]!;
    const y = x <= -10 ? 0 : x >= 10 ? x : table[f32ToF16Bits(x)]!;
    g[i] = y * u[i]!;
  }
}

/** g[i] = gelu(g[i]) * u[i] with the tanh GELU in float64 (ModelOptions.gelu "exact"). */
export function gegluExactRows(g: Float32Array, u: Float32Array, n: number): void {
  const c = Math.sqrt(2 / Math.PI);
  for (let i = 0; i < n; i++) {
    const x = g[i]!;
    g[i] = 0.5 * x * (1 + Math.tanh(c * x * (1 + 0.044715 * x * x))) * u[i]!;
  }
}
