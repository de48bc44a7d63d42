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
  | "deepseek-llm" // DEEPSEEK_LLM
  | "deepseek-coder" // DEEPSEEK_CODER
  | "falcon" // FALCON
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
  add(["deepseek-llm"], "deepseek-llm");
  add(["deepseek-coder"], "deepseek-coder");
  add(["falcon"], "falcon");
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
const NEWLINE = re("[\\r\\n]");
// "[一-龥ࠀ-一가-퟿]+" in llama.cpp: CJK ideographs, U+0800..U+4E00 (the ranges overlap at 一), Hangul.
const CJK = re("[\\u4E00-\\u9FA5\\u0800-\\u4E00\\uAC00-\\uD7FF]+");

// DeepSeek LLM's letter class, the cased letters (Lu, Ll, Lt) of the Unicode version its tokenizer.json
// was written for, spelled as code points: written literally, as llama.cpp does, a copy through NFC
// normalization silently turns the KELVIN SIGN U+212A into "K", and the range U+212A-U+212D into
// U+004B-U+212D, which counts "[", "_", "~" and thousands more as letters.
const DEEPSEEK_LLM_LETTERS =
  "A-Za-z\\u{B5}\\u{C0}-\\u{D6}\\u{D8}-\\u{F6}\\u{F8}-\\u{1BA}\\u{1BC}-\\u{1BF}\\u{1C4}-\\u{293}" +
  "\\u{295}-\\u{2AF}\\u{370}-\\u{373}\\u{376}\\u{377}\\u{37B}-\\u{37D}\\u{37F}\\u{386}" +
  "\\u{388}-\\u{38A}\\u{38C}\\u{38E}-\\u{3A1}\\u{3A3}-\\u{3F5}\\u{3F7}-\\u{481}\\u{48A}-\\u{52F}" +
  "\\u{531}-\\u{556}\\u{10A0}-\\u{10C5}\\u{13A0}-\\u{13F5}\\u{13F8}-\\u{13FD}\\u{1C90}-\\u{1CBA}" +
  "\\u{1CBD}-\\u{1CBF}\\u{1D00}-\\u{1D2B}\\u{1D6B}-\\u{1D77}\\u{1D79}-\\u{1D9A}\\u{1E00}-\\u{1F15}" +
  "\\u{1F18}-\\u{1F1D}\\u{1F20}-\\u{1F45}\\u{1F48}-\\u{1F4D}\\u{1F50}-\\u{1F57}\\u{1F59}\\u{1F5B}" +
  "\\u{1F5D}\\u{1F5F}-\\u{1F7D}\\u{1F80}-\\u{1FB4}\\u{1FB6}-\\u{1FBC}\\u{1FBE}\\u{1FC2}-\\u{1FC4}" +
  "\\u{1FC6}-\\u{1FCC}\\u{1FD0}-\\u{1FD3}\\u{1FD6}-\\u{1FDB}\\u{1FE0}-\\u{1FEC}\\u{1FF2}-\\u{1FF4}" +
  "\\u{1FF6}-\\u{1FFC}\\u{2102}\\u{2107}\\u{210A}-\\u{2113}\\u{2115}\\u{2119}-\\u{211D}\\u{2124}" +
  "\\u{2126}\\u{2128}\\u{212A}-\\u{212D}\\u{212F}-\\u{2134}\\u{2139}\\u{213C}-\\u{213F}" +
  "\\u{2145}-\\u{2149}\\u{214E}\\u{2183}\\u{2184}\\u{2C00}-\\u{2C7B}\\u{2C7E}-\\u{2CE4}" +
  "\\u{2CEB}-\\u{2CEE}\\u{2CF2}\\u{2CF3}\\u{A640}-\\u{A66D}\\u{A680}-\\u{A69B}\\u{A722}-\\u{A76F}" +
  "\\u{A771}-\\u{A787}\\u{A78B}-\\u{A78E}\\u{AB70}-\\u{ABBF}\\u{FB00}-\\u{FB06}\\u{FB13}-\\u{FB17}" +
  "\\u{FF21}-\\u{FF3A}\\u{FF41}-\\u{FF5A}\\u{10400}-\\u{1044F}\\u{104B0}-\\u{104D3}" +
  "\\u{104D8}-\\u{104FB}\\u{10C80}-\\u{10CB2}\\u{10CC0}-\\u{10CF2}\\u{118A0}-\\u{118DF}" +
  "\\u{1E900}-\\u{1E943}";

/**
 * The regexes of each kind, applied in order, each to the pieces the previous ones left. Each list
 * is llama.cpp's `regex_exprs` for the kind (src/llama-vocab.cpp, llm_tokenizer_bpe constructor).
 */
const REGEXES: Readonly<Record<PreTokenizerKind, readonly RegExp[]>> = {
  llama3: [LLAMA3],
  qwen2: [QWEN2],
  smollm: [DIGIT, GPT2],
  gpt2: [GPT2],
  // LLAMA_VOCAB_PRE_TYPE_DEEPSEEK_LLM: "[\r\n]", "\\s?[A-Za-zµÀ-Ö...𞤀-𞥃]+",
  // "\\s?[!-/:-~！-／：-～‘-‟　-。]+", "\\s+$", "[一-龥ࠀ-一가-퟿]+", "\\p{N}+".
  "deepseek-llm": [
    NEWLINE,
    re(`${S}?[${DEEPSEEK_LLM_LETTERS}]+`),
    re(`${S}?[!-/:-~\\uFF01-\\uFF0F\\uFF1A-\\uFF5E\\u2018-\\u201F\\u3000-\\u3002]+`),
    re(`${S}+$`),
    CJK,
    re("\\p{N}+"),
  ],
  // LLAMA_VOCAB_PRE_TYPE_DEEPSEEK_CODER: "[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[一-龥ࠀ-一가-퟿]+", "\\p{N}".
  "deepseek-coder": [NEWLINE, re(`${S}?\\p{L}+`), re(`${S}?\\p{P}+`), CJK, DIGIT],
  // LLAMA_VOCAB_PRE_TYPE_FALCON: "[\\p{P}\\$\\+<=>\\^~\\|`]+", the GPT-2 regex, "[0-9][0-9][0-9]".
  falcon: [re("[\\p{P}\\$\\+<=>\\^~\\|`]+"), GPT2, re("[0-9][0-9][0-9]")],
  default: [re("[\\p{P}\\$\\+<=>\\^~\\|]+"), GPT2, re("\\p{N}+"), re("[0-9][0-9][0-9]")],
};

// White space outside ASCII: llama.cpp replaces each such code point by U+000B before std::regex
// sees the text (unicode_regex_split, in both its "collapsed" and its std::wregex path), so `\s`
// matches it but a literal range never does: DeepSeek LLM's "　-。" does not take U+3000 itself.
// All are single UTF-16 units, so the masked text keeps every offset.
const NON_ASCII_WS = /[\x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]/g;

/**
 * Cuts `text` into words. Like llama.cpp's unicode_regex_split (HF's "Isolated" split), every
 * regex match becomes a word and so does every stretch between matches; each later regex only
 * sees the pieces, so its look-aheads and `$` stop at a piece's end.
 */
export function preTokenize(kind: PreTokenizerKind, text: string): string[] {
  if (text.length === 0) return [];
  const subject = text.replace(NON_ASCII_WS, "\v");
  // Piece i is text[cuts[i], cuts[i + 1]).
  let cuts = [0, text.length];
  const regexes = REGEXES[kind];
  for (let r = 0; r < regexes.length; r++) cuts = splitIsolated(subject, cuts, regexes[r]!);
  const out = new Array<string>(cuts.length - 1);
  for (let i = 0; i + 1 < cuts.length; i++) out[i] = text.slice(cuts[i], cuts[i + 1]);
  return out;
}

function splitIsolated(subject: string, cuts: readonly number[], regex: RegExp): number[] {
  const out = [0];
  for (let p = 0; p + 1 < cuts.length; p++) {
    const start = cuts[p]!;
    const end = cuts[p + 1]!;
    const piece = subject.slice(start, end);
    regex.lastIndex = 0;
    for (let m = regex.exec(piece); m !== null; m = regex.exec(piece)) {
      // None of the regexes can match "", but a zero-length match would loop forever: step past it.
      if (m[0].length === 0) { regex.lastIndex++; continue; }
      const at = start + m.index;
      if (at > out[out.length - 1]!) out.push(at);
      out.push(at + m[0].length);
    }
    if (end > out[out.length - 1]!) out.push(end);
  }
  return out;
}
