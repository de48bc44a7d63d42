// Cuts special tokens out of text before a tokenizer's own algorithm runs, for every vocabulary
// type, as llama.cpp's tokenizer_st_partition does (src/llama-vocab.cpp): control, user-defined and
// unknown tokens (its cache_special_tokens), longest first, each over what the longer ones left.

import { TOKEN_TYPE } from "./token-type.js";

/** Raw text, or the id of a special token found in the text. */
export type Fragment = string | number;

/**
 * A piece of text to tokenize with its own `parseSpecial`: a rendered chat template is markup
 * (its `<|im_start|>` are control tokens) around message content (whose `<|im_start|>` is text).
 */
export interface TextSpan {
  readonly text: string;
  readonly parseSpecial: boolean;
}

interface Special {
  readonly id: number;
  readonly text: string;
  /** Control and unknown tokens are cut out only when parsing specials; user-defined ones always. */
  readonly onlyWhenParsing: boolean;
}

const utf8 = new TextEncoder();

export class SpecialTokenSplitter {
  /** Longest text first (llama.cpp sorts cache_special_tokens by byte length), then by id. */
  private readonly specials: Special[] = [];

  /** `types` may be empty (all normal). */
  constructor(tokens: readonly string[], types: readonly number[]) {
    for (let i = 0; i < tokens.length; i++) {
      const type = types[i] ?? TOKEN_TYPE.normal;
      const text = tokens[i]!;
      if (text.length === 0) continue;
      if (type === TOKEN_TYPE.control || type === TOKEN_TYPE.unknown) this.specials.push({ id: i, text, onlyWhenParsing: true });
      else if (type === TOKEN_TYPE.userDefined) this.specials.push({ id: i, text, onlyWhenParsing: false });
    }
    const byteLen = (s: string): number => utf8.encode(s).length;
    this.specials.sort((a, b) => byteLen(b.text) - byteLen(a.text) || a.id - b.id);
  }

  /**
   * `text` as raw fragments and special token ids, in order; no fragment is empty. With
   * `parseSpecial` false only user-defined tokens are cut out (llama.cpp `parse_special = false`;
   * Hugging Face splits added tokens the same way).
   */
  split(text: string, parseSpecial: boolean): Fragment[] {
    if (text.length === 0) return [];
    return this.splitRaw(text, parseSpecial);
  }

  /**
   * The fragments of `spans`, each split with its own flag, with raw text that meets across a
   * span boundary joined again: the tokenizer then sees what the whole text would give it (a
   * content span merges with the markup beside it exactly as in one string).
   */
  splitSpans(spans: readonly TextSpan[]): Fragment[] {
    const out: Fragment[] = [];
    for (const span of spans) {
      if (span.text.length === 0) continue;
      for (const frag of this.splitRaw(span.text, span.parseSpecial)) {
        const last = out.length - 1;
        if (typeof frag === "string" && last >= 0 && typeof out[last] === "string") out[last] += frag;
        else out.push(frag);
      }
    }
    return out;
  }

  /** Whether `text` holds a control token's text (one that parsing specials would cut out). */
  hasSpecial(text: string): boolean {
    return this.splitRaw(text, true).some((f) => typeof f === "number");
  }

  private splitRaw(text: string, parseSpecial: boolean): Fragment[] {
    let frags: Fragment[] = [text];
    // Vocabularies carry hundreds of specials sharing a prefix ("<|reserved_special_token_7|>"):
    // one scan per distinct two-character prefix rules most of them out.
    const prefixSeen = new Map<string, boolean>();
    for (let s = 0; s < this.specials.length; s++) {
      const sp = this.specials[s]!;
      if (sp.onlyWhenParsing && !parseSpecial) continue;
      const prefix = sp.text.slice(0, 2);
      let seen = prefixSeen.get(prefix);
      if (seen === undefined) { seen = text.includes(prefix); prefixSeen.set(prefix, seen); }
      // A special can only occur inside a raw fragment, which is a substring of `text`.
      if (!seen || !text.includes(sp.text)) continue;
      const next: Fragment[] = [];
      for (let f = 0; f < frags.length; f++) {
        const frag = frags[f]!;
        if (typeof frag === "number") { next.push(frag); continue; }
        let from = 0;
        for (let at = frag.indexOf(sp.text); at >= 0; at = frag.indexOf(sp.text, from)) {
          if (at > from) next.push(frag.slice(from, at));
          next.push(sp.id);
          from = at + sp.text.length;
        }
        if (from < frag.length) next.push(frag.slice(from));
      }
      frags = next;
    }
    return frags;
  }
}
