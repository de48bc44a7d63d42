import { describe, expect, it } from "vitest";
import { seededRandom } from "../../cache/codecs/synthetic-kv.js";
import { VocabIndex } from "./vocab-index.js";

const rng = seededRandom;

describe("VocabIndex", () => {
  it("answers what a Map filled first-id-wins answers, on random vocabularies with repeats, exclusions and misses", () => {
    const alphabet = ["a", "b", "\u2581", "é", "\u{1F600}", "<", ">", "0"];
    for (let seed = 1; seed <= 20; seed++) {
      const rand = rng(seed);
      const n = 1 + Math.floor(rand() * 3000);
      const word = () => {
        let s = "";
        const len = Math.floor(rand() * 6); // "" included
        for (let i = 0; i < len; i++) s += alphabet[Math.floor(rand() * alphabet.length)]!;
        return s;
      };
      const tokens: string[] = [];
      for (let i = 0; i < n; i++) tokens.push(word());
      const excluded = (i: number) => (i * 2654435761) % 7 === 0;
      const ref = new Map<string, number>();
      for (let i = 0; i < n; i++) if (!excluded(i) && !ref.has(tokens[i]!)) ref.set(tokens[i]!, i);
      const index = new VocabIndex(tokens, (i) => !excluded(i));
      for (const [text, id] of ref) expect(index.get(text), JSON.stringify(text)).toBe(id);
      for (let q = 0; q < 500; q++) {
        const text = word() + (q % 3 === 0 ? "x" : "");
        expect(index.get(text), JSON.stringify(text)).toBe(ref.get(text) ?? -1);
      }
    }
  });

  it("an empty vocabulary finds nothing", () => {
    expect(new VocabIndex([], () => true).get("a")).toBe(-1);
  });
});
