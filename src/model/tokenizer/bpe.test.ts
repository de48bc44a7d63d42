import { describe, expect, it } from "vitest";
import { ModelConfigError } from "../../errors.js";
import { BYTE_TO_UNICODE, BpeTokenizer, toByteLevel } from "./bpe.js";

// A hand-made byte-level vocabulary: ids 0..255 are the 256 single bytes (id = byte value, in
// GPT-2's byte-level spelling), then the pieces the merges below build, then special tokens.
const MERGES = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "x y"];
const PIECES = ["he", "ll", "hell", "hello", "Ġw", "or", "Ġwor", "abc"]; // ids 256..263; "xy" is deliberately absent
const ID = { he: 256, ll: 257, hell: 258, hello: 259, Gw: 260, or: 261, Gwor: 262, abc: 263, end: 264, user: 265 } as const;

function vocab(pre: string | undefined) {
  const tokens = [...BYTE_TO_UNICODE, ...PIECES, "<|end|>", "<user>"];
  const types = tokens.map((_, i) => (i === ID.end ? 3 : i === ID.user ? 4 : 1));
  return { tokens, types, merges: MERGES, bosId: -1, eosId: ID.end, pre };
}

const b = (s: string): number => s.charCodeAt(0); // id of a single ASCII byte

describe("byte-level map", () => {
  it("is GPT-2's bytes_to_unicode", () => {
    // Printable bytes map to themselves; the 68 others to U+0100.. in byte order, so
    // byte 0 -> U+0100, "\n" (10) -> U+010A "Ċ", " " (32, the 33rd) -> U+0120 "Ġ", 0x7F -> U+0121,
    // 0xAD (the 68th) -> U+0143.
    expect(BYTE_TO_UNICODE[0x41]).toBe("A");
    expect(BYTE_TO_UNICODE[0]).toBe("\u0100");
    expect(BYTE_TO_UNICODE[10]).toBe("Ċ");
    expect(BYTE_TO_UNICODE[32]).toBe("Ġ");
    expect(BYTE_TO_UNICODE[0x7f]).toBe("\u0121");
    expect(BYTE_TO_UNICODE[0xad]).toBe("\u0143");
    expect(BYTE_TO_UNICODE[0xae]).toBe("®");
    expect(new Set(BYTE_TO_UNICODE).size).toBe(256);
    // "é" is UTF-8 C3 A9, both printable Latin-1 bytes.
    expect(toByteLevel(" é")).toBe("ĠÃ©");
  });
});

describe("BpeTokenizer", () => {
  const tok = new BpeTokenizer(vocab("gpt2"));

  it("merges by rank, lowest first", () => {
    // "hello": h·e (rank 0) -> he l l o; l·l (1) -> he ll o; he·ll (2) -> hell o; hell·o (3).
    // " world": Ġ·w (4) -> Ġw o r l d; o·r (5) -> Ġw or l d; Ġw·or (6) -> Ġwor l d.
    expect(tok.encode("hello world")).toEqual([ID.hello, ID.Gwor, b("l"), b("d")]);
    // "ell": only l·l has a rank.
    expect(tok.encode("ell")).toEqual([b("e"), ID.ll]);
  });

  it("merges the leftmost of equal-rank pairs first", () => {
    // "lll": l·l at 0 and at 1 share rank 1; the left one merges, leaving "l".
    expect(tok.encode("lll")).toEqual([ID.ll, b("l")]);
  });

  it("falls back to byte tokens when a merged piece is not in the vocabulary", () => {
    // x·y has rank 7 but "xy" is no token: emit x and y separately.
    expect(tok.encode("xy")).toEqual([b("x"), b("y")]);
  });

  it("encodes bytes of multi-byte characters as byte tokens", () => {
    // "é" = C3 A9; "😀" = F0 9F 98 80; no merges apply.
    expect(tok.encode("é")).toEqual([0xc3, 0xa9]);
    expect(tok.encode("😀")).toEqual([0xf0, 0x9f, 0x98, 0x80]);
    // Pre-tokenizer: " é" is one word (space prefix), so Ġ (byte 32) comes first.
    expect(tok.encode(" é")).toEqual([32, 0xc3, 0xa9]);
  });

  it("cuts special tokens out before BPE", () => {
    expect(tok.encode("hello<|end|>hello")).toEqual([ID.hello, ID.end, ID.hello]);
    expect(tok.encode("<user>hello<user>")).toEqual([ID.user, ID.hello, ID.user]);
    // Without parseSpecial, the control token is text: GPT-2 regex gives "hello" "<|" "end" "|>" "hello".
    expect(tok.encode("hello<|end|>hello", { parseSpecial: false })).toEqual([
      ID.hello, b("<"), b("|"), b("e"), b("n"), b("d"), b("|"), b(">"), ID.hello,
    ]);
    // ... but user-defined tokens are always cut out (llama.cpp tokenizer_st_partition).
    expect(tok.encode("a<user>", { parseSpecial: false })).toEqual([b("a"), ID.user]);
  });

  it("takes the longest special first when specials overlap", () => {
    const v = vocab("gpt2");
    const t = new BpeTokenizer({ ...v, tokens: [...v.tokens, "<|end|><user>"], types: [...v.types, 4] });
    expect(t.encode("<|end|><user>")).toEqual([266]);
  });

  it("emits a whole word that is a token when the pre-tokenizer ignores merges (llama-bpe)", () => {
    // No merge builds "abc"; llama-3 GGUFs set ignore_merges, so the word is looked up first.
    expect(new BpeTokenizer(vocab("llama-bpe")).encode("abc")).toEqual([ID.abc]);
    expect(tok.encode("abc")).toEqual([b("a"), b("b"), b("c")]);
  });

  it("decodes bytes back; control tokens print nothing, user-defined ones their text", () => {
    expect(tok.decode([ID.hello, ID.Gwor, b("l"), b("d")])).toBe("hello world");
    expect(tok.decode([ID.hello, ID.end, ID.user])).toBe("hello<user>");
    expect(Array.from(tok.tokenBytes(ID.Gw))).toEqual([32, 119]);
    expect(tok.tokenBytes(99999).length).toBe(0);
  });

  it("round-trips ASCII, Unicode and emoji under every pre-tokenizer", () => {
    const texts = [
      "hello world, it's 2024!\n\n  indented\ttab",
      "Grüße aus Köln — naïve café",
      "日本語のテキストと中文",
      "emoji 😀👍🏽 👨‍👩‍👧 flags 🇫🇷",
      "   ",
      "x\u0085y\uFEFFz\r\n",
    ];
    for (const pre of ["llama-bpe", "qwen2", "smollm", "gpt2", "default"]) {
      const t = new BpeTokenizer(vocab(pre));
      for (const s of texts) expect(t.decode(t.encode(s))).toBe(s);
    }
  });

  it("gives the same ids on a second call (word cache)", () => {
    const s = "hello world hello world";
    expect(tok.encode(s)).toEqual(tok.encode(s));
    expect(tok.encode(s)).toEqual([ID.hello, ID.Gwor, b("l"), b("d"), 32, ID.hello, ID.Gwor, b("l"), b("d")]);
  });

  it("handles a long word without quadratic blow-up", () => {
    const word = "l".repeat(100_000);
    const t0 = performance.now();
    const ids = tok.encode(word);
    expect(performance.now() - t0).toBeLessThan(3000);
    expect(ids.length).toBe(50_000);
    expect(ids.every((id) => id === ID.ll)).toBe(true);
  });

  it("refuses inconsistent metadata", () => {
    expect(() => new BpeTokenizer({ ...vocab("gpt2"), merges: ["nospace"] })).toThrow(ModelConfigError);
    expect(() => new BpeTokenizer({ ...vocab("gpt2"), types: [1, 2] })).toThrow(/token_type has 2 entries/);
  });
});

// Naive reference: scan every adjacent pair, merge the lowest-ranked (leftmost on ties), repeat.
// Quadratic, but obviously the BPE definition; the heap version must agree with it.
function naiveBpe(word: string, merges: readonly string[], tokens: readonly string[]): number[] {
  const rank = new Map<string, number>();
  for (let i = 0; i < merges.length; i++) if (!rank.has(merges[i]!)) rank.set(merges[i]!, i); // first wins, as llama.cpp's emplace
  const id = new Map(tokens.map((t, i) => [t, i] as const));
  const sym = Array.from(toByteLevel(word));
  for (;;) {
    let best = -1;
    let bestRank = Infinity;
    for (let i = 0; i + 1 < sym.length; i++) {
      const r = rank.get(sym[i] + " " + sym[i + 1]);
      if (r !== undefined && r < bestRank) { bestRank = r; best = i; }
    }
    if (best < 0) break;
    sym.splice(best, 2, sym[best]! + sym[best + 1]!);
  }
  const out: number[] = [];
  for (const s of sym) {
    const t = id.get(s);
    if (t !== undefined) out.push(t);
    else for (const ch of s) { const b = id.get(ch); if (b !== undefined) out.push(b); }
  }
  return out;
}

describe("BpeTokenizer vs the naive reference", () => {
  it("agrees on random merge tables and words", async () => {
    const fc = await import("fast-check");
    const alphabet = ["a", "b", "c", "é"]; // "é" is two bytes: merges across its bytes too
    const atom = fc.constantFrom(...Array.from(toByteLevel(alphabet.join(""))));
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.array(atom, { minLength: 1, maxLength: 3 }), fc.array(atom, { minLength: 1, maxLength: 3 })), { maxLength: 25 }),
        fc.array(fc.constantFrom(...alphabet), { maxLength: 30 }),
        fc.boolean(),
        (pairs, chars, keepAll) => {
          const merges = pairs.map(([l, r]) => `${l.join("")} ${r.join("")}`);
          const pieces = pairs.map(([l, r]) => l.join("") + r.join("")).filter((_, i) => keepAll || i % 2 === 0);
          const tokens = [...BYTE_TO_UNICODE, ...pieces];
          const t = new BpeTokenizer({ tokens, types: [], merges, bosId: -1, eosId: -1, pre: "gpt2" });
          const word = chars.join(""); // letters only: one pre-token
          expect(t.encode(word)).toEqual(naiveBpe(word, merges, tokens));
        },
      ),
      { numRuns: 400 },
    );
  });
});
