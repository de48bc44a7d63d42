// Pre-tokenizers of GPT-2 byte-level BPE vocabularies: `tokenizer.ggml.pre` names a list of regexes
// that cut text into words before BPE runs on each word. The regexes, the name -> kind table and
// the per-kind flags mirror llama.cpp src/llama-vocab.cpp (llm_tokenizer_bpe constructor and
// llama_vocab::impl::load); the splitting mirrors src/unicode.cpp unicode_regex_split.

import { UnsupportedTokenizerError } from "../../errors.js";

/** The pre-tokenizer families kvbound implements (llama.cpp's LLAMA_VOCAB_PRE_TYPE_* they stand for). */
export type PreTokenizerKind =
  | "llama3" // LLAMA3, DBRX, SMAUG, CHATGLM4 (same regex)
  | "qwen2" // QWEN2, STABLELM2, HUNYUAN
  | "smollm" // SMOLLM, STARCODER, REFACT, COMMAND_R, CODESHELL, EXAONE, MINERVA
  | "gpt2" // GPT2, MPT, OLMO, JAIS, TRILLION
  | "default"; // DEFAULT (also what llama.cpp uses when tokenizer.ggml.pre is missing)

export interface PreTokenizerSpec {
  readonly kind: PreTokenizerKind;
  /** A word that is itself a token is emitted whole, without running merges (llama.cpp `ignore_merges`). */
  readonly ignoreMerges: boolean;
  /** llama.cpp's `add_bos` default for this pre-tokenizer; `tokenizer.ggml.add_bos_token` overrides it. */
  readonly addBosDefault: boolean;
}

// `tokenizer.ggml.pre` values -> spec. Only names whose regexes are one of our kinds are listed;
// every other name is refused rather than silently tokenized with the wrong regex.
const PRE_NAMES: ReadonlyMap<string, PreTokenizerSpec> = (() => {
  const m = new Map<string, PreTokenizerSpec>();
  const add = (names: readonly string[], kind: PreTokenizerKind, ignoreMerges = false, addBosDefault = false): void => {
    for (const n of names) m.set(n, Object.freeze({ kind, ignoreMerges, addBosDefault }));
  };
  add(["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"], "llama3", true, true);
  add(["dbrx", "smaug-bpe", "chatglm-bpe", "glm4"], "llama3");
  add(["qwen2", "deepseek-r1-qwen", "megrez", "stablelm2", "hunyuan"], "qwen2");
  add(["smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"], "smollm");
  add(["gpt-2", "gpt2", "phi-2", "mpt", "olmo", "jais", "trillion", "exaone4", "jina-es", "jina-de", "jina-v2-es", "jina-v2-de", "gigachat", "mellum"], "gpt2");
  add(["default"], "default");
  return m;
})();

export const SUPPORTED_PRE_TOKENIZERS: readonly string[] = Object.freeze([...PRE_NAMES.keys()]);

/**
 * The spec for a `tokenizer.ggml.pre` value. A missing value gives "default" (llama.cpp does the
 * same, with a warning that quality degrades); an unknown one throws UnsupportedTokenizerError.
 */
export function preTokenizerSpec(pre: string | undefined): PreTokenizerSpec {
  if (pre === undefined || pre === "") return PRE_NAMES.get("default")!;
  const spec = PRE_NAMES.get(pre);
  if (spec === undefined) {
    throw new UnsupportedTokenizerError(
      `tokenizer.ggml.pre "${pre}" is a pre-tokenizer kvbound does not implement; supported: ${SUPPORTED_PRE_TOKENIZERS.join(", ")}. ` +
        `Use a GGUF converted for one of them, or open an issue naming the model`,
      { field: "tokenizer.ggml.pre", value: pre, supported: SUPPORTED_PRE_TOKENIZERS },
    );
  }
  return spec;
}

// `\s` in llama.cpp is the Unicode White_Space property (unicode_cpt_flags is_whitespace); JS `\s`
// differs from it in two code points (it adds U+FEFF and lacks U+0085), so the class is spelled out.
const WS = "\\t-\\r \\x85\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000";
const S = `[${WS}]`;
const NOT_S = `[^${WS}]`;

// Contractions are case-insensitive in llama-3 / qwen2 (llama.cpp spells `(?i:'s|...)` out as
// `'[sS]|...` because std::regex has no inline flags); GPT-2's are lower-case only.
const CONTRACTIONS_CI = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])";

function re(source: string): RegExp {
  return new RegExp(source, "gu");
}

const LLAMA3 = re(
  `${CONTRACTIONS_CI}|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^${WS}\\p{L}\\p{N}]+[\\r\\n]*|${S}*[\\r\\n]+|${S}+(?!${NOT_S})|${S}+`,
);
const QWEN2 = re(
  `${CONTRACTIONS_CI}|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^${WS}\\p{L}\\p{N}]+[\\r\\n]*|${S}*[\\r\\n]+|${S}+(?!${NOT_S})|${S}+`,
);
const GPT2 = re(`'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^${WS}\\p{L}\\p{N}]+|${S}+(?!${NOT_S})`);
const DIGIT = re("\\p{N}");

/** The regexes of each kind, applied in order, each to the pieces the previous ones left. */
const REGEXES: Readonly<Record<PreTokenizerKind, readonly RegExp[]>> = {
  llama3: [LLAMA3],
  qwen2: [QWEN2],
  smollm: [DIGIT, GPT2],
  gpt2: [GPT2],
  default: [re("[\\p{P}\\$\\+<=>\\^~\\|]+"), GPT2, re("\\p{N}+"), re("[0-9][0-9][0-9]")],
};

/**
 * Cuts `text` into words. Like llama.cpp's unicode_regex_split (HF's "Isolated" split), every
 * regex match becomes a word and so does every stretch between matches; each later regex only
 * sees the pieces, so its look-aheads stop at a piece's end.
 */
export function preTokenize(kind: PreTokenizerKind, text: string): string[] {
  let pieces = [text];
  const regexes = REGEXES[kind];
  for (let r = 0; r < regexes.length; r++) pieces = splitIsolated(pieces, regexes[r]!);
  return pieces;
}

function splitIsolated(pieces: readonly string[], regex: RegExp): string[] {
  const out: string[] = [];
  for (let p = 0; p < pieces.length; p++) {
    const piece = pieces[p]!;
    let last = 0;
    regex.lastIndex = 0;
    for (let m = regex.exec(piece); m !== null; m = regex.exec(piece)) {
      // None of the regexes can match "", but a zero-length match would loop forever: step past it.
      if (m[0].length === 0) { regex.lastIndex++; continue; }
      if (m.index > last) out.push(piece.slice(last, m.index));
      out.push(m[0]);
      last = m.index + m[0].length;
    }
    if (last < piece.length) out.push(piece.slice(last));
  }
  return out;
}
