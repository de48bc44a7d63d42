// exportPlan: turns a MemoryPlan's resolved settings into what the engine itself is started with,
// so the plan a user read is the configuration they run:
//   llama.cpp       command-line flags (common/arg.cpp names: -c, -np, -ub, -ctk, -ctv, -fa, --kv-unified,
//                   --swa-full), only those the plan's build has (llama-cpp-builds.ts: `-fa` is a bare
//                   switch before b6325 and absent before b2771; --kv-unified arrived in b5913, --swa-full
//                   with the SWA cache)
//   vllm            `vllm serve` arguments (--max-model-len, --kv-cache-dtype, --gpu-memory-utilization,
//                   --tensor-parallel-size, --block-size, --max-num-batched-tokens)
//   webllm          ModelRecord.overrides JSON (context_window_size, sliding_window_size, attention_sink_size,
//                   prefill_chunk_size)
//   node-llama-cpp  model.createContext({...}) options of node-llama-cpp 3.22.1
//                   (src/evaluator/LlamaContext/types.ts: contextSize, sequences, batchSize, flashAttention,
//                   experimentalKvCacheKeyType / experimentalKvCacheValueType as GgmlType names,
//                   swaFullCache). That version has no kvUnified option, and its contextSize is PER
//                   SEQUENCE: LlamaContext passes n_ctx = contextSize x sequences to llama.cpp
//                   ("each sequence needs its own <contextSize> of cells", LlamaContext.ts) with
//                   kv_unified = false (llama/addon/AddonContext.cpp). So contextSize is the plan's
//                   n_ctx_seq (the cells of one stream), not its ctx.
//   ollama          `ollama serve` environment and a Modelfile with PARAMETER num_ctx (src/plan/ollama.ts)
//   mlx             mlx_lm.generate / mlx_lm.server flags (src/plan/mlx.ts)

import { InvalidSettingError } from "../errors.js";
import {
  llamaCppFlashAttnFlag,
  llamaCppHasSwaFullFlag,
  LLAMA_CPP_KV_UNIFIED_FLAG_BUILD,
} from "./llama-cpp-builds.js";
import { exportMlx } from "./mlx.js";
import { exportOllama } from "./ollama.js";
import type { EngineName, MemoryPlan } from "./types.js";

/** The node-llama-cpp version whose createContext options the export writes. */
export const NODE_LLAMA_CPP_VERSION = "3.22.1";

export type ExportTarget = "llama.cpp" | "vllm" | "webllm" | "node-llama-cpp" | "ollama" | "mlx";
export const EXPORT_TARGETS: readonly ExportTarget[] = ["llama.cpp", "vllm", "webllm", "node-llama-cpp", "ollama", "mlx"];

/** Which plans each target can be written from (node-llama-cpp runs llama.cpp; WebLLM windows
 *  mean the same in kvbound). */
const SOURCES: Readonly<Record<ExportTarget, readonly EngineName[]>> = {
  "llama.cpp": ["llama.cpp"],
  "node-llama-cpp": ["llama.cpp"],
  vllm: ["vllm"],
  webllm: ["webllm", "kvbound"],
  ollama: ["ollama"],
  mlx: ["mlx"],
};

function int(settings: Readonly<Record<string, unknown>>, key: string): number | undefined {
  const v = settings[key];
  return typeof v === "number" && Number.isInteger(v) ? v : undefined;
}

function str(settings: Readonly<Record<string, unknown>>, key: string): string | undefined {
  const v = settings[key];
  return typeof v === "string" ? v : undefined;
}

function need<T>(value: T | undefined, key: string, target: ExportTarget): T {
  if (value === undefined) {
    throw new InvalidSettingError(`the plan's settings lack ${key}, which a ${target} export needs; re-run planMemory`, { setting: key, value: null });
  }
  return value;
}

/** A --tensor-split proportion: layer counts stay integers, byte sizes become GiB with 2 decimals
 *  (only the proportions matter to llama.cpp). */
function splitNumber(x: unknown): string {
  const n = typeof x === "number" ? x : Number(x);
  if (Number.isInteger(n) && n < 1 << 20) return String(n);
  return String(Math.round((n / 2 ** 30) * 100) / 100);
}

export function exportPlan(plan: MemoryPlan, target: ExportTarget): string {
  const allowed = SOURCES[target];
  if (allowed === undefined) {
    throw new InvalidSettingError(`unknown export target ${JSON.stringify(target)}; use one of ${EXPORT_TARGETS.join(", ")}`, { setting: "target", value: target });
  }
  if (!allowed.includes(plan.engine)) {
    throw new InvalidSettingError(
      `a ${plan.engine} plan cannot be exported as ${target} settings (its byte figures are ${plan.engine}'s); plan again with engine ${allowed[0]}`,
      { setting: "target", value: target, engine: plan.engine },
    );
  }
  const s = plan.settings;
  switch (target) {
    case "llama.cpp": {
      const build = int(s, "build");
      const flags = [`-c ${need(int(s, "ctx"), "ctx", target)}`, `-np ${int(s, "seqs") ?? 1}`];
      const ubatch = int(s, "ubatch");
      if (ubatch !== undefined) flags.push(`-ub ${ubatch}`);
      flags.push(`-ctk ${str(s, "typeK") ?? "f16"}`, `-ctv ${str(s, "typeV") ?? "f16"}`);
      const fa = s.flashAttn !== false;
      switch (llamaCppFlashAttnFlag(build)) {
        case "value":
          flags.push(`-fa ${fa ? "on" : "off"}`);
          break;
        case "switch":
          // A bare switch, off by default: "-fa on" would leave "on" as a stray argument.
          if (fa) flags.push("-fa");
          break;
        case "none":
          // No flash attention in this build (the llama.cpp rule refuses planning it on).
          break;
      }
      // Before per-sequence streams every sequence shared one cache: what --kv-unified asks for,
      // with no flag to ask it.
      if (s.kvUnified === true && (build === undefined || build >= LLAMA_CPP_KV_UNIFIED_FLAG_BUILD)) flags.push("--kv-unified");
      // Before the separate SWA cache, SWA layers lived in the full-size cache: --swa-full's effect.
      if (s.swaFull === true && llamaCppHasSwaFullFlag(build)) flags.push("--swa-full");
      // Devices (llama-cpp-offload.ts): -ngl and --tensor-split pin the placement the plan counted,
      // so --fit finds them set and leaves them ("n_gpu_layers already set by user").
      const ngl = int(s, "ngl");
      if (ngl !== undefined) flags.push(`-ngl ${ngl}`);
      const split = s.tensorSplit;
      if (Array.isArray(split) && split.length > 1) flags.push(`--tensor-split ${split.map((x) => splitNumber(x)).join(",")}`);
      if (s.kvOffload === false) flags.push("-nkvo");
      return flags.join(" ");
    }
    case "node-llama-cpp": {
      const build = int(s, "build");
      if (build !== undefined) {
        throw new InvalidSettingError(
          `node-llama-cpp ${NODE_LLAMA_CPP_VERSION} runs the llama.cpp it bundles, not b${build}: plan without llamaCppBuild (--llama-cpp-build) to export node-llama-cpp options`,
          { setting: "llamaCppBuild", value: build },
        );
      }
      const seqs = int(s, "seqs") ?? 1;
      if (s.kvUnified === true && seqs > 1) {
        throw new InvalidSettingError(
          `node-llama-cpp ${NODE_LLAMA_CPP_VERSION} has no kvUnified option (its contexts set kv_unified = false, llama/addon/AddonContext.cpp): ` +
            `each of the ${seqs} sequences gets its own stream; plan without kvUnified (--kv-unified) to export node-llama-cpp options`,
          { setting: "kvUnified", value: true },
        );
      }
      // contextSize is per sequence (n_ctx = contextSize x sequences): the plan's cells per stream.
      const extra = plan.extra ?? {};
      const perSequence = int(extra, "nCtxSeq") ?? need(int(s, "ctx"), "ctx", target);
      const options: Record<string, unknown> = { contextSize: perSequence, sequences: seqs };
      // batchSize sets n_batch and n_ubatch (AddonContext.cpp); for models with SWA layers and no
      // swaFullCache, LlamaContext adds 1 ("to handle edge cases with SWA KV cache"), which moves
      // the SWA cache's n_swa + n_ubatch cells: ask for one less so n_ubatch is the plan's.
      const ubatch = int(s, "ubatch");
      if (ubatch !== undefined) {
        const swaPlus = s.swaFull !== true && plan.kv.caches.some((c) => c.kind === "swa") ? 1 : 0;
        const batchSize = ubatch - swaPlus;
        if (batchSize < seqs || batchSize < 1) {
          throw new InvalidSettingError(
            `node-llama-cpp raises batchSize to the sequence count (${seqs}), which would change the plan's ubatch ${ubatch}; plan with ubatch >= ${seqs + swaPlus}`,
            { setting: "ubatch", value: ubatch },
          );
        }
        options.batchSize = batchSize;
      }
      options.flashAttention = s.flashAttn !== false;
      const typeK = str(s, "typeK") ?? "f16";
      const typeV = str(s, "typeV") ?? "f16";
      // GgmlType enum keys are upper case ("Q8_0"); F16 is the default, so leave it out.
      if (typeK !== "f16") options.experimentalKvCacheKeyType = typeK.toUpperCase();
      if (typeV !== "f16") options.experimentalKvCacheValueType = typeV.toUpperCase();
      if (s.swaFull === true) options.swaFullCache = true;
      return JSON.stringify(options, null, 2);
    }
    case "vllm": {
      const args = [
        `--max-model-len ${need(int(s, "maxModelLen"), "maxModelLen", target)}`,
        `--kv-cache-dtype ${str(s, "kvCacheDtype") ?? "auto"}`,
        `--gpu-memory-utilization ${typeof s.gpuMemoryUtilization === "number" ? s.gpuMemoryUtilization : 0.92}`,
        `--tensor-parallel-size ${int(s, "tensorParallel") ?? 1}`,
      ];
      const block = int(s, "blockSize");
      if (block !== undefined && block !== 16) args.push(`--block-size ${block}`);
      const batched = int(s, "maxNumBatchedTokens");
      if (batched !== undefined) args.push(`--max-num-batched-tokens ${batched}`);
      return args.join(" ");
    }
    case "webllm": {
      const cw = need(int(s, "contextWindowSize"), "contextWindowSize", target);
      const sw = need(int(s, "slidingWindowSize"), "slidingWindowSize", target);
      const sink = int(s, "attentionSinkSize") ?? 0;
      const overrides: Record<string, number> = { context_window_size: cw, sliding_window_size: sw, attention_sink_size: sw > 0 ? sink : 0 };
      // The chunk the plan was made with (kvbound sizes its SWA group by it; WebLLM's prefill
      // activations follow it): ChatConfig.prefill_chunk_size, overridable like the windows.
      const chunk = int(s, "prefillChunkSize");
      if (chunk !== undefined && chunk > 0) overrides.prefill_chunk_size = chunk;
      return JSON.stringify(overrides, null, 2);
    }
    case "ollama":
      return exportOllama(plan);
    case "mlx":
      return exportMlx(plan);
    default:
      return target satisfies never;
  }
}
