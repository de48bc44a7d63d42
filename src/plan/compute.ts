// Activation / compute-buffer estimates: the memory an engine needs besides weights and KV to run
// one prefill chunk. These are ESTIMATES, not engine facts: each engine sizes this buffer by
// reserving or profiling a worst-case graph at load time, which kvbound cannot replay. Each
// formula counts the largest tensors alive at the same time and says what it leaves out.

import type { ModelSpec } from "../spec/model-spec.js";
import { kvboundCompute } from "./kvbound.js";
import type { EngineName, PlanSettings } from "./types.js";

export interface ComputeEstimate {
  readonly bytes: number;
  readonly note: string;
}

/** Facts an estimate reads; the engine rule's resolved values where it has them. */
export interface ComputeInputs {
  /** Tokens in one forward pass: llama.cpp n_ubatch, vLLM max_num_batched_tokens, WebLLM prefill_chunk_size. */
  readonly chunkTokens: number;
  /** KV length attention may span (context or window), for score matrices. */
  readonly kvTokens: number;
  readonly flashAttn: boolean;
  /** vLLM: rows of the dummy sampler run (max_num_seqs). */
  readonly maxSeqs?: number;
}

/** Defaults when the caller has no resolved settings: llama.cpp's n_ubatch 512; vLLM's
 *  max_num_batched_tokens 2048 (`vllm serve` on GPUs under 70 GiB, vllm/engine/arg_utils.py);
 *  WebLLM's prefill_chunk_size 2048 (common mlc-chat-config value); kvbound's chunk 512. */
export function defaultComputeInputs(engine: EngineName, spec: ModelSpec, settings: PlanSettings): ComputeInputs {
  const kvTokens = settings.ctx ?? (settings.contextWindowSize !== undefined && settings.contextWindowSize > 0 ? settings.contextWindowSize : undefined) ?? settings.slidingWindowSize ?? spec.nCtxTrain ?? 4096;
  switch (engine) {
    case "llama.cpp":
      return { chunkTokens: settings.ubatch ?? 512, kvTokens, flashAttn: settings.flashAttn ?? true };
    case "vllm":
      return { chunkTokens: settings.ubatch ?? 2048, kvTokens, flashAttn: true, maxSeqs: 256 };
    case "webllm":
      return { chunkTokens: settings.prefillChunkSize ?? 2048, kvTokens, flashAttn: true };
    case "kvbound":
      return { chunkTokens: settings.prefillChunkSize ?? 512, kvTokens, flashAttn: false };
    case "ollama":
      // num_batch 512 (api/types.go DefaultOptions), on the llama.cpp graph or the Go engine's ggml one.
      return { chunkTokens: settings.ubatch ?? 512, kvTokens, flashAttn: settings.flashAttn ?? true };
    case "mlx":
      // generate_step's prefill_step_size 2048; mx.fast.scaled_dot_product_attention.
      return { chunkTokens: settings.prefillChunkSize ?? 2048, kvTokens, flashAttn: true };
    default:
      return engine satisfies never;
  }
}

/** Returns null when the spec lacks the sizes the formula needs (nVocab / nFf unknown). */
export function computeEstimate(engine: EngineName, spec: ModelSpec, inputs: ComputeInputs): ComputeEstimate | null {
  if (spec.nVocab === null || spec.nFf === null) return null;
  const nVocab = spec.nVocab;
  const nEmbd = spec.nEmbd;
  // MoE: the expert FFN runs for `used` experts per token.
  const nFfActive = spec.nFf * (spec.experts ? spec.experts.used : 1);
  const t = Math.max(1, inputs.chunkTokens);
  switch (engine) {
    case "llama.cpp": {
      // ggml-alloc reserves the graph with n_outputs = n_ubatch (worst case), f32 activations.
      // Peak = max(output part, layer part): logits ubatch x n_vocab x 4 next to the last hidden
      // state; in a layer, KQ scores ubatch x n_kv x n_head x 4 (none with flash attention) plus
      // gate+up FFN activations 2 x ubatch x n_ff x 4 plus ~3 hidden-size tensors.
      const logits = t * nVocab * 4 + t * nEmbd * 4;
      const kq = inputs.flashAttn ? 0 : t * inputs.kvTokens * spec.nHead * 4;
      const layer = kq + 2 * t * nFfActive * 4 + 3 * t * nEmbd * 4;
      return {
        bytes: Math.max(logits, layer),
        note:
          `estimate of llama.cpp's compute buffer for a ${t}-token ubatch: max(logits ${t}x${nVocab}x4 B, ` +
          `${inputs.flashAttn ? "" : `KQ ${t}x${inputs.kvTokens}x${spec.nHead}x4 B + `}FFN 2x${t}x${nFfActive}x4 B + hidden 3x${t}x${nEmbd}x4 B); ` +
          `the real buffer comes from ggml-alloc's graph reservation and differs by backend`,
      };
    }
    case "vllm": {
      // The profile run pushes max_num_batched_tokens tokens through the model in bf16 (flash
      // attention: no score matrix), then a dummy sampler over max_num_seqs rows of f32 logits
      // (logits + probabilities). CUDA graphs and the CUDA context are not counted.
      const seqs = Math.min(inputs.maxSeqs ?? 256, t);
      const layer = t * (2 * nFfActive + 4 * nEmbd) * 2;
      const sampler = seqs * nVocab * 4 * 2;
      return {
        bytes: layer + sampler,
        note:
          `estimate of vLLM's activation peak: ${t} tokens x (2 x n_ff ${nFfActive} + 4 x n_embd ${nEmbd}) x 2 B ` +
          `+ sampler ${seqs} x ${nVocab} x 4 B x 2; vLLM measures this in a profile run; ` +
          `CUDA graphs and non-torch memory (often 0.5-1.5 GiB) are not included`,
      };
    }
    case "webllm": {
      // MLC's prefill runs f16 activations for one chunk and computes logits for the last token
      // only; its paged attention kernels tile the scores (no full score matrix).
      const layer = t * (2 * nFfActive + 4 * nEmbd) * 2;
      const logits = nVocab * 4;
      return {
        bytes: layer + logits,
        note:
          `estimate of WebLLM's activations for a ${t}-token prefill chunk: ${t} x (2 x ${nFfActive} + 4 x ${nEmbd}) x 2 B ` +
          `+ last-token logits ${nVocab} x 4 B; TVM's memory planner decides the real figure`,
      };
    }
    case "kvbound":
      // Not an estimate: kvbound's own model layout (activation buffers of its 64-token batch),
      // replayed by src/plan/kvbound.ts; `inputs` do not change it.
      return kvboundCompute(spec);
    case "ollama": {
      // Both of Ollama's runners reserve a ggml graph for a num_batch-token batch: the llama.cpp
      // formula, labelled as Ollama's.
      const est = computeEstimate("llama.cpp", spec, inputs);
      return est === null ? null : { bytes: est.bytes, note: est.note.replace("llama.cpp's compute buffer", "Ollama's compute graph (ggml)").replace("ubatch", "num_batch") };
    }
    case "mlx": {
      // One prefill chunk in the model's dtype (float16); MLX evaluates lazily, so the prefill
      // chunks' logits are never computed (generate_step only evaluates the cache state) and the
      // last step's logits are one row; the fused attention kernel keeps no score matrix.
      const layer = t * (2 * nFfActive + 4 * nEmbd) * 2;
      const logits = nVocab * 4;
      return {
        bytes: layer + logits,
        note:
          `estimate of mlx-lm's activations for a ${t}-token prefill chunk: ${t} x (2 x ${nFfActive} + 4 x ${nEmbd}) x 2 B + one row of logits ${nVocab} x 4 B; ` +
          `MLX's allocator cache (mx.get_cache_memory) can hold more until mx.clear_cache`,
      };
    }
    default:
      return engine satisfies never;
  }
}
