// The built-in model registry: popular open models as data (./registry/models.json), each with
// the GGUF metadata llama.cpp would read from its header, parameter count, weight bytes per
// quantization and the sources they come from. This file only loads, looks up and converts.

import { InvalidSettingError, ModelConfigError, UnknownModelError } from "../errors.js";
import { specFromGgufMetadata } from "./from-gguf-metadata.js";
import type { ModelSpec, WeightsSpec } from "./model-spec.js";
import data from "./registry/models.json" with { type: "json" };

/**
 * How an entry's weight bytes were obtained.
 * - "file-size": the exact byte size of the published GGUF file (`gguf` URL) for each quant.
 * - "params-x-bpw": an estimate, `round(params * bpw[quant] / 8)`, with the whole-file bits per
 *   weight llama.cpp publishes for that quant (`bpwSource`); real files differ by a few percent
 *   (vocab size, tied embeddings, per-arch tensor type choices).
 */
export type WeightsBasis = "file-size" | "params-x-bpw";

/**
 * How `params` was obtained: "safetensors" (the published tensor count, which the registry test
 * recomputes from the dims), "dims-formula" (computed from config.json dims; see `notes`),
 * "model-card-rounded" (the model card's rounded figure, e.g. 109B).
 */
export type ParamsBasis = "safetensors" | "dims-formula" | "model-card-rounded";

export interface RegistryEntry {
  /** Lower-case id, e.g. "llama-3.1-8b". */
  readonly id: string;
  readonly name: string;
  /** URL of the original model (its config.json is the source of the metadata). */
  readonly source: string;
  /** URL of the GGUF repository the quant names and file sizes refer to. */
  readonly gguf: string;
  readonly params: number;
  readonly paramsBasis: ParamsBasis;
  /** GGUF header keys as llama.cpp reads them (`general.architecture`, `<arch>.block_count`...). */
  readonly metadata: Readonly<Record<string, unknown>>;
  /** Weight bytes by quantization name ("Q4_K_M", "Q8_0", "F16", "MXFP4"...). */
  readonly weights: Readonly<Record<string, number>>;
  readonly defaultQuant: string;
  readonly weightsBasis: WeightsBasis;
  /** Bits per weight used for each quant when `weightsBasis` is "params-x-bpw". */
  readonly bpw?: Readonly<Record<string, number>>;
  /** Where the bits-per-weight figures come from. */
  readonly bpwSource?: string;
  readonly notes?: string;
}

// ---------------------------------------------------------------------------------------------
// Loading: the JSON is shipped with the package, but it is still checked once, so that a bad
// edit to the data fails with the entry and field named rather than deep inside a planner.

/** Keys every entry must have, with their type. */
const REQUIRED: ReadonlyArray<readonly [keyof RegistryEntry, "string" | "number" | "object"]> = [
  ["id", "string"],
  ["name", "string"],
  ["source", "string"],
  ["gguf", "string"],
  ["params", "number"],
  ["paramsBasis", "string"],
  ["metadata", "object"],
  ["weights", "object"],
  ["defaultQuant", "string"],
  ["weightsBasis", "string"],
];

function deepFreeze<T>(v: T): T {
  if (v !== null && typeof v === "object" && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v as Record<string, unknown>)) deepFreeze(x);
  }
  return v;
}

/** A ModelConfigError naming the entry and field of the registry data. */
function bad(id: string, field: string, why: string): never {
  throw new ModelConfigError(`model registry entry "${id}": ${field} ${why}; fix src/spec/registry/models.json`, {
    field: `registry.${id}.${field}`,
  });
}

/** Checks one raw entry's shape; exported for the registry test. */
export function checkRegistryEntry(raw: unknown, index: number): RegistryEntry {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) bad(`#${index}`, "(entry)", "is not an object");
  const e = raw as Record<string, unknown>;
  const id = typeof e.id === "string" ? e.id : `#${index}`;
  for (const [key, type] of REQUIRED) {
    const v = e[key];
    if (typeof v !== type || v === null || (type === "string" && v === "")) bad(id, key, `must be a non-empty ${type}`);
  }
  if (id !== id.toLowerCase()) bad(id, "id", "must be lower-case");
  for (const key of ["source", "gguf", "bpwSource"] as const) {
    const v = e[key];
    if (v !== undefined && (typeof v !== "string" || !v.startsWith("https://"))) bad(id, key, "must be an https URL");
  }
  if (!Number.isSafeInteger(e.params) || (e.params as number) <= 0) bad(id, "params", "must be a positive integer");
  if (e.weightsBasis !== "file-size" && e.weightsBasis !== "params-x-bpw") bad(id, "weightsBasis", 'must be "file-size" or "params-x-bpw"');
  if (e.paramsBasis !== "safetensors" && e.paramsBasis !== "dims-formula" && e.paramsBasis !== "model-card-rounded") {
    bad(id, "paramsBasis", 'must be "safetensors", "dims-formula" or "model-card-rounded"');
  }
  const weights = e.weights as Record<string, unknown>;
  for (const [q, b] of Object.entries(weights)) {
    if (!Number.isSafeInteger(b) || (b as number) <= 0) bad(id, `weights.${q}`, "must be a positive integer byte count");
  }
  if (!Object.prototype.hasOwnProperty.call(weights, e.defaultQuant as string)) bad(id, "defaultQuant", `"${String(e.defaultQuant)}" has no weights entry`);
  if (e.weightsBasis === "params-x-bpw") {
    const bpw = e.bpw as Record<string, unknown> | undefined;
    if (bpw === undefined || typeof bpw !== "object") bad(id, "bpw", 'is required when weightsBasis is "params-x-bpw"');
    for (const q of Object.keys(weights)) {
      if (typeof bpw[q] !== "number") bad(id, `bpw.${q}`, "is missing: every estimated quant names its bits per weight");
    }
  }
  const meta = e.metadata as Record<string, unknown>;
  if (typeof meta["general.architecture"] !== "string") bad(id, "metadata", 'lacks "general.architecture"');
  return raw as RegistryEntry;
}

let entries: readonly RegistryEntry[] | null = null;
let byId: Map<string, RegistryEntry> | null = null;
let byAlias: Map<string, RegistryEntry> | null = null;

function load(): readonly RegistryEntry[] {
  if (entries !== null) return entries;
  const models = (data as { models?: unknown }).models;
  if (!Array.isArray(models)) bad("(file)", "models", "must be an array");
  const list: RegistryEntry[] = [];
  const ids = new Map<string, RegistryEntry>();
  const aliases = new Map<string, RegistryEntry>();
  for (let i = 0; i < models.length; i++) {
    const entry = deepFreeze(checkRegistryEntry(models[i], i));
    if (ids.has(entry.id)) bad(entry.id, "id", "is not unique");
    ids.set(entry.id, entry);
    list.push(entry);
  }
  // Aliases: the repo names of the source and the GGUF ("Llama-3.1-8B-Instruct",
  // "Meta-Llama-3.1-8B-Instruct-GGUF"), so a user can paste either. First entry wins.
  for (const entry of list) {
    for (const url of [entry.source, entry.gguf]) {
      const alias = normalizeModelName(url);
      if (!ids.has(alias) && !aliases.has(alias)) aliases.set(alias, entry);
    }
  }
  entries = Object.freeze(list);
  byId = ids;
  byAlias = aliases;
  return entries;
}

// ---------------------------------------------------------------------------------------------
// Lookup

/**
 * Lower-case, without a huggingface.co URL / "owner/" prefix, a ".gguf" or "-GGUF" suffix, with
 * spaces and underscores as dashes: "meta-llama/Llama-3.1-8B-Instruct" -> "llama-3.1-8b-instruct".
 */
export function normalizeModelName(name: string): string {
  let s = name.trim().toLowerCase();
  s = s.replace(/^https?:\/\/(www\.)?(huggingface\.co|hf\.co)\//, "").replace(/^hf\.co\//, "");
  s = s.replace(/\/+$/, "");
  const slash = s.lastIndexOf("/");
  if (slash >= 0) s = s.slice(slash + 1);
  s = s.replace(/[\s_]+/g, "-").replace(/\.gguf$/, "").replace(/-gguf$/, "");
  return s;
}

/** Variant suffixes that name the same architecture and sizes ("-Instruct", "-it", "-chat"). */
const VARIANT_SUFFIX = /-(instruct|it|chat|base|hf)$/;

/**
 * The entry for an id, tolerant of case, an "owner/" or URL prefix and variant suffixes:
 * "Llama-3.1-8B", "meta-llama/Llama-3.1-8B-Instruct" and "llama-3.1-8b" all find llama-3.1-8b.
 */
export function findRegistryEntry(id: string): RegistryEntry | undefined {
  load();
  const ids = byId!;
  const aliases = byAlias!;
  let s = normalizeModelName(id);
  for (let guard = 0; guard < 4 && s !== ""; guard++) {
    const hit = ids.get(s) ?? aliases.get(s);
    if (hit !== undefined) return hit;
    const stripped = s.replace(VARIANT_SUFFIX, "");
    if (stripped === s) break;
    s = stripped;
  }
  return undefined;
}

export function listRegistry(): readonly RegistryEntry[] {
  return load();
}

/** Levenshtein distance with a two-row table (ids are short). */
function editDistance(a: string, b: string): number {
  let prev = new Array<number>(b.length + 1);
  let cur = new Array<number>(b.length + 1);
  for (let j = 0; j <= b.length; j++) prev[j] = j;
  for (let i = 1; i <= a.length; i++) {
    cur[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const sub = prev[j - 1]! + (a.charCodeAt(i - 1) === b.charCodeAt(j - 1) ? 0 : 1);
      cur[j] = Math.min(sub, prev[j]! + 1, cur[j - 1]! + 1);
    }
    const t = prev;
    prev = cur;
    cur = t;
  }
  return prev[b.length]!;
}

/** Registry ids close to `query`, best first: small edit distance, or sharing its leading part. */
export function closeRegistryIds(query: string, max = 5): string[] {
  const q = normalizeModelName(query).replace(VARIANT_SUFFIX, "");
  const scored: Array<{ id: string; score: number }> = [];
  for (const e of load()) {
    const d = editDistance(q, e.id);
    // a query that is a prefix/substring of an id ("qwen3", "gemma-3") is a family name
    const contains = q.length >= 3 && (e.id.includes(q) || q.includes(e.id));
    const limit = Math.max(2, Math.floor(e.id.length / 3));
    if (d <= limit || contains) scored.push({ id: e.id, score: contains ? Math.min(d, 1 + e.id.length - q.length) : d });
  }
  scored.sort((a, b) => a.score - b.score || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const out: string[] = [];
  for (let i = 0; i < scored.length && out.length < max; i++) out.push(scored[i]!.id);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Conversion

/**
 * The ModelSpec of a registry model, with the weight bytes of `quant` (default: the entry's
 * `defaultQuant`, case-insensitive). Throws UnknownModelError listing close ids when `id` is not
 * in the registry, and InvalidSettingError listing the entry's quants when `quant` is not one.
 */
export function registrySpec(id: string, quant?: string): ModelSpec {
  const entry = findRegistryEntry(id);
  if (entry === undefined) {
    const suggestions = closeRegistryIds(id);
    const hint = suggestions.length > 0 ? `did you mean ${suggestions.join(", ")}?` : `no registry id is close`;
    throw new UnknownModelError(
      `"${id}" is not a file, a URL or a registry model; ${hint} ` + `(\`kvbound list\` shows all ${load().length} registry ids)`,
      { model: id, suggestions },
    );
  }
  let q = entry.defaultQuant;
  if (quant !== undefined) {
    const want = quant.trim().toUpperCase();
    let found: string | undefined;
    for (const name of Object.keys(entry.weights)) if (name.toUpperCase() === want) found = name;
    if (found === undefined) {
      throw new InvalidSettingError(
        `${entry.id} has no weight size for quant "${quant}"; use one of ${Object.keys(entry.weights).join(", ")}`,
        { setting: "quant", value: quant, allowed: Object.keys(entry.weights) },
      );
    }
    q = found;
  }
  const weights: WeightsSpec = { bytes: entry.weights[q]!, quant: q, source: "registry" };
  return specFromGgufMetadata(entry.metadata, { source: entry.source, name: entry.name, weights, params: entry.params });
}
