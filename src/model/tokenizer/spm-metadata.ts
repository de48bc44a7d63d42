// Reads a SentencePiece vocabulary out of GGUF metadata (tokenizer.ggml.*), with typed errors.

import { ModelConfigError } from "../../errors.js";
import type { SpmVocab } from "./spm.js";

function arrayOf<T>(meta: Readonly<Record<string, unknown>>, key: string, check: (v: unknown) => v is T): T[] {
  const v = meta[key];
  if (!Array.isArray(v) || !v.every(check)) throw new ModelConfigError(`GGUF metadata ${key} is missing or not an array of the right type`, { field: key });
  return v;
}

function idOf(meta: Readonly<Record<string, unknown>>, key: string, fallback: number): number {
  const v = meta[key];
  return typeof v === "number" ? v : fallback;
}

export function spmVocabFromMetadata(meta: Readonly<Record<string, unknown>>): SpmVocab {
  const tokens = arrayOf(meta, "tokenizer.ggml.tokens", (v): v is string => typeof v === "string");
  const scores = meta["tokenizer.ggml.scores"] === undefined
    ? tokens.map(() => 0)
    : arrayOf(meta, "tokenizer.ggml.scores", (v): v is number => typeof v === "number");
  const types = meta["tokenizer.ggml.token_type"] === undefined
    ? tokens.map(() => 1)
    : arrayOf(meta, "tokenizer.ggml.token_type", (v): v is number => typeof v === "number");
  const addSpace = meta["tokenizer.ggml.add_space_prefix"];
  return {
    tokens,
    scores,
    types,
    bosId: idOf(meta, "tokenizer.ggml.bos_token_id", 1),
    eosId: idOf(meta, "tokenizer.ggml.eos_token_id", 2),
    unkId: idOf(meta, "tokenizer.ggml.unknown_token_id", 0),
    addSpacePrefix: typeof addSpace === "boolean" ? addSpace : true,
  };
}
