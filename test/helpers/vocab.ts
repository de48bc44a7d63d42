// llama.cpp's tokenizer test pairs in ../shared/vocab (see its README): the `.inp` strings and the
// `.out` ids Hugging Face gave for them, and the Llama 3 vocabulary rebuilt as a vocab-only GGUF from
// the GPT-2-layout files in ../shared/vocab/llama-bpe/.

import { readFileSync } from "node:fs";

import { gv, writeGguf, type GgufWriterValue } from "../fixtures/gguf-writer.js";
import { sharedPath } from "./shared.js";

/** The vocab-only GGUFs with a test pair whose tokenizer kvbound runs ("llama" SentencePiece or "gpt2" BPE). */
export const VOCAB_PAIRS = [
  { name: "llama-spm", file: "vocab/ggml-vocab-llama-spm.gguf", addBos: true },
  { name: "phi-3", file: "vocab/ggml-vocab-phi-3.gguf", addBos: true },
  { name: "gpt-2", file: "vocab/ggml-vocab-gpt-2.gguf", addBos: false },
  { name: "deepseek-coder", file: "vocab/ggml-vocab-deepseek-coder.gguf", addBos: true },
  { name: "deepseek-llm", file: "vocab/ggml-vocab-deepseek-llm.gguf", addBos: true },
  { name: "falcon", file: "vocab/ggml-vocab-falcon.gguf", addBos: false },
  { name: "starcoder", file: "vocab/ggml-vocab-starcoder.gguf", addBos: false },
  { name: "mpt", file: "vocab/ggml-vocab-mpt.gguf", addBos: false },
  { name: "refact", file: "vocab/ggml-vocab-refact.gguf", addBos: false },
] as const;

/** The Llama 3 pair (its GGUF is built by llama3VocabGguf, so only `.inp`/`.out` are on disk). */
export const LLAMA3_PAIR = "vocab/llama-bpe/ggml-vocab-llama-bpe.gguf";
export const LLAMA3_ENCODER = "vocab/llama-bpe/encoder.json";
export const LLAMA3_MERGES = "vocab/llama-bpe/vocab.bpe";

export interface VocabPair {
  readonly texts: readonly string[];
  /** Expected ids per text, without BOS/EOS. */
  readonly ids: readonly (readonly number[])[];
}

/**
 * The strings of `<gguf>.inp` (each followed by "\n__ggml_vocab_test__\n") and the ids of
 * `<gguf>.out` (one line per string, ids written as " {id}"), as llama.cpp tests/test-tokenizer-0 reads them.
 */
export function readVocabPair(ggufRel: string): VocabPair {
  const inp = readFileSync(sharedPath(`${ggufRel}.inp`), "utf8");
  const texts = inp.split("\n__ggml_vocab_test__\n");
  if (texts.pop() !== "") throw new Error(`${ggufRel}.inp does not end with the separator`);
  const lines = readFileSync(sharedPath(`${ggufRel}.out`), "utf8").split("\n");
  if (lines[lines.length - 1] === "") lines.pop();
  if (lines.length !== texts.length) throw new Error(`${ggufRel}: ${texts.length} strings but ${lines.length} id lines`);
  const ids = lines.map((l) => (l.trim() === "" ? [] : l.trim().split(/\s+/).map(Number)));
  return { texts, ids };
}

/**
 * Llama 3's special tokens 128000..128255: encoder.json lacks them. The five named here are Llama 3's
 * own ids; the rest stand in as reserved tokens, so the vocabulary has its real size.
 */
const LLAMA3_SPECIALS: Readonly<Record<number, string>> = {
  128000: "<|begin_of_text|>",
  128001: "<|end_of_text|>",
  128006: "<|start_header_id|>",
  128007: "<|end_header_id|>",
  128009: "<|eot_id|>",
};

/**
 * A vocab-only GGUF of the Llama 3 tokenizer as llama.cpp's convert script writes one: model "gpt2",
 * pre "llama-bpe", 128256 tokens (the specials as control tokens), the merges of vocab.bpe, BOS
 * 128000, EOS 128001. No add_bos_token key: the "llama-bpe" default (add BOS) applies.
 */
export function llama3VocabGguf(): Uint8Array {
  const encoder = JSON.parse(readFileSync(sharedPath(LLAMA3_ENCODER), "utf8")) as Record<string, number>;
  const N_REGULAR = 128_000;
  const N_TOKENS = 128_256;
  const tokens = new Array<string>(N_TOKENS);
  for (const [text, id] of Object.entries(encoder)) tokens[id] = text;
  const types: GgufWriterValue[] = new Array<GgufWriterValue>(N_TOKENS);
  for (let id = 0; id < N_TOKENS; id++) {
    if (id < N_REGULAR) {
      if (tokens[id] === undefined) throw new Error(`${LLAMA3_ENCODER} has no token ${id}`);
      types[id] = gv.i32(1);
    } else {
      tokens[id] = LLAMA3_SPECIALS[id] ?? `<|reserved_special_token_${id - N_REGULAR}|>`;
      types[id] = gv.i32(3);
    }
  }
  const merges = readFileSync(sharedPath(LLAMA3_MERGES), "utf8").split("\n").filter((l, i) => l !== "" && !(i === 0 && l.startsWith("#version")));
  return writeGguf({
    metadata: [
      ["general.architecture", gv.str("llama")],
      ["tokenizer.ggml.model", gv.str("gpt2")],
      ["tokenizer.ggml.pre", gv.str("llama-bpe")],
      ["tokenizer.ggml.tokens", gv.arr("string", tokens.map((t) => gv.str(t)))],
      ["tokenizer.ggml.token_type", gv.arr("i32", types)],
      ["tokenizer.ggml.merges", gv.arr("string", merges.map((m) => gv.str(m)))],
      ["tokenizer.ggml.bos_token_id", gv.u32(128_000)],
      ["tokenizer.ggml.eos_token_id", gv.u32(128_001)],
    ],
  }).bytes;
}
