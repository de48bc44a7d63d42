// llama.cpp as a benchmark peer, through node-llama-cpp installed in bench/peers (never a
// dependency of kvbound: see install.sh). CPU only, prebuilt binaries only, explicit threads.
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
  loadModel(opts: { modelPath: string; gpuLayers: number }): Promise<NlcModel>;
  dispose(): Promise<void>;
}
interface NlcModule {
  getLlama(opts: {
    gpu: false;
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

/** Loads the prebuilt CPU llama.cpp; throws with the install command when bench/peers is not installed. */
export async function loadLlamaCpp(threads: number): Promise<LlamaCppPeer> {
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
  // maxThreads caps every context of this instance; with it set, `threads` is what is used
  // (node-llama-cpp's default would be os.cpus() math cores, oversubscribing a small machine).
  const llama = await mod.getLlama({
    gpu: false,
    build: "never",
    usePrebuiltBinaries: true,
    progressLogs: false,
    maxThreads: threads,
    logLevel: "error",
  });
  const info: LlamaCppInfo = {
    nodeLlamaCppVersion: version,
    llamaCppRelease: `${llama.llamaCppRelease.repo}@${llama.llamaCppRelease.release}`,
    buildType: llama.buildType,
    gpu: String(llama.gpu),
    systemInfo: llama.systemInfo,
  };
  const models: NlcModel[] = [];
  return {
    info,
    async runner(modelPath, opts) {
      const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
      models.push(model);
      const ctx = await model.createContext({
        contextSize: opts.contextSize,
        batchSize: opts.batchSize ?? Math.min(512, opts.contextSize),
        threads: opts.threads,
        sequences: 1,
        flashAttention: opts.flashAttention ?? false,
        experimentalKvCacheKeyType: opts.kvCacheType ?? "F16",
        experimentalKvCacheValueType: opts.kvCacheType ?? "F16",
      });
      if (ctx.currentThreads !== opts.threads) {
        throw new Error(`node-llama-cpp runs ${ctx.currentThreads} threads, asked for ${opts.threads}`);
      }
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
