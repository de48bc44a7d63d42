// rankModels: which built-in registry models hold a given context within a budget, best first.
// Score (documented, simple): models that fit come first, ordered by parameter count (bigger is
// better at equal memory), then by headroom; models that do not fit follow, demoted with the
// reason, ordered by how little they miss by. Nothing is hidden.

import { KVBOUND_ARCHS } from "./kvbound.js";
import { KvboundError } from "../errors.js";
import type { ModelSpec } from "../spec/model-spec.js";
import { listRegistry, registrySpec } from "../spec/registry.js";
import { cheapestFor, type FitRequest } from "./fit.js";
import { formatBytes } from "./parse.js";
import { DEFAULT_ENGINE, ENGINE_RULES, type EngineRules } from "./plan.js";
import type { PlanSettings } from "./types.js";

/** The registry facts rankModels reads (src/spec/registry.ts provides them). */
export interface RankRegistryEntry {
  readonly id: string;
  readonly name: string;
  readonly weights: Readonly<Record<string, number>>;
  readonly defaultQuant: string;
}

export interface RankRegistry {
  list(): readonly RankRegistryEntry[];
  spec(id: string, quant?: string): ModelSpec;
}

export const DEFAULT_REGISTRY: RankRegistry = { list: listRegistry, spec: registrySpec };

export interface RankRequest extends FitRequest {
  readonly ctx: number;
  /** Quantization per model (default: each entry's defaultQuant). */
  readonly quant?: string;
}

export interface RankedModel {
  readonly id: string;
  readonly name: string;
  readonly quant: string;
  readonly params: number | null;
  readonly fits: boolean;
  /** The KV setting that makes it fit ("f16 K+V", "q8_0 K+V", a sliding window...), or the cheapest tried. */
  readonly kvSetting: string;
  /** Bytes at that setting (vLLM: the KV one request needs). */
  readonly bytes: number;
  /** budget - bytes when it fits; minus the shortfall when not; null when it could not be planned. */
  readonly headroomBytes: number | null;
  /** True when the fit needs a sliding window instead of the full context. */
  readonly bounded: boolean;
  readonly reason: string;
}

export interface RankResult {
  readonly ctx: number;
  readonly budgetBytes: number;
  /** Fitting models first (best first), then the demoted ones. */
  readonly models: readonly RankedModel[];
}

/**
 * Ranks every registry model for `ctx` tokens within `budgetBytes` on `engine` (default
 * llama.cpp), each at its default quantization (or `quant` where the entry has it), using the
 * cheapest KV setting that fits (cheapestFor). A model whose spec cannot be built is demoted with
 * the error, not dropped.
 */
export function rankModels(request: RankRequest, registry: RankRegistry = DEFAULT_REGISTRY, rules: EngineRules = ENGINE_RULES): RankResult {
  const { ctx, quant, ...fitReq } = request;
  const engine = fitReq.engine ?? DEFAULT_ENGINE;
  const models: RankedModel[] = [];
  for (const entry of registry.list()) {
    const q = quant !== undefined && entry.weights[quant] !== undefined ? quant : entry.defaultQuant;
    let spec: ModelSpec;
    try {
      spec = registry.spec(entry.id, q);
    } catch (err) {
      if (!(err instanceof KvboundError)) throw err;
      models.push(demoted(entry, q, null, 0, null, `${err.name}: ${err.message}`));
      continue;
    }
    if (engine === "kvbound" && !KVBOUND_ARCHS.includes(spec.arch)) {
      // Memory alone would rank it, but kvbound run would refuse it.
      models.push(demoted(entry, q, spec.params, 0, null, `kvbound has no forward pass for architecture ${spec.arch} (it runs ${KVBOUND_ARCHS.join(", ")})`));
      continue;
    }
    let result: ReturnType<typeof cheapestFor>;
    try {
      const base: PlanSettings = { ...fitReq };
      result = cheapestFor(spec, ctx, { ...base, engine, budgetBytes: fitReq.budgetBytes }, rules);
    } catch (err) {
      if (!(err instanceof KvboundError)) throw err;
      models.push(demoted(entry, q, spec.params, 0, null, `${err.name}: ${err.message}`));
      continue;
    }
    if (result.fits && (result.pastTraining !== null || (spec.nCtxTrain !== null && ctx > spec.nCtxTrain))) {
      // Memory is not the only limit: past its training context a model's attention degrades (or
      // needs RoPE scaling it was not tuned for), so it cannot really hold `ctx` tokens.
      models.push(
        demoted(entry, q, spec.params, result.bytes, result.headroomBytes,
          `trained at ${spec.nCtxTrain} tokens: ${ctx} is past its training context (the memory would fit: ${result.note})`),
      );
    } else if (result.fits) {
      const headroom = result.headroomBytes;
      models.push({
        id: entry.id,
        name: entry.name,
        quant: q,
        params: spec.params,
        fits: true,
        kvSetting: result.label,
        bytes: result.bytes,
        headroomBytes: headroom,
        bounded: result.bounded,
        reason: result.note,
      });
    } else {
      models.push(demoted(entry, q, spec.params, result.bytes, -result.shortfallBytes, result.reason));
    }
  }
  models.sort(compareRanked);
  return { ctx, budgetBytes: fitReq.budgetBytes, models };
}

function demoted(entry: RankRegistryEntry, quant: string, params: number | null, bytes: number, headroom: number | null, reason: string): RankedModel {
  return { id: entry.id, name: entry.name, quant, params, fits: false, kvSetting: "none", bytes, headroomBytes: headroom, bounded: false, reason };
}

/** Full-context fits, then bounded (sliding) fits, then misses; within fits, more parameters
 *  first, then more headroom; within misses, the smallest shortfall first. */
export function compareRanked(a: RankedModel, b: RankedModel): number {
  const tier = (m: RankedModel): number => (m.fits ? (m.bounded ? 1 : 0) : 2);
  if (tier(a) !== tier(b)) return tier(a) - tier(b);
  if (a.fits) {
    const pa = a.params ?? 0;
    const pb = b.params ?? 0;
    if (pa !== pb) return pb - pa;
  }
  if (a.headroomBytes !== b.headroomBytes) {
    if (a.headroomBytes === null) return 1;
    if (b.headroomBytes === null) return -1;
    return b.headroomBytes - a.headroomBytes;
  }
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** One line per model for tables and CLI output. */
export function describeRanked(m: RankedModel): string {
  return m.fits
    ? `${m.id} ${m.quant}: fits with ${m.kvSetting} (${formatBytes(m.bytes)}, ${formatBytes(m.headroomBytes ?? 0)} spare)`
    : `${m.id} ${m.quant}: does not fit: ${m.reason}`;
}
