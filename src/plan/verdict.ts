// The one verdict: does a plan fit a memory budget, by how much, and what does the figure leave
// out. `kvbound plan --budget`, `fit`, `rank`, the machine plan and the planner page all ask this
// function, so the page and the CLI cannot disagree. Browser-safe.
//
// The rule depends on the engine, not on the caller:
//   llama.cpp, WebLLM, kvbound  the plan's total (KV + weights + compute) against the budget;
//   llama.cpp with devices      every device with a size given (--gpu, --ram) against it: a GPU
//                               must keep --fit's target free (llama_params_fit), the host must hold
//                               its part; `budgetBytes` is then only the caller's nominal figure;
//   vLLM                        vLLM takes the whole GPU (x gpu_memory_utilization) and builds its KV
//                               pool from what weights and activations leave, so the question is
//                               whether ONE request at max_model_len fits that pool (vLLM refuses to
//                               start otherwise: "To serve at least one request with the model's max
//                               seq len ...", vllm/v1/core/kv_cache_utils.py check_enough_kv_cache_memory).

import { InvalidSettingError } from "../errors.js";
import { formatBytes } from "./parse.js";
import { planPastTrainingContext, type PastTrainingContext } from "./plan.js";
import type { MemoryPlan } from "./types.js";

export interface Verdict {
  readonly fits: boolean;
  /** "total": the plan's total against the budget; "vllm-one-request": the KV one request at
   *  max_model_len needs against the KV memory vLLM has left. */
  readonly rule: "total" | "vllm-one-request" | "devices";
  readonly budgetBytes: number;
  /** What the rule needs: the plan's total, or the KV of one vLLM request. */
  readonly neededBytes: number;
  /** What it has: the budget, or the KV memory vLLM has left in it. */
  readonly availableBytes: number;
  /** available - needed: the spare bytes when it fits, minus the shortfall when it does not. */
  readonly headroomBytes: number;
  /** Parts the figures leave out because the plan does not know them ("weights", "compute buffer"). */
  readonly uncounted: readonly string[];
  /** Set when the plan holds more tokens per sequence than the model was trained on. */
  readonly pastTraining: PastTrainingContext | null;
  /** One line for people: "fits: 5.21 GiB of 8.00 GiB (65%)" or "does not fit: needs 1.20 GiB more (...)",
   *  with what it leaves out and the training-context caveat; callers append a fix. */
  readonly line: string;
}

function num(v: unknown): number | undefined {
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}

function percent(ratio: number): string {
  return `${Math.round(ratio * 100)}%`;
}

/** Parts of a plan's total that are unknown. vLLM counts unknown weights as 0 (vllm.ts). */
function uncountedParts(plan: MemoryPlan): string[] {
  const out: string[] = [];
  if (plan.weights === null) out.push("weights");
  if (plan.compute === null) out.push(plan.engine === "vllm" ? "activation peak" : "compute buffer");
  return out;
}

function caveats(uncounted: readonly string[], past: PastTrainingContext | null): string {
  let s = "";
  if (uncounted.length > 0) s += `; not counting the ${uncounted.join(" or the ")} (unknown)`;
  if (past !== null) s += `; memory only: ${past.tokens} tokens per sequence is past the model's training context of ${past.nCtxTrain}`;
  return s;
}

/**
 * Decides whether `plan` fits `budgetBytes`. A vLLM plan must have been made with the same
 * `budgetBytes` (its KV pool is built from it); anything else is an InvalidSettingError.
 */
export function planVerdict(plan: MemoryPlan, budgetBytes: number): Verdict {
  if (!(Number.isFinite(budgetBytes) && budgetBytes > 0)) {
    throw new InvalidSettingError(`budget ${budgetBytes} is not a positive number of bytes`, { setting: "budget", value: budgetBytes });
  }
  const uncounted = uncountedParts(plan);
  const past = planPastTrainingContext(plan);
  const judged = plan.devices?.filter((d) => d.budget !== null) ?? [];
  if (judged.length > 0) {
    // Each device on its own: the worst one decides, and its headroom is the plan's.
    let needed = 0;
    let available = 0;
    let worst = judged[0]!;
    let worstRoom = Infinity;
    for (const d of judged) {
      const room = d.budget! - d.reserve - d.total;
      needed += d.total;
      available += d.budget! - d.reserve;
      if (room < worstRoom) {
        worstRoom = room;
        worst = d;
      }
    }
    const fits = worstRoom >= 0;
    const parts = judged.map((d) => `${d.name} ${formatBytes(d.total)} of ${formatBytes(d.budget!)}${d.reserve > 0 ? ` (${formatBytes(d.reserve)} kept free)` : ""}`);
    const ngl = num(plan.settings["ngl"]);
    const head = ngl !== undefined ? `-ngl ${ngl}: ` : "";
    const line = fits
      ? `fits: ${head}${parts.join(", ")}`
      : `does not fit: ${worst.name} needs ${formatBytes(-worstRoom)} more (${head}${parts.join(", ")})`;
    return {
      fits,
      rule: "devices",
      budgetBytes,
      neededBytes: needed,
      availableBytes: available,
      headroomBytes: worstRoom,
      uncounted,
      pastTraining: past,
      line: line + caveats(uncounted, past),
    };
  }
  if (plan.engine === "vllm") {
    const extra = plan.extra ?? {};
    const perRequest = num(extra["bytesPerRequest"]);
    const available = num(extra["availableKvBytes"]);
    const requested = num(extra["requestedBytes"]);
    const util = num(plan.settings["gpuMemoryUtilization"]);
    if (perRequest === undefined || available === undefined || requested === undefined || util === undefined) {
      throw new InvalidSettingError(
        "a vLLM plan is judged against the KV pool vLLM builds from the GPU's memory: plan it with budgetBytes (--budget) first",
        { setting: "budgetBytes", value: null },
      );
    }
    if (requested !== Math.floor(budgetBytes * util)) {
      throw new InvalidSettingError(
        `this vLLM plan was made for ${formatBytes(requested / util)} of GPU memory, not ${formatBytes(budgetBytes)}: plan it again with budgetBytes ${budgetBytes}`,
        { setting: "budgetBytes", value: budgetBytes },
      );
    }
    const fits = available > 0 && perRequest <= available;
    const conc = num(extra["maxConcurrency"]);
    const line = fits
      ? `fits: one request needs ${formatBytes(perRequest)} of KV; vLLM has ${formatBytes(available)} for KV in ${formatBytes(budgetBytes)}` +
        (conc !== undefined ? `, max concurrency ${conc.toFixed(2)}x` : "")
      : available <= 0
        ? `does not fit: weights and activations leave no memory for KV in ${formatBytes(budgetBytes)} x gpu_memory_utilization ${util}`
        : `does not fit: one request needs ${formatBytes(perRequest)} of KV, ${formatBytes(perRequest - available)} more than the ` +
          `${formatBytes(available)} vLLM has left in ${formatBytes(budgetBytes)}`;
    return {
      fits,
      rule: "vllm-one-request",
      budgetBytes,
      neededBytes: perRequest,
      availableBytes: available,
      headroomBytes: available - perRequest,
      uncounted,
      pastTraining: past,
      line: line + caveats(uncounted, past),
    };
  }
  const total = plan.totalBytes;
  const fits = total <= budgetBytes;
  const line = fits
    ? `fits: ${formatBytes(total)} of ${formatBytes(budgetBytes)} (${percent(total / budgetBytes)})`
    : `does not fit: needs ${formatBytes(total - budgetBytes)} more (${formatBytes(total)} of ${formatBytes(budgetBytes)})`;
  return {
    fits,
    rule: "total",
    budgetBytes,
    neededBytes: total,
    availableBytes: budgetBytes,
    headroomBytes: budgetBytes - total,
    uncounted,
    pastTraining: past,
    line: line + caveats(uncounted, past),
  };
}
