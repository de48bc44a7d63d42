// loadModelSpec: turns whatever the user typed after `kvbound plan` into a ModelSpec, by deciding
// which input it is: a GGUF file or URL, a JSON dump of GGUF metadata, a Hugging Face config.json
// (or a folder holding one), or a built-in registry id. Node-only (fs): the browser builds specs
// from the format-specific modules directly and never imports this file.

import { open, readFile, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

import { ModelConfigError, UnknownModelError } from "../errors.js";
import { readGgufHeader, type GgufHeader } from "../gguf/header.js";
import { DEFAULT_HF_ENDPOINT, hfResolveUrl, parseModelRef, type HfFileRef } from "../model/model-ref.js";
import { specFromGgufMetadata } from "./from-gguf-metadata.js";
import { HF_TEXT_CONFIG_KEYS, specFromHfConfig } from "./from-hf-config.js";
import type { ModelSpec, WeightsSpec } from "./model-spec.js";
import { registrySpec } from "./registry.js";

export interface LoadModelSpecOptions {
  /** Quantization to take weight bytes for (registry ids only; files know their own). */
  quant?: string;
  /** fetch used for http(s) URLs (tests pass one bound to a local server). */
  fetch?: typeof fetch;
  /** Environment for hf: references (HF_ENDPOINT, HF_TOKEN), as `kvbound run` reads it; default process.env. */
  env?: Readonly<Record<string, string | undefined>>;
}

/** Shards of one split GGUF kvbound reads at most. llama.cpp names shards with five digits
 *  (`%s-%05d-of-%05d.gguf`, llama_split_path); the largest published splits have a few dozen, so
 *  this bounds the header requests a hostile `split.count` can cause. */
export const MAX_GGUF_SPLITS = 512;

/** A GGUF metadata dump or config.json beyond this is not a config: refuse rather than read it
 *  into memory (a metadata dump with a 256K-token vocabulary is about 10 MB). */
export const MAX_JSON_FILE_BYTES = 64 * 1024 * 1024;
/** model.safetensors.index.json of the largest public models (DeepSeek-V3: ~9 MB of tensor names). */
export const MAX_SAFETENSORS_INDEX_BYTES = 64 * 1024 * 1024;

const GGUF_MAGIC = "GGUF";

/**
 * Resolves `ref` to a ModelSpec:
 * 1. `http(s)://...`, `hf:owner/repo/file.gguf[@revision]` (as `kvbound run` takes it; the header
 *    is read from the Hub's resolve URL with Range requests, nothing is downloaded), or a path ending
 *    `.gguf` or a file starting with the GGUF magic: the GGUF header (header only; weights = the sum
 *    of its tensor sizes, quant from `general.file_type`). A split GGUF (`split.count` > 1) is read
 *    shard by shard, the others found by llama.cpp's `-0000i-of-0000N.gguf` names;
 * 2. a `.json` file (or any file starting with `{`): with `general.architecture` a GGUF metadata
 *    dump; with `model_type` / `architectures` / `text_config` a Hugging Face config.json (weight
 *    bytes from a `model.safetensors.index.json` beside it when there is one); else ModelConfigError;
 * 3. a folder holding config.json: as 2;
 * 4. otherwise a registry id (`llama-3.1-8b`); UnknownModelError with suggestions when none matches.
 */
export async function loadModelSpec(ref: string, opts: LoadModelSpecOptions = {}): Promise<ModelSpec> {
  if (/^https?:\/\//i.test(ref)) return specFromGgufSource(ref, { kind: "url", url: ref }, opts);
  if (/^hf:/i.test(ref)) {
    const parsed = parseModelRef(ref);
    if (parsed.kind === "hf") return specFromGgufSource(ref, { kind: "hf", hf: parsed.hf }, opts);
  }

  const info = await stat(ref).catch(() => null);
  if (info === null) return specFromRegistry(ref, opts);
  if (info.isDirectory()) {
    const config = join(ref, "config.json");
    const inner = await stat(config).catch(() => null);
    if (inner === null || !inner.isFile()) {
      throw new UnknownModelError(`${ref} is a folder without a config.json; pass a .gguf file, a config.json or a registry id`, {
        model: ref,
      });
    }
    return specFromJsonFile(config, inner.size);
  }
  if (!info.isFile()) {
    throw new UnknownModelError(`${ref} is not a regular file; pass a .gguf file, a config.json or a registry id`, { model: ref });
  }

  const head = await readFirstBytes(ref, 4);
  const magic = String.fromCharCode(...head);
  if (magic === GGUF_MAGIC || /\.gguf$/i.test(ref)) return specFromGgufSource(ref, { kind: "file", path: ref }, opts);
  if (/\.json$/i.test(ref) || head[0] === 0x7b /* { */) return specFromJsonFile(ref, info.size);
  throw new ModelConfigError(
    `${ref} is neither a GGUF file (it does not start with the magic "GGUF") nor a JSON file; ` +
      `pass a .gguf file, a GGUF metadata .json, a Hugging Face config.json or a registry id`,
    { field: "file", source: ref, magic: Array.from(head) },
  );
}

async function readFirstBytes(path: string, n: number): Promise<Uint8Array> {
  const fh = await open(path, "r");
  try {
    const buf = new Uint8Array(n);
    const { bytesRead } = await fh.read(buf, 0, n, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** Where a GGUF's header is read from. */
type GgufLocation =
  | { readonly kind: "file"; readonly path: string }
  | { readonly kind: "url"; readonly url: string }
  | { readonly kind: "hf"; readonly hf: HfFileRef };

function hfRequest(hf: HfFileRef, opts: LoadModelSpecOptions): { url: string; headers: Record<string, string> } {
  const env = opts.env ?? process.env;
  const token = env["HF_TOKEN"];
  return { url: hfResolveUrl(hf, env["HF_ENDPOINT"] || DEFAULT_HF_ENDPOINT), headers: token ? { Authorization: `Bearer ${token}` } : {} };
}

async function readHeaderAt(loc: GgufLocation, opts: LoadModelSpecOptions): Promise<GgufHeader> {
  const fetchOpt = opts.fetch ? { fetch: opts.fetch } : {};
  switch (loc.kind) {
    case "file":
      return readGgufHeader(loc.path);
    case "url":
      return readGgufHeader(new URL(loc.url), fetchOpt);
    case "hf": {
      const { url, headers } = hfRequest(loc.hf, opts);
      return readGgufHeader(new URL(url), { ...fetchOpt, headers });
    }
    default:
      return loc satisfies never;
  }
}

function locationName(loc: GgufLocation): string {
  switch (loc.kind) {
    case "file":
      return loc.path;
    case "url":
      return loc.url;
    case "hf":
      return `hf:${loc.hf.owner}/${loc.hf.repo}/${loc.hf.file}`;
    default:
      return loc satisfies never;
  }
}

/** llama.cpp's shard names: `<prefix>-00001-of-00003.gguf` (llama_split_path, "%s-%05d-of-%05d.gguf"). */
const SPLIT_NAME = /-(\d{5})-of-(\d{5})\.gguf$/i;

function splitInt(header: GgufHeader, key: string): number | undefined {
  const v = header.metadata[key];
  const n = typeof v === "bigint" ? Number(v) : v;
  return typeof n === "number" && Number.isInteger(n) ? n : undefined;
}

/** The location of shard `i` (1-based) of `count`, named as the given shard is. */
function shardLocation(loc: GgufLocation, i: number, count: number): GgufLocation {
  const name = `-${String(i).padStart(5, "0")}-of-${String(count).padStart(5, "0")}.gguf`;
  switch (loc.kind) {
    case "file":
      return { kind: "file", path: loc.path.replace(SPLIT_NAME, name) };
    case "url": {
      const u = new URL(loc.url);
      u.pathname = u.pathname.replace(SPLIT_NAME, name);
      return { kind: "url", url: u.toString() };
    }
    case "hf":
      return { kind: "hf", hf: { ...loc.hf, file: loc.hf.file.replace(SPLIT_NAME, name) } };
    default:
      return loc satisfies never;
  }
}

function splitPathOf(loc: GgufLocation): string {
  return loc.kind === "file" ? loc.path : loc.kind === "url" ? new URL(loc.url).pathname : loc.hf.file;
}

/**
 * Every shard's header of a split GGUF (gguf-split: `split.count` shards, `split.no` 0-based, the
 * model's metadata in the first, tensors spread over all), in shard order; or the one header when
 * the file is not split. A split whose other shards cannot be named or read is a ModelConfigError
 * that says how to fix it: under-counting the weights silently is what this refuses.
 */
async function readShards(loc: GgufLocation, first: GgufHeader, ref: string, opts: LoadModelSpecOptions): Promise<GgufHeader[]> {
  const count = splitInt(first, "split.count");
  if (count === undefined || count <= 1) return [first];
  const no = splitInt(first, "split.no") ?? 0;
  const merge = `or merge the shards into one file with llama-gguf-split --merge <first shard> <out.gguf>`;
  if (count > MAX_GGUF_SPLITS) {
    throw new ModelConfigError(`${ref}: split.count ${count} is above the ${MAX_GGUF_SPLITS} shards kvbound reads; the file is corrupt, ${merge}`, {
      field: "split.count",
      value: count,
      max: MAX_GGUF_SPLITS,
    });
  }
  const m = SPLIT_NAME.exec(splitPathOf(loc));
  if (m === null || Number(m[2]) !== count || Number(m[1]) !== no + 1) {
    throw new ModelConfigError(
      `${ref} is shard ${no + 1} of a GGUF split into ${count} files (split.count ${count}), and its name does not follow llama.cpp's ` +
        `<prefix>-${String(no + 1).padStart(5, "0")}-of-${String(count).padStart(5, "0")}.gguf, so kvbound cannot find the other shards to count their weights; ` +
        `rename the shards that way (this one ${basename(splitPathOf(loc)).replace(SPLIT_NAME, "").replace(/\.gguf$/i, "")}-${String(no + 1).padStart(5, "0")}-of-${String(count).padStart(5, "0")}.gguf), ${merge}`,
      { field: "split.count", value: count, shard: no + 1 },
    );
  }
  const headers: GgufHeader[] = [];
  for (let i = 1; i <= count; i++) {
    if (i === no + 1) {
      headers.push(first);
      continue;
    }
    const shard = shardLocation(loc, i, count);
    if (shard.kind === "file" && (await stat(shard.path).catch(() => null)) === null) {
      throw new ModelConfigError(
        `${ref} is split into ${count} files and shard ${i}, ${shard.path}, is missing: kvbound reads every shard's header to count the weights; ` +
          `put all ${count} shards side by side, ${merge}`,
        { field: "split.count", value: count, shard: i, missing: shard.path },
      );
    }
    const h = await readHeaderAt(shard, opts);
    if (splitInt(h, "split.count") !== count || (splitInt(h, "split.no") ?? 0) !== i - 1) {
      throw new ModelConfigError(
        `${locationName(shard)} does not say it is shard ${i} of ${count} (split.no ${String(h.metadata["split.no"])}, split.count ${String(h.metadata["split.count"])}): ` +
          `the shards come from different splits; download them again, ${merge}`,
        { field: "split.no", shard: i },
      );
    }
    headers.push(h);
  }
  const declared = splitInt(headers[0]!, "split.tensors.count");
  let tensors = 0;
  for (const h of headers) tensors += h.tensors.length;
  if (declared !== undefined && declared !== tensors) {
    throw new ModelConfigError(`${ref}: the ${count} shards hold ${tensors} tensors but split.tensors.count says ${declared}; a shard is truncated or from another split, ${merge}`, {
      field: "split.tensors.count",
      value: declared,
      found: tensors,
    });
  }
  return headers;
}

async function specFromGgufSource(ref: string, loc: GgufLocation, opts: LoadModelSpecOptions): Promise<ModelSpec> {
  const given = await readHeaderAt(loc, opts);
  const shards = await readShards(loc, given, ref, opts);
  // The model's metadata lives in the first shard (gguf-split copies it there only).
  const header = shards[0]!;
  let params = 0;
  let tensorBytes = 0;
  let nTensors = 0;
  // No prototype: tensor names come from the file ("__proto__" must stay a plain key).
  const tensorTypes: Record<string, string> = Object.create(null) as Record<string, string>;
  const tensorSizes: Record<string, number> = Object.create(null) as Record<string, number>;
  const allTensors: Array<{ type: { name: string } }> = [];
  for (const shard of shards) {
    tensorBytes += shard.tensorBytes;
    for (const t of shard.tensors) {
      let n = 1;
      for (const d of t.shape) n *= Number(d);
      params += n;
      nTensors++;
      tensorTypes[t.name] = t.type.name;
      tensorSizes[t.name] = t.bytes;
      allTensors.push(t);
    }
  }
  const weights: WeightsSpec = {
    bytes: tensorBytes,
    quant: quantOfGguf(header.metadata["general.file_type"], allTensors),
    source: "gguf-tensors",
  };
  const spec = specFromGgufMetadata(header.metadata, {
    source: ref,
    name: nameFromRef(ref.replace(SPLIT_NAME, ".gguf")),
    weights,
    params: nTensors > 0 ? params : undefined,
  });
  return { ...spec, tensorTypes, tensorBytes: tensorSizes };
}

// llama.cpp `enum llama_ftype` (include/llama.h): the value written to general.file_type.
const FILE_TYPES: Readonly<Record<number, string>> = {
  0: "F32",
  1: "F16",
  2: "Q4_0",
  3: "Q4_1",
  7: "Q8_0",
  8: "Q5_0",
  9: "Q5_1",
  10: "Q2_K",
  11: "Q3_K_S",
  12: "Q3_K_M",
  13: "Q3_K_L",
  14: "Q4_K_S",
  15: "Q4_K_M",
  16: "Q5_K_S",
  17: "Q5_K_M",
  18: "Q6_K",
  19: "IQ2_XXS",
  20: "IQ2_XS",
  21: "Q2_K_S",
  22: "IQ3_XS",
  23: "IQ3_XXS",
  24: "IQ1_S",
  25: "IQ4_NL",
  26: "IQ3_S",
  27: "IQ3_M",
  28: "IQ2_S",
  29: "IQ2_M",
  30: "IQ4_XS",
  31: "IQ1_M",
  32: "BF16",
  36: "TQ1_0",
  37: "TQ2_0",
  38: "MXFP4_MOE",
  39: "NVFP4",
  40: "Q1_0",
};

/** The quant name for a GGUF `general.file_type` value; "mixed" when absent or unknown. */
export function quantFromFileType(value: unknown): string {
  const n = typeof value === "bigint" ? Number(value) : value;
  if (typeof n !== "number" || !Number.isInteger(n)) return "mixed";
  return FILE_TYPES[n] ?? "mixed";
}

/** general.file_type when the file has it; else the tensors' type when they all share one
 *  (llama2.c conversions such as stories260K write no file_type); else "mixed". */
function quantOfGguf(fileType: unknown, tensors: ReadonlyArray<{ type: { name: string } }>): string {
  if (fileType !== undefined) return quantFromFileType(fileType);
  const first = tensors[0]?.type.name;
  for (const t of tensors) if (t.type.name !== first) return "mixed";
  return first ?? "mixed";
}

function nameFromRef(ref: string): string | undefined {
  try {
    const base = basename(/^https?:/i.test(ref) ? new URL(ref).pathname : ref.replace(/^hf:/i, "").replace(/@[^/]*$/, "")).replace(/\.(gguf|json)$/i, "");
    return base.length > 0 ? base : undefined;
  } catch {
    return undefined;
  }
}

async function readJson(path: string, size: number, maxBytes: number, field: string): Promise<unknown> {
  if (size > maxBytes) {
    throw new ModelConfigError(`${path} is ${size} bytes, more than the ${maxBytes} a model config can be; is it the right file?`, {
      field,
      source: path,
      bytes: size,
      max: maxBytes,
    });
  }
  const text = await readFile(path, "utf8");
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new ModelConfigError(`${path} is not valid JSON (${(err as Error).message}); pass a GGUF metadata dump or a config.json`, {
      field,
      source: path,
    });
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

async function specFromJsonFile(path: string, size: number): Promise<ModelSpec> {
  const json = await readJson(path, size, MAX_JSON_FILE_BYTES, "file");
  if (!isRecord(json)) {
    throw new ModelConfigError(`${path} holds JSON that is not an object; pass a GGUF metadata dump or a config.json`, {
      field: "(root)",
      source: path,
    });
  }
  const name = nameFromRef(path === join(dirname(path), "config.json") ? dirname(path) : path);
  if ("general.architecture" in json) {
    return specFromGgufMetadata(json as Parameters<typeof specFromGgufMetadata>[0], { source: path, name });
  }
  if ("model_type" in json || "architectures" in json || HF_TEXT_CONFIG_KEYS.some((k) => k in json)) {
    const safetensorsIndex = await readSafetensorsIndex(dirname(path));
    return specFromHfConfig(json, { source: path, name, safetensorsIndex });
  }
  throw new ModelConfigError(
    `${path} is JSON but neither GGUF metadata (no "general.architecture") nor a Hugging Face config ` +
      `(no "model_type", "architectures" or "text_config"); add the field or pass another file`,
    { field: "general.architecture", source: path },
  );
}

async function readSafetensorsIndex(dir: string): Promise<Parameters<typeof specFromHfConfig>[1]["safetensorsIndex"]> {
  const path = join(dir, "model.safetensors.index.json");
  const info = await stat(path).catch(() => null);
  if (info === null || !info.isFile()) return undefined;
  const json = await readJson(path, info.size, MAX_SAFETENSORS_INDEX_BYTES, "model.safetensors.index.json");
  return json as Parameters<typeof specFromHfConfig>[1]["safetensorsIndex"];
}

function specFromRegistry(ref: string, opts: LoadModelSpecOptions): ModelSpec {
  try {
    return registrySpec(ref, opts.quant);
  } catch (err) {
    // A path-like reference that is not on disk: say that first; a registry miss is secondary.
    if (err instanceof UnknownModelError && (/[\\/]/.test(ref) || /\.(gguf|json)$/i.test(ref))) {
      throw new UnknownModelError(
        `no such file: ${ref}; pass an existing .gguf or .json path, an http(s) URL, or a registry id (kvbound list)`,
        { ...err.details, model: ref },
      );
    }
    throw err;
  }
}
