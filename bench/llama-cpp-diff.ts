// Differential harness: kvbound's next-token distributions against llama.cpp's on the same
// synthetic model and the same token ids.
//
//   npx tsx bench/llama-cpp-diff.ts --arch A [--seed S] [--layers L] [--weights F32|Q8_0|Q4_K|Q2_K|Q3_K|IQ4_NL|IQ4_XS]
//       [--ctx N] [--rope-scaling none|linear|llama3|yarn|longrope] [--positions N]
//       [--activations f32|q8] [--sliding-window W] [--gelu ggml|exact] [--noise-floor] [--kvbound-noise] [--json]
//
// It writes test/fixtures/arch-models.ts's GGUF of the architecture (seeded random weights scaled
// so predictions are confident), runs llama.cpp (node-llama-cpp from bench/peers: CPU, 1 thread,
// F32 KV cache, no flash attention) and kvbound (F32 paged cache, f32 activations on F32 weights,
// q8 activations as llama.cpp on quantized ones) teacher-forced over `positions` random ids, and
// reports per position the largest |p_llama.cpp - p_kvbound| over the vocabulary, whether the
// argmax agrees, how peaked llama.cpp's distributions are (medianTop1: below 0.3 agreement means
// little, and the run fails), and whether 64 greedy ids after an 8-token prompt are equal.
//
// llama.cpp's side: node-llama-cpp 3.22's `controlledEvaluate` with `generateNext: { probabilities,
// logits }` and no sampling options gives, per input token, llama.cpp's raw logits and their
// softmax over the whole vocabulary at temperature 1 (its sampler chain is only the greedy sampler,
// which selects without truncating; AddonSampler.cpp / AddonContext.cpp). The harness checks that
// the probabilities are that softmax (peerSoftmaxMaxErr) and that they cover every token.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { resolveCacheConfig } from "../src/cache/config.js";
import { readGgufHeader } from "../src/gguf/header.js";
import { createModel } from "../src/model/architectures.js";
import { CacheKv, createModelCache } from "../src/model/cache-kv.js";
import {
  ARCH_NAMES,
  ROPE_SCALINGS,
  WEIGHT_KINDS,
  buildArchModel,
  xorshift32,
  type ArchName,
  type RopeScaling,
  type WeightKind,
} from "../test/fixtures/arch-models.js";
import { machineInfo, machineLines } from "./lib/machine.js";
import { fmt, markdownTable } from "./lib/table.js";
import { loadLlamaCppLogits, type LlamaCppLogitsPeer, type LlamaCppLogitsRunner, type LlamaCppNextToken } from "./peers/llama-cpp.js";

/** Below this median top-1 probability the distributions are too flat for agreement to say anything. */
export const MIN_MEDIAN_TOP1 = 0.3;
/** A top-1 disagreement counts only where llama.cpp's top-2 probability margin exceeds this (else it is a tie). */
export const TOP1_MARGIN = 1e-3;
export const GREEDY_PROMPT_TOKENS = 8;
export const GREEDY_TOKENS = 64;

export interface DiffOptions {
  readonly arch: ArchName;
  readonly seed?: number;
  /** Default: the architecture's own (test/fixtures/arch-models.ts ARCHS). */
  readonly layers?: number;
  readonly weights?: WeightKind;
  /** Context of both engines (and the file's context_length); default 1024. */
  readonly ctx?: number;
  /** Default: "longrope" for phi3, "none" otherwise. */
  readonly ropeScaling?: RopeScaling;
  /** Teacher-forced positions; default 512. */
  readonly positions?: number;
  /**
   * kvbound's matmul activations. Default: "q8" on quantized weights (what llama.cpp does: Q8_0
   * activations for Q8_0 weights, Q8_K for K-quants, as kvbound does too), "f32" on F32.
   */
  readonly activations?: "f32" | "q8";
  /**
   * Also run llama.cpp one token at a time and compare it with its own batched run: how far two
   * summation orders of the same engine drift on this model (with quantized activations a 1-ulp
   * difference flips an int8 now and then, and peaked random models amplify it). Off by default.
   */
  readonly noiseFloor?: boolean;
  /**
   * Also run kvbound with its JS matmul kernels and compare with its default (wasm) run: how far two
   * summation orders of kvbound drift on this model. GeGLU models (gemma) need it: ggml's f16 GELU
   * table, which kvbound reproduces, turns float noise into f16 steps. Off by default.
   */
  readonly kvboundNoise?: boolean;
  /** gemma2/gemma3: the model's sliding window (default 64 / 128). */
  readonly slidingWindow?: number;
  /** kvbound's GELU: "ggml" (default, llama.cpp's f16 table) or "exact" (to measure what the table does). */
  readonly gelu?: "ggml" | "exact";
}

export interface DiffError {
  readonly name: string;
  readonly message: string;
  readonly code?: string;
}

export interface DiffResult {
  readonly arch: ArchName;
  readonly positions: number;
  /** Median over positions of llama.cpp's largest next-token probability. */
  readonly medianTop1: number;
  /** Largest |p_llama.cpp - p_kvbound| over every position and token (null: kvbound did not run). */
  readonly maxAbsDp: number | null;
  /** Fraction of positions where the two argmaxes are the same token. */
  readonly top1Agreement: number | null;
  /** The 64 greedy ids after the prompt are the same. */
  readonly greedyEqual: boolean | null;
  readonly ggufArch: string;
  readonly seed: number;
  readonly layers: number;
  readonly weights: WeightKind;
  readonly ctx: number;
  readonly ropeScaling: RopeScaling;
  /** Quantiles over positions of each position's max |Δp|. */
  readonly dpQuantiles: { readonly p50: number; readonly p90: number; readonly p99: number } | null;
  readonly top1Disagreements: number | null;
  /** Disagreements where llama.cpp's top-2 margin exceeds TOP1_MARGIN (not ties). */
  readonly top1DisagreementsAboveMargin: number | null;
  readonly greedy: { readonly llamaCpp: number[]; readonly kvbound: number[] | null; readonly firstDivergence: number | null };
  /** Largest |node-llama-cpp probability - float64 softmax of llama.cpp's logits|: ~1e-7 when they are the full softmax. */
  readonly peerSoftmaxMaxErr: number;
  /** llama.cpp one token at a time against llama.cpp batched (only with `noiseFloor`). */
  readonly llamaCppSelf?: { readonly maxAbsDp: number; readonly top1Agreement: number };
  /** kvbound's JS matmul kernels against its wasm ones (only with `kvboundNoise`). */
  readonly kvboundSelf?: { readonly maxAbsDp: number; readonly p90: number; readonly top1Agreement: number };
  readonly gelu: "ggml" | "exact";
  readonly kvboundActivations: "f32" | "q8";
  readonly notes: readonly string[];
  readonly llamaCpp: { readonly release: string; readonly nodeLlamaCpp: string; readonly contextSize: number };
  readonly seconds: { readonly llamaCpp: number; readonly kvbound: number | null };
  /** kvbound could not run the file (typed error), or the distributions were too flat. */
  readonly error?: DiffError;
}

/**
 * Every kvbound call of the harness is here, so a change of kvbound's model interface is one edit.
 * Teacher-forces `ids` one token at a time through a fresh sequence of an F32 paged cache holding
 * `ctx` tokens and returns the logits after each; then continues greedily for `generate` tokens.
 */
async function kvboundLogits(
  gguf: Uint8Array,
  ids: readonly number[],
  opts: { readonly ctx: number; readonly activations: "f32" | "q8"; readonly generate: number; readonly kernels?: "wasm" | "js"; readonly gelu?: "ggml" | "exact" },
): Promise<{ logits: Float32Array[]; generated: number[] }> {
  const header = await readGgufHeader(gguf);
  // nCtx: LongRoPE picks its factors by the context, as llama.cpp does by n_ctx_per_seq.
  const model = createModel(header, gguf.subarray(header.dataOffset), {
    nCtx: opts.ctx,
    activations: opts.activations,
    kernels: opts.kernels ?? "wasm",
    gelu: opts.gelu ?? "ggml",
  });
  const cache = createModelCache(model, resolveCacheConfig({ contextWindowSize: opts.ctx, codec: "f32" }));
  cache.add(0);
  const kv = new CacheKv(cache, 0, model);
  const logits: Float32Array[] = [];
  const generated: number[] = [];
  const step = (token: number): void => {
    const out = new Float32Array(model.hp.nVocab);
    cache.reserveOrThrow(0, 1);
    model.forward(token, logits.length, kv, out);
    logits.push(out);
  };
  for (let i = 0; i < ids.length; i++) step(ids[i]!);
  while (generated.length < opts.generate) {
    const next = argmax(logits[logits.length - 1]!);
    generated.push(next);
    if (generated.length < opts.generate) step(next);
  }
  return { logits, generated };
}

/** Lowest index of the largest value (both engines' greedy choice). */
function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

/** out = softmax(logits) in float64. */
function softmax(out: Float64Array, logits: ArrayLike<number>): void {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) {
    out[i] = Math.exp(logits[i]! - max);
    sum += out[i]!;
  }
  for (let i = 0; i < logits.length; i++) out[i] = out[i]! / sum;
}

/** Linear-interpolated quantile of sorted values. */
function quantile(sorted: Float64Array, q: number): number {
  const at = q * (sorted.length - 1);
  const lo = Math.floor(at), hi = Math.ceil(at);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (at - lo);
}

interface Agreement {
  /** Per position max |Δp|, sorted ascending. */
  readonly dpSorted: Float64Array;
  readonly agree: number;
  readonly disagreeAboveMargin: number;
}

/** Compares llama.cpp's probabilities at each position with `other`'s (probs(t, out) fills out[nVocab]). */
function agreement(ref: readonly LlamaCppNextToken[], nVocab: number, probs: (t: number, out: Float64Array) => void): Agreement {
  const n = ref.length;
  const dp = new Float64Array(n);
  const p = new Float64Array(nVocab);
  let agree = 0, disagreeAboveMargin = 0;
  for (let t = 0; t < n; t++) {
    const pRef = ref[t]!.probabilities;
    probs(t, p);
    let d = 0, first = 0, second = 0;
    for (let v = 0; v < nVocab; v++) {
      d = Math.max(d, Math.abs(pRef[v]! - p[v]!));
      const pr = pRef[v]!;
      if (pr > first) {
        second = first;
        first = pr;
      } else if (pr > second) second = pr;
    }
    dp[t] = d;
    if (argmax(pRef) === argmax(p)) agree++;
    else if (first - second > TOP1_MARGIN) disagreeAboveMargin++;
  }
  return { dpSorted: dp.sort(), agree, disagreeAboveMargin };
}

function errorOf(e: unknown): DiffError {
  if (e instanceof Error) {
    const code = (e as { code?: unknown }).code;
    return typeof code === "string" ? { name: e.name, message: e.message, code } : { name: e.name, message: e.message };
  }
  return { name: "Error", message: String(e) };
}

let peer: Promise<LlamaCppLogitsPeer> | null = null;

/** llama.cpp is loaded once per process (1 thread, as every kvbound comparison runs). */
function llamaCpp(): Promise<LlamaCppLogitsPeer> {
  peer ??= loadLlamaCppLogits(1);
  return peer;
}

/** Frees llama.cpp (the process can exit without it; call it to end cleanly). */
export async function closeLlamaCpp(): Promise<void> {
  const p = peer;
  peer = null;
  if (p !== null) await (await p).dispose();
}

/** Runs one comparison. Throws only when llama.cpp fails; kvbound's refusals are `error` in the result. */
export async function runDiff(options: DiffOptions): Promise<DiffResult> {
  const seed = options.seed ?? 1;
  const weights = options.weights ?? "F32";
  const positions = options.positions ?? 512;
  const ctx = options.ctx ?? 1024;
  if (!Number.isInteger(positions) || positions < GREEDY_PROMPT_TOKENS) throw new Error(`positions ${positions} must be an integer >= ${GREEDY_PROMPT_TOKENS}`);
  if (!Number.isInteger(ctx) || ctx < Math.max(positions, GREEDY_PROMPT_TOKENS + GREEDY_TOKENS)) {
    throw new Error(`ctx ${ctx} must hold the ${positions} positions and the ${GREEDY_PROMPT_TOKENS + GREEDY_TOKENS} greedy tokens`);
  }
  const built = buildArchModel({
    arch: options.arch,
    seed,
    weights,
    contextLength: ctx,
    ...(options.layers !== undefined ? { nLayer: options.layers } : {}),
    ...(options.slidingWindow !== undefined ? { slidingWindow: options.slidingWindow } : {}),
    ...(options.ropeScaling !== undefined ? { ropeScaling: options.ropeScaling } : {}),
  });
  const nVocab = built.nVocab;
  // BOS, then seeded random ids (any id: llama.cpp takes ids, no text is tokenized).
  const next = xorshift32(seed * 7919 + 17);
  const ids: number[] = [built.bosId];
  while (ids.length < positions) ids.push(3 + (next() % (nVocab - 3)));
  const prompt = ids.slice(0, GREEDY_PROMPT_TOKENS);
  const activations = options.activations ?? (weights === "F32" ? "f32" : "q8");

  const dir = mkdtempSync(join(tmpdir(), "kvbound-diff-"));
  const path = join(dir, `${options.arch}-${weights}-s${seed}.gguf`);
  writeFileSync(path, built.bytes);
  const peerLoaded = await llamaCpp();
  const t0 = performance.now();
  let runner: LlamaCppLogitsRunner | null = null;
  let ref: LlamaCppNextToken[];
  const refGreedy: number[] = [];
  let self: LlamaCppNextToken[] | null = null;
  try {
    runner = await peerLoaded.open(path, { contextSize: ctx, nVocab, kvCacheType: "F32", flashAttention: false, batchSize: Math.min(512, ctx) });
    ref = await runner.evaluate(ids);
    if (options.noiseFloor) {
      await runner.reset();
      self = [];
      for (let i = 0; i < ids.length; i++) self.push((await runner.evaluate([ids[i]!]))[0]!);
    }
    await runner.reset();
    let last = (await runner.evaluate(prompt))[GREEDY_PROMPT_TOKENS - 1]!;
    while (refGreedy.length < GREEDY_TOKENS) {
      const t = argmax(last.logits);
      refGreedy.push(t);
      if (refGreedy.length < GREEDY_TOKENS) last = (await runner.evaluate([t]))[0]!;
    }
  } finally {
    await runner?.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
  const llamaContext = runner.contextSize;
  const llamaSeconds = (performance.now() - t0) / 1000;

  // llama.cpp alone: how peaked, and whether node-llama-cpp's probabilities are the full softmax.
  const p64 = new Float64Array(nVocab);
  const top1 = new Float64Array(positions);
  let peerSoftmaxMaxErr = 0;
  for (let t = 0; t < positions; t++) {
    const r = ref[t]!;
    softmax(p64, r.logits);
    let max = 0;
    for (let v = 0; v < nVocab; v++) {
      peerSoftmaxMaxErr = Math.max(peerSoftmaxMaxErr, Math.abs(r.probabilities[v]! - p64[v]!));
      if (r.probabilities[v]! > max) max = r.probabilities[v]!;
    }
    top1[t] = max;
  }
  top1.sort();
  const medianTop1 = quantile(top1, 0.5);
  const info = peerLoaded.info;
  let llamaCppSelf: { maxAbsDp: number; top1Agreement: number } | undefined;
  if (self !== null) {
    const one = self;
    const a = agreement(ref, nVocab, (t, out) => {
      const q = one[t]!.probabilities;
      for (let v = 0; v < nVocab; v++) out[v] = q[v]!;
    });
    llamaCppSelf = { maxAbsDp: a.dpSorted[positions - 1]!, top1Agreement: a.agree / positions };
  }
  const base = {
    arch: options.arch,
    positions,
    medianTop1,
    ggufArch: built.ggufArch,
    seed,
    layers: built.nLayer,
    weights,
    ctx,
    ropeScaling: built.ropeScaling,
    peerSoftmaxMaxErr,
    ...(llamaCppSelf !== undefined ? { llamaCppSelf } : {}),
    kvboundActivations: activations,
    gelu: options.gelu ?? "ggml",
    notes: built.notes,
    llamaCpp: { release: info.llamaCppRelease, nodeLlamaCpp: info.nodeLlamaCppVersion, contextSize: llamaContext },
  } as const;
  const flat: DiffError | undefined =
    medianTop1 < MIN_MEDIAN_TOP1
      ? { name: "FlatDistributionsError", message: `llama.cpp's median top-1 probability is ${medianTop1.toFixed(3)} < ${MIN_MEDIAN_TOP1}: the distributions are too flat for agreement to mean anything; scale the synthetic output up` }
      : undefined;

  const t1 = performance.now();
  let mine: Awaited<ReturnType<typeof kvboundLogits>>;
  let mineGreedy: number[];
  let kvboundSelf: { maxAbsDp: number; p90: number; top1Agreement: number } | undefined;
  const gelu = options.gelu ?? "ggml";
  try {
    mine = await kvboundLogits(built.bytes, ids, { ctx: llamaContext, activations, generate: 0, gelu });
    mineGreedy = (await kvboundLogits(built.bytes, prompt, { ctx: llamaContext, activations, generate: GREEDY_TOKENS, gelu })).generated;
    if (options.kvboundNoise) {
      const js = await kvboundLogits(built.bytes, ids, { ctx: llamaContext, activations, generate: 0, gelu, kernels: "js" });
      const pw = new Float64Array(nVocab);
      const pj = new Float64Array(nVocab);
      const dp = new Float64Array(positions);
      let agree = 0;
      for (let t = 0; t < positions; t++) {
        softmax(pw, mine.logits[t]!);
        softmax(pj, js.logits[t]!);
        for (let v = 0; v < nVocab; v++) dp[t] = Math.max(dp[t]!, Math.abs(pw[v]! - pj[v]!));
        if (argmax(pw) === argmax(pj)) agree++;
      }
      dp.sort();
      kvboundSelf = { maxAbsDp: dp[positions - 1]!, p90: quantile(dp, 0.9), top1Agreement: agree / positions };
    }
  } catch (e) {
    return {
      ...base,
      maxAbsDp: null,
      top1Agreement: null,
      greedyEqual: null,
      dpQuantiles: null,
      top1Disagreements: null,
      top1DisagreementsAboveMargin: null,
      greedy: { llamaCpp: refGreedy, kvbound: null, firstDivergence: null },
      seconds: { llamaCpp: llamaSeconds, kvbound: null },
      error: errorOf(e),
    };
  }
  const kvboundSeconds = (performance.now() - t1) / 1000;

  const a = agreement(ref, nVocab, (t, out) => softmax(out, mine.logits[t]!));
  let firstDivergence: number | null = null;
  for (let i = 0; i < GREEDY_TOKENS; i++) {
    if (refGreedy[i] !== mineGreedy[i]) {
      firstDivergence = i;
      break;
    }
  }
  const sorted = a.dpSorted;
  return {
    ...base,
    maxAbsDp: sorted[positions - 1]!,
    top1Agreement: a.agree / positions,
    greedyEqual: firstDivergence === null,
    dpQuantiles: { p50: quantile(sorted, 0.5), p90: quantile(sorted, 0.9), p99: quantile(sorted, 0.99) },
    top1Disagreements: positions - a.agree,
    top1DisagreementsAboveMargin: a.disagreeAboveMargin,
    greedy: { llamaCpp: refGreedy, kvbound: mineGreedy, firstDivergence },
    seconds: { llamaCpp: llamaSeconds, kvbound: kvboundSeconds },
    ...(kvboundSelf !== undefined ? { kvboundSelf } : {}),
    ...(flat !== undefined ? { error: flat } : {}),
  };
}

/** The JSON line: the agreed fields first, then the rest. */
export function resultJson(r: DiffResult): string {
  const { arch, positions, medianTop1, maxAbsDp, top1Agreement, greedyEqual, ...rest } = r;
  return JSON.stringify({ arch, positions, medianTop1, maxAbsDp, top1Agreement, greedyEqual, ...rest });
}

function report(r: DiffResult): string {
  const rows: Array<[string, string]> = [
    ["architecture (general.architecture)", `${r.arch} (${r.ggufArch}), ${r.layers} layers, ${r.weights} weights, rope scaling ${r.ropeScaling}`],
    ["positions (teacher-forced) / context", `${r.positions} / ${r.ctx} (llama.cpp context ${r.llamaCpp.contextSize})`],
    ["medianTop1 (llama.cpp)", fmt(r.medianTop1)],
    ["max abs(Δp) over positions and vocabulary", fmt(r.maxAbsDp)],
    ["per-position max abs(Δp): p50 / p90 / p99", r.dpQuantiles ? `${fmt(r.dpQuantiles.p50)} / ${fmt(r.dpQuantiles.p90)} / ${fmt(r.dpQuantiles.p99)}` : "n/a"],
    [
      "top-1 agreement",
      r.top1Agreement === null ? "n/a" : `${fmt(r.top1Agreement, 4)} (${r.top1Disagreements} disagreements, ${r.top1DisagreementsAboveMargin} with llama.cpp's top-2 margin > ${TOP1_MARGIN})`,
    ],
    [
      `greedy ${GREEDY_TOKENS} ids after ${GREEDY_PROMPT_TOKENS}-token prompt`,
      r.greedyEqual === null ? "n/a" : r.greedyEqual ? "equal" : `differ from index ${r.greedy.firstDivergence}`,
    ],
    ["node-llama-cpp probabilities vs softmax(logits)", fmt(r.peerSoftmaxMaxErr)],
    ...(r.llamaCppSelf
      ? ([["llama.cpp one token at a time vs batched: max abs(Δp) / top-1 agreement", `${fmt(r.llamaCppSelf.maxAbsDp)} / ${fmt(r.llamaCppSelf.top1Agreement, 4)}`]] as Array<[string, string]>)
      : []),
    ...(r.kvboundSelf
      ? ([["kvbound JS vs wasm matmuls: max abs(Δp) / p90 / top-1 agreement", `${fmt(r.kvboundSelf.maxAbsDp)} / ${fmt(r.kvboundSelf.p90)} / ${fmt(r.kvboundSelf.top1Agreement, 4)}`]] as Array<[string, string]>)
      : []),
    ["kvbound activations / GELU", `${r.kvboundActivations} / ${r.gelu}`],
    ["seconds llama.cpp / kvbound", `${fmt(r.seconds.llamaCpp)} / ${fmt(r.seconds.kvbound)}`],
  ];
  for (const n of r.notes) rows.push(["model", n]);
  if (r.error) rows.push(["error", `${r.error.name}: ${r.error.message}`]);
  const m = machineInfo();
  return [
    `## llama.cpp vs kvbound next-token distributions: ${r.arch}, seed ${r.seed}`,
    "",
    markdownTable([{ title: "metric" }, { title: "value" }], rows),
    "",
    machineLines(m, [`llama.cpp ${r.llamaCpp.release} via node-llama-cpp ${r.llamaCpp.nodeLlamaCpp}, 1 thread, F32 KV cache, flash attention off`]),
  ].join("\n");
}

function oneOf<T extends string>(name: string, value: string | undefined, allowed: readonly T[]): T | undefined {
  if (value === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(value)) throw new Error(`--${name} ${value} is not one of ${allowed.join(", ")}`);
  return value as T;
}

function intOf(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n)) throw new Error(`--${name} ${value} is not an integer`);
  return n;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      arch: { type: "string" },
      seed: { type: "string" },
      layers: { type: "string" },
      weights: { type: "string" },
      ctx: { type: "string" },
      "rope-scaling": { type: "string" },
      positions: { type: "string" },
      activations: { type: "string" },
      "noise-floor": { type: "boolean", default: false },
      "kvbound-noise": { type: "boolean", default: false },
      gelu: { type: "string" },
      "sliding-window": { type: "string" },
      json: { type: "boolean", default: false },
    },
  });
  const arch = oneOf("arch", values.arch, ARCH_NAMES);
  if (arch === undefined) throw new Error(`--arch is required: one of ${ARCH_NAMES.join(", ")}`);
  const opts: DiffOptions = {
    arch,
    ...(values.seed !== undefined ? { seed: intOf("seed", values.seed)! } : {}),
    ...(values.layers !== undefined ? { layers: intOf("layers", values.layers)! } : {}),
    ...(values.weights !== undefined ? { weights: oneOf("weights", values.weights, WEIGHT_KINDS)! } : {}),
    ...(values.ctx !== undefined ? { ctx: intOf("ctx", values.ctx)! } : {}),
    ...(values["rope-scaling"] !== undefined ? { ropeScaling: oneOf("rope-scaling", values["rope-scaling"], ROPE_SCALINGS)! } : {}),
    ...(values.positions !== undefined ? { positions: intOf("positions", values.positions)! } : {}),
    ...(values.activations !== undefined ? { activations: oneOf("activations", values.activations, ["f32", "q8"] as const)! } : {}),
    ...(values["noise-floor"] ? { noiseFloor: true } : {}),
    ...(values["kvbound-noise"] ? { kvboundNoise: true } : {}),
    ...(values.gelu !== undefined ? { gelu: oneOf("gelu", values.gelu, ["ggml", "exact"] as const)! } : {}),
    ...(values["sliding-window"] !== undefined ? { slidingWindow: Number(values["sliding-window"]) } : {}),
  };
  const r = await runDiff(opts);
  await closeLlamaCpp();
  console.log(values.json ? resultJson(r) : report(r));
  if (r.error) {
    if (!values.json) console.error(`\n${r.error.name}: ${r.error.message}`);
    process.exitCode = 1;
  }
}

// Run as a script, not when a test imports runDiff.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main().catch((e: unknown) => {
    const err = errorOf(e);
    if (process.argv.includes("--json")) console.log(JSON.stringify({ error: err }));
    else console.error(`${err.name}: ${err.message}`);
    process.exitCode = 1;
  });
}
