// The OpenAI-compatible HTTP API over one loaded model (`kvbound serve --model M`): request parsing
// and validation, N slots (Sessions) sharing one paged KV pool, the bounded wait queue, a scheduler
// that interleaves decode steps one token per running request, SSE streaming and usage. It takes
// node:http's request and response objects by type only; `cli/commands/serve.ts` listens.
//
// Slots: each slot is a Session on sequence `seqId` of the shared cache. A request goes to an idle
// slot whose conversation it continues (its messages, the reply, then new ones: only the new
// messages are prefilled), else to the least recently used idle slot, which first forks (copy-on-
// write) the idle sequence sharing the longest token prefix with the request (a system prompt), if
// that is longer than what the slot holds itself. An idle slot keeps its conversation's pages for
// the next turn; an aborted or failed request's slot is cleared (its pages go back to the pool).

import type { IncomingMessage, ServerResponse } from "node:http";

import { resolveCacheConfig, type CacheConfig, type CacheConfigInput } from "../cache/config.js";
import type { PagedKvCache } from "../cache/paged-kv-cache.js";
import {
  CacheExhaustedError,
  ChatTemplateError,
  ContextWindowSizeExceededError,
  InvalidRequestError,
  InvalidSettingError,
  KvboundError,
  RequestTooLargeError,
  ServerBusyError,
  UnknownRouteError,
  type ErrorDetails,
} from "../errors.js";
import type { ChatMessage } from "../model/chat-template.js";
import { asyncForwardOf, createSessionCache } from "../model/async-forward.js";
import { StopMatcher, resolveMaxTokens, yieldToEventLoop, type DoneEvent, type FinishReason, type GenerateEvent, type GenerateOptions } from "./generate.js";
import type { LoadedModel } from "./load-model.js";
import { resolveSamplerSettings, type SamplerSettings } from "./sampler.js";
import { Session, withDefaultWindow } from "./session.js";

// Named limits on what a client may send, with the reason.
/** A request body is JSON held whole in memory while parsed: 8 MiB is ~2M tokens of text, past any context window. */
export const MAX_REQUEST_BODY_BYTES = 8 * 1024 * 1024;
/** max_tokens per request: a request is a slot held until it ends; more is likelier a typo than a wish (continue the conversation instead). */
export const MAX_REQUEST_MAX_TOKENS = 65536;
/** Bytes of SSE a client may leave unread before it counts as gone (a client that stopped reading holds a slot). */
export const MAX_UNSENT_STREAM_BYTES = 1024 * 1024;
/** Slots per server: each is a sequence of the pool with its own window of pages. */
export const MAX_PARALLEL = 256;
/** Requests waiting for a slot at most (each holds its parsed body and a socket). */
export const MAX_QUEUE = 4096;

export const DEFAULT_PARALLEL = 1;
export const DEFAULT_MAX_QUEUE = 16;
export const DEFAULT_QUEUE_TIMEOUT_MS = 30_000;

/** The OpenAI error body, plus kvbound's error name and details so a client can rebuild the typed error. */
export interface ApiErrorBody {
  readonly error: {
    readonly message: string;
    readonly type: "invalid_request_error" | "unavailable_error" | "not_found_error" | "server_error";
    readonly code: string;
    readonly param: string | null;
    readonly name: string;
    readonly details: ErrorDetails;
  };
}

/** Library setting names as the API spells them (InvalidSettingError.details.setting -> param). */
const PARAM_OF_SETTING: Readonly<Record<string, string>> = {
  temperature: "temperature",
  topK: "top_k",
  topP: "top_p",
  minP: "min_p",
  repeatPenalty: "repeat_penalty",
  penaltyLastN: "repeat_last_n",
  presencePenalty: "presence_penalty",
  frequencyPenalty: "frequency_penalty",
  seed: "seed",
  stop: "stop",
  maxTokens: "max_tokens",
};

/** The HTTP status and OpenAI error type of a failure. */
export function statusOf(err: unknown): { status: number; type: ApiErrorBody["error"]["type"] } {
  if (err instanceof InvalidRequestError || err instanceof InvalidSettingError || err instanceof ContextWindowSizeExceededError || err instanceof ChatTemplateError) {
    return { status: 400, type: "invalid_request_error" };
  }
  if (err instanceof RequestTooLargeError) return { status: 413, type: "invalid_request_error" };
  if (err instanceof ServerBusyError || err instanceof CacheExhaustedError) return { status: 503, type: "unavailable_error" };
  if (err instanceof UnknownRouteError) return { status: err.details.allowed === undefined ? 404 : 405, type: "not_found_error" };
  return { status: 500, type: "server_error" };
}

/** The body a failure is answered with (an untyped error says nothing of its internals). */
export function errorBody(err: unknown): ApiErrorBody {
  const { type } = statusOf(err);
  if (!(err instanceof KvboundError)) {
    return { error: { message: "internal error", type, code: "INTERNAL", param: null, name: "Error", details: {} } };
  }
  const d = err.details;
  const param = typeof d.param === "string" ? d.param : typeof d.setting === "string" ? (PARAM_OF_SETTING[d.setting] ?? d.setting) : null;
  return { error: { message: err.message, type, code: err.code, param, name: err.name, details: d } };
}

// ---------------------------------------------------------------------------------------------
// Requests

/** One chat or completion request, validated. */
export interface ParsedRequest {
  readonly kind: "chat" | "completion";
  /** chat: the history, roles normalized (developer -> system). */
  readonly messages: readonly ChatMessage[] | null;
  /** completion: the prompt as given (text), for echo. */
  readonly promptText: string | null;
  /** completion: token ids given instead of text. */
  readonly promptIds: readonly number[] | null;
  readonly stream: boolean;
  readonly includeUsage: boolean;
  readonly echo: boolean;
  /** llama.cpp server's ignore_eos: sample on past end-of-generation tokens (benchmarks). */
  readonly ignoreEos: boolean;
  readonly maxTokens: number;
  readonly stop: readonly string[];
  readonly sampling: SamplerSettings;
}

type JsonObject = Record<string, unknown>;

function invalid(param: string | null, message: string): InvalidRequestError {
  return new InvalidRequestError(message, { param });
}

function isObject(v: unknown): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** A field that may be absent or null (the OpenAI clients send null for "not set"). */
function opt<T>(body: JsonObject, key: string, check: (v: unknown) => v is T, what: string): T | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (!check(v)) throw invalid(key, `${key} must be ${what}, got ${JSON.stringify(v)?.slice(0, 80) ?? typeof v}`);
  return v;
}

const isNumber = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);
const isInt = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v);
const isBool = (v: unknown): v is boolean => typeof v === "boolean";
const isString = (v: unknown): v is string => typeof v === "string";

/** Message content: a string, or text parts (`[{ type: "text", text }]`), joined. */
function messageContent(v: unknown, at: string): string {
  if (typeof v === "string") return v;
  if (Array.isArray(v)) {
    let text = "";
    for (let i = 0; i < v.length; i++) {
      const part: unknown = v[i];
      if (!isObject(part) || part.type !== "text" || typeof part.text !== "string") {
        throw invalid(`${at}[${i}]`, `${at}[${i}] must be a text part { "type": "text", "text": "..." }; this server runs a text-only model`);
      }
      text += part.text;
    }
    return text;
  }
  throw invalid(at, `${at} must be a string or an array of text parts`);
}

const ROLES: Readonly<Record<string, string>> = { system: "system", developer: "system", user: "user", assistant: "assistant" };

function parseMessages(v: unknown): ChatMessage[] {
  if (!Array.isArray(v) || v.length === 0) throw invalid("messages", "messages must be a non-empty array of { role, content }");
  const out: ChatMessage[] = [];
  for (let i = 0; i < v.length; i++) {
    const m: unknown = v[i];
    const at = `messages[${i}]`;
    if (!isObject(m)) throw invalid(at, `${at} must be an object { role, content }`);
    const role = typeof m.role === "string" ? ROLES[m.role] : undefined;
    if (role === undefined) {
      throw invalid(`${at}.role`, `${at}.role ${JSON.stringify(m.role)} is not supported: use system, developer, user or assistant (no tools on this server)`);
    }
    if (m.tool_calls !== undefined && m.tool_calls !== null) throw invalid(`${at}.tool_calls`, "tool calls are not supported by this server");
    out.push({ role, content: messageContent(m.content, `${at}.content`) });
  }
  return out;
}

function parseStop(body: JsonObject): string[] {
  const v = body.stop;
  if (v === undefined || v === null) return [];
  if (typeof v === "string") return [v];
  if (Array.isArray(v) && v.every((s) => typeof s === "string")) return v as string[];
  throw invalid("stop", "stop must be a string or an array of strings");
}

/** Fields this server cannot honour: refused rather than ignored, so a client does not get silently different output. */
function refuseUnsupported(body: JsonObject, kind: "chat" | "completion"): void {
  const n = opt(body, "n", isInt, "an integer");
  if (n !== undefined && n !== 1) throw invalid("n", `n ${n} is not supported: this server returns one choice (n = 1)`);
  if (kind === "chat") {
    const logprobs = opt(body, "logprobs", isBool, "a boolean");
    if (logprobs === true) throw invalid("logprobs", "logprobs are not supported by this server");
    const tools = body.tools;
    if (tools !== undefined && tools !== null && !(Array.isArray(tools) && tools.length === 0)) throw invalid("tools", "tools are not supported by this server");
    const rf = body.response_format;
    if (rf !== undefined && rf !== null && !(isObject(rf) && rf.type === "text")) {
      throw invalid("response_format", 'response_format other than { "type": "text" } is not supported by this server');
    }
  } else {
    const bestOf = opt(body, "best_of", isInt, "an integer");
    if (bestOf !== undefined && bestOf !== 1) throw invalid("best_of", `best_of ${bestOf} is not supported: use 1`);
    if (body.logprobs !== undefined && body.logprobs !== null) throw invalid("logprobs", "logprobs are not supported by this server");
    const suffix = opt(body, "suffix", isString, "a string");
    if (suffix !== undefined && suffix !== "") throw invalid("suffix", "suffix (fill in the middle) is not supported by this server");
  }
}

/** Defaults the server applies where a request sets nothing (the CLI's sampling flags, --max-tokens). */
export interface RequestDefaults extends SamplerSettings {
  readonly maxTokens?: number;
}

/**
 * Validates a request body (the parsed JSON) for `kind`; throws InvalidRequestError (a field of the
 * wrong type, an unsupported feature) or InvalidSettingError (a value out of range), both HTTP 400.
 * Unknown fields are ignored, as OpenAI clients send fields of newer API versions.
 */
export function parseRequest(kind: "chat" | "completion", json: unknown, defaults: RequestDefaults = {}, nVocab = Infinity): ParsedRequest {
  if (!isObject(json)) throw invalid(null, "the request body must be a JSON object");
  const body = json;
  opt(body, "model", isString, "a string");
  refuseUnsupported(body, kind);
  let messages: ChatMessage[] | null = null;
  let promptText: string | null = null;
  let promptIds: number[] | null = null;
  if (kind === "chat") messages = parseMessages(body.messages);
  else {
    const p = body.prompt;
    const one = Array.isArray(p) && p.length === 1 && (typeof p[0] === "string" || Array.isArray(p[0])) ? p[0] : p;
    if (typeof one === "string") promptText = one;
    else if (Array.isArray(one) && one.length > 0 && one.every(isInt)) {
      for (const id of one as number[]) {
        if (id < 0 || id >= nVocab) throw invalid("prompt", `prompt token id ${id} is outside the vocabulary 0..${nVocab - 1}`);
      }
      promptIds = one as number[];
    } else throw invalid("prompt", "prompt must be a string, or a non-empty array of token ids (one prompt per request)");
  }
  const stream = opt(body, "stream", isBool, "a boolean") ?? false;
  const so = body.stream_options;
  if (so !== undefined && so !== null && !isObject(so)) throw invalid("stream_options", "stream_options must be an object");
  const includeUsage = isObject(so) ? (opt(so, "include_usage", isBool, "a boolean") ?? false) : false;
  const echo = kind === "completion" ? (opt(body, "echo", isBool, "a boolean") ?? false) : false;
  const ignoreEos = opt(body, "ignore_eos", isBool, "a boolean") ?? false;
  const maxTokensIn = opt(body, "max_completion_tokens", isInt, "an integer") ?? opt(body, "max_tokens", isInt, "an integer");
  if (maxTokensIn !== undefined && (maxTokensIn < 0 || maxTokensIn > MAX_REQUEST_MAX_TOKENS)) {
    throw invalid(body.max_completion_tokens !== undefined && body.max_completion_tokens !== null ? "max_completion_tokens" : "max_tokens", `max_tokens ${maxTokensIn} is invalid: use 0..${MAX_REQUEST_MAX_TOKENS}`);
  }
  const maxTokens = resolveMaxTokens(maxTokensIn ?? defaults.maxTokens);
  const stop = parseStop(body);
  new StopMatcher(stop); // validates count and lengths (InvalidSettingError)

  const s: { -readonly [K in keyof SamplerSettings]: SamplerSettings[K] } = {};
  const num = (key: string) => opt(body, key, isNumber, "a number");
  const int = (key: string) => opt(body, key, isInt, "an integer");
  const temperature = num("temperature") ?? defaults.temperature;
  if (temperature !== undefined) s.temperature = temperature;
  const topP = num("top_p") ?? defaults.topP;
  if (topP !== undefined) s.topP = topP;
  const topK = int("top_k") ?? defaults.topK;
  if (topK !== undefined) s.topK = topK;
  const minP = num("min_p") ?? defaults.minP;
  if (minP !== undefined) s.minP = minP;
  const repeatPenalty = num("repeat_penalty") ?? defaults.repeatPenalty;
  if (repeatPenalty !== undefined) s.repeatPenalty = repeatPenalty;
  const lastN = int("repeat_last_n") ?? defaults.penaltyLastN;
  if (lastN !== undefined) s.penaltyLastN = lastN;
  const presence = num("presence_penalty") ?? defaults.presencePenalty;
  if (presence !== undefined) s.presencePenalty = presence;
  const frequency = num("frequency_penalty") ?? defaults.frequencyPenalty;
  if (frequency !== undefined) s.frequencyPenalty = frequency;
  // llama.cpp's -1 = a random seed.
  const seedIn = int("seed");
  const seed = seedIn === -1 ? undefined : (seedIn ?? defaults.seed);
  if (seed !== undefined) s.seed = seed;
  resolveSamplerSettings(s); // range checks (InvalidSettingError)
  return { kind, messages, promptText, promptIds, stream, includeUsage, echo, ignoreEos, maxTokens, stop, sampling: s };
}

// ---------------------------------------------------------------------------------------------
// Slots and jobs

interface Slot {
  readonly session: Session;
  /** The running request, or null when idle. */
  job: Job | null;
  /** Logical clock of the last start (least recently used = smallest). */
  lastUsed: number;
  /** The conversation the session holds (messages + the reply), for continuation; null when none. */
  history: readonly ChatMessage[] | null;
}

interface Job {
  readonly id: string;
  readonly req: ParsedRequest;
  /** The ids a fresh render of the request would prefill (slot choice, page estimate, window check). */
  readonly promptIds: readonly number[];
  readonly res: ServerResponse;
  readonly abort: AbortController;
  readonly created: number;
  readonly enqueuedAt: number;
  state: "queued" | "running" | "finished";
  slot: Slot | null;
  gen: AsyncGenerator<GenerateEvent, DoneEvent, undefined> | null;
  timer: ReturnType<typeof setTimeout> | null;
  /** SSE headers sent (streaming starts with the first event, so errors before it keep their status). */
  started: boolean;
}

interface SlotChoice {
  readonly slot: Slot;
  /** Idle slot whose sequence the chosen one forks first (a shared prefix), or null. */
  readonly source: Slot | null;
  /** Prompt tokens expected to be found in the cache. */
  readonly reuse: number;
  readonly continues: boolean;
}

export interface OpenAiServerOptions {
  /** The cache each conversation gets (its window, policy, codec, page size, budget for the whole pool). */
  readonly cache?: CacheConfigInput;
  /** Conversations served at once, each in its own sequence of the one pool. Default 1. */
  readonly parallel?: number;
  /** Requests that may wait for a slot; more get 503. Default 16. */
  readonly maxQueue?: number;
  /** How long a request may wait for a slot (or pages) before it gets 503. Default 30 s. */
  readonly queueTimeoutMs?: number;
  readonly maxBodyBytes?: number;
  /** The model id the API reports (default: from the model's source). */
  readonly modelId?: string;
  /** Sampling and max_tokens where a request sets none (max_tokens default: the cache window). */
  readonly defaults?: RequestDefaults;
  /** Serves what is not the API (the web pages); default a JSON 404. */
  readonly fallback?: (req: IncomingMessage, res: ServerResponse) => void;
}

/** What GET /health answers. */
export interface ServerHealth {
  readonly status: "ok";
  readonly model: string;
  readonly slots: { readonly total: number; readonly busy: number; readonly idle: number };
  readonly queue: { readonly waiting: number; readonly max: number; readonly timeoutMs: number };
  /** The shared pool, summed over layer groups. */
  readonly pages: { readonly total: number; readonly used: number; readonly free: number; readonly pageSize: number };
  readonly sequences: number;
  readonly tokens: number;
  readonly bytes: { readonly used: number; readonly reserved: number };
  readonly windowTokens: number;
  readonly evictedTokens: number;
  readonly copyOnWritePages: number;
  readonly requests: { readonly completed: number; readonly aborted: number; readonly failed: number; readonly rejected: number };
}

const JSON_HEADERS = { "Content-Type": "application/json; charset=utf-8", "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store" };
const SSE_HEADERS = { "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Content-Type-Options": "nosniff" };

const utf8 = new TextEncoder();

function sendJson(res: ServerResponse, status: number, body: unknown, extra: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) return;
  const bytes = utf8.encode(JSON.stringify(body));
  res.writeHead(status, { ...JSON_HEADERS, "Content-Length": String(bytes.length), ...extra });
  res.end(bytes);
}

function sendError(res: ServerResponse, err: unknown, extra: Record<string, string> = {}): void {
  sendJson(res, statusOf(err).status, errorBody(err), extra);
}

function commonPrefix(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

/** Whether `messages` continue `history` (all of it, then at least one message), as Session.chat decides. */
function continues(history: readonly ChatMessage[] | null, messages: readonly ChatMessage[]): boolean {
  if (history === null || history.length === 0 || messages.length <= history.length) return false;
  for (let i = 0; i < history.length; i++) {
    if (history[i]!.role !== messages[i]!.role || history[i]!.content !== messages[i]!.content) return false;
  }
  return true;
}

function finishReasonOf(r: FinishReason): "stop" | "length" {
  return r === "length" ? "length" : "stop";
}

function readBody(req: IncomingMessage, maxBytes: number): Promise<string> {
  return new Promise((ok, fail) => {
    const declared = Number(req.headers["content-length"]);
    if (Number.isFinite(declared) && declared > maxBytes) {
      fail(new RequestTooLargeError(declared, maxBytes));
      return;
    }
    const chunks: Uint8Array[] = [];
    let n = 0;
    let settled = false;
    req.on("data", (c: Uint8Array) => {
      if (settled) return;
      n += c.length;
      if (n > maxBytes) {
        settled = true;
        fail(new RequestTooLargeError(n, maxBytes));
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => {
      if (settled) return;
      settled = true;
      const all = new Uint8Array(n);
      let off = 0;
      for (const c of chunks) {
        all.set(c, off);
        off += c.length;
      }
      try {
        ok(new TextDecoder("utf-8", { fatal: true }).decode(all));
      } catch {
        fail(invalid(null, "the request body is not valid UTF-8"));
      }
    });
    req.on("error", (err) => {
      if (settled) return;
      settled = true;
      fail(err);
    });
  });
}

/** "stories260K" from "../models/stories260K.gguf", "hf:o/r/f.gguf@rev", a URL. */
export function modelIdOf(source: string): string {
  const base = source.replace(/[?#].*$/, "").replace(/@[^/]*$/, "").split(/[/\\]/).pop() ?? source;
  return base.replace(/\.gguf$/i, "") || "model";
}

/**
 * The API over one loaded model. `handle` is a node:http request listener; `health()` is what
 * GET /health answers; `close()` refuses what waits and aborts what runs.
 */
export class OpenAiServer {
  readonly loaded: LoadedModel;
  readonly cache: PagedKvCache;
  readonly config: CacheConfig;
  readonly modelId: string;
  readonly parallel: number;
  readonly maxQueue: number;
  readonly queueTimeoutMs: number;
  readonly maxBodyBytes: number;
  private readonly defaults: RequestDefaults;
  private readonly fallback: ((req: IncomingMessage, res: ServerResponse) => void) | null;
  private readonly slots: Slot[] = [];
  private readonly queue: Job[] = [];
  private readonly running: Job[] = [];
  private clock = 0;
  private nextId = 0;
  private pumping: Promise<void> | null = null;
  private closed = false;
  private readonly counts = { completed: 0, aborted: 0, failed: 0, rejected: 0 };
  private readonly created = Math.floor(Date.now() / 1000);

  constructor(loaded: LoadedModel, opts: OpenAiServerOptions = {}) {
    this.loaded = loaded;
    this.parallel = opts.parallel ?? DEFAULT_PARALLEL;
    if (!Number.isSafeInteger(this.parallel) || this.parallel < 1 || this.parallel > MAX_PARALLEL) {
      throw new InvalidSettingError(`parallel ${this.parallel} is invalid: use 1..${MAX_PARALLEL} conversations`, { setting: "parallel", value: this.parallel });
    }
    this.maxQueue = opts.maxQueue ?? DEFAULT_MAX_QUEUE;
    if (!Number.isSafeInteger(this.maxQueue) || this.maxQueue < 0 || this.maxQueue > MAX_QUEUE) {
      throw new InvalidSettingError(`queue ${this.maxQueue} is invalid: use 0..${MAX_QUEUE} waiting requests`, { setting: "queue", value: this.maxQueue });
    }
    this.queueTimeoutMs = opts.queueTimeoutMs ?? DEFAULT_QUEUE_TIMEOUT_MS;
    if (!Number.isSafeInteger(this.queueTimeoutMs) || this.queueTimeoutMs < 0) {
      throw new InvalidSettingError(`queue timeout ${this.queueTimeoutMs} ms is invalid: use a whole number of ms >= 0`, { setting: "queueTimeoutMs", value: this.queueTimeoutMs });
    }
    this.maxBodyBytes = opts.maxBodyBytes ?? MAX_REQUEST_BODY_BYTES;
    this.modelId = opts.modelId ?? modelIdOf(loaded.source);
    this.fallback = opts.fallback ?? null;
    const input = opts.cache ?? {};
    const codec = input.codec ?? asyncForwardOf(loaded.model)?.defaultCodec;
    this.config = resolveCacheConfig(withDefaultWindow({ ...input, ...(codec !== undefined ? { codec } : {}), maxSequences: this.parallel }, loaded.model.hp.nCtxTrain));
    this.defaults = { ...opts.defaults, maxTokens: opts.defaults?.maxTokens ?? Math.min(this.config.windowTokens, MAX_REQUEST_MAX_TOKENS) };
    this.cache = createSessionCache(loaded.model, this.config);
    for (let seqId = 0; seqId < this.parallel; seqId++) {
      this.slots.push({ session: new Session(loaded, input, { shared: { cache: this.cache, seqId } }), job: null, lastUsed: 0, history: null });
    }
  }

  /** The node:http request listener. */
  readonly handle = (req: IncomingMessage, res: ServerResponse): void => {
    this.route(req, res).catch((err: unknown) => {
      if (!res.headersSent) sendError(res, err);
      else res.destroy();
    });
  };

  /** Whether `path` (no query) is one of the API's (the rest goes to the fallback). */
  static isApiPath(path: string): boolean {
    return path === "/health" || path === "/v1" || path.startsWith("/v1/") || path === "/completions" || path === "/chat/completions" || path === "/models";
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? "GET";
    const path = (req.url ?? "/").split("?")[0]!.split("#")[0]!;
    const getOnly = (answer: () => unknown): void => {
      if (method !== "GET" && method !== "HEAD") sendError(res, new UnknownRouteError(method, path, "GET"), { Allow: "GET, HEAD" });
      else sendJson(res, 200, answer());
    };
    switch (path) {
      case "/health":
      case "/v1/health":
        getOnly(() => this.health());
        return;
      case "/v1/models":
      case "/models":
        getOnly(() => ({ object: "list", data: [this.modelObject()] }));
        return;
      case "/v1/chat/completions":
      case "/chat/completions":
      case "/v1/completions":
      case "/completions": {
        if (method !== "POST") {
          sendError(res, new UnknownRouteError(method, path, "POST"), { Allow: "POST" });
          return;
        }
        await this.accept(path.endsWith("chat/completions") ? "chat" : "completion", req, res);
        return;
      }
      default:
        if (path === `/v1/models/${encodeURIComponent(this.modelId)}` || path === `/v1/models/${this.modelId}`) {
          getOnly(() => this.modelObject());
          return;
        }
        if (!OpenAiServer.isApiPath(path) && this.fallback !== null) {
          this.fallback(req, res);
          return;
        }
        sendError(res, new UnknownRouteError(method, path));
    }
  }

  private modelObject(): { id: string; object: "model"; created: number; owned_by: string; meta: Record<string, unknown> } {
    return {
      id: this.modelId,
      object: "model",
      created: this.created,
      owned_by: "kvbound",
      meta: { n_ctx_train: this.loaded.model.hp.nCtxTrain, n_vocab: this.loaded.model.hp.nVocab, window_tokens: this.config.windowTokens, parallel: this.parallel },
    };
  }

  health(): ServerHealth {
    const st = this.cache.stats();
    let busy = 0;
    for (const s of this.slots) if (s.job !== null) busy++;
    return {
      status: "ok",
      model: this.modelId,
      slots: { total: this.slots.length, busy, idle: this.slots.length - busy },
      queue: { waiting: this.queue.length, max: this.maxQueue, timeoutMs: this.queueTimeoutMs },
      pages: { total: st.pagesTotal, used: st.pagesUsed, free: st.pagesFree, pageSize: st.pageSize },
      sequences: st.sequences,
      tokens: st.tokens,
      bytes: { used: st.bytesUsed, reserved: st.bytesReserved },
      windowTokens: st.windowTokens,
      evictedTokens: st.evictedTokens,
      copyOnWritePages: st.copyOnWritePages,
      requests: { ...this.counts },
    };
  }

  /** Clears every idle slot's conversation (its pages back to the pool); returns how many held one. */
  releaseIdle(): number {
    let n = 0;
    for (const s of this.slots) {
      if (s.job !== null) continue;
      if (this.cache.length(s.session.seqId) > 0) n++;
      this.clearSlot(s);
    }
    return n;
  }

  /**
   * Refuses what waits (503), aborts what runs, and resolves once nothing runs; the slots' shared
   * cache then gives back what it holds outside the JS heap (WebGPU buffers).
   */
  async close(): Promise<void> {
    this.closed = true;
    for (const job of this.queue.splice(0)) this.reject(job, new ServerBusyError("shutting_down", { parallel: this.parallel, maxQueue: this.maxQueue }));
    for (const job of this.running) job.abort.abort();
    await this.pumping;
    asyncForwardOf(this.loaded.model)?.releasePagedCache?.(this.cache);
  }

  // -------------------------------------------------------------------------------------------
  // Admission

  private async accept(kind: "chat" | "completion", req: IncomingMessage, res: ServerResponse): Promise<void> {
    const abort = new AbortController();
    res.on("close", () => {
      if (!res.writableFinished) abort.abort();
    });
    let text: string;
    try {
      text = await readBody(req, this.maxBodyBytes);
    } catch (err) {
      sendError(res, err, err instanceof RequestTooLargeError ? { Connection: "close" } : {});
      return;
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      sendError(res, invalid(null, "the request body is not valid JSON"));
      return;
    }
    let parsed: ParsedRequest;
    let promptIds: readonly number[];
    try {
      parsed = parseRequest(kind, json, this.defaults, this.loaded.model.hp.nVocab);
      const s0 = this.slots[0]!.session;
      promptIds = parsed.messages !== null ? s0.chatPromptIds(parsed.messages) : (parsed.promptIds ?? s0.encode(parsed.promptText ?? ""));
      if (this.config.policy.kind === "context" && promptIds.length > this.config.windowTokens) {
        throw new ContextWindowSizeExceededError(promptIds.length, 0, this.config.windowTokens);
      }
    } catch (err) {
      sendError(res, err);
      return;
    }
    if (abort.signal.aborted) return;
    if (this.closed) {
      this.counts.rejected++;
      sendError(res, new ServerBusyError("shutting_down", { parallel: this.parallel, maxQueue: this.maxQueue }));
      return;
    }
    let idle = 0;
    for (const s of this.slots) if (s.job === null) idle++;
    // Jobs queued in this tick may have an idle slot waiting for them: those do not count against the queue.
    if (this.queue.length >= idle + this.maxQueue) {
      this.counts.rejected++;
      sendError(res, new ServerBusyError("queue_full", { parallel: this.parallel, maxQueue: this.maxQueue }), { "Retry-After": "1" });
      return;
    }
    const job: Job = {
      id: `${kind === "chat" ? "chatcmpl" : "cmpl"}-${globalThis.crypto.randomUUID().replace(/-/g, "").slice(0, 24)}${(this.nextId++).toString(36)}`,
      req: parsed,
      promptIds,
      res,
      abort,
      created: Math.floor(Date.now() / 1000),
      enqueuedAt: Date.now(),
      state: "queued",
      slot: null,
      gen: null,
      timer: null,
      started: false,
    };
    this.queue.push(job);
    job.timer = setTimeout(() => {
      if (job.state !== "queued") return;
      this.queue.splice(this.queue.indexOf(job), 1);
      this.counts.rejected++;
      this.reject(job, new ServerBusyError("queue_timeout", { parallel: this.parallel, maxQueue: this.maxQueue, waitedMs: Date.now() - job.enqueuedAt }));
    }, this.queueTimeoutMs);
    abort.signal.addEventListener("abort", () => {
      if (job.state !== "queued") return;
      this.queue.splice(this.queue.indexOf(job), 1);
      job.state = "finished";
      this.counts.aborted++;
      if (job.timer !== null) clearTimeout(job.timer);
    });
    this.kick();
  }

  private reject(job: Job, err: KvboundError): void {
    job.state = "finished";
    if (job.timer !== null) clearTimeout(job.timer);
    sendError(job.res, err, err instanceof ServerBusyError ? { "Retry-After": "1" } : {});
  }

  private kick(): void {
    if (this.pumping !== null) return;
    this.pumping = this.pump().finally(() => {
      this.pumping = null;
      // A job queued while the pump was finishing its last round.
      if (this.queue.length > 0 && !this.closed) this.kick();
    });
  }

  /** Starts queued jobs, in order, while a slot (and, under a budget, pages) is free for the first. */
  private admit(): void {
    while (this.queue.length > 0) {
      const job = this.queue[0]!;
      const choice = this.chooseSlot(job);
      if (choice === null || !this.makeRoom(job, choice)) return;
      this.queue.shift();
      if (job.timer !== null) clearTimeout(job.timer);
      this.start(job, choice);
    }
  }

  private chooseSlot(job: Job): SlotChoice | null {
    const messages = job.req.messages;
    let lru: Slot | null = null;
    let best: Slot | null = null;
    let bestCommon = 0;
    for (const s of this.slots) {
      if (s.job !== null) continue;
      if (messages !== null && continues(s.history, messages)) {
        return { slot: s, source: null, reuse: this.cache.length(s.session.seqId), continues: true };
      }
      if (lru === null || s.lastUsed < lru.lastUsed) lru = s;
      const c = commonPrefix(s.session.cachedIds, job.promptIds);
      if (c > bestCommon) {
        best = s;
        bestCommon = c;
      }
    }
    if (lru === null) return null;
    const own = commonPrefix(lru.session.cachedIds, job.promptIds);
    // Fork for a full page or more: a shorter prefix (a BOS) shares no page and would pin the source.
    if (best !== null && best !== lru && bestCommon > own && bestCommon >= this.config.pageSize) return { slot: lru, source: best, reuse: bestCommon, continues: false };
    return { slot: lru, source: null, reuse: own, continues: false };
  }

  /**
   * Under a budget (a pool smaller than every slot's window) checks that the request's pages are
   * likely free, clearing idle conversations least recently used first to make room; false = wait.
   * Without a budget the pool holds every slot's window, so a slot always has its pages.
   */
  private makeRoom(job: Job, choice: SlotChoice): boolean {
    if (this.config.budgetBytes === null) return true;
    const pageSize = this.config.pageSize;
    const windowPages = Math.ceil(this.config.windowTokens / pageSize) + 1;
    const tokens = job.promptIds.length - choice.reuse + Math.min(job.req.maxTokens, this.config.windowTokens);
    const needed = Math.min(Math.ceil(tokens / pageSize) + 1, windowPages);
    const free = (): number => {
      const main = this.cache.stats().groups[0]!;
      // The chosen slot's own pages beyond what it keeps come back when it truncates (or forks).
      const own = choice.continues ? 0 : Math.max(0, this.cache.sequenceStats(choice.slot.session.seqId).pages - Math.floor((choice.source === null ? choice.reuse : 0) / pageSize));
      return main.pagesFree + own;
    };
    if (free() >= needed) return true;
    const idle = this.slots.filter((s) => s.job === null && s !== choice.slot && s !== choice.source && this.cache.length(s.session.seqId) > 0);
    idle.sort((a, b) => a.lastUsed - b.lastUsed);
    for (const s of idle) {
      this.clearSlot(s);
      if (free() >= needed) return true;
    }
    // Nothing runs that could free pages: try; a shortfall ends the request with 503 or "length".
    return this.running.length === 0;
  }

  private start(job: Job, choice: SlotChoice): void {
    const slot = choice.slot;
    if (choice.source !== null) {
      slot.session.forkFrom(choice.source.session);
      slot.history = choice.source.history;
    }
    slot.job = job;
    slot.lastUsed = ++this.clock;
    job.slot = slot;
    job.state = "running";
    const r = job.req;
    const opts: GenerateOptions = { ...r.sampling, maxTokens: r.maxTokens, stop: r.stop, signal: job.abort.signal, ...(r.ignoreEos ? { ignoreEos: true } : {}) };
    job.gen = r.messages !== null ? slot.session.chat(r.messages, opts) : slot.session.generate(job.promptIds, opts);
    this.running.push(job);
  }

  /** Drops a slot's conversation; an empty slot is the first an unrelated request takes. */
  private clearSlot(s: Slot): void {
    s.session.reset();
    s.history = null;
    s.lastUsed = 0;
  }

  // -------------------------------------------------------------------------------------------
  // The scheduler: one event (prefill + first token, or one more token) per running job per round,
  // in order, then a turn of the event loop (new requests, disconnects).

  private async pump(): Promise<void> {
    for (;;) {
      if (!this.closed) this.admit();
      if (this.running.length === 0) return;
      for (const job of [...this.running]) await this.step(job);
      await yieldToEventLoop();
    }
  }

  private async step(job: Job): Promise<void> {
    if (job.req.stream && !job.abort.signal.aborted && job.res.writableLength > MAX_UNSENT_STREAM_BYTES) job.abort.abort();
    let ev: GenerateEvent;
    try {
      const r = await job.gen!.next();
      if (r.done === true) {
        this.finish(job, r.value, null);
        return;
      }
      ev = r.value;
    } catch (err) {
      this.finish(job, null, err);
      return;
    }
    if (ev.type === "done") this.finish(job, ev, null);
    else if (ev.text !== "" && !job.abort.signal.aborted) {
      if (job.req.stream) this.sendDelta(job, ev.text);
    }
  }

  private finish(job: Job, done: DoneEvent | null, err: unknown): void {
    this.running.splice(this.running.indexOf(job), 1);
    job.state = "finished";
    const slot = job.slot!;
    slot.job = null;
    void job.gen?.return(undefined as never);
    if (done === null || done.finishReason === "abort") {
      // The sequence may hold a partial turn: clear it so its pages go back to the pool.
      this.clearSlot(slot);
      if (done !== null || job.abort.signal.aborted) {
        this.counts.aborted++;
        return;
      }
      this.counts.failed++;
      if (!job.started) sendError(job.res, err);
      else {
        this.writeSse(job, { error: errorBody(err).error });
        job.res.end();
      }
      return;
    }
    slot.history = job.req.messages !== null ? [...job.req.messages, { role: "assistant", content: done.text }] : null;
    this.counts.completed++;
    if (job.res.destroyed) return;
    const usage = {
      prompt_tokens: done.promptTokens,
      completion_tokens: done.ids.length,
      total_tokens: done.promptTokens + done.ids.length,
      prompt_tokens_details: { cached_tokens: done.reusedTokens },
    };
    const finishReason = finishReasonOf(done.finishReason);
    const chat = job.req.kind === "chat";
    if (job.req.stream) {
      if (done.remainder !== "") this.sendDelta(job, done.remainder);
      else this.startStream(job);
      this.writeSse(job, this.chunk(job, chat ? { index: 0, delta: {}, logprobs: null, finish_reason: finishReason } : { index: 0, text: "", logprobs: null, finish_reason: finishReason }));
      if (job.req.includeUsage) this.writeSse(job, { ...this.chunkHead(job), choices: [], usage });
      job.res.write("data: [DONE]\n\n");
      job.res.end();
      return;
    }
    const head = { id: job.id, object: chat ? "chat.completion" : "text_completion", created: job.created, model: this.modelId };
    const text = job.req.echo && job.req.promptText !== null ? job.req.promptText + done.text : done.text;
    const choice = chat
      ? { index: 0, message: { role: "assistant", content: done.text }, logprobs: null, finish_reason: finishReason }
      : { index: 0, text, logprobs: null, finish_reason: finishReason };
    sendJson(job.res, 200, { ...head, choices: [choice], usage, system_fingerprint: "kvbound" });
  }

  private chunkHead(job: Job): { id: string; object: string; created: number; model: string; system_fingerprint: string } {
    return { id: job.id, object: job.req.kind === "chat" ? "chat.completion.chunk" : "text_completion", created: job.created, model: this.modelId, system_fingerprint: "kvbound" };
  }

  private chunk(job: Job, choice: unknown): unknown {
    return { ...this.chunkHead(job), choices: [choice] };
  }

  /** SSE headers, and for a chat the first chunk naming the role (or for an echo, the prompt). */
  private startStream(job: Job): void {
    if (job.started) return;
    job.started = true;
    if (job.res.destroyed) return;
    job.res.writeHead(200, SSE_HEADERS);
    if (job.req.kind === "chat") this.writeSse(job, this.chunk(job, { index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }));
    else if (job.req.echo && job.req.promptText !== null) this.writeSse(job, this.chunk(job, { index: 0, text: job.req.promptText, logprobs: null, finish_reason: null }));
  }

  private sendDelta(job: Job, text: string): void {
    this.startStream(job);
    const choice = job.req.kind === "chat" ? { index: 0, delta: { content: text }, logprobs: null, finish_reason: null } : { index: 0, text, logprobs: null, finish_reason: null };
    this.writeSse(job, this.chunk(job, choice));
  }

  private writeSse(job: Job, data: unknown): void {
    if (job.res.destroyed || job.res.writableEnded) return;
    job.res.write(`data: ${JSON.stringify(data)}\n\n`);
  }
}
