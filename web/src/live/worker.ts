// The live page's engine: a module Web Worker that owns the loaded model and one Session per
// generation, streams text and cache samples to the page in batches, and stops on request (an
// AbortController the session's generate watches). Errors go back as `{ name, code, message,
// details }`, never as err.toString(), so the page can show the typed error that was thrown.

import { pinnedTokens } from "../../../src/cache/config.js";
import { describePolicy } from "./policy-form.js";
import { loadModel, type LoadedModel } from "../../../src/engine/load-model.js";
import { asyncForwardOf, type Backend } from "../../../src/model/async-forward.js";
import { Session } from "../../../src/engine/session.js";
import { InvalidSettingError, KvboundError, type SerializedKvboundError } from "../../../src/errors.js";
import { readGgufHeader, type GgufHeader } from "../../../src/gguf/header.js";
import type { CacheMap, CacheSummary, FromWorker, GenerateRequest, ModelFacts, ModelInput, ToWorker } from "./protocol.js";
import { fillRoles } from "./roles.js";

/** Batch interval: the page redraws about 20 times a second, and the hot loop posts nothing in between. */
export const FLUSH_INTERVAL_MS = 50;
/** Vocabulary entries shown from a header (enough to recognise a tokenizer, bounded for hostile files). */
const TOKEN_PREVIEW_COUNT = 8;
/** Characters of a chat template shown (a hostile template can be megabytes). */
const TEMPLATE_PREVIEW_CHARS = 2000;
/** Progress messages at most this often while downloading. */
const PROGRESS_INTERVAL_MS = 100;

interface WorkerScope {
  postMessage(message: FromWorker, transfer?: Transferable[]): void;
  onmessage: ((ev: MessageEvent<ToWorker>) => void) | null;
  location: { href: string };
}
const scope = self as unknown as WorkerScope;

let loaded: LoadedModel | null = null;
let running: AbortController | null = null;
let loadSeq = 0;

function post(message: FromWorker, transfer: Transferable[] = []): void {
  scope.postMessage(message, transfer);
}

/** What crosses the boundary for any thrown value: a KvboundError's own JSON, or the same shape. */
export function serializeError(err: unknown): SerializedKvboundError {
  if (err instanceof KvboundError) return err.toJSON();
  if (err instanceof Error) return { name: err.name, code: "INTERNAL", message: err.message, details: {} };
  return { name: "Error", code: "INTERNAL", message: String(err), details: {} };
}

function str(v: unknown): string | undefined {
  return typeof v === "string" ? v : undefined;
}

function factsOf(header: GgufHeader, source: string, fileBytes: number): ModelFacts {
  const meta = header.metadata;
  const raw = meta["tokenizer.ggml.tokens"];
  const tokens: string[] = [];
  let tokenCount = 0;
  if (Array.isArray(raw)) {
    tokenCount = raw.length;
    for (let i = 0; i < raw.length && tokens.length < TOKEN_PREVIEW_COUNT; i++) {
      const t = raw[i];
      if (typeof t === "string") tokens.push(t);
    }
  }
  const template = str(meta["tokenizer.chat_template"]);
  return {
    source,
    fileBytes,
    name: str(meta["general.name"]),
    architecture: str(meta["general.architecture"]),
    chatTemplate: template === undefined ? undefined : template.slice(0, TEMPLATE_PREVIEW_CHARS),
    tokenCount,
    tokens,
    tensorCount: header.tensors.length,
  };
}

async function load(input: ModelInput, threads: number | undefined, backend: Backend | undefined): Promise<void> {
  const seq = ++loadSeq;
  running?.abort();
  loaded?.model.dispose(); // its matmul workers
  loaded = null;
  let lastProgress = 0;
  const onProgress = (doneBytes: number, totalBytes: number | undefined): void => {
    const t = performance.now();
    if (t - lastProgress < PROGRESS_INTERVAL_MS && doneBytes !== totalBytes) return;
    lastProgress = t;
    post({ type: "progress", doneBytes, totalBytes });
  };
  let source: string;
  let from: string | Blob;
  if (input.kind === "url") {
    // The page sends absolute URLs (resolved against itself); anything else resolves against the worker.
    let url: URL;
    try {
      url = new URL(input.url.trim(), scope.location.href);
    } catch {
      throw new InvalidSettingError(`model URL ${JSON.stringify(input.url)} is not a URL; give an http(s) URL or pick a file`, { setting: "url", value: input.url });
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new InvalidSettingError(`model URL ${url.href} is not http(s); give an http(s) URL or pick a file`, { setting: "url", value: input.url });
    }
    source = url.href;
    from = url.href;
  } else {
    source = input.file.name;
    from = input.file;
  }
  if (seq !== loadSeq) return;
  // The header first (a range read), so its facts (as text) are on screen even when the weights
  // are refused; then the weights stream once into the model (loadModel holds each tensor once).
  const header = await readGgufHeader(from);
  post({ type: "facts", facts: factsOf(header, source, header.fileBytes ?? header.dataOffset + header.tensorBytes) });
  // WebGPU: the worker's navigator.gpu (no adapter: WebGpuUnavailableError, shown by name).
  const model = await loadModel(from, { onProgress, ...(threads !== undefined ? { threads } : {}), ...(backend !== undefined ? { backend } : {}) });
  if (seq !== loadSeq) {
    model.model.dispose(); // superseded while it loaded
    return;
  }
  loaded = model;
  const hp = model.model.hp;
  const gpu = asyncForwardOf(model.model);
  const adapter = gpu === null ? "" : ((gpu as { context?: { description?: string } }).context?.description ?? "");
  post({
    type: "loaded", nLayer: hp.nLayer, nVocab: hp.nVocab, nCtxTrain: hp.nCtxTrain, threads: model.model.threads, threadsNote: model.model.threadsNote,
    backend: gpu === null ? "cpu" : gpu.backend, adapter,
  });
  if (model.model.threadsNote !== null) console.info(`kvbound: ${model.model.threads} thread(s): ${model.model.threadsNote}`);
}

function mapOf(session: Session, roles: Uint8Array): CacheMap {
  const cache = session.cache;
  fillRoles(roles, cache.config.pageSize, cache.config.policy, cache.runsOf(session.seqId), cache.length(session.seqId), (p) => cache.pageRefCount(p));
  return { roles: roles.slice(), pagesUsed: cache.stats().pagesUsed };
}

async function generate(req: GenerateRequest): Promise<void> {
  if (loaded === null) throw new InvalidSettingError("no model is loaded; pick a GGUF file or load one from a URL first", { setting: "model", value: null });
  running?.abort();
  const session = new Session(loaded, req.cache);
  const ac = new AbortController();
  running = ac;
  const cache = session.cache;
  const stats = cache.stats();
  const summary: CacheSummary = {
    policy: describePolicy(cache.config.policy),
    codec: cache.config.codec,
    windowTokens: cache.config.windowTokens,
    pinned: pinnedTokens(cache.config.policy),
    pageSize: cache.config.pageSize,
    pagesTotal: stats.pagesTotal,
    bytesReserved: stats.bytesReserved,
    bytesPerPage: cache.layout.bytesPerPage,
  };
  const promptIds = session.encode(req.prompt);
  post({ type: "started", cache: summary, promptTokens: promptIds.length });
  const roles = new Uint8Array(summary.pagesTotal * summary.pageSize);

  let text = "";
  let index: number[] = [];
  let bytes: number[] = [];
  let held: number[] = [];
  let evicted: number[] = [];
  let emitted = 0;
  let tFirst = 0;
  let lastFlush = performance.now();
  const flush = (): void => {
    const samples = { index: Int32Array.from(index), bytes: Float64Array.from(bytes), held: Int32Array.from(held), evicted: Float64Array.from(evicted) };
    const map = mapOf(session, roles);
    const elapsed = performance.now() - tFirst;
    const tokensPerSecond = emitted > 1 && elapsed > 0 ? ((emitted - 1) * 1000) / elapsed : 0;
    post({ type: "tokens", text, samples, map, tokensPerSecond }, [samples.index.buffer, samples.bytes.buffer, samples.held.buffer, samples.evicted.buffer, map.roles.buffer]);
    text = "";
    index = [];
    bytes = [];
    held = [];
    evicted = [];
    lastFlush = performance.now();
  };

  try {
    const gen = session.generate(promptIds, {
      maxTokens: req.maxTokens,
      temperature: req.temperature,
      ignoreEos: req.ignoreEos,
      signal: ac.signal,
      ...(req.seed !== undefined ? { seed: req.seed } : {}),
    });
    for await (const ev of gen) {
      if (ev.type === "token") {
        if (emitted === 0) tFirst = performance.now();
        emitted++;
        text += ev.text;
        index.push(ev.index);
        bytes.push(ev.stats.cacheBytes);
        held.push(ev.stats.tokensHeld);
        evicted.push(ev.stats.evictions);
        if (performance.now() - lastFlush >= FLUSH_INTERVAL_MS) flush();
        continue;
      }
      text += ev.remainder;
      flush();
      const n = ev.ids.length;
      post({
        type: "done",
        finishReason: ev.finishReason,
        lengthCause: ev.lengthCause,
        text: ev.text,
        tokens: n,
        promptTokens: ev.promptTokens,
        prefillMs: ev.prefillMs,
        decodeMs: ev.decodeMs,
        // The figure `kvbound run` prints: emitted tokens over the decode time.
        decodeTokensPerSecond: ev.decodeMs > 0 ? (n * 1000) / ev.decodeMs : 0,
        map: mapOf(session, roles),
      });
    }
  } finally {
    if (running === ac) running = null;
  }
}

scope.onmessage = (ev: MessageEvent<ToWorker>): void => {
  const msg = ev.data;
  switch (msg.type) {
    case "load":
      load(msg.input, msg.threads, msg.backend).catch((err: unknown) => post({ type: "error", error: serializeError(err), during: "load" }));
      return;
    case "generate":
      generate(msg.request).catch((err: unknown) => post({ type: "error", error: serializeError(err), during: "generate" }));
      return;
    case "stop":
      running?.abort();
      return;
    default:
      msg satisfies never;
  }
};
