// llama.cpp as a benchmark peer, through node-llama-cpp installed in bench/peers (never a
// dependency of kvbound: see install.sh). Prebuilt binaries only, explicit threads; CPU, or the
// Vulkan build for bench/webgpu.ts (loadLlamaCpp(threads, { gpu: "vulkan" })).
//
// node-llama-cpp is imported by a computed specifier so that kvbound's own typecheck does not need
// bench/peers/node_modules; the few members used are typed below (node-llama-cpp 3.22 d.ts files:
// dist/bindings/getLlama.d.ts, dist/evaluator/LlamaContext/LlamaContext.d.ts).

import { readFileSync } from "node:fs";
import type { EngineRunner } from "../lib/runner.js";

interface NlcSequence {
  clearHistory(): Promise<void>;
  evaluateWithoutGeneratingNewTokens(tokens: number[]): Promise<void>;
  evaluate(tokens: number[], options: { temperature: number; yieldEogToken: boolean }): AsyncGenerator<number, void, number | number[] | undefined>;
  controlledEvaluate(input: NlcControlledInput[]): Promise<Array<NlcControlledOutput | undefined>>;
}
/** One input of controlledEvaluate (LlamaContext.d.ts, ControlledEvaluateInputItem): no sampling options, so no sampler truncates. */
type NlcControlledInput = number | [number, { generateNext: { probabilities?: boolean; logits?: boolean } }];
/** Per input, when it asked for anything: `next.*` maps are keyed by token id (sorted by value, highest first). */
interface NlcControlledOutput {
  next: { probabilities?: Map<number, number>; logits?: Map<number, number> };
}
interface NlcContext {
  getSequence(): NlcSequence;
  readonly contextSize: number;
  readonly batchSize: number;
  readonly currentThreads: number;
  dispose(): Promise<void>;
}
interface NlcModel {
  readonly fileInsights: { readonly trainContextSize: number | undefined };
  readonly tokens: { readonly bos: number | null; readonly eos: number | null };
  createContext(opts: {
    contextSize: number;
    batchSize: number;
    threads: number;
    sequences: number;
    flashAttention: boolean;
    experimentalKvCacheKeyType?: string;
    experimentalKvCacheValueType?: string;
  }): Promise<NlcContext>;
  dispose(): Promise<void>;
}
interface NlcLlama {
  readonly gpu: string | false;
  readonly buildType: string;
  readonly llamaCppRelease: { readonly repo: string; readonly release: string };
  readonly systemInfo: string;
  readonly maxThreads: number;
  loadModel(opts: { modelPath: string; gpuLayers: number | "max" }): Promise<NlcModel>;
  dispose(): Promise<void>;
}
interface NlcModule {
  getLlama(opts: {
    gpu: false | "vulkan";
    build: "never";
    usePrebuiltBinaries: true;
    progressLogs: false;
    maxThreads: number;
    logLevel: string;
    logger?: (level: string, message: string) => void;
  }): Promise<NlcLlama>;
}

export interface LlamaCppInfo {
  readonly nodeLlamaCppVersion: string;
  readonly llamaCppRelease: string;
  readonly buildType: string;
  readonly gpu: string;
  /** ggml's CPU feature line (which CPU backend variant the prebuilt binary picked). */
  readonly systemInfo: string;
}

export interface RunnerOptions {
  readonly threads: number;
  readonly contextSize: number;
  readonly batchSize?: number;
  readonly flashAttention?: boolean;
  /** KV cache element type; llama.cpp's default is F16 (kvbound's DenseKv keeps F32). */
  readonly kvCacheType?: "F16" | "F32";
}

export interface LlamaCppPeer {
  readonly info: LlamaCppInfo;
  /** A runner over one model file; `contextSize` bounds prompt + generated tokens. */
  runner(modelPath: string, opts: RunnerOptions): Promise<EngineRunner>;
  dispose(): Promise<void>;
}

const PACKAGE = "node-llama-cpp";

/** node-llama-cpp from bench/peers, and its version; throws with the install command when it is not installed. */
async function importNodeLlamaCpp(): Promise<{ mod: NlcModule; version: string }> {
  // The postinstall/download paths of node-llama-cpp are never wanted here: prebuilt or nothing.
  process.env.NODE_LLAMA_CPP_SKIP_DOWNLOAD = "true";
  let mod: NlcModule;
  const spec: string = PACKAGE;
  try {
    mod = (await import(spec)) as NlcModule;
  } catch (e) {
    throw new Error(`cannot import node-llama-cpp from bench/peers (${(e as Error).message}); run bench/peers/install.sh first`);
  }
  const version = (JSON.parse(readFileSync(new URL("./node_modules/node-llama-cpp/package.json", import.meta.url), "utf8")) as { version: string }).version;
  return { mod, version };
}

/**
 * The prebuilt CPU llama.cpp with `threads` threads and the facts a table prints. maxThreads caps
 * every context of this instance; with it set, `threads` is what is used (node-llama-cpp's default
 * would be os.cpus() math cores, oversubscribing a small machine).
 */
async function startLlama(
  threads: number,
  log: { logLevel: string; logger?: (level: string, message: string) => void },
  gpu: false | "vulkan" = false,
): Promise<{ llama: NlcLlama; info: LlamaCppInfo }> {
  const { mod, version } = await importNodeLlamaCpp();
  const llama = await mod.getLlama({ gpu, build: "never", usePrebuiltBinaries: true, progressLogs: false, maxThreads: threads, ...log });
  const info: LlamaCppInfo = {
    nodeLlamaCppVersion: version,
    llamaCppRelease: `${llama.llamaCppRelease.repo}@${llama.llamaCppRelease.release}`,
    buildType: llama.buildType,
    gpu: String(llama.gpu),
    systemInfo: llama.systemInfo,
  };
  return { llama, info };
}

/** One sequence's context on `model`, checked to run exactly `threads` threads. */
async function openContext(
  model: NlcModel,
  opts: { contextSize: number; batchSize?: number; flashAttention?: boolean; kvCacheType?: "F16" | "F32" },
  threads: number,
): Promise<NlcContext> {
  const ctx = await model.createContext({
    contextSize: opts.contextSize,
    batchSize: opts.batchSize ?? Math.min(512, opts.contextSize),
    threads,
    sequences: 1,
    flashAttention: opts.flashAttention ?? false,
    experimentalKvCacheKeyType: opts.kvCacheType ?? "F16",
    experimentalKvCacheValueType: opts.kvCacheType ?? "F16",
  });
  if (ctx.currentThreads !== threads) throw new Error(`node-llama-cpp runs ${ctx.currentThreads} threads, asked for ${threads}`);
  return ctx;
}

/**
 * Loads the prebuilt CPU llama.cpp, or with `gpu: "vulkan"` the prebuilt Vulkan build
 * (@node-llama-cpp/linux-x64-vulkan, optional in bench/peers) with every layer offloaded; throws
 * with the install command when bench/peers (or the Vulkan binary) is not installed.
 */
export async function loadLlamaCpp(threads: number, opts: { gpu?: false | "vulkan" } = {}): Promise<LlamaCppPeer> {
  const gpu = opts.gpu ?? false;
  const { llama, info } = await startLlama(threads, { logLevel: "error" }, gpu);
  if (gpu !== false && llama.gpu !== gpu) {
    await llama.dispose();
    throw new Error(`node-llama-cpp loaded gpu ${String(llama.gpu)}, not ${gpu}: run bench/peers/install.sh with network to @node-llama-cpp/linux-x64-vulkan`);
  }
  const models: NlcModel[] = [];
  return {
    info,
    async runner(modelPath, opts) {
      const model = await llama.loadModel({ modelPath, gpuLayers: gpu === false ? 0 : "max" });
      models.push(model);
      const ctx = await openContext(model, opts, opts.threads);
      const seq = ctx.getSequence();
      return {
        engine: "llama.cpp",
        async reset() {
          await seq.clearHistory();
        },
        async prefill(ids) {
          await seq.evaluateWithoutGeneratingNewTokens([...ids]);
        },
        async decode(first, n) {
          const out: number[] = [];
          if (n <= 0) return out;
          // temperature 0 = greedy (argmax); EOG tokens are yielded so every run makes n steps.
          for await (const t of seq.evaluate([first], { temperature: 0, yieldEogToken: true })) {
            out.push(t);
            if (out.length >= n) break;
          }
          return out;
        },
        async dispose() {
          await ctx.dispose();
        },
      };
    },
    async dispose() {
      for (const m of models) await m.dispose();
      await llama.dispose();
    },
  };
}

/** Next-token outputs of llama.cpp for one position, in token-id order. */
export interface LlamaCppNextToken {
  /** llama.cpp's logits (llama_get_logits_ith), [nVocab]. */
  readonly logits: Float32Array;
  /**
   * node-llama-cpp's `next.probabilities`, [nVocab]: with no sampling options its sampler chain is
   * only the greedy sampler, which selects without truncating, so this is the softmax (expf, f32
   * sums, AddonContext.cpp SampleToken) of all the logits at temperature 1.
   */
  readonly probabilities: Float32Array;
}

export interface LlamaCppLogitsRunner {
  readonly contextSize: number;
  /**
   * Appends `ids` to the sequence in one controlledEvaluate call (batches of batchSize, teacher
   * forced) and returns the next-token outputs after each. Throws before the context would fill:
   * node-llama-cpp would shift it silently.
   */
  evaluate(ids: readonly number[]): Promise<LlamaCppNextToken[]>;
  /** Empties the sequence (the next evaluate starts at position 0). */
  reset(): Promise<void>;
  dispose(): Promise<void>;
}

export interface LlamaCppLogitsOptions {
  readonly contextSize: number;
  readonly nVocab: number;
  readonly batchSize?: number;
  readonly flashAttention?: boolean;
  readonly kvCacheType?: "F16" | "F32";
}

export interface LlamaCppLogitsPeer {
  readonly info: LlamaCppInfo;
  /** Loads a model; a file llama.cpp refuses throws with llama.cpp's own log lines (e.g. the missing tensor). */
  open(modelPath: string, opts: LlamaCppLogitsOptions): Promise<LlamaCppLogitsRunner>;
  dispose(): Promise<void>;
}

/** llama.cpp as a reference for next-token distributions (differential tests): one sequence, `threads` threads. */
export async function loadLlamaCppLogits(threads: number): Promise<LlamaCppLogitsPeer> {
  // llama.cpp says why it refuses a file only in its log: keep the recent lines for the error.
  const recentLog: string[] = [];
  const { llama, info } = await startLlama(threads, {
    logLevel: "warn",
    logger: (level, message) => {
      recentLog.push(`${level}: ${message.trim()}`);
      if (recentLog.length > 20) recentLog.shift();
    },
  });
  return {
    info,
    async open(modelPath, opts) {
      recentLog.length = 0;
      let model: NlcModel;
      try {
        model = await llama.loadModel({ modelPath, gpuLayers: 0 });
      } catch (e) {
        const why = recentLog.filter((l) => l.startsWith("error")).join(" | ");
        throw new Error(`llama.cpp refused ${modelPath}: ${(e as Error).message.trim()}${why ? ` (${why})` : ""}`);
      }
      const ctx = await openContext(model, opts, threads);
      const seq = ctx.getSequence();
      let length = 0;
      return {
        contextSize: ctx.contextSize,
        async evaluate(ids) {
          if (length + ids.length > ctx.contextSize) {
            throw new Error(`${length} + ${ids.length} tokens do not fit the ${ctx.contextSize}-token context (node-llama-cpp would shift it)`);
          }
          const input: NlcControlledInput[] = [];
          for (let i = 0; i < ids.length; i++) input.push([ids[i]!, { generateNext: { probabilities: true, logits: true } }]);
          const results = await seq.controlledEvaluate(input);
          length += ids.length;
          const out: LlamaCppNextToken[] = [];
          for (let i = 0; i < ids.length; i++) {
            const next = results[i]?.next;
            if (next?.probabilities === undefined || next.logits === undefined) throw new Error(`llama.cpp gave no next-token output for input ${i}`);
            if (next.probabilities.size !== opts.nVocab || next.logits.size !== opts.nVocab) {
              throw new Error(`llama.cpp gave ${next.probabilities.size} probabilities and ${next.logits.size} logits at input ${i}, not the whole vocabulary of ${opts.nVocab}`);
            }
            const logits = new Float32Array(opts.nVocab);
            const probabilities = new Float32Array(opts.nVocab);
            for (const [t, v] of next.logits) logits[t] = v;
            for (const [t, p] of next.probabilities) probabilities[t] = p;
            out.push({ logits, probabilities });
          }
          return out;
        },
        async reset() {
          await seq.clearHistory();
          length = 0;
        },
        async dispose() {
          await ctx.dispose();
          await model.dispose();
        },
      };
    },
    async dispose() {
      await llama.dispose();
    },
  };
}
