// The tokenizer a GGUF asks for: `tokenizer.ggml.model` "llama" -> SentencePiece BPE (spm.ts),
// "gpt2" -> byte-level BPE (bpe.ts), built from the `tokenizer.ggml.*` metadata, plus the BOS/EOS
// and end-of-generation settings the engine needs. Key names and defaults follow llama.cpp
// src/llama-vocab.cpp (llama_vocab::impl::load).

import { ModelConfigError, UnsupportedTokenizerError } from "../../errors.js";
import { BpeTokenizer, type EncodeOptions } from "./bpe.js";
import { preTokenizerSpec } from "./pretokenize.js";
import { SpmTokenizer } from "./spm.js";
import type { TextSpan } from "./special-split.js";
import { TOKEN_TYPE } from "./token-type.js";

export type { EncodeOptions } from "./bpe.js";
export type { TextSpan } from "./special-split.js";
export { BpeTokenizer } from "./bpe.js";
export { SpmTokenizer } from "./spm.js";

/** What every tokenizer offers; SpmTokenizer and BpeTokenizer both satisfy it structurally. */
export interface Tokenizer {
  /** Token ids of `text` (or of spans, each with its own parseSpecial), without BOS/EOS (see TokenizerSettings.addBos). */
  encode(text: string | readonly TextSpan[], opts?: EncodeOptions): number[];
  /** Whether `text` holds a control token's text (client text that must stay text). */
  hasSpecial(text: string): boolean;
  decode(ids: readonly number[]): string;
  /** The output bytes of one token (may be part of a UTF-8 character: stream-decode them). */
  tokenBytes(id: number): Uint8Array;
  readonly vocab: {
    readonly tokens: readonly string[];
    readonly types: readonly number[];
    /** -1 when the model has none. */
    readonly bosId: number;
    readonly eosId: number;
  };
}

export type TokenizerModel = "llama" | "gpt2";
export const SUPPORTED_TOKENIZER_MODELS: readonly TokenizerModel[] = Object.freeze(["llama", "gpt2"]);

export interface TokenizerSettings {
  readonly model: TokenizerModel;
  /** `tokenizer.ggml.pre` (gpt2 only). */
  readonly pre: string | undefined;
  readonly bosId: number;
  readonly eosId: number;
  /** Prepend BOS to a prompt: `tokenizer.ggml.add_bos_token`, else llama.cpp's default for the model. */
  readonly addBos: boolean;
  readonly addEos: boolean;
  /** Ids that end a generation: EOS, EOT, EOM and the end-of-turn tokens llama.cpp recognises by text. */
  readonly eogIds: readonly number[];
  /** `tokenizer.chat_template`, when the GGUF has one. */
  readonly chatTemplate: string | undefined;
}

type Metadata = Readonly<Record<string, unknown>>;

/** The tokenizer for a GGUF's metadata; throws UnsupportedTokenizerError / ModelConfigError. */
export function createTokenizer(metadata: Metadata): Tokenizer {
  const model = tokenizerModel(metadata);
  const tokens = stringArray(metadata, "tokenizer.ggml.tokens");
  const types = numberArray(metadata, "tokenizer.ggml.token_type", tokens.length) ?? [];
  switch (model) {
    case "llama":
      return new SpmTokenizer({
        tokens,
        // llama.cpp reads scores when present and uses 0 otherwise.
        scores: numberArray(metadata, "tokenizer.ggml.scores", tokens.length) ?? new Array<number>(tokens.length).fill(0),
        types: types.length > 0 ? types : new Array<number>(tokens.length).fill(1),
        bosId: tokenId(metadata, "tokenizer.ggml.bos_token_id", tokens.length, 1),
        eosId: tokenId(metadata, "tokenizer.ggml.eos_token_id", tokens.length, 2),
        unkId: tokenId(metadata, "tokenizer.ggml.unknown_token_id", tokens.length, 0),
        addSpacePrefix: bool(metadata, "tokenizer.ggml.add_space_prefix") ?? true,
      });
    case "gpt2":
      return new BpeTokenizer({
        tokens,
        types,
        merges: stringArray(metadata, "tokenizer.ggml.merges"),
        // llama.cpp defaults both to 11 (GPT-2's own ids); a vocab without them has none here.
        bosId: tokenId(metadata, "tokenizer.ggml.bos_token_id", tokens.length, -1),
        eosId: tokenId(metadata, "tokenizer.ggml.eos_token_id", tokens.length, -1),
        pre: optionalString(metadata, "tokenizer.ggml.pre"),
      });
    default:
      return model satisfies never;
  }
}

// Texts llama.cpp treats as end of generation when the vocab has them (llama-vocab.cpp, the
// special_eog_ids scan); a subset covering the chat formats of the supported architectures.
const EOG_TEXTS: ReadonlySet<string> = new Set([
  "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>", "<|end_of_text|>", "<end_of_utterance>",
]);

/** BOS/EOS flags, end-of-generation ids and the chat template of a GGUF's tokenizer. */
export function tokenizerSettings(metadata: Metadata): TokenizerSettings {
  const model = tokenizerModel(metadata);
  const tokens = stringArray(metadata, "tokenizer.ggml.tokens");
  const types = numberArray(metadata, "tokenizer.ggml.token_type", tokens.length) ?? [];
  const pre = model === "gpt2" ? optionalString(metadata, "tokenizer.ggml.pre") : undefined;
  const noneDefault = model === "llama" ? { bos: 1, eos: 2 } : { bos: -1, eos: -1 };
  const bosId = tokenId(metadata, "tokenizer.ggml.bos_token_id", tokens.length, noneDefault.bos);
  const eosId = tokenId(metadata, "tokenizer.ggml.eos_token_id", tokens.length, noneDefault.eos);
  // SPM adds BOS by default; BPE only for the llama-3 family of pre-tokenizers.
  const addBosDefault = model === "llama" ? true : preTokenizerSpec(pre).addBosDefault;
  const eog = new Set<number>();
  if (eosId >= 0) eog.add(eosId);
  for (const key of ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"]) {
    const id = tokenId(metadata, key, tokens.length, -1);
    if (id >= 0) eog.add(id);
  }
  for (let i = 0; i < tokens.length; i++) {
    // Only special tokens count: a normal token spelled "<|end|>" is text.
    const t = types[i] ?? 1;
    if ((t === 3 || t === 4) && EOG_TEXTS.has(tokens[i]!)) eog.add(i);
  }
  return Object.freeze({
    model,
    pre,
    bosId,
    eosId,
    addBos: (bool(metadata, "tokenizer.ggml.add_bos_token") ?? addBosDefault) && bosId >= 0,
    addEos: (bool(metadata, "tokenizer.ggml.add_eos_token") ?? false) && eosId >= 0,
    eogIds: Object.freeze([...eog].sort((a, b) => a - b)),
    chatTemplate: optionalString(metadata, "tokenizer.chat_template"),
  });
}

/** `text` as a model input: BOS + ids (+ EOS) as the settings ask. */
export function encodePrompt(tokenizer: Tokenizer, settings: TokenizerSettings, text: string, opts?: EncodeOptions): number[] {
  const ids = tokenizer.encode(text, opts);
  if (settings.addBos) ids.unshift(settings.bosId);
  if (settings.addEos) ids.push(settings.eosId);
  return ids;
}

const utf8 = new TextEncoder();

/**
 * The bytes llama-tokenize prints for one token: llama.cpp token_to_piece with `special = true`, so
 * control and unknown tokens show their text ("<s>") where tokenBytes, what a generation prints,
 * gives none. A piece may be part of a UTF-8 character.
 */
export function tokenPiece(tokenizer: Tokenizer, id: number): Uint8Array {
  const type = tokenizer.vocab.types[id] ?? TOKEN_TYPE.normal;
  const text = tokenizer.vocab.tokens[id];
  if (text !== undefined && (type === TOKEN_TYPE.control || type === TOKEN_TYPE.unknown)) return utf8.encode(text);
  return tokenizer.tokenBytes(id);
}

// ---------------------------------------------------------------------------------------------
// Metadata readers: each names the field it refuses.

function tokenizerModel(metadata: Metadata): TokenizerModel {
  const model = optionalString(metadata, "tokenizer.ggml.model");
  if (model === "llama" || model === "gpt2") return model;
  throw new UnsupportedTokenizerError(
    model === undefined
      ? `the GGUF has no tokenizer.ggml.model; kvbound needs a "llama" (SentencePiece) or "gpt2" (byte-level BPE) vocabulary`
      : `tokenizer.ggml.model "${model}" is not supported; kvbound runs "llama" (SentencePiece) and "gpt2" (byte-level BPE) vocabularies`,
    { field: "tokenizer.ggml.model", value: model ?? "", supported: SUPPORTED_TOKENIZER_MODELS },
  );
}

function optionalString(metadata: Metadata, key: string): string | undefined {
  const v = metadata[key];
  if (v === undefined) return undefined;
  if (typeof v !== "string") throw new ModelConfigError(`${key} must be a string, got ${typeof v}`, { field: key });
  return v;
}

function bool(metadata: Metadata, key: string): boolean | undefined {
  const v = metadata[key];
  if (v === undefined) return undefined;
  if (typeof v !== "boolean") throw new ModelConfigError(`${key} must be a boolean, got ${typeof v}`, { field: key });
  return v;
}

function stringArray(metadata: Metadata, key: string): string[] {
  const v = metadata[key];
  if (!Array.isArray(v)) throw new ModelConfigError(`${key} is missing or not an array; the GGUF has no usable vocabulary`, { field: key });
  for (let i = 0; i < v.length; i++) {
    if (typeof v[i] !== "string") throw new ModelConfigError(`${key}[${i}] is not a string`, { field: key, index: i });
  }
  return v as string[];
}

/**
 * The metadata's own array when it holds only numbers (no copy: a vocabulary's scores and types
 * are held once, by the header, and never written), else a copy with bigints made numbers.
 */
function numberArray(metadata: Metadata, key: string, expectedLength: number): readonly number[] | undefined {
  const v = metadata[key];
  if (v === undefined) return undefined;
  if (!Array.isArray(v)) throw new ModelConfigError(`${key} is not an array`, { field: key });
  if (v.length !== expectedLength) {
    throw new ModelConfigError(`${key} has ${v.length} entries for ${expectedLength} tokens; the GGUF is inconsistent`, { field: key });
  }
  let numbers = 0;
  while (numbers < v.length && typeof v[numbers] === "number") numbers++;
  if (numbers === v.length) return v as number[];
  const out = new Array<number>(v.length);
  for (let i = 0; i < v.length; i++) {
    const x: unknown = v[i];
    if (typeof x === "number") out[i] = x;
    else if (typeof x === "bigint") out[i] = Number(x);
    else throw new ModelConfigError(`${key}[${i}] is not a number`, { field: key, index: i });
  }
  return out;
}

function tokenId(metadata: Metadata, key: string, nTokens: number, fallback: number): number {
  const v = metadata[key];
  if (v === undefined) return fallback < nTokens ? fallback : -1;
  const id = typeof v === "bigint" ? Number(v) : v;
  if (typeof id !== "number" || !Number.isInteger(id)) throw new ModelConfigError(`${key} must be an integer token id`, { field: key });
  // llama.cpp ignores out-of-range special ids with a warning; -1 (and u32 max) mean "none".
  if (id < 0 || id >= nTokens) return -1;
  return id;
}
