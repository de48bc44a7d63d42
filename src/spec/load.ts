// loadModelSpec: turns whatever the user typed after `kvbound plan` into a ModelSpec, by deciding
// which input it is: a GGUF file or URL, a JSON dump of GGUF metadata, a Hugging Face config.json
// (or a folder holding one), or a built-in registry id. Node-only (fs): the browser builds specs
// from the format-specific modules directly and never imports this file.

import { open, readFile, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

import { ModelConfigError, UnknownModelError } from "../errors.js";
import { readGgufHeader } from "../gguf/header.js";
import { specFromGgufMetadata } from "./from-gguf-metadata.js";
import { specFromHfConfig } from "./from-hf-config.js";
import type { ModelSpec, WeightsSpec } from "./model-spec.js";
import { registrySpec } from "./registry.js";

export interface LoadModelSpecOptions {
  /** Quantization to take weight bytes for (registry ids only; files know their own). */
  quant?: string;
  /** fetch used for http(s) URLs (tests pass one bound to a local server). */
  fetch?: typeof fetch;
}

/** A GGUF metadata dump or config.json beyond this is not a config: refuse rather than read it
 *  into memory (a metadata dump with a 256K-token vocabulary is about 10 MB). */
export const MAX_JSON_FILE_BYTES = 64 * 1024 * 1024;
/** model.safetensors.index.json of the largest public models (DeepSeek-V3: ~9 MB of tensor names). */
export const MAX_SAFETENSORS_INDEX_BYTES = 64 * 1024 * 1024;

const GGUF_MAGIC = "GGUF";

/**
 * Resolves `ref` to a ModelSpec:
 * 1. `http(s)://...` or a path ending `.gguf` or a file starting with the GGUF magic: the GGUF
 *    header (header only; weights = the sum of its tensor sizes, quant from `general.file_type`);
 * 2. a `.json` file (or any file starting with `{`): with `general.architecture` a GGUF metadata
 *    dump; with `model_type` / `architectures` / `text_config` a Hugging Face config.json (weight
 *    bytes from a `model.safetensors.index.json` beside it when there is one); else ModelConfigError;
 * 3. a folder holding config.json: as 2;
 * 4. otherwise a registry id (`llama-3.1-8b`); UnknownModelError with suggestions when none matches.
 */
export async function loadModelSpec(ref: string, opts: LoadModelSpecOptions = {}): Promise<ModelSpec> {
  if (/^https?:\/\//i.test(ref)) return specFromGgufSource(ref, new URL(ref), opts);

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
  if (magic === GGUF_MAGIC || /\.gguf$/i.test(ref)) return specFromGgufSource(ref, ref, opts);
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

async function specFromGgufSource(ref: string, source: string | URL, opts: LoadModelSpecOptions): Promise<ModelSpec> {
  const header = await readGgufHeader(source, opts.fetch ? { fetch: opts.fetch } : undefined);
  let params = 0;
  for (const t of header.tensors) {
    let n = 1;
    for (const d of t.shape) n *= Number(d);
    params += n;
  }
  const weights: WeightsSpec = {
    bytes: header.tensorBytes,
    quant: quantOfGguf(header.metadata["general.file_type"], header.tensors),
    source: "gguf-tensors",
  };
  // No prototype: tensor names come from the file ("__proto__" must stay a plain key).
  const tensorTypes: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const t of header.tensors) tensorTypes[t.name] = t.type.name;
  const spec = specFromGgufMetadata(header.metadata, {
    source: ref,
    name: nameFromRef(ref),
    weights,
    params: header.tensors.length > 0 ? params : undefined,
  });
  return { ...spec, tensorTypes };
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
    const base = basename(/^https?:/i.test(ref) ? new URL(ref).pathname : ref).replace(/\.(gguf|json)$/i, "");
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
  if ("model_type" in json || "architectures" in json || "text_config" in json) {
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
