// The shapes a generation streams and the small pieces of its loop that are not the model:
// options, per-token events and the final event, stop-string matching with hold-back, streaming
// UTF-8 decoding of token bytes, and a browser-safe yield to the event loop.

import { InvalidSettingError } from "../errors.js";
import type { SamplerSettings } from "./sampler.js";

/**
 * Why a generation ended:
 * - "eos": the model produced an end-of-generation token (not emitted, not fed to the cache);
 * - "stop": the text reached one of `stop` (the stop string is not emitted);
 * - "length": `maxTokens` were emitted, or the cache can take no more tokens (a full context
 *   window, or a budget with no free page); `lengthCause` says which;
 * - "abort": the signal fired, or a newer generate on the same session took over. The session stays
 *   usable: every token the cache holds was fully written.
 */
export type FinishReason = "stop" | "length" | "abort" | "eos";
export type LengthCause = "maxTokens" | "contextWindow" | "budget";

export interface GenerateOptions extends SamplerSettings {
  /** Tokens to emit at most. Default 256; 0 only prefills the prompt. */
  readonly maxTokens?: number;
  /** Texts that end the generation when the output contains them; they are not emitted. */
  readonly stop?: readonly string[];
  readonly signal?: AbortSignal;
  /** Sample on past end-of-generation tokens (benchmarks that need exactly maxTokens). */
  readonly ignoreEos?: boolean;
}

/** Cache figures after a token, for a live memory line. */
export interface TokenStats {
  /** Bytes of the pages in use (all sequences). */
  readonly cacheBytes: number;
  /** Bytes the page pool reserved up front (the cache never grows beyond it). */
  readonly cacheBytesReserved: number;
  /** Tokens the session's sequence holds now. */
  readonly tokensHeld: number;
  /** Tokens evicted so far by the policy (cumulative for the cache's life). */
  readonly evictions: number;
  /** Position the next token will take. */
  readonly position: number;
}

export interface TokenEvent {
  readonly type: "token";
  readonly id: number;
  /**
   * The text this token makes visible. May be "" (an incomplete UTF-8 character, or text held back
   * because it may begin a stop string) and may carry text of earlier tokens released now.
   */
  readonly text: string;
  /** 0-based index among the emitted tokens of this generation. */
  readonly index: number;
  readonly stats: TokenStats;
}

export interface DoneEvent {
  readonly type: "done";
  readonly finishReason: FinishReason;
  /** Set when finishReason is "length". */
  readonly lengthCause?: LengthCause;
  /** Held-back text not yet streamed in a token event (print it after the last token). */
  readonly remainder: string;
  /** The whole generated text (without a stop string). */
  readonly text: string;
  /** Emitted token ids. */
  readonly ids: readonly number[];
  /** Tokens of the prompt: for a conversation's appended turn, what the sequence held plus the turn. */
  readonly promptTokens: number;
  /** Prompt tokens found already in the cache (a reused prefix, or what an appended turn follows). */
  readonly reusedTokens: number;
  /** Prompt tokens run through the model. */
  readonly prefilledTokens: number;
  readonly prefillMs: number;
  readonly decodeMs: number;
  readonly stats: TokenStats;
}

export type GenerateEvent = TokenEvent | DoneEvent;

/** maxTokens when the caller gives none: enough for a reply, bounded for an endless sliding window. */
export const DEFAULT_MAX_TOKENS = 256;
/** Stop strings per call and their length: each is matched against every token's text. */
export const MAX_STOP_STRINGS = 16;
export const MAX_STOP_CHARS = 256;

export function resolveMaxTokens(maxTokens: number | undefined): number {
  const n = maxTokens ?? DEFAULT_MAX_TOKENS;
  if (!(n === Infinity || (Number.isSafeInteger(n) && n >= 0))) {
    throw new InvalidSettingError(`maxTokens ${n} is invalid: use a whole number >= 0 (or Infinity)`, { setting: "maxTokens", value: n });
  }
  return n;
}

/**
 * Finds stop strings in streamed text. Text that could still become a stop string (a suffix that is
 * a prefix of one) is held back until the next token decides.
 */
export class StopMatcher {
  private readonly stops: readonly string[];
  private pending = "";
  /** Everything released so far plus the pending text. */
  private all = "";

  constructor(stops: readonly string[] = []) {
    if (stops.length > MAX_STOP_STRINGS) {
      throw new InvalidSettingError(`${stops.length} stop strings is too many: use at most ${MAX_STOP_STRINGS}`, { setting: "stop", value: stops.length });
    }
    for (const s of stops) {
      if (typeof s !== "string" || s.length === 0 || s.length > MAX_STOP_CHARS) {
        throw new InvalidSettingError(`stop string ${JSON.stringify(s)} is invalid: use 1..${MAX_STOP_CHARS} characters`, { setting: "stop", value: s });
      }
    }
    this.stops = stops;
  }

  /** Adds a token's text; returns the text to release and whether a stop string was reached. */
  push(delta: string): { readonly emit: string; readonly stopped: boolean } {
    this.pending += delta;
    this.all += delta;
    if (this.stops.length === 0) {
      const emit = this.pending;
      this.pending = "";
      return { emit, stopped: false };
    }
    // Earliest stop string in the pending text (one can span tokens: pending keeps their prefix).
    let cut = -1;
    for (const s of this.stops) {
      const at = this.pending.indexOf(s);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      const emit = this.pending.slice(0, cut);
      this.all = this.all.slice(0, this.all.length - this.pending.length + cut);
      this.pending = "";
      return { emit, stopped: true };
    }
    let hold = 0;
    for (const s of this.stops) {
      const max = Math.min(s.length - 1, this.pending.length);
      for (let k = max; k > hold; k--) {
        if (this.pending.endsWith(s.slice(0, k))) {
          hold = k;
          break;
        }
      }
    }
    const emit = this.pending.slice(0, this.pending.length - hold);
    this.pending = this.pending.slice(this.pending.length - hold);
    return { emit, stopped: false };
  }

  /** The held-back text, released at the end of a generation that did not stop on a string. */
  flush(): string {
    const rest = this.pending;
    this.pending = "";
    return rest;
  }

  /** The generated text so far (a reached stop string excluded). */
  get text(): string {
    return this.all;
  }
}

/** Turns token bytes into text; a UTF-8 character split across tokens comes out whole. */
export class Utf8Stream {
  private readonly decoder = new TextDecoder("utf-8");
  push(bytes: Uint8Array): string {
    return this.decoder.decode(bytes, { stream: true });
  }
  end(): string {
    return this.decoder.decode();
  }
}

/**
 * Lets the event loop run (timers, I/O, an abort from another task). setImmediate in Node,
 * a MessageChannel message in browsers and workers (setTimeout(0) is clamped to 4 ms there).
 */
export function yieldToEventLoop(): Promise<void> {
  const g = globalThis as { setImmediate?: (cb: () => void) => unknown };
  if (typeof g.setImmediate === "function") {
    const setImm = g.setImmediate;
    return new Promise((resolve) => void setImm(resolve));
  }
  if (typeof MessageChannel !== "undefined") {
    return new Promise((resolve) => {
      const ch = new MessageChannel();
      ch.port1.onmessage = () => {
        ch.port1.close();
        resolve();
      };
      ch.port2.postMessage(null);
    });
  }
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** What `collect` gathers from a generation. */
export interface CollectedGeneration {
  readonly ids: number[];
  readonly text: string;
  readonly done: DoneEvent;
}

/** Runs a generation to its end and gathers its tokens (tests, `kvbound run --json`). */
export async function collect(gen: AsyncIterable<GenerateEvent>): Promise<CollectedGeneration> {
  const ids: number[] = [];
  for await (const ev of gen) {
    if (ev.type === "token") ids.push(ev.id);
    else return { ids, text: ev.text, done: ev };
  }
  throw new Error("the generation ended without a done event");
}
