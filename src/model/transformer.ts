// The Llama-family forward pass (llama, mistral, qwen2 with QKV bias, qwen3 with QK norm):
// RMSNorm, RoPE, GQA attention through a KV backend, SwiGLU. One token (forward) or a batch of
// prompt tokens (forwardBatch: each weight matrix read once per batch); every buffer is allocated
// once in the constructor, so decoding allocates nothing. Matmuls run on the WebAssembly SIMD
// kernels (src/model/wasm) when the runtime has them, on the JS kernels otherwise; so do SwiGLU,
// the RMSNorms and the residual adds (elementwise.as, over the same memory).

import type { GgufHeader } from "../gguf/header.js";
import { ModelConfigError, UnsupportedArchitectureError } from "../errors.js";
import type { RopeSpec } from "../cache/rope.js";
import { expNonPositive } from "../cache/fast-exp.js";
import { Acts, bindWasm, linear, q8ScratchBytes, quantizeActs, wasmBytes, type Linear, type Q8Scratch } from "./kernels/linear.js";
import { matvec, type WeightMatrix } from "./kernels/matvec.js";
import { dequantizeRow } from "./kernels/quant-rows.js";
import { ArenaLayout, MAX_WASM_MEMORY_BYTES, WasmArena, wasmKernelsAvailable } from "./wasm/wasm-kernels.js";
import { ELEMENTWISE_WASM_BASE64 } from "./wasm/elementwise-wasm.js";
import { compileEmbedded } from "../wasm/embedded.js";
import { WeightSet } from "./weights.js";

export const SUPPORTED_ARCHS = ["llama", "mistral", "qwen2", "qwen3"] as const;

export interface LlamaHParams {
  readonly arch: string;
  readonly nLayer: number;
  readonly nEmbd: number;
  readonly nHead: number;
  readonly nHeadKv: number;
  readonly headDim: number;
  readonly nFf: number;
  readonly nVocab: number;
  readonly nCtxTrain: number;
  readonly normEps: number;
  readonly rope: RopeSpec;
}

/** Where attention reads and writes K/V: the paged cache in a session, a dense array in references. */
export interface KvBackend {
  /** Stores layer `layer`'s K (pre-RoPE) and V for the token being processed. */
  write(layer: number, k: Float32Array, v: Float32Array): void;
  /** out[nHead*headDim] = attention of the (pre-RoPE) query `q` at position `pos` over the cached tokens. */
  attend(layer: number, q: Float32Array, pos: number, out: Float32Array): void;
  /** Batch form of write: token i (< n of the batch the caller reserved) at k[kOff], v[vOff]. */
  writeBatch?(layer: number, i: number, k: Float32Array, kOff: number, v: Float32Array, vOff: number): void;
  /** Batch form of attend: q [nQuery][nHead*headDim] (pre-RoPE) of the last nQuery tokens written, causal among them. */
  attendBatch?(layer: number, q: Float32Array, nQuery: number, out: Float32Array): void;
}

interface LayerWeights {
  attnNorm: Float32Array;
  wq: Linear; wk: Linear; wv: Linear; wo: Linear;
  bq: Float32Array | null; bk: Float32Array | null; bv: Float32Array | null;
  qNorm: Float32Array | null; kNorm: Float32Array | null;
  ffnNorm: Float32Array;
  wGate: Linear; wUp: Linear; wDown: Linear;
}

function num(meta: GgufHeader["metadata"], key: string, fallback?: number): number {
  const v = meta[key];
  if (typeof v === "number") return v;
  if (typeof v === "bigint" && v <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(v);
  if (v === undefined && fallback !== undefined) return fallback;
  throw new ModelConfigError(`GGUF metadata ${key} is ${v === undefined ? "missing" : "not a number"}`, { field: key });
}

export function llamaHParams(header: GgufHeader): LlamaHParams {
  const meta = header.metadata;
  const arch = String(meta["general.architecture"] ?? "");
  if (!(SUPPORTED_ARCHS as readonly string[]).includes(arch)) {
    throw new UnsupportedArchitectureError(`architecture "${arch}" has no forward pass in kvbound yet; supported: ${SUPPORTED_ARCHS.join(", ")}`, { arch });
  }
  const nEmbd = num(meta, `${arch}.embedding_length`);
  const nHead = num(meta, `${arch}.attention.head_count`);
  const nHeadKv = num(meta, `${arch}.attention.head_count_kv`, nHead);
  const headDim = num(meta, `${arch}.attention.key_length`, nEmbd / nHead);
  const tokens = meta["tokenizer.ggml.tokens"];
  const nVocab = num(meta, `${arch}.vocab_size`, Array.isArray(tokens) ? tokens.length : undefined);
  const nRot = num(meta, `${arch}.rope.dimension_count`, headDim);
  if (!Number.isInteger(headDim) || nHead % nHeadKv !== 0) {
    throw new ModelConfigError(`head_count ${nHead}, head_count_kv ${nHeadKv}, head dim ${headDim} do not form a GQA layout`, { field: `${arch}.attention.head_count_kv` });
  }
  const rope: RopeSpec = {
    nRot,
    freqBase: num(meta, `${arch}.rope.freq_base`, 10000),
    // llama.cpp's rope type per arch (llama_model_rope_type): llama/mistral NORM, qwen2/qwen3 NEOX.
    neox: arch === "qwen2" || arch === "qwen3",
  };
  return {
    arch,
    nLayer: num(meta, `${arch}.block_count`),
    nEmbd,
    nHead,
    nHeadKv,
    headDim,
    nFf: num(meta, `${arch}.feed_forward_length`),
    nVocab,
    nCtxTrain: num(meta, `${arch}.context_length`, 2048),
    normEps: num(meta, `${arch}.attention.layer_norm_rms_epsilon`, 1e-5),
    rope,
  };
}

/** src/model/wasm/elementwise.as: f32 buffers at byte offsets into the arena's memory, any n. */
interface ElementwiseExports {
  /** g[i] = silu(g[i]) * u[i] */
  swiglu(g: number, u: number, n: number): void;
  /** out = x / rms(x) * w, one row (out may be x) */
  rmsNorm(out: number, x: number, w: number, n: number, eps: number): void;
  /** a[i] += b[i] */
  addRows(a: number, b: number, n: number): void;
}

let elementwiseCompiled: WebAssembly.Module | null | undefined;

/**
 * The elementwise kernels over `arena`'s memory, or null when this runtime cannot compile them
 * (the JS loops run then). The instance imports the memory, so it adds only its code (~1.5 KiB)
 * and no bytes to the arena: llamaModelMemory's prediction is unchanged.
 */
function elementwiseOn(arena: WasmArena): ElementwiseExports | null {
  // ~1.5 KiB: under the 4 KiB browsers compile synchronously on the main thread.
  if (elementwiseCompiled === undefined) elementwiseCompiled = compileEmbedded(ELEMENTWISE_WASM_BASE64);
  if (elementwiseCompiled === null) return null;
  return new WebAssembly.Instance(elementwiseCompiled, { env: { memory: arena.k.memory } }).exports as unknown as ElementwiseExports;
}

/** How the forward pass computes (see LlamaModel's constructor). */
export interface LlamaModelOptions {
  /** Overrides RoPE settings read from the metadata (e.g. `angleF32` to reproduce an f32 reference). */
  readonly rope?: Partial<RopeSpec>;
  /**
   * "wasm" (default when the runtime has WebAssembly SIMD): F32 matrices, and with q8 activations
   * Q8_0, Q4_0, Q5_0, Q4_K and Q6_K ones, are copied into the model's wasm memory (their bytes
   * again, widened: bytes per 32 values 36 for Q8_0/Q4_0/Q5_0, 24 for Q4_K, 40 for Q6_K; see
   * `wasmBytes` in kernels/linear.ts) and multiplied there with SIMD; other types keep the JS
   * kernels. "js": every matrix read in place from the file bytes, no copy.
   */
  readonly kernels?: "wasm" | "js";
  /**
   * "q8" (default): the input of a quantized matmul is quantized to Q8_0 once and dotted int8 x
   * int8, as llama.cpp does (llama.cpp uses Q8_K for the K types); logits move by about the
   * activation rounding (~1% of the largest logit on random-weight models). "f32": f32
   * activations against the weights as stored (the reference numerics), on the JS kernels for
   * every quantized type. F32 weights always take f32 activations.
   */
  readonly activations?: "q8" | "f32";
  /** Most tokens one forwardBatch call takes (activation rows allocated for it). Default 64. */
  readonly maxBatchTokens?: number;
}

/** Default tokens per forwardBatch: enough that each weight row is read once per 64 tokens. */
export const DEFAULT_MAX_BATCH_TOKENS = 64;
/** Largest batch: activation rows are allocated for it up front. */
export const MAX_BATCH_TOKENS_LIMIT = 4096;

/** The sizes a model's wasm layout depends on. */
export type LlamaDims = Pick<LlamaHParams, "nEmbd" | "nHead" | "nHeadKv" | "headDim" | "nFf" | "nVocab">;
/** What `wasmBytes` reads of a matrix: enough to lay one out without its bytes. */
export type MatrixShape = Pick<WeightMatrix, "type" | "rows" | "cols">;

/** Where LlamaModel puts things in its wasm memory: copied matrices, the 9 activation buffers and a norm-weight row, the q8 scratch. */
export interface LlamaWasmLayout<M> {
  readonly placed: Map<M, number>;
  readonly acts: number[];
  readonly q8: Q8Scratch;
  /** Bytes of the copied matrices (64-byte alignment included). */
  readonly weightBytes: number;
  /** Bytes of the activation buffers and q8 scratch (alignment included). */
  readonly activationBytes: number;
}

/**
 * Lays out a model's wasm memory on `arena`: each matrix with a wasm kernel (wasmBytes > 0), in
 * the order given, then activations [B][width] for x, xb, q, k, v, att, hb, hb2, one logits row,
 * one norm-weight row, then the q8 activation scratch. LlamaModel's constructor and the planner both call this.
 */
export function layoutLlamaWasm<M extends MatrixShape>(hp: LlamaDims, B: number, matrices: readonly M[], q8Acts: boolean, arena: ArenaLayout): LlamaWasmLayout<M> {
  const start = arena.bytes;
  const placed = new Map<M, number>();
  for (const m of matrices) {
    if (placed.has(m)) continue;
    const bytes = wasmBytes(m, q8Acts);
    if (bytes > 0) placed.set(m, arena.reserve(bytes));
  }
  const weightsEnd = arena.bytes;
  const qDim = hp.nHead * hp.headDim;
  const kvDim = hp.nHeadKv * hp.headDim;
  const acts: number[] = [];
  for (const width of [hp.nEmbd, hp.nEmbd, qDim, kvDim, kvDim, qDim, hp.nFf, hp.nFf]) acts.push(arena.reserve(B * width * 4));
  acts.push(arena.reserve(hp.nVocab * 4));
  // One norm weight at a time, staged for the elementwise kernels' rmsNorm (LlamaModel.normStage).
  acts.push(arena.reserve(Math.max(hp.nEmbd, hp.headDim) * 4));
  const [qsBytes, dBytes, x16Bytes, dTBytes, sxBytes] = q8ScratchBytes(B, Math.max(hp.nEmbd, qDim, hp.nFf));
  const q8 = { qs: arena.reserve(qsBytes), d: arena.reserve(dBytes), x16: arena.reserve(x16Bytes), dT: arena.reserve(dTBytes), sx: arena.reserve(sxBytes) };
  return { placed, acts, q8, weightBytes: weightsEnd - start, activationBytes: arena.bytes - weightsEnd };
}

/** The matrices LlamaModel may copy into wasm memory, in its layout order, with their shapes. */
export function llamaWasmMatrices(hp: LlamaDims & { readonly nLayer: number }, hasOutput: boolean): Array<{ name: string; cols: number; rows: number }> {
  const qDim = hp.nHead * hp.headDim;
  const kvDim = hp.nHeadKv * hp.headDim;
  const out: Array<{ name: string; cols: number; rows: number }> = [];
  for (let l = 0; l < hp.nLayer; l++) {
    const p = `blk.${l}.`;
    out.push(
      { name: p + "attn_q.weight", cols: hp.nEmbd, rows: qDim },
      { name: p + "attn_k.weight", cols: hp.nEmbd, rows: kvDim },
      { name: p + "attn_v.weight", cols: hp.nEmbd, rows: kvDim },
      { name: p + "attn_output.weight", cols: qDim, rows: hp.nEmbd },
      { name: p + "ffn_gate.weight", cols: hp.nEmbd, rows: hp.nFf },
      { name: p + "ffn_up.weight", cols: hp.nEmbd, rows: hp.nFf },
      { name: p + "ffn_down.weight", cols: hp.nFf, rows: hp.nEmbd },
    );
  }
  // Tied embeddings: the output matmul reads token_embd, which is then copied.
  out.push({ name: hasOutput ? "output.weight" : "token_embd.weight", cols: hp.nEmbd, rows: hp.nVocab });
  return out;
}

/** What a default LlamaModel (wasm kernels, q8 activations) holds besides the file bytes. */
export interface LlamaMemory {
  /** "wasm" when the layout fits MAX_WASM_MEMORY_BYTES (the engine then copies); "js" otherwise. */
  readonly kernels: "wasm" | "js";
  /** Bytes of weight copies in wasm memory (0 on the JS kernels). */
  readonly wasmWeightBytes: number;
  /** Activation bytes: wasm-side buffers (= wasmBytes - wasmWeightBytes), or the JS Float32Arrays. */
  readonly activationBytes: number;
  /** `LlamaModel.wasmBytes` for this model: the whole arena, 0 on the JS kernels. */
  readonly wasmBytes: number;
}

/**
 * Predicts a LlamaModel's memory besides the file from the tensor types alone, by replaying the
 * constructor's layout (`typeOf(name)`: the GGUF type name of a tensor, undefined when absent).
 * Assumes a runtime with WebAssembly SIMD (Node >= 16.4, current browsers).
 */
export function llamaModelMemory(hp: LlamaDims & { readonly nLayer: number }, typeOf: (tensor: string) => string | undefined, options: Pick<LlamaModelOptions, "activations" | "maxBatchTokens"> = {}): LlamaMemory {
  const B = options.maxBatchTokens ?? DEFAULT_MAX_BATCH_TOKENS;
  const qDim = hp.nHead * hp.headDim;
  const kvDim = hp.nHeadKv * hp.headDim;
  const hasOutput = typeOf("output.weight") !== undefined;
  // wasmBytes switches on the type name; a name it does not know costs 0 there, as in the engine.
  const shapes: MatrixShape[] = llamaWasmMatrices(hp, hasOutput).map((m) => ({ type: (typeOf(m.name) ?? "missing") as WeightMatrix["type"], rows: m.rows, cols: m.cols }));
  const arena = new ArenaLayout();
  const layout = layoutLlamaWasm(hp, B, shapes, (options.activations ?? "q8") === "q8", arena);
  if (arena.bytes > MAX_WASM_MEMORY_BYTES) {
    // commit() refuses: the JS kernels run with Float32Array activations, no q8 scratch.
    let js = hp.nVocab * 4;
    for (const width of [hp.nEmbd, hp.nEmbd, qDim, kvDim, kvDim, qDim, hp.nFf, hp.nFf]) js += B * width * 4;
    return { kernels: "js", wasmWeightBytes: 0, activationBytes: js, wasmBytes: 0 };
  }
  // The arena's unused first 64 bytes count with the activations, so the two parts sum to wasmBytes.
  return { kernels: "wasm", wasmWeightBytes: layout.weightBytes, activationBytes: arena.bytes - layout.weightBytes, wasmBytes: arena.bytes };
}

export class LlamaModel {
  readonly hp: LlamaHParams;
  /** Tokens one forwardBatch call may take (callers reserve cache slots in pieces this size). */
  readonly maxBatchTokens: number;
  /** Which kernels run the matmuls, after falling back ("wasm" asked but unavailable gives "js"). */
  readonly kernels: "wasm" | "js";
  readonly activations: "q8" | "f32";
  /** Bytes of the wasm linear memory (weights copied in + activations); 0 on the JS kernels. */
  readonly wasmBytes: number;
  private readonly arena: WasmArena | null;
  private readonly tokEmbd: WeightMatrix;
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

  constructor(readonly header: GgufHeader, data: Uint8Array, options: LlamaModelOptions = {}) {
    const read = llamaHParams(header);
    const hp: LlamaHParams = options.rope ? { ...read, rope: { ...read.rope, ...options.rope } } : read;
    this.hp = hp;
    const B = options.maxBatchTokens ?? DEFAULT_MAX_BATCH_TOKENS;
    if (!Number.isInteger(B) || B < 1 || B > MAX_BATCH_TOKENS_LIMIT) {
      throw new ModelConfigError(`maxBatchTokens ${B} is invalid: use 1..${MAX_BATCH_TOKENS_LIMIT}`, { field: "maxBatchTokens" });
    }
    this.maxBatchTokens = B;
    const w = new WeightSet(header, data);
    const qDim = hp.nHead * hp.headDim;
    const kvDim = hp.nHeadKv * hp.headDim;
    const tokEmbd = w.matrix("token_embd.weight", hp.nEmbd, hp.nVocab);
    this.tokEmbd = tokEmbd;
    this.outNorm = w.vector("output_norm.weight", hp.nEmbd);
    const output = w.has("output.weight") ? w.matrix("output.weight", hp.nEmbd, hp.nVocab) : tokEmbd;
    const opt = (name: string, n: number) => (w.has(name) ? w.vector(name, n) : null);
    type RawLayer = Omit<LayerWeights, "wq" | "wk" | "wv" | "wo" | "wGate" | "wUp" | "wDown"> & Record<"wq" | "wk" | "wv" | "wo" | "wGate" | "wUp" | "wDown", WeightMatrix>;
    const raw: RawLayer[] = [];
    for (let l = 0; l < hp.nLayer; l++) {
      const p = `blk.${l}.`;
      raw.push({
        attnNorm: w.vector(p + "attn_norm.weight", hp.nEmbd),
        wq: w.matrix(p + "attn_q.weight", hp.nEmbd, qDim),
        wk: w.matrix(p + "attn_k.weight", hp.nEmbd, kvDim),
        wv: w.matrix(p + "attn_v.weight", hp.nEmbd, kvDim),
        wo: w.matrix(p + "attn_output.weight", qDim, hp.nEmbd),
        bq: opt(p + "attn_q.bias", qDim),
        bk: opt(p + "attn_k.bias", kvDim),
        bv: opt(p + "attn_v.bias", kvDim),
        qNorm: opt(p + "attn_q_norm.weight", hp.headDim),
        kNorm: opt(p + "attn_k_norm.weight", hp.headDim),
        ffnNorm: w.vector(p + "ffn_norm.weight", hp.nEmbd),
        wGate: w.matrix(p + "ffn_gate.weight", hp.nEmbd, hp.nFf),
        wUp: w.matrix(p + "ffn_up.weight", hp.nEmbd, hp.nFf),
        wDown: w.matrix(p + "ffn_down.weight", hp.nFf, hp.nEmbd),
      });
    }

    // Lay out the wasm memory: matrices with a wasm kernel, then activations; grow once.
    let arena: WasmArena | null = (options.kernels ?? "wasm") === "wasm" && wasmKernelsAvailable() ? new WasmArena() : null;
    let placed = new Map<WeightMatrix, number>();
    const q8Acts = (options.activations ?? "q8") === "q8";
    let ptrs: number[] = [];
    let q8: Q8Scratch | null = null;
    if (arena !== null) {
      // The order of llamaWasmMatrices: the planner replays this layout from tensor types.
      const matrices: WeightMatrix[] = [];
      for (const L of raw) matrices.push(L.wq, L.wk, L.wv, L.wo, L.wGate, L.wUp, L.wDown);
      matrices.push(output);
      const layout = layoutLlamaWasm(hp, B, matrices, q8Acts, arena);
      placed = layout.placed;
      ptrs = layout.acts;
      q8 = layout.q8;
      if (!arena.commit()) {
        arena = null;
        q8 = null;
        placed.clear();
      }
    }
    if (arena === null) ptrs = [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1];
    this.arena = arena;
    this.kernels = arena === null ? "js" : "wasm";
    this.wasmBytes = arena === null ? 0 : arena.bytes;
    this.activations = arena !== null && q8Acts ? "q8" : "f32";
    this.q8 = this.activations === "q8" ? q8 : null;
    const bound = new Map<WeightMatrix, Linear>();
    const bind = (m: WeightMatrix): Linear => {
      let L = bound.get(m);
      if (L === undefined) {
        const at = placed.get(m);
        L = arena !== null && at !== undefined ? bindWasm(m, arena, at) : { kind: "js", w: m };
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

  /** In-place RMSNorm of each head (headDim values) of rows 0..n of a (qwen3's QK norm). */
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
    embedRow(this.tokEmbd, token, this.x.row[0]!);
    this.layersFor(1, pos, kv, false);
    if (logits) this.logitsOf(0, logits);
  }

  /**
   * Runs tokens[start .. start+n) (n <= maxBatchTokens) at positions firstPos.. through every
   * layer as one batch: each weight matrix is read once for all n tokens. With a backend that
   * has the batch methods (CacheKv: the caller reserved exactly these n slots), attention is
   * causal among them; otherwise the tokens go one by one. `logits` receives the last token's.
   */
  forwardBatch(tokens: ArrayLike<number>, start: number, n: number, kv: KvBackend, logits: Float32Array | null, firstPos = 0): void {
    if (!Number.isInteger(n) || n < 1 || n > this.maxBatchTokens || start < 0 || start + n > tokens.length) {
      throw new ModelConfigError(`forwardBatch of ${n} tokens from ${start} is invalid: use 1..${this.maxBatchTokens} tokens inside the ${tokens.length} given`, { field: "n" });
    }
    if (kv.writeBatch === undefined || kv.attendBatch === undefined) {
      for (let i = 0; i < n; i++) this.forward(tokens[start + i]!, firstPos + i, kv, i === n - 1 ? logits : null);
      return;
    }
    for (let i = 0; i < n; i++) this.checkToken(tokens[start + i]!);
    for (let i = 0; i < n; i++) embedRow(this.tokEmbd, tokens[start + i]!, this.x.row[i]!);
    this.layersFor(n, firstPos, kv, true);
    if (logits) this.logitsOf(n - 1, logits);
  }

  private checkToken(token: number): void {
    if (!Number.isInteger(token) || token < 0 || token >= this.hp.nVocab) {
      throw new ModelConfigError(`token id ${token} is outside the vocabulary (0..${this.hp.nVocab - 1})`, { field: "token" });
    }
  }

  /** Quantizes rows 0..n of x for a matrix that takes q8 activations; null when it does not. */
  private quant(x: Acts, n: number, L: Linear): Q8Scratch | null {
    if (this.q8 === null || L.kind === "js" || L.kind === "wasm-f32") return null;
    quantizeActs(this.arena!, x, n, this.q8);
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
    for (let l = 0; l < hp.nLayer; l++) {
      const L = this.layers[l]!;
      this.normRows(xb, x, L.attnNorm, n);
      let s = this.quant(xb, n, L.wq);
      linear(arena, q, L.wq, xb, n, s);
      if (L.wk.kind !== L.wq.kind) s = this.quant(xb, n, L.wk);
      linear(arena, k, L.wk, xb, n, s);
      if (L.wv.kind !== L.wk.kind) s = this.quant(xb, n, L.wv);
      linear(arena, v, L.wv, xb, n, s);
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
        for (let t = 0; t < n; t++) kv.writeBatch!(l, t, k.a, t * kvDim, v.a, t * kvDim);
        kv.attendBatch!(l, q.a, n, att.a);
      } else {
        kv.write(l, k.row[0]!, v.row[0]!);
        kv.attend(l, q.row[0]!, pos, att.row[0]!);
      }
      linear(arena, xb, L.wo, att, n, this.quant(att, n, L.wo));
      if (ew !== null) ew.addRows(x.ptr, xb.ptr, n * nEmbd);
      else addRow(xa, 0, xba, n * nEmbd);

      this.normRows(xb, x, L.ffnNorm, n);
      s = this.quant(xb, n, L.wGate);
      linear(arena, hb, L.wGate, xb, n, s);
      if (L.wUp.kind !== L.wGate.kind) s = this.quant(xb, n, L.wUp);
      linear(arena, hb2, L.wUp, xb, n, s);
      const m = n * nFf;
      if (ew !== null) ew.swiglu(hb.ptr, hb2.ptr, m);
      else swigluRows(hba, hb2a, m);
      linear(arena, xb, L.wDown, hb, n, this.quant(hb, n, L.wDown));
      if (ew !== null) ew.addRows(x.ptr, xb.ptr, n * nEmbd);
      else addRow(xa, 0, xba, n * nEmbd);
    }
  }

  /** logits = output(norm(x row t)). */
  private logitsOf(t: number, logits: Float32Array): void {
    this.normRows(this.xb, this.x, this.outNorm, 1, t);
    if (this.arena === null) {
      linearOne(logits, this.output, this.xb.row[0]!);
      return;
    }
    linear(this.arena, this.logitsRow, this.output, this.xb, 1, this.quant(this.xb, 1, this.output));
    logits.set(this.logitsRow.a);
  }
}

function linearOne(out: Float32Array, L: Linear, x: Float32Array): void {
  matvec(out, x, L.w);
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
