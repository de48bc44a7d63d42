// Loads a runnable model from a path, an http(s) URL, `hf:owner/repo/file.gguf`, a Blob or bytes:
// the file is read once into ONE ArrayBuffer (preallocated from its size), the header is parsed
// from it, and every tensor is a view into it (no second full copy). Browser-safe: the file reader
// and the hf: downloader are imported only when a path or hf: reference is given.

import { AbortError, FetchError, GgufLimitError } from "../errors.js";
import { readGgufHeader, type GgufHeader } from "../gguf/header.js";
import { architectureOf, createModel } from "../model/architectures.js";
import type { CausalLM } from "../model/causal-lm.js";
import { resolveModelRef, type ResolveModelRefOptions } from "../model/model-ref.js";
import { createTokenizer, tokenizerSettings, type Tokenizer, type TokenizerSettings } from "../model/tokenizer/index.js";

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
}

export interface LoadedModel {
  readonly header: GgufHeader;
  readonly model: CausalLM;
  readonly tokenizer: Tokenizer;
  readonly settings: TokenizerSettings;
  /** The one buffer the file lives in (tensors are views into it). */
  readonly bytes: Uint8Array;
  /** Where it came from: a path, a URL, "blob" or "memory". */
  readonly source: string;
}

/**
 * Largest model file read into memory: 16 GiB. V8's ArrayBuffer limit on 64-bit hosts is near
 * this, and a Content-Length beyond it is more likely a hostile header than a model to run.
 */
export const MAX_MODEL_BYTES = 16 * 1024 ** 3;
/** Bytes per read from a file: bounds the transient buffer and gives progress steps. */
export const FILE_READ_CHUNK_BYTES = 64 * 1024 * 1024;

/**
 * Reads a model and builds its forward pass and tokenizer. Throws UnknownModelError (no such
 * file), FetchError, GgufParseError / GgufLimitError, UnsupportedArchitectureError (checked before
 * any weight is touched), TensorShapeError / UnsupportedTensorTypeError (naming the tensor),
 * UnsupportedTokenizerError, AbortError.
 */
export async function loadModel(source: ModelSource, opts: LoadModelOptions = {}): Promise<LoadedModel> {
  const { bytes, name } = await readModelBytes(source, opts);
  const header = await readGgufHeader(bytes);
  header.source = name;
  architectureOf(header); // UnsupportedArchitectureError before weights or vocabulary are read
  const model = createModel(header, bytes.subarray(header.dataOffset), opts.nCtx !== undefined ? { nCtx: opts.nCtx } : {});
  const tokenizer = createTokenizer(header.metadata);
  const settings = tokenizerSettings(header.metadata);
  return { header, model, tokenizer, settings, bytes, source: name };
}

/** The whole file in one buffer. */
export async function readModelBytes(source: ModelSource, opts: LoadModelOptions = {}): Promise<{ bytes: Uint8Array; name: string }> {
  checkAborted(opts.signal);
  if (source instanceof Uint8Array) return { bytes: source, name: "memory" };
  if (source instanceof ArrayBuffer) return { bytes: new Uint8Array(source), name: "memory" };
  if (typeof Blob !== "undefined" && source instanceof Blob) {
    checkSize(source.size, "blob");
    const buf = await source.arrayBuffer();
    opts.onProgress?.(buf.byteLength, buf.byteLength);
    return { bytes: new Uint8Array(buf), name: "blob" };
  }
  const ref = String(source);
  if (/^file:/i.test(ref)) return readFile(ref, opts);
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
      return readFile(resolved.path, opts);
    case "url":
      return { bytes: await fetchIntoBuffer(resolved.url, opts), name: resolved.url };
    default:
      return resolved satisfies never;
  }
}

async function readFile(path: string, opts: LoadModelOptions): Promise<{ bytes: Uint8Array; name: string }> {
  const { fileSource } = await import("../gguf/readers/fs.js");
  const src = await fileSource(/^file:/i.test(path) ? new URL(path) : path);
  try {
    const size = src.size ?? 0;
    checkSize(size, src.name);
    const out = new Uint8Array(size);
    let done = 0;
    while (done < size) {
      checkAborted(opts.signal);
      // Straight into the one buffer: a chunk copy would leave its freed bytes in the process's
      // resident set (malloc keeps them), which the memory plan does not count.
      const n = await src.readInto(done, out.subarray(done, done + Math.min(FILE_READ_CHUNK_BYTES, size - done)));
      if (n === 0) break;
      done += n;
      opts.onProgress?.(done, size);
    }
    // A file that shrank while being read: the header/tensor checks would report garbage offsets.
    if (done < size) throw new FetchError(`${src.name} ended after ${done} of ${size} bytes while being read`, { url: src.name });
    return { bytes: out, name: src.name };
  } finally {
    await src.close().catch(() => undefined);
  }
}

/**
 * Streams a URL into a buffer of its Content-Length (grown by doubling when the server sends
 * none), reporting progress per chunk.
 */
export async function fetchIntoBuffer(url: string, opts: LoadModelOptions = {}): Promise<Uint8Array> {
  const doFetch = opts.fetch ?? globalThis.fetch;
  let res: Response;
  try {
    res = await doFetch(url, opts.signal ? { signal: opts.signal } : {});
  } catch (err) {
    if (opts.signal?.aborted) throw new AbortError(`downloading ${url} was aborted`);
    throw new FetchError(`cannot fetch ${url}: ${err instanceof Error ? err.message : String(err)}`, { url });
  }
  if (!res.ok) throw new FetchError(`${url} answered HTTP ${res.status}; check the URL (and a token for gated repos)`, { url, status: res.status });
  const lenHeader = res.headers.get("content-length");
  const declared = lenHeader !== null && /^\d+$/.test(lenHeader.trim()) ? Number(lenHeader) : undefined;
  if (declared !== undefined) checkSize(declared, url);
  let buf = new Uint8Array(declared ?? 1024 * 1024);
  let done = 0;
  if (res.body === null) throw new FetchError(`${url} answered without a body`, { url });
  const reader = res.body.getReader();
  try {
    for (;;) {
      let r: ReadableStreamReadResult<Uint8Array>;
      try {
        r = await reader.read();
      } catch (err) {
        if (opts.signal?.aborted) throw new AbortError(`downloading ${url} was aborted`);
        throw new FetchError(`reading ${url} failed after ${done} bytes: ${err instanceof Error ? err.message : String(err)}`, { url });
      }
      if (r.done) break;
      const chunk = r.value;
      if (done + chunk.length > buf.length) {
        if (declared !== undefined) {
          throw new FetchError(`${url} sent more than its Content-Length ${declared}`, { url, status: res.status });
        }
        checkSize(done + chunk.length, url);
        const grown = new Uint8Array(Math.min(MAX_MODEL_BYTES, Math.max(buf.length * 2, done + chunk.length)));
        grown.set(buf.subarray(0, done));
        buf = grown;
      }
      buf.set(chunk, done);
      done += chunk.length;
      opts.onProgress?.(done, declared);
    }
  } finally {
    reader.releaseLock();
  }
  if (declared !== undefined && done !== declared) {
    throw new FetchError(`${url} ended after ${done} of ${declared} bytes; retry the download`, { url, status: res.status });
  }
  return declared !== undefined ? buf : buf.subarray(0, done);
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
