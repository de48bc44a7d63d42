// A Session runs one sequence of a PagedKvCache (its own, or a shared one's) over a loaded model:
// prompt prefill in chunks, then sample / emit / feed per token. A chat is a conversation appended
// to the cache as it stands: each turn prefills only its new messages and their template markup,
// whatever the policy evicted, and the session keeps only the last turn's messages to render that
// markup, so nothing it holds grows with the conversation.

import { resolveCacheConfig, type CacheConfig, type CacheConfigInput } from "../cache/config.js";
import type { PagedKvCache } from "../cache/paged-kv-cache.js";
import { CacheExhaustedError, CacheOperationError, ContextWindowSizeExceededError, ModelConfigError, SessionFileError } from "../errors.js";
import { llamaCppNCtxSeq } from "../model/rope-scaling.js";
import { dropChars, renderChatSpans, type ChatMessage } from "../model/chat-template.js";
import type { CausalLM } from "../model/causal-lm.js";
import { encodePrompt, type TextSpan, type Tokenizer, type TokenizerSettings } from "../model/tokenizer/index.js";
import { CacheKv } from "../model/cache-kv.js";
import { asyncForwardOf, createSessionCache, withBackendCodec, type AsyncForwardLM } from "../model/async-forward.js";
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
import { Sampler, SamplerScratch, type SamplerState } from "./sampler.js";
import { cacheIdentity, checkCompatible, decodeSessionFile, encodeSessionFile, headerDigest, type SessionState } from "./session-file.js";

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

export interface SessionOptions {
  /** A system message that opens every conversation of this session (chat, continueChat). */
  readonly system?: string;
  /**
   * Keep the rendered system message in the cache for good: the policy becomes prefix-recent with
   * the prefix set to its tokens (node-llama-cpp's chat context shift keeps the first system
   * message the same way). Needs `system` and a sliding window.
   */
  readonly keepSystem?: boolean;
  /** Run sequence `seqId` of a cache other sessions share (a server's pool) instead of a cache of its own. */
  readonly shared?: { readonly cache: PagedKvCache; readonly seqId: number };
}

/** The conversation a session's cache holds, as much of it as the next turn's markup needs. */
interface Conversation {
  /** The system message (if any) and the last turn: its messages and the reply. */
  ctx: ChatMessage[];
  /** Whether the cache holds `ctx` (false before the first turn, and after a reset). */
  inCache: boolean;
  /** Messages of the caller's history consumed so far, and their rolling digest (see `chat`). */
  count: number;
  digest: string;
}

export class Session {
  readonly model: CausalLM;
  readonly tokenizer: Tokenizer;
  readonly tokenizerSettings: TokenizerSettings;
  readonly cache: PagedKvCache;
  readonly config: CacheConfig;
  readonly loaded: LoadedModel;
  readonly seqId: number;
  /** The system message every conversation opens with, and its ids when it is pinned in the cache. */
  readonly system: string | undefined;
  /** Forward passes run so far (tests count them to see that a prefix was reused). */
  forwardCalls = 0;
  private readonly kv: CacheKv;
  /** The model when its forward is asynchronous (WebGPU): prefill and decode await it. Null on the CPU. */
  private readonly asyncLm: AsyncForwardLM | null;
  /** Whether the cache is this session's own (not a server's shared pool): dispose releases it. */
  private readonly ownsCache: boolean;
  /** The ids the cache holds, in order, while nothing was evicted; the prefix-reuse key. */
  private held: number[] = [];
  /** Logits after the last fed token; valid when `held` is non-empty. */
  private readonly logitsBuf: Float32Array;
  /** Bumped by every generate: an older generator that resumes sees it and ends with "abort". */
  private epoch = 0;
  /** Ids a generation emitted but did not feed (the token it stopped on): the next turn feeds them first. */
  private pending: number[] = [];
  private conv: Conversation;
  /** The sampler's PRNG and penalty window carried from turn to turn (null: none yet). */
  private samplerState: SamplerState | null = null;
  /** Vocabulary-sized sampler buffers, allocated once (every generation makes a Sampler). */
  private samplerScratch: SamplerScratch | null = null;

  /** Loads a model (path, URL, hf:, Blob, bytes, or an already loaded one) and creates its cache. */
  static async load(
    source: ModelSource | LoadedModel,
    cacheConfig: CacheConfigInput = {},
    opts: LoadModelOptions = {},
    sessionOpts: SessionOptions = {},
  ): Promise<Session> {
    const loaded = isLoaded(source) ? source : await loadModel(source, opts);
    return new Session(loaded, cacheConfig, sessionOpts);
  }

  constructor(loaded: LoadedModel, cacheConfig: CacheConfigInput = {}, opts: SessionOptions = {}) {
    this.loaded = loaded;
    this.model = loaded.model;
    this.tokenizer = loaded.tokenizer;
    this.tokenizerSettings = loaded.settings;
    this.system = opts.system;
    this.conv = this.freshConversation();
    this.asyncLm = asyncForwardOf(this.model);
    let input = withDefaultWindow(cacheConfig, this.model.hp.nCtxTrain);
    input = withBackendCodec(this.model, input);
    if (opts.keepSystem === true) input = this.pinSystem(input);
    this.config = opts.shared?.cache.config ?? resolveCacheConfig(input);
    const lr = this.model.longRope;
    if (lr !== null && (llamaCppNCtxSeq(this.config.windowTokens, this.model.hp.nCtxTrain) > lr.nCtxOrig) !== lr.long) {
      throw new ModelConfigError(
        `this LongRoPE model was loaded for a ${lr.nCtx}-token context (${lr.long ? "long" : "short"} factors, original context ${lr.nCtxOrig}) ` +
          `but the session's window is ${this.config.windowTokens} tokens, which takes the ${lr.long ? "short" : "long"} factors; load it with nCtx ${this.config.windowTokens}`,
        { field: "nCtx" },
      );
    }
    this.ownsCache = opts.shared === undefined;
    if (opts.shared !== undefined) {
      this.cache = opts.shared.cache;
      this.seqId = opts.shared.seqId;
      if (this.cache.has(this.seqId)) throw new CacheOperationError(`sequence ${this.seqId} of the shared cache is taken`, { operation: "add", seqId: this.seqId });
    } else {
      this.cache = createSessionCache(this.model, this.config);
      this.seqId = 0;
    }
    this.cache.add(this.seqId);
    this.kv = new CacheKv(this.cache, this.seqId, this.model);
    this.logitsBuf = new Float32Array(this.model.hp.nVocab);
  }

  /**
   * Restores a session saved by `save` into a new session over `loaded`, with the cache settings
   * and options it was saved with (SessionFileError names what differs: model, codec, policy,
   * window; or a corrupt file). The conversation then goes on as if it had never stopped.
   */
  static restore(loaded: LoadedModel, bytes: Uint8Array, cacheConfig: CacheConfigInput = {}, opts: SessionOptions = {}): Session {
    const { state, snapshot } = decodeSessionFile(bytes);
    const s = new Session(loaded, cacheConfig, opts);
    checkCompatible(state, s.identity());
    const nVocab = s.model.hp.nVocab;
    if ([...state.held, ...state.pending, ...(state.sampler?.recent ?? [])].some((id) => id >= nVocab)) {
      throw new SessionFileError(`the session file holds token ids outside the vocabulary 0..${nVocab - 1}`, { field: "held" });
    }
    s.cache.remove(s.seqId);
    s.cache.restoreOrThrow(s.seqId, snapshot);
    const held = s.cache.length(s.seqId);
    if (state.held.length !== 0 && state.held.length !== held) {
      s.clearSequence();
      throw new SessionFileError(`the session file lists ${state.held.length} held ids for a cache of ${held} tokens`, { field: "held" });
    }
    s.held = [...state.held];
    s.pending = [...state.pending];
    s.conv = { ...state.conversation, ctx: [...state.conversation.ctx] };
    if (state.sampler !== null) s.samplerState = { rng: state.sampler.rng, recent: [...state.sampler.recent] };
    return s;
  }

  /**
   * `save()` on any backend: on WebGPU the sequence's pages are read back first (the bytes are the
   * CPU codec's, so the file restores on either backend). Do not run a generation meanwhile.
   */
  async saveAsync(): Promise<Uint8Array> {
    if (this.asyncLm === null) return this.save();
    const drop = await this.asyncLm.readPages(this.cache, this.seqId);
    try {
      return this.save();
    } finally {
      drop();
    }
  }

  /**
   * The session as bytes (every cache group's pages of its sequence, the ids and conversation it
   * keeps, the sampler's state, the model's header digest), for `Session.restore`: a file in Node,
   * a Blob or IndexedDB value in a browser. On WebGPU, whose pages must be read back: saveAsync.
   */
  save(): Uint8Array {
    const state: SessionState = {
      ...this.identity(),
      held: this.held,
      pending: this.pending,
      conversation: this.conv,
      sampler: this.samplerState,
    };
    return encodeSessionFile(state, this.cache.snapshot(this.seqId));
  }

  private identity(): Pick<SessionState, "model" | "cache"> {
    const arch = this.loaded.header.metadata["general.architecture"];
    return {
      model: { digest: headerDigest(this.loaded.header), arch: typeof arch === "string" ? arch : "unknown", nVocab: this.model.hp.nVocab },
      cache: cacheIdentity(this.config),
    };
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

  /** Drops everything cached and the conversation (the next generate prefills its whole prompt). */
  reset(): void {
    this.epoch++;
    this.clearSequence();
    this.conv = this.freshConversation();
    this.samplerState = null;
  }

  /**
   * Frees the sequence's pages for good (a server's finished conversation), and a cache of the
   * session's own that lives outside the JS heap (WebGPU buffers); the session is unusable after.
   */
  dispose(): void {
    this.epoch++;
    if (this.cache.has(this.seqId)) this.cache.remove(this.seqId);
    this.held = [];
    if (this.ownsCache) this.asyncLm?.releasePagedCache?.(this.cache);
  }

  /**
   * Makes this session's sequence a copy-on-write fork of `src`'s (sessions sharing one cache): its
   * pages are shared until either side writes, and its conversation, held ids and logits are copied,
   * so a request that shares `src`'s prefix (a system prompt) prefills only what differs.
   */
  forkFrom(src: Session): void {
    if (src.cache !== this.cache) throw new CacheOperationError("forkFrom needs a session on the same cache", { operation: "fork" });
    this.epoch++;
    this.cache.remove(this.seqId);
    this.cache.fork(src.seqId, this.seqId);
    this.held = [...src.held];
    this.pending = [...src.pending];
    this.conv = { ...src.conv, ctx: [...src.conv.ctx] };
    this.samplerState = src.samplerState;
    this.logitsBuf.set(src.logitsBuf);
  }

  private clearSequence(): void {
    this.cache.remove(this.seqId);
    this.cache.add(this.seqId);
    this.held = [];
    this.pending = [];
    this.conv.inCache = false;
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
    // Raw ids are not a conversation: a chat after them starts over.
    this.conv = this.freshConversation();
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
    this.pending = [];
    if (this.cache.sequenceStats(this.seqId).evictedTokens > 0 || this.held.length !== this.cache.length(this.seqId)) {
      this.clearSequence();
    }
    let common = 0;
    const max = Math.min(this.held.length, ids.length);
    while (common < max && this.held[common] === ids[common]) common++;
    // The logits of the prompt's last token are needed: recompute it when all of it is cached.
    if (common === ids.length) common--;
    // A model's sliding-window layers may no longer hold the tokens before `common` (they keep only
    // their window): then nothing can be reused, as llama.cpp re-processes the prompt after SWA.
    if (common < this.held.length && !this.cache.canTruncate(this.seqId, this.held.length - common)) {
      this.clearSequence();
      common = 0;
    }
    // Checked before the truncate changes anything: after it the sequence holds `common` tokens.
    if (this.config.policy.kind === "context" && ids.length > this.config.windowTokens) {
      throw new ContextWindowSizeExceededError(ids.length - common, common, this.config.windowTokens);
    }
    this.truncateTo(common);
    return this.runPrefill(ids, common, signal, epoch);
  }

  /**
   * Appends `ids` to the sequence as it stands (whatever the policy evicted): a conversation's next
   * turn. Throws ContextWindowSizeExceededError before any compute when they cannot fit.
   */
  private appendIds(ids: readonly number[], signal: AbortSignal | undefined, epoch: number): Promise<PrefillResult> {
    const held = this.cache.length(this.seqId);
    // The prefix-reuse key holds every cached id or none (after an eviction).
    const key = this.held.length === held ? this.held : [];
    this.held = key;
    return this.runPrefill([...key, ...ids], key.length, signal, epoch, held);
  }

  /** Prefills ids[from..] after what the sequence holds (`reused` of them count as cached). */
  private async runPrefill(ids: readonly number[], from: number, signal: AbortSignal | undefined, epoch: number, reused = from): Promise<PrefillResult> {
    const common = from;
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
        if (this.asyncLm === null) this.forwardPiece(ids, p, n, p + n === ids.length, r.evicted);
        else await this.forwardPieceAsync(this.asyncLm, ids, p, n, p + n === ids.length, r.evicted);
        p += n;
      }
      if (p < ids.length || now() - lastYield > YIELD_INTERVAL_MS) {
        await yieldToEventLoop();
        lastYield = now();
        if (signal?.aborted || epoch !== this.epoch) return { reused, prefilled: p - common, aborted: true };
      }
    }
    return { reused, prefilled: ids.length - common, aborted: false };
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
    this.piecePassed(ids, p, n, evicted);
  }

  /** forwardPiece on a model whose forward is asynchronous (WebGPU). */
  private async forwardPieceAsync(lm: AsyncForwardLM, ids: readonly number[], p: number, n: number, wantLogits: boolean, evicted: number): Promise<void> {
    try {
      await lm.forwardAsync(ids, p, n, this.cache, this.seqId, wantLogits ? this.logitsBuf : null);
    } catch (err) {
      this.cache.truncate(this.seqId, n);
      throw err;
    }
    this.piecePassed(ids, p, n, evicted);
  }

  /** After ids[p..p+n) went through: count it, and keep `held` (the prefix-reuse key) or drop it once anything was evicted. */
  private piecePassed(ids: readonly number[], p: number, n: number, evicted: number): void {
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
   * The cached prefix the prompt shares is reused. Throws ContextWindowSizeExceededError before any
   * compute when the prompt cannot fit.
   */
  generate(prompt: string | readonly number[], opts: GenerateOptions = {}): AsyncGenerator<GenerateEvent, DoneEvent, undefined> {
    const ids = typeof prompt === "string" ? this.encode(prompt) : prompt;
    // Raw text is not a conversation: a chat after it starts over.
    return this.stream(ids, false, opts, () => {
      this.conv = this.freshConversation();
    });
  }

  /**
   * One chat turn from the caller's whole history (OpenAI style). When `messages` continue the
   * conversation the session holds (its messages, then the reply it gave, then new ones), only the
   * new messages are prefilled, appended to the cache as it stands; otherwise they are rendered
   * whole and whatever prefix the cache shares with them is reused.
   */
  chat(messages: readonly ChatMessage[], opts: GenerateOptions = {}): AsyncGenerator<GenerateEvent, DoneEvent, undefined> {
    const c = this.conv;
    if (c.inCache && c.count > 0 && messages.length > c.count && extendDigest(EMPTY_DIGEST, messages.slice(0, c.count)) === c.digest) {
      return this.continueChat(messages.slice(c.count), opts);
    }
    // Another conversation: the session's system message opens it unless it brings its own.
    const fresh = this.freshConversation();
    this.conv = messages[0]?.role === "system" ? { ...fresh, ctx: [] } : fresh;
    return this.continueChat(messages, opts);
  }

  /**
   * One chat turn that follows the conversation the session holds (empty: opens one, after the
   * session's system message): `messages` are the turn's new messages, usually one user message.
   * The template's markup around them comes from rendering the last turn with them; message content
   * is tokenized as text, so it never becomes control tokens.
   */
  continueChat(messages: readonly ChatMessage[], opts: GenerateOptions = {}): AsyncGenerator<GenerateEvent, DoneEvent, undefined> {
    const { ids, append } = this.turnIds(messages);
    const before = this.conv;
    return this.stream(ids, append, opts, (done) => {
      const reply: ChatMessage = { role: "assistant", content: done.text };
      const turn = [...messages, reply];
      // Keep the system message and the last turn from its last user message on: what the next
      // turn's markup needs, and no more.
      let from = 0;
      for (let i = 0; i < messages.length; i++) if (messages[i]!.role === "user") from = i;
      const system = before.ctx[0]?.role === "system" ? before.ctx[0] : messages[0]?.role === "system" ? messages[0] : undefined;
      const tail = turn.slice(from);
      this.conv = {
        ctx: system === undefined || tail[0] === system ? tail : [system, ...tail],
        inCache: true,
        count: before.count + turn.length,
        digest: extendDigest(before.digest, turn),
      };
    });
  }

  /** The prompt ids `chat` would generate from, were the session empty. */
  chatPromptIds(messages: readonly ChatMessage[]): number[] {
    return this.withBos(this.tokenizer.encode(this.renderSpans(messages, true)));
  }

  /** The ids of a turn, and whether they are appended to the sequence as it stands. */
  private turnIds(messages: readonly ChatMessage[]): { ids: number[]; append: boolean } {
    const c = this.conv;
    const all = [...c.ctx, ...messages];
    const spans = this.renderSpans(all, true);
    if (c.ctx.length > 0) {
      const held = this.heldText(c.ctx);
      if (spans.map((x) => x.text).join("").startsWith(held)) {
        const delta = this.tokenizer.encode(dropChars(spans, held.length));
        if (c.inCache) return { ids: [...this.pending, ...delta], append: true };
        // The system message before the first turn: its ids first, so a pinned prefix holds exactly them.
        return { ids: [...this.withBos(this.tokenizer.encode(this.renderSpans(c.ctx, false))), ...delta], append: false };
      }
    }
    // A template that renders the last turn differently once another follows: render it whole.
    return { ids: this.withBos(this.tokenizer.encode(spans)), append: false };
  }

  /** The text of `ctx` as the cache holds it: a reply without the markup that closes it. */
  private heldText(ctx: readonly ChatMessage[]): string {
    const last = ctx[ctx.length - 1]!;
    if (last.role !== "assistant") return this.renderText(ctx, false);
    return this.renderText(ctx.slice(0, -1), true) + last.content;
  }

  private renderText(messages: readonly ChatMessage[], generationPrompt: boolean): string {
    return this.renderSpans(messages, generationPrompt)
      .map((x) => x.text)
      .join("");
  }

  /**
   * `messages` as template markup and content spans: with the GGUF's chat template, or without one
   * as plain text (user and system turns on new lines, each reply continuing the text before it).
   */
  private renderSpans(messages: readonly ChatMessage[], generationPrompt: boolean): TextSpan[] {
    const s = this.tokenizerSettings;
    const vocab = this.tokenizer.vocab.tokens;
    if (s.chatTemplate !== undefined) {
      return renderChatSpans(
        s.chatTemplate,
        messages,
        {
          addGenerationPrompt: generationPrompt,
          bosToken: s.bosId >= 0 ? (vocab[s.bosId] ?? "") : "",
          eosToken: s.eosId >= 0 ? (vocab[s.eosId] ?? "") : "",
        },
        (text) => this.tokenizer.hasSpecial(text),
      );
    }
    const spans: TextSpan[] = [];
    let first = true;
    for (const m of messages) {
      if (m.role !== "assistant" && !first) spans.push({ text: "\n", parseSpecial: false });
      spans.push({ text: m.content, parseSpecial: false });
      first = false;
    }
    return spans;
  }

  /** BOS first when the model wants one (templates that print bos_token themselves get no second). */
  private withBos(ids: number[]): number[] {
    const s = this.tokenizerSettings;
    if (s.addBos && ids[0] !== s.bosId) ids.unshift(s.bosId);
    return ids;
  }

  private freshConversation(): Conversation {
    const ctx: ChatMessage[] = this.system !== undefined ? [{ role: "system", content: this.system }] : [];
    return { ctx, inCache: false, count: 0, digest: EMPTY_DIGEST };
  }

  /** The cache config with the rendered system message as a prefix-recent prefix. */
  private pinSystem(input: CacheConfigInput): CacheConfigInput {
    if (this.system === undefined) {
      throw new ModelConfigError("keepSystem pins the system message in the cache: give a system message too", { field: "keepSystem" });
    }
    if (!(input.slidingWindowSize !== undefined && input.slidingWindowSize > 0)) return input; // a context window never evicts
    const held = this.heldText(this.conv.ctx);
    const probe = this.renderText([...this.conv.ctx, { role: "user", content: "?" }], true);
    if (held.length === 0 || !probe.startsWith(held)) {
      throw new ModelConfigError(
        "this chat template does not render the system message apart from the first user message, so it cannot be pinned; drop keepSystem",
        { field: "keepSystem" },
      );
    }
    const policy = input.policy;
    if (policy !== undefined && policy.kind !== "sliding" && policy.kind !== "prefix-recent") {
      throw new ModelConfigError(`keepSystem makes the policy prefix-recent; it cannot be combined with the ${policy.kind} policy`, { field: "keepSystem" });
    }
    // The system message takes the sinks' place (and keeps as many tokens as they would, at least).
    const systemTokens = this.withBos(this.tokenizer.encode(this.renderSpans(this.conv.ctx, false))).length;
    const prefix = Math.max(systemTokens, input.attentionSinkSize ?? 0);
    return {
      ...input,
      attentionSinkSize: prefix,
      policy: { kind: "prefix-recent", prefix, ...(policy?.positions !== undefined ? { positions: policy.positions } : {}) },
    };
  }

  /**
   * Prefills `ids` (appended to the sequence, or matched against what it holds), then samples,
   * emits and feeds token by token; `onDone` sees the finish before the `done` event goes out.
   */
  private async *stream(
    ids: readonly number[],
    append: boolean,
    opts: GenerateOptions,
    onDone: (done: DoneEvent) => void,
  ): AsyncGenerator<GenerateEvent, DoneEvent, undefined> {
    const epoch = ++this.epoch;
    // An appended turn's prompt is what the sequence held plus the turn.
    const heldBefore = append ? this.cache.length(this.seqId) : 0;
    const maxTokens = resolveMaxTokens(opts.maxTokens);
    this.samplerScratch ??= new SamplerScratch(this.model.hp.nVocab);
    const sampler = new Sampler(this.model.hp.nVocab, opts, this.samplerScratch);
    // A seed starts the PRNG afresh; without one it goes on from the last turn (llama-cli seeds once).
    if (opts.seed === undefined && this.samplerState !== null) sampler.setState(this.samplerState);
    if (!append) sampler.reset();
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
      const done: DoneEvent = {
        type: "done",
        finishReason,
        ...(lengthCause ? { lengthCause } : {}),
        remainder,
        text: stop.text + tail,
        ids: out,
        promptTokens: heldBefore + ids.length,
        reusedTokens: pre.reused,
        prefilledTokens: pre.prefilled,
        prefillMs: t1 - t0,
        decodeMs: now() - t1,
        stats: this.stats(),
      };
      // A generation a newer one superseded leaves the session's state to that one.
      if (epoch === this.epoch) {
        this.samplerState = sampler.getState();
        // What the sequence holds ends with the fed tokens: the last emitted one may not be.
        this.pending = out.length > 0 && fedLast !== out[out.length - 1] ? [out[out.length - 1]!] : [];
        onDone(done);
      }
      return done;
    };
    let fedLast = -1;

    if (signal?.aborted) {
      const done = finish("abort", { reused: 0, prefilled: 0, aborted: true }, t0);
      yield done;
      return done;
    }
    const pre = append ? await this.appendIds(ids, signal, epoch) : await this.prefillIds(ids, signal, epoch);
    for (let i = Math.max(0, ids.length - sampler.settings.penaltyLastN); i < ids.length; i++) sampler.accept(ids[i]!);
    const t1 = now();
    let done: DoneEvent | null = pre.aborted ? finish("abort", pre, t1) : null;
    let lastYield = now();
    while (done === null) {
      if (out.length >= maxTokens) {
        done = finish("length", pre, t1, "maxTokens");
        break;
      }
      // A newer generation owns the logits and the sampler's buffers now.
      if (epoch !== this.epoch) {
        done = finish("abort", pre, t1);
        break;
      }
      const id = sampler.sample(this.logitsBuf);
      if (eog.has(id)) {
        done = finish("eos", pre, t1);
        break;
      }
      sampler.accept(id);
      out.push(id);
      const { emit, stopped } = stop.push(utf8.push(this.tokenizer.tokenBytes(id)));
      // Feed the token now (unless the generation ends with it) so the stats the event carries
      // include it and the next logits are ready.
      let cause: LengthCause | null = null;
      if (!stopped && out.length < maxTokens) {
        const r = this.cache.reserve(this.seqId, 1);
        if (r.ok) {
          if (this.asyncLm === null) this.forward(id, true, r.evicted);
          else await this.forwardPieceAsync(this.asyncLm, [id], 0, 1, true, r.evicted);
          fedLast = id;
        } else cause = r.reason === "length" ? "contextWindow" : "budget";
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
}

const EMPTY_DIGEST = "811c9dc5050c5d1f";

/**
 * `digest` extended by `messages` (two FNV-1a style 32-bit lanes), so a caller's history can be
 * recognised as the conversation the session holds without the session keeping that history.
 */
function extendDigest(digest: string, messages: readonly ChatMessage[]): string {
  let h1 = parseInt(digest.slice(0, 8), 16);
  let h2 = parseInt(digest.slice(8), 16);
  for (const m of messages) {
    const text = `${m.role}\u0000${m.content}\u0001`;
    for (let j = 0; j < text.length; j++) {
      const c = text.charCodeAt(j);
      h1 = Math.imul(h1 ^ c, 0x01000193) >>> 0;
      h2 = Math.imul(h2 ^ c, 0x85ebca6b) >>> 0;
    }
  }
  return h1.toString(16).padStart(8, "0") + h2.toString(16).padStart(8, "0");
}

function isLoaded(x: unknown): x is LoadedModel {
  return typeof x === "object" && x !== null && "model" in x && "tokenizer" in x && "header" in x;
}

function now(): number {
  return typeof performance !== "undefined" ? performance.now() : Date.now();
}
