// What `kvbound run | chat | serve --budget B` runs with: the runtime asks its own planner. The
// requested window (the user's flags, else the command's default) is kept when weights + cache +
// compute fit B; else the cheapest codec that makes it fit (unless the user named one); else the
// largest sliding window with sinks that fits. Weights alone over B are refused up front.

import { BudgetTooSmallError, KvboundError, ModelTooLargeError } from "../errors.js";
import { cheapestFor, FIT_ATTENTION_SINKS, largestFitting } from "./fit.js";
import { planMemory } from "./plan.js";
import type { MemoryPlan, PlanSettings } from "./types.js";
import { planVerdict } from "./verdict.js";
import type { ModelSpec } from "../spec/model-spec.js";

/** The share of the memory free at start that a run may use when no --budget is given. */
export const DEFAULT_BUDGET_SHARE = 0.8;

export interface RuntimeRequest {
  /** Window and cache settings as the user gave them (WebLLM names), defaults filled in. */
  readonly settings: PlanSettings;
  /** The user named the codec: only that one is tried. */
  readonly codecPinned: boolean;
  readonly budgetBytes: number;
}

export interface RuntimeChoice {
  readonly settings: PlanSettings;
  readonly plan: MemoryPlan;
  /** False when the request fit as given. */
  readonly changed: boolean;
  readonly note: string;
}

export function chooseRuntimeCache(spec: ModelSpec, req: RuntimeRequest): RuntimeChoice {
  const { budgetBytes } = req;
  const asked = planKvbound(spec, req.settings);
  const weights = asked.weights?.bytes ?? null;
  if (weights !== null && weights > budgetBytes) throw new ModelTooLargeError(budgetBytes, weights);
  if (planVerdict(asked, budgetBytes).fits) return { settings: req.settings, plan: asked, changed: false, note: "as requested" };

  const sliding = (req.settings.slidingWindowSize ?? -1) > 0;
  const window = sliding ? req.settings.slidingWindowSize! : (req.settings.contextWindowSize ?? -1);
  if (!req.codecPinned) {
    if (!sliding) {
      const c = cheapestFor(spec, window, { ...req.settings, engine: "kvbound", budgetBytes });
      if (c.fits) return { settings: c.settings, plan: c.plan, changed: true, note: c.note };
    } else {
      // A sliding window: the codec ladder at the same window first.
      for (const codec of ["f16", "int8", "fp8", "int4"]) {
        const settings = { ...req.settings, codec };
        const plan = planKvbound(spec, settings);
        if (planVerdict(plan, budgetBytes).fits) return { settings, plan, changed: true, note: `${window}-token sliding window with ${codec} pages` };
      }
    }
  }
  // The largest sliding window (with sinks) that fits, at the codec given or the cheapest one.
  const sinks = req.settings.attentionSinkSize ?? FIT_ATTENTION_SINKS;
  const at = (codec: string, w: number): PlanSettings => ({ ...req.settings, codec, contextWindowSize: -1, slidingWindowSize: w, attentionSinkSize: Math.min(sinks, w - 1) });
  const fits = (settings: PlanSettings): MemoryPlan | null => {
    try {
      const plan = planKvbound(spec, settings);
      return planVerdict(plan, budgetBytes).fits ? plan : null;
    } catch (err) {
      if (err instanceof KvboundError) return null;
      throw err;
    }
  };
  const codec = req.codecPinned ? req.settings.codec! : "int4";
  const cap = window > 0 ? window : (spec.nCtxTrain ?? 4096);
  const w = largestFitting(SLIDING_STEP, cap, (n) => n > sinks && fits(at(codec, n)) !== null);
  if (w !== null) {
    const settings = at(codec, w);
    return { settings, plan: fits(settings)!, changed: true, note: `the largest sliding window that fits: ${w} tokens with ${codec} pages (older tokens are evicted)` };
  }
  throw new BudgetTooSmallError(budgetBytes, asked.totalBytes, "what the requested settings need, and no cheaper codec or smaller sliding window fits either");
}

/** Sliding windows are tried in whole pages of the default page size. */
const SLIDING_STEP = 16;

function planKvbound(spec: ModelSpec, settings: PlanSettings): MemoryPlan {
  return planMemory(spec, { ...settings, engine: "kvbound" });
}
