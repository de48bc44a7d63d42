// Every failure kvbound reports is a KvboundError subclass with a stable `code`, the facts in
// `details`, and the fix in the message. Errors cross worker boundaries as plain
// `{ name, code, message, details }` objects (`toJSON`) and are rebuilt with `errorFromJSON`.

export type ErrorDetails = Readonly<Record<string, unknown>>;

export interface SerializedKvboundError {
  name: string;
  code: string;
  message: string;
  details: ErrorDetails;
}

export class KvboundError extends Error {
  readonly code: string;
  readonly details: ErrorDetails;

  constructor(code: string, message: string, details: ErrorDetails = {}) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.details = details;
  }

  toJSON(): SerializedKvboundError {
    return { name: this.name, code: this.code, message: this.message, details: this.details };
  }
}

// ---------------------------------------------------------------------------------------------
// Input: GGUF files, configs, settings

/** A GGUF file (or range) that cannot be parsed: names the byte offset and/or field. */
export class GgufParseError extends KvboundError {
  constructor(message: string, details: { offset?: number; field?: string; source?: string } & ErrorDetails = {}) {
    super("GGUF_PARSE", message, details);
  }
}

/** A GGUF header value beyond one of kvbound's named limits (gguf/limits.ts). */
export class GgufLimitError extends KvboundError {
  constructor(message: string, details: { limit: string; value: number | bigint | string; max: number } & ErrorDetails) {
    super("GGUF_LIMIT", message, details);
  }
}

/** Fetching a model over HTTP failed (status, range not honoured, network error). */
export class FetchError extends KvboundError {
  constructor(message: string, details: { url: string; status?: number } & ErrorDetails) {
    super("FETCH", message, details);
  }
}

/** A metadata value or config field is missing, of the wrong type, or contradicts another. */
export class ModelConfigError extends KvboundError {
  constructor(message: string, details: { field: string } & ErrorDetails) {
    super("MODEL_CONFIG", message, details);
  }
}

/** RoPE scaling metadata that changes llama.cpp's math in a way kvbound does not implement (model/rope-scaling.ts). */
export class UnsupportedRopeScalingError extends KvboundError {
  constructor(field: string, value: string | number, fix: string) {
    super(
      "UNSUPPORTED_ROPE_SCALING",
      `GGUF metadata ${field} = ${value} asks for RoPE scaling kvbound does not implement; ${fix}`,
      { field, value },
    );
  }
}

/** An architecture kvbound has no rules for (planning) or no forward pass for (running). */
export class UnsupportedArchitectureError extends KvboundError {
  constructor(message: string, details: { arch: string } & ErrorDetails) {
    super("UNSUPPORTED_ARCHITECTURE", message, details);
  }
}

/** A model reference that is neither a file, a URL, a JSON file nor a registry id. */
export class UnknownModelError extends KvboundError {
  constructor(message: string, details: { model: string } & ErrorDetails) {
    super("UNKNOWN_MODEL", message, details);
  }
}

/** A model reference (path, URL, `hf:owner/repo/file.gguf[@rev]`) that cannot be parsed. */
export class ModelRefError extends KvboundError {
  constructor(message: string, details: { ref: string } & ErrorDetails) {
    super("MODEL_REF", message, details);
  }
}

/** A tokenizer model or pre-tokenizer (`tokenizer.ggml.model` / `tokenizer.ggml.pre`) kvbound does not implement. */
export class UnsupportedTokenizerError extends KvboundError {
  constructor(message: string, details: { field: string; value: string; supported: readonly string[] } & ErrorDetails) {
    super("UNSUPPORTED_TOKENIZER", message, details);
  }
}

/** A chat template (`tokenizer.chat_template`) that fails to parse or render. */
export class ChatTemplateError extends KvboundError {
  constructor(message: string, details: { phase: "parse" | "render" | "content" } & ErrorDetails) {
    super("CHAT_TEMPLATE", message, details);
  }
}

/** A user setting (flag or option) outside its valid range or set. */
export class InvalidSettingError extends KvboundError {
  constructor(message: string, details: { setting: string; value: unknown } & ErrorDetails) {
    super("INVALID_SETTING", message, details);
  }
}

/** A K/V cache type the chosen engine does not have. */
export class UnknownCacheTypeError extends KvboundError {
  constructor(message: string, details: { setting: string; value: string; allowed: readonly string[] } & ErrorDetails) {
    super("UNKNOWN_CACHE_TYPE", message, details);
  }
}

/** llama.cpp refuses a quantized V cache unless flash attention is on (llama-context.cpp). */
export class QuantizedVRequiresFlashAttentionError extends KvboundError {
  constructor(typeV: string) {
    super(
      "QUANTIZED_V_REQUIRES_FLASH_ATTENTION",
      `llama.cpp refuses a quantized V cache (type_v ${typeV}) without flash attention; ` +
        `pass --flash-attn on, or use --type-v f16`,
      { typeV },
    );
  }
}

/** A quantized K/V cache type whose block does not divide the head size (llama-context.cpp refuses it). */
export class CacheTypeBlockSizeError extends KvboundError {
  constructor(setting: "typeK" | "typeV", type: string, blockSize: number, headDim: number) {
    super(
      "CACHE_TYPE_BLOCK_SIZE",
      `${setting === "typeK" ? "K" : "V"} cache type ${type} has blocks of ${blockSize} values, which do not divide ` +
        `the head size ${headDim}; use f16, bf16 or f32 for --cache-type-${setting === "typeK" ? "k" : "v"}`,
      { setting, type, blockSize, headDim },
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Cache configuration (WebLLM names and semantics)

/** Neither or both of contextWindowSize / slidingWindowSize are positive. */
export class WindowSizeConfigurationError extends KvboundError {
  constructor(contextWindowSize: number, slidingWindowSize: number) {
    super(
      "WINDOW_SIZE_CONFIGURATION",
      `exactly one of context_window_size (${contextWindowSize}) and sliding_window_size (${slidingWindowSize}) ` +
        `must be positive; set the other to -1`,
      { contextWindowSize, slidingWindowSize },
    );
  }
}

/** Sliding mode needs 0 <= attentionSinkSize < slidingWindowSize. */
export class AttentionSinkSizeError extends KvboundError {
  constructor(attentionSinkSize: number, slidingWindowSize: number) {
    super(
      "ATTENTION_SINK_SIZE",
      `attention_sink_size ${attentionSinkSize} is invalid with sliding_window_size ${slidingWindowSize}: ` +
        `it must be >= 0 and < sliding_window_size; 4 is the StreamingLLM default` +
        // WebLLM's unset value: a sliding window names its sinks (attentionSinkSize, --sinks N).
        (attentionSinkSize === -1 ? " (it was not given: a sliding window needs its sink count, e.g. --sinks 4)" : ""),
      { attentionSinkSize, slidingWindowSize },
    );
  }
}

/** A window size that is not an integer, or not -1 / positive. */
export class WindowSizeSpecificationError extends KvboundError {
  constructor(field: string, value: number) {
    super(
      "WINDOW_SIZE_SPECIFICATION",
      `${field} ${value} is invalid: use a positive integer, or -1 to leave it unset`,
      { field, value },
    );
  }
}

/** A prompt that would overflow a context window; thrown before anything is written or computed. */
export class ContextWindowSizeExceededError extends KvboundError {
  constructor(promptTokens: number, cachedTokens: number, contextWindowSize: number) {
    super(
      "CONTEXT_WINDOW_SIZE_EXCEEDED",
      `prompt ${promptTokens} tokens + ${cachedTokens} cached > context_window_size ${contextWindowSize}; ` +
        `raise context_window_size or use sliding_window_size`,
      { promptTokens, cachedTokens, contextWindowSize },
    );
  }
}

/** Any other invalid cache setting (page size, sequences, chunk size, codec, policy...). */
export class CacheConfigError extends KvboundError {
  constructor(message: string, details: { field: string; value: unknown } & ErrorDetails) {
    super("CACHE_CONFIG", message, details);
  }
}

/** A budget that cannot hold one page per layer group, or the pages an evicting window spans. */
export class BudgetTooSmallError extends KvboundError {
  /** `holds`: what the minimum is for ("one page per layer", "the 17 pages a 256-token sliding window spans"). */
  constructor(budgetBytes: number, minimumBytes: number, holds = "one page per layer") {
    super(
      "BUDGET_TOO_SMALL",
      `budget ${budgetBytes} bytes is smaller than ${holds} (${minimumBytes} bytes); ` +
        `raise budgetBytes to at least ${minimumBytes}, use a smaller window, pageSize or codec`,
      { budgetBytes, minimumBytes, holds },
    );
  }
}

/** The model's weights alone exceed the memory a run may use. */
export class ModelTooLargeError extends KvboundError {
  constructor(budgetBytes: number, weightsBytes: number) {
    super(
      "MODEL_TOO_LARGE",
      `the weights alone (${weightsBytes} bytes) exceed the budget of ${budgetBytes} bytes by ${weightsBytes - budgetBytes}; ` +
        "use a smaller quantization or model, or raise --budget",
      { budgetBytes, weightsBytes },
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Cache operations

export class SequenceNotFoundError extends KvboundError {
  constructor(seqId: number) {
    super("SEQUENCE_NOT_FOUND", `sequence ${seqId} does not exist (removed or never added); add it first`, { seqId });
  }
}

export class LayerOutOfRangeError extends KvboundError {
  constructor(layer: number, nLayer: number) {
    super("LAYER_OUT_OF_RANGE", `layer ${layer} is out of range: the cache has layers 0..${nLayer - 1}`, { layer, nLayer });
  }
}

/** The page pool ran out (the library returns null; the boundary throws this). */
export class CacheExhaustedError extends KvboundError {
  constructor(neededPages: number, freePages: number, budgetBytes: number) {
    super(
      "CACHE_EXHAUSTED",
      `the KV cache needs ${neededPages} more pages but ${freePages} are free within ${budgetBytes} bytes; ` +
        `raise budgetBytes, use a sliding window, a smaller codec, or fewer sequences`,
      { neededPages, freePages, budgetBytes },
    );
  }
}

/** A cache call made out of order or with arguments the cache's state refuses (writing a slot that
 *  was not reserved, adding a sequence id twice, more sequences than maxSequences...). */
export class CacheOperationError extends KvboundError {
  constructor(message: string, details: { operation: string } & ErrorDetails) {
    super("CACHE_OPERATION", message, details);
  }
}

/** A snapshot that is corrupt or does not fit the cache it is restored into. */
export class SnapshotError extends KvboundError {
  constructor(message: string, details: { field: string } & ErrorDetails) {
    super("SNAPSHOT", message, details);
  }
}

/** A saved session file that is not one, is corrupt, or was saved with another model or cache settings. */
export class SessionFileError extends KvboundError {
  constructor(message: string, details: { field: string } & ErrorDetails) {
    super("SESSION_FILE", message, details);
  }
}

// ---------------------------------------------------------------------------------------------
// The HTTP server (kvbound serve): errors its boundary adds, each mapped to a status.

/** A request body that is not JSON, or a field of the wrong type or an unsupported value: HTTP 400. */
export class InvalidRequestError extends KvboundError {
  constructor(message: string, details: { param: string | null } & ErrorDetails) {
    super("INVALID_REQUEST", message, details);
  }
}

/** A request body over the server's limit: HTTP 413. */
export class RequestTooLargeError extends KvboundError {
  constructor(bytes: number, maxBytes: number) {
    super("REQUEST_TOO_LARGE", `request body of ${bytes}+ bytes is over the limit of ${maxBytes} bytes; send a shorter prompt or history`, { bytes, maxBytes });
  }
}

/** No slot (or no pages) for the request within the queue's bounds: HTTP 503, retry later. */
export class ServerBusyError extends KvboundError {
  constructor(reason: "queue_full" | "queue_timeout" | "shutting_down", details: { parallel: number; maxQueue: number; waitedMs?: number } & ErrorDetails) {
    const why =
      reason === "queue_full"
        ? `all ${details.parallel} slots are busy and the queue of ${details.maxQueue} is full`
        : reason === "queue_timeout"
          ? `no slot or pages became free within ${details.waitedMs} ms (${details.parallel} slots busy)`
          : "the server is shutting down";
    super("SERVER_BUSY", `${why}; retry later, or start the server with a larger --parallel or --queue`, { reason, ...details });
  }
}

/** A path the API does not serve: HTTP 404 (405 when the path exists with another method). */
export class UnknownRouteError extends KvboundError {
  constructor(method: string, path: string, allowed?: string) {
    super(
      "UNKNOWN_ROUTE",
      allowed === undefined
        ? `no route ${method} ${path}; the API serves POST /v1/chat/completions, POST /v1/completions, GET /v1/models and GET /health`
        : `${method} ${path} is not allowed; use ${allowed}`,
      { method, path, ...(allowed !== undefined ? { allowed } : {}) },
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Running models

export class UnsupportedTensorTypeError extends KvboundError {
  constructor(tensor: string, type: string) {
    super("UNSUPPORTED_TENSOR_TYPE", `tensor ${tensor} has type ${type}, which kvbound cannot run yet`, { tensor, type });
  }
}

export class TensorShapeError extends KvboundError {
  constructor(message: string, details: { tensor: string } & ErrorDetails) {
    super("TENSOR_SHAPE", message, details);
  }
}

/** A tensor's data kvbound refuses to run: a quantized block whose scale is not finite (a corrupt file). */
export class TensorDataError extends KvboundError {
  constructor(message: string, details: { tensor: string } & ErrorDetails) {
    super("TENSOR_DATA", message, details);
  }
}

/** No WebGPU adapter (no `navigator.gpu`, no `webgpu` package in Node, or no driver it can use). */
export class WebGpuUnavailableError extends KvboundError {
  constructor(reason: string, fix: string) {
    super("WEBGPU_UNAVAILABLE", `WebGPU is unavailable: ${reason}; ${fix}`, { reason });
  }
}

/** A setting the WebGPU backend does not run (yet): refused instead of computed wrong. */
export class WebGpuUnsupportedError extends KvboundError {
  constructor(feature: string, value: string | number, fix: string) {
    super("WEBGPU_UNSUPPORTED", `the WebGPU backend does not support ${feature} ${value}; ${fix}`, { feature, value });
  }
}

/**
 * An error the GPU reported (a validation error, an allocation the device could not make, a lost
 * device), caught by an error scope or the device's uncapturederror event and thrown from the next
 * allocation or forward step instead of crashing the process or passing silently.
 */
export class WebGpuDeviceError extends KvboundError {
  constructor(kind: "validation" | "out-of-memory" | "internal" | "lost", what: string, gpuMessage: string) {
    const fix =
      kind === "out-of-memory" || kind === "lost"
        ? "lower the cache window, budget or batch size, or use --backend cpu"
        : "a buffer over the adapter's limits is the usual cause: lower the cache window, budget or batch size, or use --backend cpu";
    super("WEBGPU_DEVICE", `WebGPU ${kind} error while ${what}: ${gpuMessage.trim().replace(/\s*\n\s*/g, " ")}; ${fix}`, { kind, what, gpuMessage });
  }
}

export class AbortError extends KvboundError {
  constructor(message = "generation aborted") {
    super("ABORTED", message, {});
  }
}

// ---------------------------------------------------------------------------------------------

const registry = new Map<string, new (...args: never[]) => KvboundError>();

/**
 * Rebuilds an error that crossed a worker or process boundary as `{name, code, message, details}`:
 * the result is a KvboundError whose `name`, `code`, `message` and `details` equal the original's,
 * and which is an instance of the original subclass when that class is known here.
 */
export function errorFromJSON(json: SerializedKvboundError): KvboundError {
  const err = new KvboundError(json.code, json.message, json.details);
  const ctor = registry.get(json.name);
  if (ctor) Object.setPrototypeOf(err, ctor.prototype);
  err.name = json.name;
  return err;
}

for (const ctor of [
  KvboundError,
  GgufParseError,
  GgufLimitError,
  FetchError,
  ModelConfigError,
  UnsupportedRopeScalingError,
  UnsupportedArchitectureError,
  UnknownModelError,
  ModelRefError,
  UnsupportedTokenizerError,
  ChatTemplateError,
  InvalidSettingError,
  UnknownCacheTypeError,
  QuantizedVRequiresFlashAttentionError,
  CacheTypeBlockSizeError,
  WindowSizeConfigurationError,
  AttentionSinkSizeError,
  WindowSizeSpecificationError,
  ContextWindowSizeExceededError,
  CacheConfigError,
  BudgetTooSmallError,
  ModelTooLargeError,
  SequenceNotFoundError,
  LayerOutOfRangeError,
  CacheExhaustedError,
  CacheOperationError,
  SnapshotError,
  SessionFileError,
  InvalidRequestError,
  RequestTooLargeError,
  ServerBusyError,
  UnknownRouteError,
  UnsupportedTensorTypeError,
  TensorShapeError,
  TensorDataError,
  AbortError,
  WebGpuUnavailableError,
  WebGpuUnsupportedError,
  WebGpuDeviceError,
] as const) {
  registry.set(ctor.name, ctor as unknown as new (...args: never[]) => KvboundError);
}
