// The history of llama.cpp's KV allocation rules, keyed by release build (the bNNNN tags: one per
// master commit). `llamaCppRules(build)` returns the rules a given build applies; llama-cpp.ts
// does the arithmetic. Each entry names the PR that changed the rule and how its build was pinned.
//
// Build numbers: a release tag is cut for every master commit, so a PR's build is the first tag
// that contains its merge commit. Where a public log or bug report names the first build showing a
// change, the number is "pinned"; otherwise it is estimated from merge dates and the observed tag
// rate (about 9-11 tags a day in 2025) and marked `pinned: false` with the reasoning.

/** How the context (and each stream's cell count) is rounded up. */
export type CtxPadding =
  /** `GGML_PAD(n, flash_attn ? 256 : 32)` (llama_kv_cache_unified::get_padding, before PR 16812). */
  | "fa256-else-32"
  /** No padding at all (PR 16812 removed it; PR 17046 put 256 back a week later). */
  | "none"
  /** `GGML_PAD(n, 256)` in llama-context.cpp whatever flash attention does (PR 17046). */
  | "256";

/** How many cells the SWA half of an iSWA cache gets (llama-kv-cache-iswa.cpp). */
export type SwaCells =
  /** No iSWA cache yet: SWA layers live in the one full-size cache. */
  | "full-size"
  /** `min(size_base, PAD(n_swa * n_seq_max + n_batch, pad))` (PR 13194). */
  | "n_swa*n_seq+n_batch"
  /** `min(size_base, PAD(n_swa * n_seq_max + n_ubatch, pad))` (PR 13833). */
  | "n_swa*n_seq+n_ubatch"
  /** `min(size_base, PAD(n_swa * (unified ? n_seq_max : 1) + n_ubatch, pad))` (PR 14363 streams). */
  | "n_swa*streams+n_ubatch"
  /** `PAD(min(size_base, n_swa * (unified ? n_seq_max : 1) + n_ubatch), 256)` (PR 17046, issue 17037). */
  | "pad256(min(base,n_swa*streams+n_ubatch))";

export interface LlamaCppRules {
  /** First build (bNNNN) these rules apply to. */
  readonly fromBuild: number;
  /** Whether `fromBuild` is pinned by a public log/report (true) or estimated (false). */
  readonly pinned: boolean;
  readonly pr: string;
  readonly summary: string;
  readonly evidence: string;
  readonly ctxPadding: CtxPadding;
  /** One KV stream per sequence unless kv_unified (PR 14363); before it every sequence shared one cache. */
  readonly streams: boolean;
  /** Non-unified per-stream cells: ceil(n_ctx / n_seq) (PR 14363 era) or floor (after PR 16812). */
  readonly perStreamDivision: "ceil" | "floor";
  readonly swaCells: SwaCells;
  /** MLA (deepseek2 family) caches store V: false since PR 19067 ("V-less cache": V is a view of K). */
  readonly mlaAllocatesV: boolean;
}

// Ordered by fromBuild; each entry repeats every rule so one entry reads on its own.
export const LLAMA_CPP_RULE_HISTORY: readonly LlamaCppRules[] = [
  {
    fromBuild: 0,
    pinned: true,
    pr: "(baseline)",
    summary: "one cache of PAD(n_ctx, FA ? 256 : 32) cells for every layer and sequence",
    evidence:
      "llama_kv_cache_get_padding (src/llama-kv-cache.cpp, 2024-2025): 'the FA kernels require padding'; " +
      "256 since PR 6438 for FA, 32 otherwise",
    ctxPadding: "fa256-else-32",
    streams: false,
    perStreamDivision: "ceil",
    swaCells: "full-size",
    mlaAllocatesV: true,
  },
  {
    // PR 13194 merged 2025-05-20; b5554 (PR 13833) is 2025-05-31 and the tag rate then was about
    // 8 a day, so the first iSWA build is around b5460-b5480.
    fromBuild: 5468,
    pinned: false,
    pr: "ggml-org/llama.cpp#13194",
    summary: "iSWA: SWA layers get their own cache of min(base, PAD(n_swa*n_seq + n_batch)) cells",
    evidence:
      "PR 13194 description: 'The size of the SWA cache is computed as PAD(n_swa*n_seq_max + n_batch)'; " +
      "estimated build (merged 2025-05-20)",
    ctxPadding: "fa256-else-32",
    streams: false,
    perStreamDivision: "ceil",
    swaCells: "n_swa*n_seq+n_batch",
    mlaAllocatesV: true,
  },
  {
    fromBuild: 5554,
    pinned: true,
    pr: "ggml-org/llama.cpp#13833",
    summary: "SWA cache shrinks to n_swa*n_seq + n_ubatch cells",
    evidence:
      "issue ggml-org/llama.cpp#14071: gemma-3 SWA cache behaviour changes between b5552 and b5554 " +
      "(PR 13833 'use n_swa + n_ubatch cells for SWA cache', merged 2025-05-31)",
    ctxPadding: "fa256-else-32",
    streams: false,
    perStreamDivision: "ceil",
    swaCells: "n_swa*n_seq+n_ubatch",
    mlaAllocatesV: true,
  },
  {
    fromBuild: 5913,
    pinned: true,
    pr: "ggml-org/llama.cpp#14363",
    summary: "one stream per sequence unless kv_unified; each stream PAD(ceil(n_ctx/n_seq)) cells",
    evidence:
      "issue ggml-org/llama.cpp#14847 'regression in unified KV cache appears after b5912 in b5913' " +
      "(seq_to_stream assert: the streams refactor)",
    ctxPadding: "fa256-else-32",
    streams: true,
    perStreamDivision: "ceil",
    swaCells: "n_swa*streams+n_ubatch",
    mlaAllocatesV: true,
  },
  {
    // PR 16812 merged 2025-10-30. Anchors: b5913 on 2025-07-16 (issue 14847) and b6365 on
    // 2025-09-03 (issue 15766's `version: 6365`), about 9.2 tags a day, giving b6870-b6900.
    fromBuild: 6880,
    pinned: false,
    pr: "ggml-org/llama.cpp#16812",
    summary: "no KV size padding: kv_size = n_ctx (non-unified: floor(n_ctx/n_seq) per stream)",
    evidence:
      "PR 16812 'memory : remove KV cache size padding' (merged 2025-10-30); estimated build",
    ctxPadding: "none",
    streams: true,
    perStreamDivision: "floor",
    swaCells: "n_swa*streams+n_ubatch",
    mlaAllocatesV: true,
  },
  {
    // PR 17046 merged 2025-11-07: eight days after PR 16812 at the same rate.
    fromBuild: 6965,
    pinned: false,
    pr: "ggml-org/llama.cpp#17046",
    summary: "n_ctx and each stream padded to 256 in the context; SWA cache padded to 256",
    evidence:
      "PR 17046 'kv-cache : pad the cache size to 256 for performance' (fixes #17037, #17058; " +
      "merged 2025-11-07); estimated build",
    ctxPadding: "256",
    streams: true,
    perStreamDivision: "floor",
    swaCells: "pad256(min(base,n_swa*streams+n_ubatch))",
    mlaAllocatesV: true,
  },
  {
    // PR 19067 merged 2026-01-24, 78 days after PR 17046; the rate rose to about 11 a day in 2026
    // (b9401 was current on 2026-05-30, PR 13194 thread), giving b7780-b7880.
    fromBuild: 7830,
    pinned: false,
    pr: "ggml-org/llama.cpp#19067",
    summary: "MLA caches store K only (V is a view of the latent in K): almost half the bytes",
    evidence:
      "PR 19067 'kv-cache : support V-less cache' (merged 2026-01-24); src/llama-kv-cache.cpp " +
      "'has_v = !is_mla'; estimated build",
    ctxPadding: "256",
    streams: true,
    perStreamDivision: "floor",
    swaCells: "pad256(min(base,n_swa*streams+n_ubatch))",
    mlaAllocatesV: false,
  },
];

/** The newest rules: what `llamaCppKv` applies when no build is given. */
export const LLAMA_CPP_CURRENT_RULES: LlamaCppRules = LLAMA_CPP_RULE_HISTORY[LLAMA_CPP_RULE_HISTORY.length - 1]!;

/** The rules build `build` applies: the last entry whose fromBuild <= build. */
export function llamaCppRules(build: number | undefined): LlamaCppRules {
  if (build === undefined) return LLAMA_CPP_CURRENT_RULES;
  let found: LlamaCppRules = LLAMA_CPP_RULE_HISTORY[0]!;
  for (let i = 0; i < LLAMA_CPP_RULE_HISTORY.length; i++) {
    const rules = LLAMA_CPP_RULE_HISTORY[i]!;
    if (rules.fromBuild <= build) found = rules;
  }
  return found;
}

// ---------------------------------------------------------------------------------------------
// Command-line flags and defaults by build: what an export may print for an old build, and what
// an old build does when the user passes nothing. Builds are the first bNNNN tag holding the merge
// commit, as a public timeline reports them from `git describe --contains` on a llama.cpp clone
// (merge dates match the PR pages); the PRs are the authority.

/** `-fa` / `--flash-attn` appears, as a switch without a value; off unless given
 *  (ggml-org/llama.cpp#5021 "ggml : add Flash Attention", merged 2024-04-30, b2771). */
export const LLAMA_CPP_FA_FLAG_BUILD = 2771;

/** `-fa` takes a value, `on|off|auto`, and defaults to `auto` (on wherever the backend supports it)
 *  (ggml-org/llama.cpp#15434 "llama: use FA + max. GPU layers by default", merged 2025-08-30, b6325;
 *  common.h had `flash_attn = false` before it). A bare `-fa` is refused after it ("expected value
 *  for argument"), and older builds refuse `-fa on` (the switch takes no value, so "on" is a stray
 *  argument: "error: invalid argument: on"). */
export const LLAMA_CPP_FA_VALUE_BUILD = 6325;

/** `-kvu` / `--kv-unified` appears with per-sequence streams (ggml-org/llama.cpp#14363 "llama : add
 *  high-throughput mode", b5913 as pinned above). Before it every sequence shared one cache, which is
 *  what --kv-unified asks for, so an older build needs no flag (and has none to accept). */
export const LLAMA_CPP_KV_UNIFIED_FLAG_BUILD = 5913;

/** How a build takes flash attention on its command line. */
export type FlashAttnFlag =
  /** No flash attention at all (before b2771). */
  | "none"
  /** `-fa` switches it on; leaving it out keeps it off. */
  | "switch"
  /** `-fa on|off|auto`, default auto. */
  | "value";

export function llamaCppFlashAttnFlag(build: number | undefined): FlashAttnFlag {
  if (build === undefined || build >= LLAMA_CPP_FA_VALUE_BUILD) return "value";
  return build >= LLAMA_CPP_FA_FLAG_BUILD ? "switch" : "none";
}

/** What a build does about flash attention when the user passes nothing: "auto" turns it on
 *  wherever the backend supports it (the planner plans it on); older builds leave it off. */
export function llamaCppFlashAttnDefault(build: number | undefined): boolean {
  return llamaCppFlashAttnFlag(build) === "value";
}

/** Whether a build has the `--swa-full` flag: it came with the separate SWA cache (PR 13194). */
export function llamaCppHasSwaFullFlag(build: number | undefined): boolean {
  return llamaCppRules(build).swaCells !== "full-size";
}

// ---------------------------------------------------------------------------------------------
// GPU offload by build (src/plan/llama-cpp-offload.ts).

/** `-ngl` defaults to every layer (ggml-org/llama.cpp#15434 "llama: use FA + max. GPU layers by
 *  default", b6325, as above); before it the default was 0 layers. */
export const LLAMA_CPP_ALL_LAYERS_BUILD = 6325;

/** `--fit` (on by default, `--fit-target` 1024 MiB, `--fit-ctx` 4096) picks the unset -c / -ngl /
 *  --tensor-split from the devices' free memory (ggml-org/llama.cpp#16653 "llama: automatically set
 *  parameters not set by the user in such a way that maximizes GPU utilization"). Estimated: the
 *  thread of ggml-org/llama.cpp#18070 (2025-12-15) finds it merged, and issue #18097 runs
 *  llama-fit-params at b7437 on 2025-12-16. */
export const LLAMA_CPP_FIT_BUILD = 7400;

/** The output layer is offloaded first: `i_gpu_start = max(n_layer + 1 - n_gpu_layers, 0)` instead
 *  of `max(n_layer - n_gpu_layers, 0)`, so `-ngl N` puts the output layer and the last N - 1
 *  repeating layers on the GPU (ggml-org/llama.cpp#18148 "llama: offload output layer to GPU
 *  first", opened 2025-12-17). Estimated: after b7437 (issue #18097, 2025-12-16). */
export const LLAMA_CPP_OUTPUT_FIRST_BUILD = 7460;

/** How a build offloads layers. */
export interface LlamaCppOffloadRules {
  /** -ngl counts the output layer first (PR 18148) rather than last. */
  readonly outputFirst: boolean;
  /** --fit exists and is on by default (PR 16653). */
  readonly fit: boolean;
  /** -ngl's default: every layer (PR 15434) or none. */
  readonly defaultAllLayers: boolean;
}

export function llamaCppOffloadRules(build: number | undefined): LlamaCppOffloadRules {
  if (build === undefined) return { outputFirst: true, fit: true, defaultAllLayers: true };
  return {
    outputFirst: build >= LLAMA_CPP_OUTPUT_FIRST_BUILD,
    fit: build >= LLAMA_CPP_FIT_BUILD,
    defaultAllLayers: build >= LLAMA_CPP_ALL_LAYERS_BUILD,
  };
}
