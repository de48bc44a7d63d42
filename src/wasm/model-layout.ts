// How a TransformerModel lays out its WebAssembly memory (copied matrices, activations, q8
// scratch), as arithmetic without the forward pass: the model's constructor lays out its arena with
// it, and the planner (which must not import the model) predicts the same bytes from tensor types.

import { ArenaLayout, MAX_WASM_MEMORY_BYTES } from "./embedded.js";
import { ggmlTypeByName } from "../gguf/ggml-types.js";

/** Default tokens per forwardBatch: enough that each weight row is read once per 64 tokens. */
export const DEFAULT_MAX_BATCH_TOKENS = 64;
/** Largest batch: activation rows are allocated for it up front. */
export const MAX_BATCH_TOKENS_LIMIT = 4096;

/** The sizes a model's wasm layout depends on. */
export interface ModelDims {
  readonly nEmbd: number;
  readonly nHead: number;
  readonly nHeadKv: number;
  readonly headDim: number;
  readonly nFf: number;
  readonly nVocab: number;
}
/** What `wasmBytes` reads of a matrix: enough to lay one out without its bytes. */
export interface MatrixShape {
  /** The GGUF type name (F32, Q8_0, ...); a name without a wasm kernel lays out nothing. */
  readonly type: string;
  readonly rows: number;
  readonly cols: number;
  /** The GGUF tensor these rows are read from (a fused tensor for its parts), when known. */
  readonly tensor?: string;
}

/**
 * Types whose wasm copy keeps the file's f16 scale per 32 values beside int8 values (34 B per 32,
 * the file's own size for Q8_0): their values decode exactly to int8 times that f16 scale.
 * IQ4_XS's scale d * (ls - 32) is not an f16, so it keeps f32 scales.
 */
export function f16Scales(type: string): boolean {
  return type === "Q8_0" || type === "Q4_0" || type === "Q5_0" || type === "IQ4_NL";
}

/** Types whose batches (linear() over several tokens) repack rows into Q8Scratch.pk: the f16-scale
 *  types and the K-quants with a wasm kernel (IQ4_XS and F32 batches read their copy as it is). */
export function repackedInBatches(type: string): boolean {
  return f16Scales(type) || type === "Q4_K" || type === "Q6_K" || type === "Q3_K" || type === "Q2_K";
}

/** File bytes of `rows` x `cols` values of a GGUF type (0 for an unknown type name). */
export function tensorFileBytes(type: string, rows: number, cols: number): number {
  const t = ggmlTypeByName(type);
  return t === undefined ? 0 : (rows * cols * t.typeSize) / t.blockSize;
}

/**
 * Scratch for q8 activations (wasm only), for up to `rows` tokens of up to `maxWidth` values:
 * qs [rows][maxWidth] int8, d [rows][maxWidth/32] f32, the same widened x16 [rows4][maxWidth] int16
 * (what the int8 kernels read) and, for Q8_0 batches, dT [rows4/4][maxWidth/32][4] f32 (see widenQ8
 * in kernels.as; rows4 = rows rounded up to 4).
 */
export interface Q8Scratch {
  readonly qs: number;
  readonly d: number;
  readonly x16: number;
  readonly dT: number;
  /** [rows][maxWidth/32] f32: d times the block's int8 sum (blockSumsQ8), for Q4_K's offsets. */
  readonly sx: number;
  /** [rows][maxWidth/16] f32: d times each 16 values' int8 sum (blockSumsQ8 g16), for Q2_K's offsets. */
  readonly s16: number;
  /**
   * PACKED_ROWS rows of packedRowBytes(maxWidth): a chunk of weight rows repacked for a batch's
   * matmulPacked (packQ8 for the f16-scale types and Q6_K, Q3_K, Q2_K, packQ4K for Q4_K: once per
   * chunk, not once per 4 tokens); 0 when no matrix is of those types.
   */
  readonly pk: number;
}

/** Weight rows per matmulPacked call, shared by the threads: packQ8 / packQ4K repack them into Q8Scratch.pk first. */
export const PACKED_ROWS = 256;

/** Bytes of one repacked row of `cols` values: int16 values, and an f32 scale and offset per 16 at most (Q2_K). */
export function packedRowBytes(cols: number): number {
  return cols * 2 + (cols / 16) * 8;
}

/** Where TransformerModel puts things in its wasm memory: copied matrices, the 9 activation buffers and a norm-weight row, the q8 scratch. */
export interface ModelWasmLayout<M> {
  readonly placed: Map<M, number>;
  readonly acts: number[];
  readonly q8: Q8Scratch;
  /** Bytes of the copied matrices (64-byte alignment included). */
  readonly weightBytes: number;
  /** Bytes of the activation buffers and q8 scratch (alignment included). */
  readonly activationBytes: number;
  /**
   * Where the activation buffers and q8 scratch start: they are one contiguous region of
   * activationBytes, unused until the first forward pass, so a streaming load stages file rows
   * there (TransformerModel.loadStaging).
   */
  readonly activationsAt: number;
}

/**
 * Lays out a model's wasm memory on `arena`: each matrix with a wasm kernel (wasmBytes > 0), in
 * the order given, then activations [B][width] for x, xb, q, k, v, att, hb, hb2, one logits row,
 * one norm-weight row, then the q8 activation scratch (with the repacked-row chunk when a batch repacks a
 * matrix: the f16-scale types and the K-quants). TransformerModel's constructor and the planner both call this.
 */
export function layoutModelWasm<M extends MatrixShape>(hp: ModelDims, B: number, matrices: readonly M[], q8Acts: boolean, arena: ArenaLayout): ModelWasmLayout<M> {
  const start = arena.bytes;
  const placed = new Map<M, number>();
  let packed = false; // a matrix a batch repacks into q8.pk
  for (const m of matrices) {
    if (placed.has(m)) continue;
    const bytes = wasmBytes(m, q8Acts);
    if (bytes > 0) {
      placed.set(m, arena.reserve(bytes));
      packed ||= repackedInBatches(m.type);
    }
  }
  const weightsEnd = arena.bytes;
  const qDim = hp.nHead * hp.headDim;
  const kvDim = hp.nHeadKv * hp.headDim;
  const acts: number[] = [];
  for (const width of [hp.nEmbd, hp.nEmbd, qDim, kvDim, kvDim, qDim, hp.nFf, hp.nFf]) acts.push(arena.reserve(B * width * 4));
  acts.push(arena.reserve(hp.nVocab * 4));
  // One norm weight at a time, staged for the elementwise kernels' rmsNorm (TransformerModel.normStage).
  acts.push(arena.reserve(Math.max(hp.nEmbd, hp.headDim) * 4));
  const maxWidth = Math.max(hp.nEmbd, qDim, hp.nFf);
  const [qsBytes, dBytes, x16Bytes, dTBytes, sxBytes, s16Bytes] = q8ScratchBytes(B, maxWidth);
  const q8 = {
    qs: arena.reserve(qsBytes), d: arena.reserve(dBytes), x16: arena.reserve(x16Bytes), dT: arena.reserve(dTBytes), sx: arena.reserve(sxBytes), s16: arena.reserve(s16Bytes),
    pk: packed ? arena.reserve(PACKED_ROWS * packedRowBytes(Math.ceil(maxWidth / 32) * 32)) : 0,
  };
  return { placed, acts, q8, weightBytes: weightsEnd - start, activationBytes: arena.bytes - weightsEnd, activationsAt: weightsEnd };
}

/**
 * The matrices TransformerModel may copy into wasm memory, in its layout order, with their types
 * (`typeOf`: a tensor's GGUF type name, undefined when absent): per layer q, k, v, o, gate, up,
 * down, then the output. Fused tensors (phi3's attn_qkv and gate+up ffn_up) count as the row
 * ranges the model splits them into.
 */
export function modelWasmMatrices(hp: ModelDims & { readonly nLayer: number }, typeOf: (tensor: string) => string | undefined): MatrixShape[] {
  const qDim = hp.nHead * hp.headDim;
  const kvDim = hp.nHeadKv * hp.headDim;
  const out: MatrixShape[] = [];
  const m = (tensor: string, cols: number, rows: number, fused?: string) => {
    const own = typeOf(tensor);
    const from = own === undefined && fused !== undefined && typeOf(fused) !== undefined ? fused : tensor;
    out.push({ type: own ?? (fused !== undefined ? typeOf(fused) : undefined) ?? "missing", rows, cols, tensor: from });
  };
  for (let l = 0; l < hp.nLayer; l++) {
    const p = `blk.${l}.`;
    m(p + "attn_q.weight", hp.nEmbd, qDim, p + "attn_qkv.weight");
    m(p + "attn_k.weight", hp.nEmbd, kvDim, p + "attn_qkv.weight");
    m(p + "attn_v.weight", hp.nEmbd, kvDim, p + "attn_qkv.weight");
    m(p + "attn_output.weight", qDim, hp.nEmbd);
    m(p + "ffn_gate.weight", hp.nEmbd, hp.nFf, p + "ffn_up.weight");
    m(p + "ffn_up.weight", hp.nEmbd, hp.nFf);
    m(p + "ffn_down.weight", hp.nFf, hp.nEmbd);
  }
  // Tied embeddings: the output matmul reads token_embd, which is then copied.
  m(typeOf("output.weight") !== undefined ? "output.weight" : "token_embd.weight", hp.nEmbd, hp.nVocab);
  return out;
}

/** What a default TransformerModel (wasm kernels, q8 activations), loaded by streaming, holds. */
export interface ModelMemory {
  /** "wasm" when the layout fits MAX_WASM_MEMORY_BYTES (the engine then copies); "js" otherwise. */
  readonly kernels: "wasm" | "js";
  /** Bytes of weight copies in wasm memory (0 on the JS kernels). */
  readonly wasmWeightBytes: number;
  /** Activation bytes: wasm-side buffers (= wasmBytes - wasmWeightBytes), or the JS Float32Arrays. */
  readonly activationBytes: number;
  /** `TransformerModel.wasmBytes` for this model: the whole arena, 0 on the JS kernels. */
  readonly wasmBytes: number;
  /**
   * Tensors whose only resident copy is in wasm memory: a streaming load converts their file bytes
   * into the arena and keeps none (a tied token_embd too: embedding rows are read from the copy).
   */
  readonly wasmTensors: ReadonlySet<string>;
  /** File bytes of `wasmTensors`: the part of the file's tensor bytes that is not kept JS-side. */
  readonly wasmTensorFileBytes: number;
}

/**
 * Predicts a TransformerModel's memory besides the file from the tensor types alone, by replaying the
 * constructor's layout (`typeOf(name)`: the GGUF type name of a tensor, undefined when absent).
 * Assumes a runtime with WebAssembly SIMD (Node >= 16.4, current browsers).
 */
export function modelMemory(hp: ModelDims & { readonly nLayer: number }, typeOf: (tensor: string) => string | undefined, options: { readonly activations?: "q8" | "f32"; readonly maxBatchTokens?: number } = {}): ModelMemory {
  const B = options.maxBatchTokens ?? DEFAULT_MAX_BATCH_TOKENS;
  const qDim = hp.nHead * hp.headDim;
  const kvDim = hp.nHeadKv * hp.headDim;
  // wasmBytes switches on the type name; a name it does not know costs 0 there, as in the engine.
  const shapes = modelWasmMatrices(hp, typeOf);
  const arena = new ArenaLayout();
  const layout = layoutModelWasm(hp, B, shapes, (options.activations ?? "q8") === "q8", arena);
  if (arena.bytes > MAX_WASM_MEMORY_BYTES) {
    // commit() refuses: the JS kernels run with Float32Array activations, no q8 scratch.
    let js = hp.nVocab * 4;
    for (const width of [hp.nEmbd, hp.nEmbd, qDim, kvDim, kvDim, qDim, hp.nFf, hp.nFf]) js += B * width * 4;
    return { kernels: "js", wasmWeightBytes: 0, activationBytes: js, wasmBytes: 0, wasmTensors: new Set(), wasmTensorFileBytes: 0 };
  }
  const wasmTensors = new Set<string>();
  let wasmTensorFileBytes = 0;
  for (const m of layout.placed.keys()) {
    if (m.tensor === undefined) continue;
    wasmTensors.add(m.tensor);
    // A fused tensor's parts are disjoint row ranges that cover it, so their bytes sum to its own.
    wasmTensorFileBytes += tensorFileBytes(m.type, m.rows, m.cols);
  }
  // The arena's unused first 64 bytes count with the activations, so the two parts sum to wasmBytes.
  return {
    kernels: "wasm",
    wasmWeightBytes: layout.weightBytes,
    activationBytes: arena.bytes - layout.weightBytes,
    wasmBytes: arena.bytes,
    wasmTensors,
    wasmTensorFileBytes,
  };
}

/**
 * Bytes a matrix takes in wasm memory, or 0 when it has no wasm kernel (stays a JS matrix).
 * The quantized types run on wasm only with q8 activations: their kernels dot int8 x int8, and the
 * f32-activation path is the reference numerics, kept on the JS kernels.
 */
export function wasmBytes(w: MatrixShape, q8Activations = true): number {
  const n = w.rows * w.cols;
  switch (w.type) {
    case "F32": return n * 4;
    case "Q8_0":
    case "Q4_0":
    case "Q5_0":
    case "IQ4_NL":
      return q8Activations ? n + (n / 32) * 2 : 0; // int8 + the f16 scale: 34 B per 32 values (file: 34, 18, 22, 18)
    case "IQ4_XS":
      return q8Activations ? n + (n / 32) * 4 : 0; // int8 + f32 scale: 36 B per 32 values (file: 17)
    case "Q4_K": return q8Activations ? n / 2 + (n / 32) * 8 : 0; // 24 B per 32 values (file: 18)
    case "Q6_K":
    case "Q3_K":
      return q8Activations ? n + (n / 16) * 4 : 0; // int8 + f32 per 16: 40 B per 32 (file: 26.25, 13.75)
    case "Q2_K": return q8Activations ? n + (n / 16) * 8 : 0; // int8 + f32 scale and offset per 16: 48 B per 32 (file: 10.5)
    default: return 0;
  }
}

/** Bytes of each Q8Scratch region, in field order. */
export function q8ScratchBytes(rows: number, maxWidth: number): [number, number, number, number, number, number] {
  const rows4 = Math.ceil(rows / 4) * 4;
  return [rows * maxWidth, (rows * maxWidth) / 8, rows4 * maxWidth * 2, (rows4 * maxWidth) / 8, (rows * maxWidth) / 8, (rows * maxWidth) / 4];
}

