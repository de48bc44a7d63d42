// The messages between the live page and its engine worker. Everything is structured-clone data:
// errors travel as `{ name, code, message, details }` (KvboundError.toJSON) and are rebuilt on the
// page with errorFromJSON, so the page shows the typed error the engine threw.

import type { CacheConfigInput } from "../../../src/cache/config.js";
import type { SerializedKvboundError } from "../../../src/errors.js";
import type { Backend } from "../../../src/model/async-forward.js";

/** Where the model bytes come from: a URL the worker fetches, or a File the user picked. */
export type ModelInput = { readonly kind: "url"; readonly url: string } | { readonly kind: "file"; readonly file: File };

export interface GenerateRequest {
  readonly prompt: string;
  readonly cache: CacheConfigInput;
  readonly maxTokens: number;
  readonly temperature: number;
  /** Keep sampling past end-of-text (a bounded cache is best seen on a long run). */
  readonly ignoreEos: boolean;
  readonly seed?: number;
}

export type ToWorker =
  /**
   * `threads`: the matmuls' threads (loadModel's option); absent, the default (the cores, at most 4).
   * `backend`: where the forward pass runs (loadModel's option; absent: cpu).
   */
  | { readonly type: "load"; readonly input: ModelInput; readonly threads?: number; readonly backend?: Backend }
  | { readonly type: "generate"; readonly request: GenerateRequest }
  | { readonly type: "stop" };

/** Header facts, shown as text (they come from the file and may hold markup). */
export interface ModelFacts {
  readonly source: string;
  readonly fileBytes: number;
  readonly name: string | undefined;
  readonly architecture: string | undefined;
  readonly chatTemplate: string | undefined;
  readonly tokenCount: number;
  /** The first few vocabulary entries. */
  readonly tokens: readonly string[];
  readonly tensorCount: number;
}

/** The resolved cache settings of a generation (what the map and the chart are drawn against). */
export interface CacheSummary {
  /** The policy with its split (policy-form.ts describePolicy). */
  readonly policy: string;
  readonly codec: string;
  readonly windowTokens: number;
  readonly pinned: number;
  readonly pageSize: number;
  readonly pagesTotal: number;
  readonly bytesReserved: number;
  readonly bytesPerPage: number;
}

/**
 * One role per page slot, row-major [pagesTotal][pageSize] (see roles.ts for the codes). Sent with
 * every batch rather than per token: the page redraws at most once per batch anyway.
 */
export interface CacheMap {
  readonly roles: Uint8Array;
  readonly pagesUsed: number;
}

/**
 * Per-token samples of one batch, parallel arrays indexed by emitted token: `index` (0-based),
 * cache bytes in use, tokens held, cumulative evicted tokens.
 */
export interface TokenSamples {
  readonly index: Int32Array;
  readonly bytes: Float64Array;
  readonly held: Int32Array;
  readonly evicted: Float64Array;
}

export type FromWorker =
  | { readonly type: "progress"; readonly doneBytes: number; readonly totalBytes: number | undefined }
  | { readonly type: "facts"; readonly facts: ModelFacts }
  | {
      readonly type: "loaded";
      readonly nLayer: number;
      readonly nVocab: number;
      readonly nCtxTrain: number;
      /** Threads the matmuls run on, and why not more (no SharedArrayBuffer without COOP/COEP, ...). */
      readonly threads: number;
      readonly threadsNote: string | null;
      /** Where the forward pass runs, and the adapter's name on WebGPU ("" when it gives none). */
      readonly backend: Backend;
      readonly adapter: string;
    }
  | { readonly type: "started"; readonly cache: CacheSummary; readonly promptTokens: number }
  | {
      readonly type: "tokens";
      readonly text: string;
      readonly samples: TokenSamples;
      readonly map: CacheMap;
      /** Decode tokens per second so far (emitted tokens / ms since the first token). */
      readonly tokensPerSecond: number;
    }
  | {
      readonly type: "done";
      readonly finishReason: string;
      readonly lengthCause: string | undefined;
      readonly text: string;
      readonly tokens: number;
      readonly promptTokens: number;
      readonly prefillMs: number;
      readonly decodeMs: number;
      readonly decodeTokensPerSecond: number;
      readonly map: CacheMap;
    }
  | { readonly type: "error"; readonly error: SerializedKvboundError; readonly during: "load" | "generate" };
