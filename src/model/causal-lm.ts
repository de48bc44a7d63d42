// The model interface the engine runs: tokens in, K/V through a backend (the paged cache in a
// session, a dense array in references), logits out. Each layer says how its attention reads the
// cache (heads, RoPE, the model's own sliding window, scale, soft-capping), which is all the cache
// needs to know to give it a group of its own. Architectures (src/model/archs/) describe their
// layers as a TransformerPlan; src/model/transformer.ts computes any plan.

import type { RopeSpec } from "../cache/rope.js";
import type { RowCallPool } from "../wasm/row-call.js";

/** The facts about a model every caller may need (sizes, context, vocabulary). */
export interface ModelHParams {
  /** GGUF general.architecture. */
  readonly arch: string;
  readonly nLayer: number;
  readonly nEmbd: number;
  readonly nHead: number;
  readonly nHeadKv: number;
  /** Per head, for K and V alike (key_length = value_length in every supported architecture). */
  readonly headDim: number;
  readonly nFf: number;
  readonly nVocab: number;
  readonly nCtxTrain: number;
  readonly normEps: number;
  /** The RoPE of the model's full-attention layers (null when no layer rotates). */
  readonly rope: RopeSpec | null;
}

/** How one layer's attention reads the cache. */
export interface LayerAttention {
  readonly nHeadKv: number;
  readonly headDimK: number;
  readonly headDimV: number;
  /** null: the layer applies no RoPE (smollm3's NoPE layers). */
  readonly rope: RopeSpec | null;
  /** The model's own sliding window (llama.cpp n_swa, standard mask); 0 for full attention. */
  readonly slidingWindow: number;
  /** Softmax scale of q.k (1/sqrt(headDim), or the architecture's own). */
  readonly scale: number;
  /** Attention logit soft-capping (gemma2); 0 for none. */
  readonly softcap: number;
}

/** Where attention reads and writes K/V: the paged cache in a session, a dense array in references. */
export interface KvBackend {
  /** Stores layer `layer`'s K (pre-RoPE) and V for the token being processed. */
  write(layer: number, k: Float32Array, v: Float32Array): void;
  /** out[nHead*headDim] = attention of the (pre-RoPE) query `q` at position `pos` over the cached tokens. */
  attend(layer: number, q: Float32Array, pos: number, out: Float32Array): void;
  /** Batch form of write: the n tokens of the batch the caller reserved, k [n][nHeadKv*headDimK] and v [n][nHeadKv*headDimV]. */
  writeBatch?(layer: number, n: number, k: Float32Array, v: Float32Array): void;
  /** Batch form of attend: q [nQuery][nHead*headDim] (pre-RoPE) of the last nQuery tokens written, causal among them. */
  attendBatch?(layer: number, q: Float32Array, nQuery: number, out: Float32Array): void;
}

/** Which LongRoPE factors a model was built with, and the context that decides it. */
export interface LongRopeChoice {
  /** rope.scaling.original_context_length: contexts (padded as llama.cpp pads them) above it take the long factors. */
  readonly nCtxOrig: number;
  readonly long: boolean;
  /** The context the model was built for. */
  readonly nCtx: number;
}

/** A causal language model: what sessions, perplexity and the benchmarks run. */
export interface CausalLM {
  readonly hp: ModelHParams;
  /** One entry per layer: what the cache must know to hold and attend its K/V. */
  readonly attention: readonly LayerAttention[];
  /** Tokens one forwardBatch call may take (callers reserve cache slots in pieces this size). */
  readonly maxBatchTokens: number;
  /** Which kernels run the matmuls ("wasm" SIMD or "js"). */
  readonly kernels: "wasm" | "js";
  readonly activations: "q8" | "f32";
  /**
   * LongRoPE models (Phi-3 128k): llama.cpp picks the long factors when the context passes the
   * original one, so the model was built for a context on one side of it; a session on the other
   * side would compute with the wrong factors (Session refuses it). Null for every other model.
   */
  readonly longRope: LongRopeChoice | null;
  /** Bytes of the model's WebAssembly memory (weight copies + activations); 0 on the JS kernels. */
  readonly wasmBytes: number;
  /** Threads the matmuls are split over (1: the calling thread alone). */
  readonly threads: number;
  /** Why fewer threads run than were asked for (no SharedArrayBuffer, the JS kernels, ...), or null. */
  readonly threadsNote: string | null;
  /** The thread pool the model's caches split attention over (createModelCache), when it has one. */
  readonly rowCallPool?: RowCallPool | null;
  /** Stops the model's worker threads, if any; it still runs afterwards, on the calling thread. */
  dispose(): void;
  /** One token at position `pos` through every layer; `logits` ([nVocab]) receives the output when given. */
  forward(token: number, pos: number, kv: KvBackend, logits: Float32Array | null): void;
  /**
   * tokens[start .. start+n) as one batch (n <= maxBatchTokens); `logits` receives the last token's.
   * With `onLogits` (perplexity: every position's logits), `logits` (then required) receives each
   * token's logits in turn and onLogits(i, logits) runs right after token i's are written, i = 0..n-1;
   * the next token overwrites the buffer, so read it inside the call (no [n][nVocab] buffer is kept).
   * An implementation must call onLogits once per token, in order (perplexity checks the count).
   */
  forwardBatch(
    tokens: ArrayLike<number>,
    start: number,
    n: number,
    kv: KvBackend,
    logits: Float32Array | null,
    firstPos?: number,
    onLogits?: (i: number, logits: Float32Array) => void,
  ): void;
}
