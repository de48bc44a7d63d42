// A Session owns one loaded model and one PagedKvCache (sequence 0), and runs generations over it:
// prompt prefill in chunks, then sample / emit / feed per token, with the token ids the cache holds
// kept beside it so the next call (a chat's next turn) prefills only what differs.

import { resolveCacheConfig, type CacheConfig, type CacheConfigInput } from "../cache/config.js";
import type { PagedKvCache } from "../cache/paged-kv-cache.js";
import { CacheExhaustedError, CacheOperationError, ContextWindowSizeExceededError, ModelConfigError } from "../errors.js";
import { llamaCppNCtxSeq } from "../model/rope-scaling.js";
import { renderChatTemplate, type ChatMessage } from "../model/chat-template.js";
import type { CausalLM } from "../model/causal-lm.js";
import { encodePrompt, type Tokenizer, type TokenizerSettings } from "../model/tokenizer/index.js";
import { CacheKv, createModelCache } from "../model/cache-kv.js";
import {
  StopMatcher,
  Utf8Stream,
  resolveMaxTokens,
  yieldToEventLoop,
  type DoneEvent,
  type FinishReason,
  type GenerateEvent,
  type GenerateOptions,
  type LengthCause,
  type TokenStats,
} from "./generate.js";
import { loadModel, type LoadedModel, type LoadModelOptions, type ModelSource } from "./load-model.js";
import { Sampler } from "./sampler.js";

/** Context window when a config sets neither window: the model's training context, capped here. */
export const DEFAULT_SESSION_CONTEXT_WINDOW = 4096;
/** Let the event loop run at least this often while computing (an abort from a timer, UI input). */
export const YIELD_INTERVAL_MS = 8;

/** Fills in a context window when the input sets no window size (WebLLM would refuse it). */
export function withDefaultWindow(input: CacheConfigInput, nCtxTrain: number): CacheConfigInput {
  const ctx = input.contextWindowSize ?? -1;
  const sliding = input.slidingWindowSize ?? -1;
  if (ctx > 0 || sliding > 0 || ctx < -1 || sliding < -1) return input;
  return { ...input, contextWindowSize: Math.min(nCtxTrain, DEFAULT_SESSION_CONTEXT_WINDOW) };
}

interface PrefillResult {
  readonly reused: number;
  readonly prefilled: number;
  readonly aborted: boolean;
}

export class Session {
  readonly model: CausalLM;
  readonly tokenizer: Tokenizer;
  readonly tokenizerSettings: TokenizerSettings;
  readonly cache: PagedKvCache;
  readonly config: CacheConfig;
  readonly loaded: LoadedModel;
  readonly seqId = 0;
  /** Forward passes run so far (tests count them to see that a prefix was reused). */
  forwardCalls = 0;
  private readonly kv: CacheKv;
  /** The ids the cache holds, in order, while nothing was evicted; the prefix-reuse key. */
  private held: number[] = [];
  /** Logits after the last fed token; valid when `held` is non-empty. */
  private readonly logitsBuf: Float32Array;
  /** Bumped by every generate: an older generator that resumes sees it and ends with "abort". */
  private epoch = 0;

  /** Loads a model (path, URL, hf:, Blob, bytes, or an already loaded one) and creates its cache. */
  static async load(source: ModelSource | LoadedModel, cacheConfig: CacheConfigInput = {}, opts: LoadModelOptions = {}): Promise<Session> {
    const loaded = isLoaded(source) ? source : await loadModel(source, opts);
    return new Session(loaded, cacheConfig);
  }

  constructor(loaded: LoadedModel, cacheConfig: CacheConfigInput = {}) {
    this.loaded = loaded;
    this.model = loaded.model;
    this.tokenizer = loaded.tokenizer;
    this.tokenizerSettings = loaded.settings;
    this.config = resolveCacheConfig(withDefaultWindow(cacheConfig, this.model.hp.nCtxTrain));
    const lr = this.model.longRope;
    if (lr !== null && (llamaCppNCtxSeq(this.config.windowTokens, this.model.hp.nCtxTrain) > lr.nCtxOrig) !== lr.long) {
      throw new ModelConfigError(
        `this LongRoPE model was loaded for a ${lr.nCtx}-token context (${lr.long ? "long" : "short"} factors, original context ${lr.nCtxOrig}) ` +
          `but the session's window is ${this.config.windowTokens} tokens, which takes the ${lr.long ? "short" : "long"} factors; load it with nCtx ${this.config.windowTokens}`,
        { field: "nCtx" },
      );
    }
    this.cache = createModelCache(this.model, this.config);
    this.cache.add(this.seqId);
    this.kv = new CacheKv(this.cache, this.seqId, this.model);
    this.logitsBuf = new Float32Array(this.model.hp.nVocab);
  }

  /** Token ids the cache holds for this session (empty after evictions broke the id mapping). */
  get cachedIds(): readonly number[] {
    return this.held;
  }

  /** Logits after the last token fed (a view; overwritten by the next forward pass). */
  get logits(): Float32Array {
    return this.logitsBuf;
  }

  /** `text` as a prompt: BOS (when the model adds one) + its ids. */
  encode(text: string): number[] {
    return encodePrompt(this.tokenizer, this.tokenizerSettings, text);
  }

  decode(ids: readonly number[]): string {
    return this.tokenizer.decode(ids);
  }

  /** Drops everything cached (the next generate prefills its whole prompt). */
  reset(): void {
    this.epoch++;
    this.cache.remove(this.seqId);
    this.cache.add(this.seqId);
    this.held = [];
  }

  stats(): TokenStats {
    const c = this.cache.stats();
    const s = this.cache.sequenceStats(this.seqId);
    return {
      cacheBytes: c.bytesUsed,
      cacheBytesReserved: c.bytesReserved,
      tokensHeld: s.tokens,
      evictions: c.evictedTokens,
      position: s.nextPosition,
    };
  }

  /**
   * Makes the cache hold exactly `ids` and the logits follow the last one: keeps the longest
   * common prefix with what the cache holds, truncates the rest, and prefills only the remainder
   * (at least the last token, whose logits are needed). When the policy has evicted tokens the
   * cached ids no longer match positions one to one, so the sequence is cleared and the whole
   * prompt prefilled. Throws ContextWindowSizeExceededError before any compute when the prompt
   * cannot fit a context window.
   */
  async prefill(ids: readonly number[], opts: { signal?: AbortSignal } = {}): Promise<{ reused: number; prefilled: number; aborted: boolean }> {
    const epoch = ++this.epoch;
    return this.prefillIds(ids, opts.signal, epoch);
  }

  private async prefillIds(ids: readonly number[], signal: AbortSignal | undefined, epoch: number): Promise<PrefillResult> {
    if (ids.length === 0) {
      throw new CacheOperationError("the prompt is empty: pass at least one token (BOS for a model that has one)", { operation: "prefill" });
    }
    const nVocab = this.model.hp.nVocab;
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= nVocab) {
        throw new CacheOperationError(`token id ${id} is outside the vocabulary 0..${nVocab - 1}`, { operation: "prefill", id });
      }
    }
    if (this.cache.sequenceStats(this.seqId).evictedTokens > 0 || this.held.length !== this.cache.length(this.seqId)) {
      this.cache.remove(this.seqId);
      this.cache.add(this.seqId);
      this.held = [];
    }
    let common = 0;
    const max = Math.min(this.held.length, ids.length);
    while (common < max && this.held[common] === ids[common]) common++;
    // The logits of the prompt's last token are needed: recompute it when all of it is cached.
    if (common === ids.length) common--;
    // A model's sliding-window layers may no longer hold the tokens before `common` (they keep only
    // their window): then nothing can be reused, as llama.cpp re-processes the prompt after SWA.
    if (common < this.held.length && !this.cache.canTruncate(this.seqId, this.held.length - common)) {
      this.cache.remove(this.seqId);
      this.cache.add(this.seqId);
      this.held = [];
      common = 0;
    }
    // Checked before the truncate changes anything: after it the sequence holds `common` tokens.
    if (this.config.policy.kind === "context" && ids.length > this.config.windowTokens) {
      throw new ContextWindowSizeExceededError(ids.length - common, common, this.config.windowTokens);
    }
    this.truncateTo(common);
    this.cache.assertPromptFits(this.seqId, ids.length - common);

    const chunk = this.config.prefillChunkSize;
    let lastYield = now();
    let p = common;
    while (p < ids.length) {
      const end = Math.min(ids.length, p + chunk);
      // The chunk bounds how long the loop runs between abort checks; inside it, pieces of up to
      // maxBatchTokens go through forwardBatch (each weight matrix read once per piece).
      while (p < end) {
        const n = Math.min(end - p, this.model.maxBatchTokens);
        const r = this.cache.reserve(this.seqId, n);
        if (!r.ok) {
          if (r.reason === "length") this.cache.reserveOrThrow(this.seqId, ids.length - p); // ContextWindowSizeExceededError
          throw new CacheExhaustedError(r.reason === "exhausted" ? r.neededPages : 1, r.reason === "exhausted" ? r.freePages : 0, this.config.budgetBytes ?? this.cache.reservedBytes);
        }
        this.forwardPiece(ids, p, n, p + n === ids.length, r.evicted);
        p += n;
      }
      if (p < ids.length || now() - lastYield > YIELD_INTERVAL_MS) {
        await yieldToEventLoop();
        lastYield = now();
        if (signal?.aborted || epoch !== this.epoch) return { reused: common, prefilled: p - common, aborted: true };
      }
    }
    return { reused: common, prefilled: ids.length - common, aborted: false };
  }

  /** Pops cached tokens until `n` remain. */
  private truncateTo(n: number): void {
    const drop = this.held.length - n;
    if (drop > 0) {
      this.cache.truncate(this.seqId, drop);
      this.held.length = n;
    }
  }

  /** ids[p..p+n) through the model into the n slots just reserved (`evicted`: what that reserve evicted). */
  private forwardPiece(ids: readonly number[], p: number, n: number, wantLogits: boolean, evicted: number): void {
    try {
      this.model.forwardBatch(ids, p, n, this.kv, wantLogits ? this.logitsBuf : null);
    } catch (err) {
      // Half-written tokens must not stay in the cache.
      this.cache.truncate(this.seqId, n);
      throw err;
    }
    this.forwardCalls += n;
    if (evicted > 0 || (this.held.length === 0 && this.cache.length(this.seqId) > n)) this.held.length = 0;
    else for (let i = 0; i < n; i++) this.held.push(ids[p + i]!);
  }

  /** One token through the model into the slot reserved for it (`evicted`: what that reserve evicted). */
  private forward(id: number, wantLogits: boolean, evicted: number): void {
    const pos = this.cache.sequenceStats(this.seqId).nextPosition - 1;
    try {
      this.model.forward(id, pos, this.kv, wantLogits ? this.logitsBuf : null);
    } catch (err) {
      // A half-written token must not stay in the cache.
      this.cache.truncate(this.seqId, 1);
      throw err;
    }
    this.forwardCalls++;
    // After an eviction the ids no longer line up with the cache: prefix reuse is off until the
    // sequence is cleared (prefillIds does that when it sees the evictions).
    if (evicted > 0 || (this.held.length === 0 && this.cache.length(this.seqId) > 1)) this.held.length = 0;
    else this.held.push(id);
  }

  /**
   * Streams a continuation of `prompt` (text, encoded with BOS as the model wants, or token ids):
   * a `token` event per emitted token, then one `done` event (also the generator's return value).
   * Throws ContextWindowSizeExceededError before any compute when the prompt cannot fit.
   */
  async *generate(prompt: string | readonly number[], opts: GenerateOptions = {}): AsyncGenerator<GenerateEvent, DoneEvent, undefined> {
    const epoch = ++this.epoch;
    const ids = typeof prompt === "string" ? this.encode(prompt) : prompt;
    const maxTokens = resolveMaxTokens(opts.maxTokens);
    const sampler = new Sampler(this.model.hp.nVocab, opts);
    const stop = new StopMatcher(opts.stop ?? []);
    const signal = opts.signal;
    const eog = new Set(opts.ignoreEos === true ? [] : this.tokenizerSettings.eogIds);
    const utf8 = new Utf8Stream();
    const out: number[] = [];
    const t0 = now();
    const aborted = () => signal?.aborted === true || epoch !== this.epoch;
    const finish = (finishReason: FinishReason, pre: PrefillResult, t1: number, lengthCause?: LengthCause): DoneEvent => {
      const tail = finishReason === "stop" ? "" : utf8.end();
      const remainder = finishReason === "stop" ? "" : stop.flush() + tail;
      return {
        type: "done",
        finishReason,
        ...(lengthCause ? { lengthCause } : {}),
        remainder,
        text: stop.text + tail,
        ids: out,
        promptTokens: ids.length,
        reusedTokens: pre.reused,
        prefilledTokens: pre.prefilled,
        prefillMs: t1 - t0,
        decodeMs: now() - t1,
        stats: this.stats(),
      };
    };

    if (signal?.aborted) {
      const done = finish("abort", { reused: 0, prefilled: 0, aborted: true }, t0);
      yield done;
      return done;
    }
    const pre = await this.prefillIds(ids, signal, epoch);
    const t1 = now();
    let done: DoneEvent | null = pre.aborted ? finish("abort", pre, t1) : null;
    let lastYield = now();
    while (done === null) {
      if (out.length >= maxTokens) {
        done = finish("length", pre, t1, "maxTokens");
        break;
      }
      const id = sampler.sample(this.logitsBuf);
      if (eog.has(id)) {
        done = finish("eos", pre, t1);
        break;
      }
      out.push(id);
      const { emit, stopped } = stop.push(utf8.push(this.tokenizer.tokenBytes(id)));
      // Feed the token now (unless the generation ends with it) so the stats the event carries
      // include it and the next logits are ready.
      let cause: LengthCause | null = null;
      if (!stopped && out.length < maxTokens) {
        const r = this.cache.reserve(this.seqId, 1);
        if (r.ok) this.forward(id, true, r.evicted);
        else cause = r.reason === "length" ? "contextWindow" : "budget";
      }
      yield { type: "token", id, text: emit, index: out.length - 1, stats: this.stats() };
      if (stopped) done = finish("stop", pre, t1);
      else if (cause !== null) done = finish("length", pre, t1, cause);
      else if (aborted()) done = finish("abort", pre, t1);
      else if (now() - lastYield > YIELD_INTERVAL_MS) {
        await yieldToEventLoop();
        lastYield = now();
        if (aborted()) done = finish("abort", pre, t1);
      }
    }
    yield done;
    return done;
  }

  /**
   * One chat turn: renders `messages` with the GGUF's chat template (with the assistant header
   * appended) or, without a template, as plain text (user and system turns on new lines, each
   * assistant reply continuing the text before it), then generates. The prefix the cache already
   * holds (the previous turns) is not prefilled again.
   */
  chat(messages: readonly ChatMessage[], opts: GenerateOptions = {}): AsyncGenerator<GenerateEvent, DoneEvent, undefined> {
    return this.generate(this.chatPromptIds(messages), opts);
  }

  /** The prompt ids `chat` would generate from. */
  chatPromptIds(messages: readonly ChatMessage[]): number[] {
    const s = this.tokenizerSettings;
    const vocab = this.tokenizer.vocab.tokens;
    if (s.chatTemplate !== undefined) {
      const bosText = s.bosId >= 0 ? (vocab[s.bosId] ?? "") : "";
      const text = renderChatTemplate(s.chatTemplate, messages, {
        addGenerationPrompt: true,
        bosToken: bosText,
        eosToken: s.eosId >= 0 ? (vocab[s.eosId] ?? "") : "",
      });
      const ids = this.tokenizer.encode(text);
      // Templates that print bos_token themselves must not get a second BOS.
      if (s.addBos && ids[0] !== s.bosId) ids.unshift(s.bosId);
      return ids;
    }
    let text = "";
    for (const m of messages) {
      if (m.role === "assistant") text += m.content;
      else text += text.length === 0 ? m.content : `\n${m.content}`;
    }
    return this.encode(text);
  }
}

function isLoaded(x: unknown): x is LoadedModel {
  return typeof x === "object" && x !== null && "model" in x && "tokenizer" in x && "header" in x;
}

function now(): number {
  return typeof performance !== "undefined" ? performance.now() : Date.now();
}
