// Loads a runnable model from a path, an http(s) URL, `hf:owner/repo/file.gguf`, a Blob or bytes.
// Weights are held once: the header is read first, the model's wasm layout is decided from the
// tensor types alone (modelMemory, the planner's own rule), and the tensor data is streamed once:
// tensors the wasm kernels multiply go, a bounded number of rows at a time staged in the arena's
// own activation region (unused until the first forward pass), into their place in the arena
// (their only copy); the rest (norms, biases, rope factors, matrices without a wasm kernel, an
// untied token embedding) are packed into one resident buffer. No transient buffer of the load's own.
// Bytes in memory (Uint8Array, ArrayBuffer) are the caller's: tensors are views of them and the
// wasm copies come on top. Browser-safe: the file reader and the hf: downloader are imported only
// when a path or hf: reference is given.

import { AbortError, FetchError, GgufLimitError, InvalidSettingError, TensorShapeError } from "../errors.js";
import { readGgufHeader, readGgufHeaderFromSource, type GgufHeader } from "../gguf/header.js";
import type { ByteSource } from "../gguf/readers/byte-source.js";
import { blobSource } from "../gguf/readers/blob.js";
import { httpSource } from "../gguf/readers/http.js";
import { architectureOf, createModel, type CreateModelOptions } from "../model/architectures.js";
import { BACKENDS, type Backend } from "../model/async-forward.js";
import type { CausalLM } from "../model/causal-lm.js";
import type { GpuContext } from "../model/webgpu/device.js";
import { resolveModelRef, type ResolveModelRefOptions } from "../model/model-ref.js";
import { createTokenizer, tokenizerSettings, type Tokenizer, type TokenizerSettings } from "../model/tokenizer/index.js";
import type { StreamedMatrix, TransformerModel } from "../model/transformer.js";
import { wasmKernelsAvailable } from "../model/wasm/wasm-kernels.js";
import { kvboundModelMemory } from "../plan/kvbound.js";
import { specFromGgufMetadata } from "../spec/from-gguf-metadata.js";

export type ModelSource = string | URL | Blob | ArrayBuffer | Uint8Array;

export interface LoadModelOptions {
  /** Bytes read so far and the total (undefined when a server does not say). */
  readonly onProgress?: (doneBytes: number, totalBytes: number | undefined) => void;
  readonly signal?: AbortSignal;
  /** fetch for http(s) URLs and hf: downloads; default the global fetch. */
  readonly fetch?: typeof fetch;
  /** Folder of hf: downloads (see resolveModelRef). */
  readonly cacheDir?: string;
  /** The context the model will run with (see CreateModelOptions.nCtx: LongRoPE models pick their factors by it). */
  readonly nCtx?: number;
  /** Passed to resolveModelRef for hf: references (endpoint, token, env). */
  readonly resolve?: Omit<ResolveModelRefOptions, "fetch" | "onProgress" | "signal" | "cacheDir">;
  /**
   * Threads the matmuls are split over (ModelOptions.threads): default the cores available, at most
   * 4; 1 runs no workers. `model.threads` and `model.threadsNote` say what runs and why not more.
   */
  readonly threads?: number;
  /**
   * Where the forward pass runs: "cpu" (default; wasm SIMD or JS kernels) or "webgpu" (Llama-family
   * models, f32 cache pages; the GPU is requested before any weight is read: WebGpuUnavailableError
   * without an adapter). A WebGPU model is built for windows up to `nCtx` (default: the training
   * context, at most 4096); Session and generate await its forward.
   */
  readonly backend?: Backend;
  /** The WebGPU device to run on (default: one requested for the model, released by model.dispose()). */
  readonly gpuContext?: GpuContext;
}

/** What the loaded weights hold besides the model's wasm arena (`model.wasmBytes`). */
export interface ResidentWeights {
  /** Bytes of the tensors kept JS-side: the packed resident buffer, or the caller's bytes when loaded from memory. */
  readonly residentBytes: number;
  /** "stream": resident tensors packed, wasm tensors only in the arena; "memory": views of the caller's bytes. */
  readonly mode: "stream" | "memory";
}

export interface LoadedModel {
  readonly header: GgufHeader;
  readonly model: CausalLM;
  readonly tokenizer: Tokenizer;
  readonly settings: TokenizerSettings;
  /** What is resident besides the wasm arena. */
  readonly weights: ResidentWeights;
  /** Where it came from: a path, a URL, "blob" or "memory". */
  readonly source: string;
}

/**
 * Largest model file kvbound loads: 16 GiB. V8's ArrayBuffer limit on 64-bit hosts is near this,
 * and a size beyond it is more likely a hostile header than a model to run.
 */
export const MAX_MODEL_BYTES = 16 * 1024 ** 3;

/** Most bytes one read asks for: progress and abort are checked between reads. */
const READ_CHUNK_BYTES = 4 * 1024 * 1024;

/**
 * Reads a model and builds its forward pass and tokenizer. Throws UnknownModelError (no such
 * file), FetchError, GgufParseError / GgufLimitError, UnsupportedArchitectureError (checked before
 * any weight is touched), TensorShapeError / UnsupportedTensorTypeError (naming the tensor),
 * UnsupportedTokenizerError, AbortError.
 */
export async function loadModel(source: ModelSource, opts: LoadModelOptions = {}): Promise<LoadedModel> {
  const { header, model, weights, source: name } = await loadModelWeightsAny(source, opts);
  const tokenizer = createTokenizer(header.metadata);
  const settings = tokenizerSettings(header.metadata);
  return { header, model, tokenizer, settings, weights, source: name };
}

type LoadedWeights<M extends CausalLM> = Omit<LoadedModel, "model" | "tokenizer" | "settings"> & { readonly model: M };

/** loadModel without the tokenizer: the header, the forward pass and what its weights hold. */
export async function loadModelWeights(source: ModelSource, opts?: LoadModelOptions & { readonly backend?: "cpu" }): Promise<LoadedWeights<TransformerModel>>;
export async function loadModelWeights(source: ModelSource, opts: LoadModelOptions): Promise<LoadedWeights<CausalLM>>;
export async function loadModelWeights(source: ModelSource, opts: LoadModelOptions = {}): Promise<LoadedWeights<CausalLM>> {
  return loadModelWeightsAny(source, opts);
}

async function loadModelWeightsAny(source: ModelSource, opts: LoadModelOptions): Promise<LoadedWeights<CausalLM>> {
  const backend = opts.backend ?? "cpu";
  if (backend === "webgpu") return loadWebGpuWeights(source, opts);
  if (backend !== "cpu") throw new InvalidSettingError(`backend ${JSON.stringify(backend)} is unknown; use one of ${BACKENDS.join(", ")}`, { setting: "backend", value: backend });
  return loadCpuWeights(source, opts);
}

/**
 * The WebGPU model: the device first (no adapter: WebGpuUnavailableError before anything is
 * read), then the tensor data in one buffer (token embeddings stay on the CPU for the row lookup),
 * uploaded as stored.
 */
async function loadWebGpuWeights(source: ModelSource, opts: LoadModelOptions): Promise<LoadedWeights<CausalLM>> {
  checkAborted(opts.signal);
  const { requestGpu } = await import("../model/webgpu/device.js");
  const context = opts.gpuContext ?? (await requestGpu());
  const owns = opts.gpuContext === undefined;
  try {
    const { WebGpuModel } = await import("../model/webgpu/gpu-model.js");
    const build = (header: GgufHeader, data: Uint8Array) => {
      const train = header.metadata[`${String(header.metadata["general.architecture"])}.context_length`];
      const window = opts.nCtx ?? Math.min(typeof train === "number" && train > 0 ? train : DEFAULT_GPU_WINDOW, DEFAULT_GPU_WINDOW);
      return new WebGpuModel(context, header, data, {
        window,
        ...(opts.nCtx !== undefined ? { nCtx: opts.nCtx } : {}),
        ...(opts.threads !== undefined ? { threadsAsked: opts.threads } : {}),
        ownsDevice: owns,
      });
    };
    if (source instanceof Uint8Array || source instanceof ArrayBuffer) {
      const bytes = source instanceof Uint8Array ? source : new Uint8Array(source);
      const header = await readGgufHeader(bytes);
      header.source = "memory";
      architectureOf(header);
      return { header, model: build(header, bytes.subarray(header.dataOffset)), weights: { residentBytes: bytes.byteLength, mode: "memory" }, source: "memory" };
    }
    const src = await openModelSource(source, opts);
    try {
      const header = await sourceHeader(src, opts);
      let end = 0;
      for (const t of header.tensors) end = Math.max(end, t.offset + t.bytes);
      if (src.size !== undefined && header.dataOffset + end > src.size) {
        throw new TensorShapeError(`the tensors need ${end} bytes after data offset ${header.dataOffset} but ${src.name} has ${src.size - header.dataOffset}`, { tensor: "*", offset: 0, bytes: end });
      }
      const data = new Uint8Array(end);
      for (let o = 0; o < end; o += READ_CHUNK_BYTES) {
        checkAborted(opts.signal);
        const n = Math.min(READ_CHUNK_BYTES, end - o);
        await readExact(src, header.dataOffset + o, data.subarray(o, o + n), opts.signal);
        opts.onProgress?.(header.dataOffset + o + n, src.size);
      }
      return { header, model: build(header, data), weights: { residentBytes: data.byteLength, mode: "stream" }, source: src.name };
    } finally {
      await src.close().catch(() => undefined);
    }
  } catch (err) {
    if (owns) context.device.destroy();
    throw err;
  }
}

/** The window a WebGPU model is built for when no nCtx is given (Session's default window). */
const DEFAULT_GPU_WINDOW = 4096;

async function loadCpuWeights(source: ModelSource, opts: LoadModelOptions): Promise<LoadedWeights<TransformerModel>> {
  checkAborted(opts.signal);
  const modelOpts: ModelBuildOptions = {
    ...(opts.nCtx !== undefined ? { nCtx: opts.nCtx } : {}),
    ...(opts.threads !== undefined ? { threads: opts.threads } : {}),
  };
  if (source instanceof Uint8Array || source instanceof ArrayBuffer) {
    const bytes = source instanceof Uint8Array ? source : new Uint8Array(source);
    const header = await readGgufHeader(bytes);
    header.source = "memory";
    architectureOf(header); // UnsupportedArchitectureError before weights or vocabulary are read
    const model = createModel(header, bytes.subarray(header.dataOffset), modelOpts);
    await model.threadsReady();
    return { header, model, weights: { residentBytes: bytes.byteLength, mode: "memory" }, source: "memory" };
  }
  const src = await openModelSource(source, opts);
  try {
    const header = await sourceHeader(src, opts);
    let loaded = await streamWeights(src, header, wasmTensorsOf(header), modelOpts, opts);
    // The arena could not grow (commit refused): the JS kernels need every tensor resident.
    if (loaded === null) loaded = (await streamWeights(src, header, new Set(), modelOpts, opts))!;
    opts.onProgress?.(src.size ?? header.dataOffset + header.tensorBytes, src.size);
    // The matmul workers up now, not some tokens into the first generation (a browser starts a
    // worker's nested workers only while it is not busy).
    await loaded.model.threadsReady();
    return { header, model: loaded.model, weights: loaded.weights, source: src.name };
  } finally {
    await src.close().catch(() => undefined);
  }
}

/** What loadModel passes on to createModel. */
type ModelBuildOptions = Pick<CreateModelOptions, "nCtx" | "threads">;

/** The tensors whose only copy will be the arena's: the planner's rule (kvboundModelMemory) on this header. */
function wasmTensorsOf(header: GgufHeader): ReadonlySet<string> {
  if (!wasmKernelsAvailable()) return new Set();
  const tensorTypes: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const t of header.tensors) tensorTypes[t.name] = t.type.name;
  const spec = { ...specFromGgufMetadata(header.metadata, { source: header.source }), tensorTypes };
  return kvboundModelMemory(spec)?.wasmTensors ?? new Set();
}

/**
 * Packs every tensor outside `wasmTensors` into one buffer (F32 first, so each stays 4-byte aligned
 * for its Float32Array view), builds the model over it, then streams the wasm tensors into its
 * arena. Null when the model fell back to the JS kernels although tensors were meant for wasm.
 */
async function streamWeights(
  src: ByteSource, header: GgufHeader, wasmTensors: ReadonlySet<string>, modelOpts: ModelBuildOptions, opts: LoadModelOptions,
): Promise<{ model: TransformerModel; weights: ResidentWeights } | null> {
  const size = src.size;
  const offsets = new Map<string, number>();
  let residentBytes = 0;
  for (const f32First of [true, false]) {
    for (const t of header.tensors) {
      if (wasmTensors.has(t.name) || (t.type.name === "F32") !== f32First) continue;
      offsets.set(t.name, residentBytes);
      residentBytes += t.bytes;
    }
  }
  for (const t of header.tensors) {
    if (size !== undefined && header.dataOffset + t.offset + t.bytes > size) {
      throw new TensorShapeError(`tensor ${t.name} needs ${t.bytes} bytes at data offset ${t.offset} but the file has ${Math.max(0, size - header.dataOffset - t.offset)}`, {
        tensor: t.name, offset: t.offset, bytes: t.bytes,
      });
    }
  }
  const resident = new Uint8Array(residentBytes);
  let done = header.dataOffset;
  const progress = (n: number) => {
    done += n;
    opts.onProgress?.(done, size);
  };
  // File order, so a file is read front to back.
  const byOffset = [...header.tensors].sort((a, b) => a.offset - b.offset);
  for (const t of byOffset) {
    const at = offsets.get(t.name);
    if (at === undefined) continue;
    for (let o = 0; o < t.bytes; o += READ_CHUNK_BYTES) {
      checkAborted(opts.signal);
      const n = Math.min(READ_CHUNK_BYTES, t.bytes - o);
      await readExact(src, header.dataOffset + t.offset + o, resident.subarray(at + o, at + o + n), opts.signal);
      progress(n);
    }
  }
  const model = createModel(header, resident, { ...modelOpts, tensorOffsets: offsets });
  if (wasmTensors.size > 0 && model.kernels !== "wasm") return null;
  const byTensor = new Map<string, StreamedMatrix[]>();
  for (const m of model.streamed) {
    const list = byTensor.get(m.tensor);
    if (list === undefined) byTensor.set(m.tensor, [m]);
    else list.push(m);
  }
  // File rows are staged in the arena's activation region (model.loadStaging), at most
  // READ_CHUNK_BYTES a read; it always holds a row (a buffer of our own only if it ever did not).
  let maxRowBytes = 0;
  for (const m of model.streamed) maxRowBytes = Math.max(maxRowBytes, m.rowBytes);
  let staging = model.loadStaging();
  staging = staging.byteLength >= maxRowBytes ? staging.subarray(0, Math.min(staging.byteLength, Math.max(READ_CHUNK_BYTES, maxRowBytes))) : new Uint8Array(maxRowBytes);
  for (const t of byOffset) {
    const parts = byTensor.get(t.name);
    if (parts === undefined) continue;
    const rowBytes = parts[0]!.rowBytes;
    const totalRows = t.bytes / rowBytes;
    const step = Math.max(1, Math.floor(staging.byteLength / rowBytes));
    for (let r = 0; r < totalRows; r += step) {
      checkAborted(opts.signal);
      const k = Math.min(step, totalRows - r);
      const rows = staging.subarray(0, k * rowBytes);
      await readExact(src, header.dataOffset + t.offset + r * rowBytes, rows, opts.signal);
      for (const m of parts) {
        const a = Math.max(r, m.row0), b = Math.min(r + k, m.row0 + m.rows);
        if (a < b) model.fillStreamed(m, rows.subarray((a - r) * rowBytes, (b - r) * rowBytes), a - m.row0);
      }
      progress(k * rowBytes);
    }
  }
  return { model, weights: { residentBytes, mode: "stream" } };
}

/** The GGUF header of an opened source, its architecture known and its size within the limit (typed errors otherwise). */
async function sourceHeader(src: ByteSource, opts: LoadModelOptions): Promise<GgufHeader> {
  const header = await readGgufHeaderFromSource(src, opts.signal ? { signal: opts.signal } : {});
  header.source = src.name;
  architectureOf(header);
  checkSize(src.size ?? header.dataOffset + header.tensorBytes, src.name);
  return header;
}

/** Fills `dst` with the bytes at `offset` (straight into it when the source can: no transient copy). */
async function readExact(src: ByteSource, offset: number, dst: Uint8Array, signal: AbortSignal | undefined): Promise<void> {
  const into = (src as ByteSource & { readInto?: (offset: number, target: Uint8Array) => Promise<number> }).readInto;
  let got = 0;
  if (into !== undefined) got = await into.call(src, offset, dst);
  else {
    while (got < dst.length) {
      const part = await src.read(offset + got, dst.length - got, signal);
      if (part.length === 0) break;
      dst.set(part.subarray(0, dst.length - got), got);
      got += Math.min(part.length, dst.length - got);
    }
  }
  // A file that shrank while being read: the tensors would hold garbage.
  if (got < dst.length) throw new FetchError(`${src.name} ended at byte ${offset + got} while reading ${dst.length} bytes at ${offset}`, { url: src.name });
}

/** The ByteSource for a path, URL, hf: reference or Blob (the caller closes it). */
async function openModelSource(source: string | URL | Blob, opts: LoadModelOptions): Promise<ByteSource> {
  if (typeof Blob !== "undefined" && source instanceof Blob) {
    checkSize(source.size, "blob");
    return blobSource(source);
  }
  const ref = String(source);
  if (/^file:/i.test(ref)) return openFile(ref);
  const resolveOpts: ResolveModelRefOptions = {
    ...opts.resolve,
    ...(opts.fetch ? { fetch: opts.fetch } : {}),
    ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
    ...(opts.signal ? { signal: opts.signal } : {}),
    ...(opts.cacheDir ? { cacheDir: opts.cacheDir } : {}),
  };
  const resolved = await resolveModelRef(ref, resolveOpts);
  switch (resolved.kind) {
    case "file":
      return openFile(resolved.path);
    case "url":
      return httpSource(resolved.url, { ...(opts.fetch ? { fetch: opts.fetch } : {}), ...(opts.signal ? { signal: opts.signal } : {}) });
    default:
      return resolved satisfies never;
  }
}

async function openFile(path: string): Promise<ByteSource> {
  const { fileSource } = await import("../gguf/readers/fs.js");
  return fileSource(/^file:/i.test(path) ? new URL(path) : path);
}

function checkSize(size: number, name: string): void {
  if (size > MAX_MODEL_BYTES) {
    throw new GgufLimitError(`${name} is ${size} bytes, more than kvbound reads into memory (${MAX_MODEL_BYTES}); use a smaller quantization`, {
      field: "fileBytes",
      limit: "MAX_MODEL_BYTES",
      value: size,
      max: MAX_MODEL_BYTES,
    });
  }
}

function checkAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new AbortError("loading the model was aborted");
}
