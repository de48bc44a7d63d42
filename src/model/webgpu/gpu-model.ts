// The WebGPU forward pass (WebGpuTransformer) as a model the engine runs: a CausalLM whose
// forward is asynchronous (AsyncForwardLM), so Session / generate / the API server await it for
// prefill and decode, with the same cache config semantics as the CPU backend (context window,
// sliding window + sinks, prefix-recent, H2O and TOVA with their attention statistics reduced on
// the GPU). What the GPU forward does not compute (fp8 pages, K and V head dims that differ) is refused
// with WebGpuUnsupportedError when the model or its cache is made. The synchronous forward
// methods (perplexity, references) are refused the same way. A cache's GPU buffers go with
// releasePagedCache (Session.dispose), the model's with dispose.
/// <reference types="@webgpu/types" />

import type { CacheConfig } from "../../cache/config.js";
import type { PagedKvCache } from "../../cache/paged-kv-cache.js";
import { WebGpuUnsupportedError } from "../../errors.js";
import type { GgufHeader } from "../../gguf/header.js";
import { transformerPlan } from "../architectures.js";
import type { AsyncForwardLM } from "../async-forward.js";
import type { KvBackend, LayerAttention, LongRopeChoice, ModelHParams } from "../causal-lm.js";
import { requestGpu, type GpuContext } from "./device.js";
import { WebGpuTransformer, type GpuCache } from "./forward.js";

export interface WebGpuModelOptions {
  /** The longest cache window a session will use (the attention scratch is sized by it). */
  readonly window: number;
  /** The context the model runs with (LongRoPE factors are picked by it, as on the CPU). */
  readonly nCtx?: number;
  /** Tokens one forward step takes (default the forward pass's own, 64). */
  readonly maxBatchTokens?: number;
  /** A device to run on (default: requestGpu()). */
  readonly context?: GpuContext;
}

export class WebGpuModel implements AsyncForwardLM {
  readonly backend = "webgpu" as const;
  readonly defaultCodec = "f32" as const;
  readonly hp: ModelHParams;
  readonly attention: readonly LayerAttention[];
  readonly maxBatchTokens: number;
  /** No wasm or JS matmuls run: "js" only names the CPU-side work (embedding rows, sampling). */
  readonly kernels = "js" as const;
  readonly activations = "f32" as const;
  readonly longRope: LongRopeChoice | null;
  readonly wasmBytes = 0;
  readonly threads = 1;
  readonly threadsNote: string | null;
  /** The most tokens a cache of this model may hold (WebGpuTransformer's window). */
  readonly window: number;
  readonly context: GpuContext;
  readonly gpu: WebGpuTransformer;
  private readonly caches = new WeakMap<PagedKvCache, GpuCache>();
  private disposed = false;
  /** Whether dispose destroys the device (not when the caller passed its own context). */
  private readonly ownsDevice: boolean;

  constructor(context: GpuContext, header: GgufHeader, data: Uint8Array, options: WebGpuModelOptions & { threadsAsked?: number; ownsDevice?: boolean }) {
    this.ownsDevice = options.ownsDevice ?? false;
    const plan = transformerPlan(header, data, options.nCtx);
    this.context = context;
    this.window = options.window;
    this.gpu = new WebGpuTransformer(context, header, data, plan, {
      window: options.window,
      ...(options.maxBatchTokens !== undefined ? { maxBatchTokens: options.maxBatchTokens } : {}),
    });
    this.hp = this.gpu.hp;
    this.attention = this.gpu.attention;
    this.maxBatchTokens = this.gpu.maxBatchTokens;
    this.longRope = plan.longRope ?? null;
    const asked = options.threadsAsked;
    this.threadsNote = asked !== undefined && asked > 1 ? "the WebGPU backend runs the matmuls on the GPU" : null;
  }

  createPagedCache(config: CacheConfig): PagedKvCache {
    if (config.windowTokens > this.window) {
      throw new WebGpuUnsupportedError(
        "a cache window of",
        `${config.windowTokens} tokens`,
        `this model was loaded for windows of at most ${this.window} tokens; load it with nCtx ${config.windowTokens} (the CLI passes its window)`,
      );
    }
    const c = this.gpu.createCache(config);
    this.caches.set(c.cache, c);
    return c.cache;
  }

  /** Destroys the GPU buffers of a cache this model made (its pages, statistics, ops); it cannot run afterwards. */
  releasePagedCache(cache: PagedKvCache): void {
    const c = this.caches.get(cache);
    if (c === undefined) return;
    this.gpu.releaseCache(c);
  }

  forwardAsync(tokens: ArrayLike<number>, start: number, n: number, cache: PagedKvCache, seqId: number, logits: Float32Array | null): Promise<void> {
    return this.gpu.forwardBatch(tokens, start, n, this.gpuCache(cache), seqId, logits);
  }

  readPages(cache: PagedKvCache, seqId: number): Promise<() => void> {
    return this.gpu.readPages(this.gpuCache(cache), seqId);
  }

  private gpuCache(cache: PagedKvCache): GpuCache {
    const c = this.caches.get(cache);
    if (c === undefined) {
      throw new WebGpuUnsupportedError("a cache it did not make:", "a CPU paged cache", "create the cache with model.createPagedCache (Session does)");
    }
    return c;
  }

  forward(_token: number, _pos: number, _kv: KvBackend, _logits: Float32Array | null): void {
    throw syncRefused();
  }

  forwardBatch(): void {
    throw syncRefused();
  }

  /**
   * Destroys every GPU buffer of the model and of the caches it made, and the device when the
   * model requested it; the model cannot run afterwards.
   */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.gpu.dispose();
    if (this.ownsDevice) this.context.device.destroy();
  }
}

function syncRefused(): WebGpuUnsupportedError {
  return new WebGpuUnsupportedError("a synchronous forward pass", "(forward / forwardBatch)", "its forward is asynchronous: run it through Session or generate, or use --backend cpu");
}

/** A WebGPU model over GGUF tensor data (`data`: the bytes from the header's data offset on). */
export async function createWebGpuModel(header: GgufHeader, data: Uint8Array, options: WebGpuModelOptions & { threadsAsked?: number }): Promise<WebGpuModel> {
  const context = options.context ?? (await requestGpu());
  return new WebGpuModel(context, header, data, { ...options, ownsDevice: options.context === undefined });
}
