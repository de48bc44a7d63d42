// Where the planner's ModelSpec comes from: a registry id, a pasted config.json (or a GGUF
// metadata dump), or a GGUF file the user picked or dropped. A GGUF is read in the page, header
// only (Blob slices): the file is never uploaded and its tensor data never read.

import { ModelConfigError } from "../../../src/errors.js";
import { readGgufHeaderFromSource, type GgufHeader, type GgufValue } from "../../../src/gguf/header.js";
import { blobSource } from "../../../src/gguf/readers/blob.js";
import { specFromGgufMetadata } from "../../../src/spec/from-gguf-metadata.js";
import { specFromHfConfig } from "../../../src/spec/from-hf-config.js";
import type { ModelSpec, WeightsSpec } from "../../../src/spec/model-spec.js";
import { registrySpec } from "../../../src/spec/registry.js";

/** Largest pasted config accepted: a config.json is a few KB; a GGUF metadata dump with a 256K
 *  vocabulary is about 10 MB. Beyond 16 MiB of text the paste is not a config. */
export const MAX_CONFIG_CHARS = 16 * 1024 * 1024;
/** Characters of the chat template shown (the whole template can be tens of KB). */
export const CHAT_TEMPLATE_PREVIEW_CHARS = 400;
/** Tokens of the vocabulary shown. */
export const TOKEN_PREVIEW_COUNT = 12;

export type ModelChoice =
  | { readonly kind: "registry"; readonly id: string; readonly quant: string | undefined }
  | { readonly kind: "config"; readonly text: string }
  | { readonly kind: "gguf"; readonly file: File };

/** Facts read from a GGUF header, shown as text (never as HTML: they come from the file). */
export interface GgufFacts {
  readonly fileName: string;
  readonly fileBytes: number | undefined;
  readonly name: string | undefined;
  readonly architecture: string | undefined;
  readonly tensorCount: number;
  readonly chatTemplate: string | undefined;
  readonly tokens: readonly string[];
  readonly tokenCount: number;
}

export interface LoadedModel {
  readonly spec: ModelSpec;
  readonly facts: GgufFacts | null;
}

export function registryModel(id: string, quant: string | undefined): LoadedModel {
  return { spec: registrySpec(id, quant), facts: null };
}

/** A pasted Hugging Face config.json, or a GGUF metadata dump (it has `general.architecture`). */
export function configModel(text: string): LoadedModel {
  if (text.length > MAX_CONFIG_CHARS) {
    throw new ModelConfigError(`the pasted text is ${text.length} characters, more than the ${MAX_CONFIG_CHARS} a config can be; paste config.json`, {
      field: "(config)",
    });
  }
  if (text.trim() === "") throw new ModelConfigError("nothing is pasted; paste a config.json (or pick a registry model)", { field: "(config)" });
  let json: unknown;
  try {
    json = JSON.parse(text) as unknown;
  } catch (err) {
    throw new ModelConfigError(`the pasted text is not valid JSON (${(err as Error).message}); paste the model's config.json`, { field: "(config)" });
  }
  if (json !== null && typeof json === "object" && !Array.isArray(json) && "general.architecture" in json) {
    return { spec: specFromGgufMetadata(json as Record<string, unknown>, { source: "pasted GGUF metadata" }), facts: null };
  }
  return { spec: specFromHfConfig(json, { source: "pasted config.json" }), facts: null };
}

function str(v: GgufValue | undefined): string | undefined {
  return typeof v === "string" ? v : undefined;
}

function factsOf(file: File, header: GgufHeader): GgufFacts {
  const meta = header.metadata;
  const template = str(meta["tokenizer.chat_template"]);
  const rawTokens = meta["tokenizer.ggml.tokens"];
  const tokens: string[] = [];
  let tokenCount = 0;
  if (Array.isArray(rawTokens)) {
    tokenCount = rawTokens.length;
    for (let i = 0; i < rawTokens.length && tokens.length < TOKEN_PREVIEW_COUNT; i++) {
      const t = rawTokens[i];
      if (typeof t === "string") tokens.push(t);
    }
  }
  return {
    fileName: file.name,
    fileBytes: header.fileBytes,
    name: str(meta["general.name"]),
    architecture: str(meta["general.architecture"]),
    tensorCount: header.tensors.length,
    chatTemplate: template === undefined ? undefined : template.slice(0, CHAT_TEMPLATE_PREVIEW_CHARS),
    tokens,
    tokenCount,
  };
}

/** The quant of a GGUF for display: the tensors' shared type, else "mixed". */
function quantOf(header: GgufHeader): string {
  const first = header.tensors[0]?.type.name;
  for (const t of header.tensors) if (t.type.name !== first) return "mixed";
  return first ?? "mixed";
}

/** Reads the header of a picked/dropped GGUF (header bytes only) into a spec and its facts. */
export async function ggufModel(file: File, signal?: AbortSignal): Promise<LoadedModel> {
  const src = blobSource(file, file.name);
  const header = await readGgufHeaderFromSource(src, signal === undefined ? {} : { signal });
  let params = 0;
  for (const t of header.tensors) {
    let n = 1;
    for (const d of t.shape) n *= d;
    params += n;
  }
  const weights: WeightsSpec | null = header.tensors.length > 0 ? { bytes: header.tensorBytes, quant: quantOf(header), source: "gguf-tensors" } : null;
  const facts = factsOf(file, header);
  const spec = specFromGgufMetadata(header.metadata, {
    source: file.name,
    name: facts.name ?? file.name.replace(/\.gguf$/i, ""),
    weights,
    params: header.tensors.length > 0 ? params : null,
  });
  return { spec, facts };
}
