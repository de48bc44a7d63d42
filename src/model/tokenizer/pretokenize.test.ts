import { describe, expect, it } from "vitest";
import { UnsupportedTokenizerError } from "../../errors.js";
import { preTokenize, preTokenizerSpec } from "./pretokenize.js";

// Expected splits are derived by hand from the regexes in llama.cpp src/llama-vocab.cpp
// (llm_tokenizer_bpe), walking the alternatives left to right at each position.
const SAMPLE = "Hello world's 123456 test!!";

describe("preTokenize", () => {
  it("llama-3: digits in runs of up to 3, a space before digits stands alone, contractions split", () => {
    // "Hello" (\p{L}+), " world" (one non-letter prefix + letters), "'s" (contraction),
    // " " (\s+(?!\S) backs off to nothing before "1", so the last alternative \s+ takes it),
    // "123" "456" (\p{N}{1,3}), " test", "!!" ( ?[^\s\p{L}\p{N}]+).
    expect(preTokenize("llama3", SAMPLE)).toEqual(["Hello", " world", "'s", " ", "123", "456", " test", "!!"]);
  });

  it("qwen2: like llama-3 but one digit per word", () => {
    expect(preTokenize("qwen2", SAMPLE)).toEqual(["Hello", " world", "'s", " ", "1", "2", "3", "4", "5", "6", " test", "!!"]);
  });

  it("gpt2: a space joins the following digits", () => {
    expect(preTokenize("gpt2", SAMPLE)).toEqual(["Hello", " world", "'s", " 123456", " test", "!!"]);
  });

  it("smollm: single digits first, then the GPT-2 regex on the pieces", () => {
    // Piece "Hello world's " ends in a space that \s+(?!\S) takes whole (the piece ends there).
    expect(preTokenize("smollm", SAMPLE)).toEqual(["Hello", " world", "'s", " ", "1", "2", "3", "4", "5", "6", " test", "!!"]);
  });

  it("default: punctuation runs first, then GPT-2, then digit runs, then 3-digit groups", () => {
    // "'" is \p{P}, so it is cut before the GPT-2 regex can see "'s".
    expect(preTokenize("default", SAMPLE)).toEqual(["Hello", " world", "'", "s", " ", "123", "456", " test", "!!"]);
  });

  it("deepseek-llm: a literal letter class, punctuation runs, whole digit runs", () => {
    // "[\r\n]" cuts nothing; "\s?[A-Za-z...]+" takes "Hello", " world", "s", " test"; "'" and "!!"
    // are runs of "\s?[!-/:-~...]+" (":-~" holds the ASCII letters, never the digits); "\p{N}+" cuts
    // " 123456" into " " and the whole run.
    expect(preTokenize("deepseek-llm", SAMPLE)).toEqual(["Hello", " world", "'", "s", " ", "123456", " test", "!!"]);
    // "~" is no letter: the range U+212A-U+212D, copied through NFC, would start at U+004B and take it.
    // Armenian "ա" (U+0561) is outside the class (only the capitals Ա-Ֆ are in), unlike \p{L}.
    expect(preTokenize("deepseek-llm", "a~ aա")).toEqual(["a", "~", " a", "ա"]);
    // "[一-龥ࠀ-一가-퟿]+" cuts CJK out of what is left; "\p{N}+" keeps 1314151 whole; \r and \n one each.
    expect(preTokenize("deepseek-llm", "我想在apple工作1314151天\r\nok")).toEqual(["我想在", "apple", "工作", "1314151", "天", "\r", "\n", "ok"]);
    // U+3000 reaches the regexes as U+000B (llama.cpp masks non-ASCII white space), so "　-。" does not
    // take it but \s does: "\s?[...]+" gives "。", "\u3000。", and the CJK range then cuts "。" off.
    expect(preTokenize("deepseek-llm", "。\u3000。")).toEqual(["。", "\u3000", "。"]);
  });

  it("deepseek-coder: \\p{L} runs, \\p{P} runs, CJK, single digits", () => {
    expect(preTokenize("deepseek-coder", SAMPLE)).toEqual(["Hello", " world", "'", "s", " ", "1", "2", "3", "4", "5", "6", " test", "!!"]);
    expect(preTokenize("deepseek-coder", "a~ aա")).toEqual(["a", "~", " aա"]);
    expect(preTokenize("deepseek-coder", "我想在apple工作13天")).toEqual(["我想在", "apple", "工作", "1", "3", "天"]);
  });

  it("falcon: punctuation and symbol runs (backtick included), then GPT-2, then 3-digit groups", () => {
    expect(preTokenize("falcon", SAMPLE)).toEqual(["Hello", " world", "'", "s", " ", "123", "456", " test", "!!"]);
    // The backtick is cut before GPT-2 sees it, so the space before it stays alone; "default" lacks it.
    expect(preTokenize("falcon", "a `b")).toEqual(["a", " ", "`", "b"]);
    expect(preTokenize("default", "a `b")).toEqual(["a", " `", "b"]);
  });

  it("llama-3: newlines and runs of spaces", () => {
    expect(preTokenize("llama3", "a\n\nb")).toEqual(["a", "\n\n", "b"]);
    // "  b": \s+(?!\S) backs off to the first space (followed by a space), then " b".
    expect(preTokenize("llama3", "a  b")).toEqual(["a", " ", " b"]);
    expect(preTokenize("llama3", "end.  \n")).toEqual(["end", ".", "  \n"]);
    // Case-insensitive contractions in llama-3, lower-case only in GPT-2.
    expect(preTokenize("llama3", "IT'S")).toEqual(["IT", "'S"]);
    // GPT-2: "'S" is no contraction, so "'" falls to  ?[^\s\p{L}\p{N}]+ and "S" to \p{L}+.
    expect(preTokenize("gpt2", "IT'S")).toEqual(["IT", "'", "S"]);
  });

  it("keeps every character: the pieces concatenate back to the text", () => {
    const texts = ["", "  leading", "trailing  ", "日本語のテキスト 😀👍🏽 ok", "tab\tand\r\nCRLF", "x\u0085y\uFEFFz", "a\u3000\u3000b\u00A0 "];
    for (const kind of ["llama3", "qwen2", "smollm", "gpt2", "deepseek-llm", "deepseek-coder", "falcon", "default"] as const) {
      for (const t of texts) expect(preTokenize(kind, t).join("")).toBe(t);
    }
  });

  it("maps tokenizer.ggml.pre names and refuses unknown ones", () => {
    expect(preTokenizerSpec("llama-bpe")).toEqual({ kind: "llama3", ignoreMerges: true, addBosDefault: true });
    expect(preTokenizerSpec("qwen2")).toEqual({ kind: "qwen2", ignoreMerges: false, addBosDefault: false });
    expect(preTokenizerSpec("smollm").kind).toBe("smollm");
    expect(preTokenizerSpec("deepseek-llm")).toEqual({ kind: "deepseek-llm", ignoreMerges: false, addBosDefault: false });
    expect(preTokenizerSpec("deepseek-coder").kind).toBe("deepseek-coder");
    expect(preTokenizerSpec("falcon").kind).toBe("falcon");
    expect(preTokenizerSpec(undefined).kind).toBe("default");
    expect(() => preTokenizerSpec("tekken")).toThrow(UnsupportedTokenizerError);
    expect(() => preTokenizerSpec("tekken")).toThrow(/tokenizer\.ggml\.pre "tekken"/);
  });
});
