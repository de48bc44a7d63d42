// exportPlan: turns a MemoryPlan's resolved settings into what the engine itself is started with,
// so the plan a user read is the configuration they run:
//   llama.cpp       command-line flags (common/arg.cpp names: -c, -np, -ub, -ctk, -ctv, -fa, --kv-unified, --swa-full)
//   vllm            `vllm serve` arguments (--max-model-len, --kv-cache-dtype, --gpu-memory-utilization,
//                   --tensor-parallel-size, --block-size, --max-num-batched-tokens)
//   webllm          ModelRecord.overrides JSON (context_window_size, sliding_window_size, attention_sink_size)
//   node-llama-cpp  model.createContext({...}) options (src/evaluator/LlamaContext/types.ts:
//                   contextSize, sequences, batchSize, flashAttention, experimentalKvCacheKeyType /
//                   experimentalKvCacheValueType as GgmlType names, swaFullCache, kvUnified)

import { InvalidSettingError } from "../errors.js";
import type { EngineName, MemoryPlan } from "./types.js";

export type ExportTarget = "llama.cpp" | "vllm" | "webllm" | "node-llama-cpp";
export const EXPORT_TARGETS: readonly ExportTarget[] = ["llama.cpp", "vllm", "webllm", "node-llama-cpp"];

/** Which plans each target can be written from (node-llama-cpp runs llama.cpp; WebLLM windows
 *  mean the same in kvbound). */
const SOURCES: Readonly<Record<ExportTarget, readonly EngineName[]>> = {
  "llama.cpp": ["llama.cpp"],
  "node-llama-cpp": ["llama.cpp"],
  vllm: ["vllm"],
  webllm: ["webllm", "kvbound"],
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
      const flags = [`-c ${need(int(s, "ctx"), "ctx", target)}`, `-np ${int(s, "seqs") ?? 1}`];
      const ubatch = int(s, "ubatch");
      if (ubatch !== undefined) flags.push(`-ub ${ubatch}`);
      flags.push(`-ctk ${str(s, "typeK") ?? "f16"}`, `-ctv ${str(s, "typeV") ?? "f16"}`);
      flags.push(`-fa ${s.flashAttn === false ? "off" : "on"}`);
      if (s.kvUnified === true) flags.push("--kv-unified");
      if (s.swaFull === true) flags.push("--swa-full");
      return flags.join(" ");
    }
    case "node-llama-cpp": {
      const options: Record<string, unknown> = {
        contextSize: need(int(s, "ctx"), "ctx", target),
        sequences: int(s, "seqs") ?? 1,
      };
      // node-llama-cpp's batchSize sets the batch it evaluates at once (n_batch and n_ubatch).
      const ubatch = int(s, "ubatch");
      if (ubatch !== undefined) options.batchSize = ubatch;
      options.flashAttention = s.flashAttn !== false;
      const typeK = str(s, "typeK") ?? "f16";
      const typeV = str(s, "typeV") ?? "f16";
      // GgmlType enum keys are upper case ("Q8_0"); F16 is the default, so leave it out.
      if (typeK !== "f16") options.experimentalKvCacheKeyType = typeK.toUpperCase();
      if (typeV !== "f16") options.experimentalKvCacheValueType = typeV.toUpperCase();
      if (s.swaFull === true) options.swaFullCache = true;
      if (s.kvUnified === true) options.kvUnified = true;
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
      return JSON.stringify({ context_window_size: cw, sliding_window_size: sw, attention_sink_size: sw > 0 ? sink : 0 }, null, 2);
    }
    default:
      return target satisfies never;
  }
}
