import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { readGgufHeader } from "../../gguf/header.js";
import { requireShared, sharedPath } from "../../../test/helpers/shared.js";
import { SpmTokenizer, SPM_SPACE, TOKEN_TYPE } from "./spm.js";
import { spmVocabFromMetadata } from "./spm-metadata.js";

describe("SpmTokenizer on a hand-made vocabulary", () => {
  // pieces: 0 <unk>, 1 <s>, 2 </s>, 3..5 bytes 0x41 'A', 0xC3, 0xA9, then merges with scores
  // ... and 12 "<tool>", a user-defined token.
  const tokens = ["<unk>", "<s>", "</s>", "<0x41>", "<0xC3>", "<0xA9>", SPM_SPACE, "a", "b", "ab", SPM_SPACE + "ab", "c", "<tool>"];
  const scores = [0, 0, 0, 0, 0, 0, -1, -2, -3, -0.5, -0.1, -4, 0];
  const types = [2, 3, 3, 6, 6, 6, 1, 1, 1, 1, 1, 1, 4];
  const tok = new SpmTokenizer({ tokens, scores, types, bosId: 1, eosId: 2, unkId: 0, addSpacePrefix: true });

  it("merges by score and adds the dummy-prefix space", () => {
    // "ab" -> "▁ab": (a,b) merges first (score -0.5), then (▁,ab) -> "▁ab" (-0.1)
    expect(tok.encode("ab")).toEqual([10]);
    // "abc": ▁ab + c
    expect(tok.encode("abc")).toEqual([10, 11]);
  });

  it("falls back to bytes for characters outside the vocabulary", () => {
    // "é" = C3 A9; "A" has a byte token only
    expect(tok.encode("é")).toEqual([6, 4, 5]);
    expect(tok.encode("A")).toEqual([6, 3]);
    expect(tok.decode([6, 4, 5])).toBe("é");
  });

  it("cuts special tokens out first, and puts the dummy space before each fragment that follows one", () => {
    // llama.cpp's SPM path: "ab" -> "▁ab", <s> -> 1, then "ab" again with its own prefix.
    expect(tok.encode("ab<s>ab")).toEqual([10, 1, 10]);
    expect(tok.encode("<unk>ab")).toEqual([0, 10]);
    // parse_special = false: "<s>" is text; "<", "s", ">" have neither a token nor a byte token -> <unk>.
    expect(tok.encode("ab<s>ab", { parseSpecial: false })).toEqual([10, 0, 0, 0, 9]);
    // User-defined tokens are cut out either way (tokenizer_st_partition).
    expect(tok.encode("a<tool>", { parseSpecial: false })).toEqual([6, 7, 12]);
    expect(tok.encode("")).toEqual([]);
  });

  it("decodes control tokens to nothing", () => {
    expect(tok.decode([1, 10, 11, 2])).toBe("abc");
    expect(TOKEN_TYPE.byte).toBe(6);
  });
});

const haveStream = requireShared("models/stories260K.gguf") && requireShared("golden/stories260K-stream-ids-4096.json");

describe.skipIf(!haveStream)("SpmTokenizer on stories260K", () => {
  it("encodes the TinyStories stream to the golden 4096 ids", async () => {
    const header = await readGgufHeader(sharedPath("models/stories260K.gguf"));
    const tok = new SpmTokenizer(spmVocabFromMetadata(header.metadata));
    const golden: number[] = JSON.parse(readFileSync(sharedPath("golden/stories260K-stream-ids-4096.json"), "utf8")).ids;
    const text = readFileSync(sharedPath("text/tinystories-valid-excerpt.txt"), "utf8");
    // The golden construction skips the first (cut-off) story.
    const docs = text.split(/^<\|endoftext\|>$/m).slice(1);
    const ids: number[] = [];
    for (const d of docs) {
      const t = d.trim();
      if (t.length === 0) continue;
      ids.push(tok.vocab.bosId, ...tok.encode(t));
      if (ids.length >= golden.length) break;
    }
    expect(ids.slice(0, golden.length)).toEqual(golden);
    // and decoding a whole story gives its text back
    const first = docs[0]!.trim();
    expect(tok.decode(tok.encode(first))).toBe(first);
  });
});
