// SentencePiece BPE as llama.cpp runs it for `tokenizer.ggml.model = "llama"` (src/llama-vocab.cpp,
// llm_tokenizer_spm): spaces become U+2581, a dummy-prefix space is added, then the adjacent pair
// whose merged piece has the highest score is merged until no merged piece is in the vocabulary;
// characters that are not in the vocabulary fall back to <0xXX> byte tokens.

import { ModelConfigError } from "../../errors.js";
import type { EncodeOptions } from "./bpe.js";
import { SpecialTokenSplitter, type TextSpan } from "./special-split.js";
import { TOKEN_TYPE } from "./token-type.js";
import { VocabIndex } from "./vocab-index.js";

export { TOKEN_TYPE } from "./token-type.js";

export const SPM_SPACE = "\u2581";

export interface SpmVocab {
  readonly tokens: readonly string[];
  readonly scores: readonly number[];
  readonly types: readonly number[];
  readonly bosId: number;
  readonly eosId: number;
  readonly unkId: number;
  readonly addSpacePrefix: boolean;
}

export class SpmTokenizer {
  readonly vocab: SpmVocab;
  /** Text -> id of every token but the byte tokens (those are byteIds). */
  private readonly ids: VocabIndex;
  private readonly byteIds = new Int32Array(256).fill(-1);
  private readonly specials: SpecialTokenSplitter;

  constructor(vocab: SpmVocab) {
    const n = vocab.tokens.length;
    if (vocab.scores.length !== n) throw new ModelConfigError(`tokenizer.ggml.scores has ${vocab.scores.length} entries for ${n} tokens`, { field: "tokenizer.ggml.scores" });
    this.vocab = vocab;
    this.specials = new SpecialTokenSplitter(vocab.tokens, vocab.types);
    for (let i = 0; i < n; i++) {
      if (vocab.types[i] !== TOKEN_TYPE.byte) continue;
      const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(vocab.tokens[i]!);
      if (m) this.byteIds[parseInt(m[1]!, 16)] = i;
    }
    this.ids = new VocabIndex(vocab.tokens, (i) => vocab.types[i] !== TOKEN_TYPE.byte);
  }

  /** Whether `text` holds a control token's text, which parsing specials would make a control token. */
  hasSpecial(text: string): boolean {
    return this.specials.hasSpecial(text);
  }

  /**
   * Token ids of `text` (no BOS; the caller decides). Special tokens are cut out first (see
   * EncodeOptions.parseSpecial); as in llama.cpp's SPM path, the dummy-prefix space goes before the
   * first raw fragment and before each one that follows a special token.
   */
  encode(text: string | readonly TextSpan[], opts: EncodeOptions = {}): number[] {
    const out: number[] = [];
    const fragments = typeof text === "string" ? this.specials.split(text, opts.parseSpecial ?? true) : this.specials.splitSpans(text);
    let prevSpecial = true;
    for (let f = 0; f < fragments.length; f++) {
      const frag = fragments[f]!;
      if (typeof frag === "number") { out.push(frag); prevSpecial = true; continue; }
      const ids = this.encodeRaw(frag, this.vocab.addSpacePrefix && prevSpecial);
      for (let k = 0; k < ids.length; k++) out.push(ids[k]!);
      prevSpecial = false;
    }
    return out;
  }

  private encodeRaw(text: string, spacePrefix: boolean): number[] {
    let norm = text.replace(/ /g, SPM_SPACE);
    if (spacePrefix) norm = SPM_SPACE + norm;
    // Symbols: one per code point, as a doubly linked list over an array.
    const sym: string[] = Array.from(norm);
    const n = sym.length;
    const prev = new Int32Array(n);
    const next = new Int32Array(n);
    for (let i = 0; i < n; i++) { prev[i] = i - 1; next[i] = i + 1 < n ? i + 1 : -1; }
    const alive = new Uint8Array(n).fill(1);
    // Max-heap of candidate merges (score desc, then left position asc), as llm_tokenizer_spm.
    const heap: Array<{ left: number; right: number; score: number; text: string }> = [];
    const less = (a: (typeof heap)[number], b: (typeof heap)[number]) => a.score < b.score || (a.score === b.score && a.left > b.left);
    const push = (item: (typeof heap)[number]) => {
      heap.push(item);
      let i = heap.length - 1;
      while (i > 0) {
        const p = (i - 1) >> 1;
        if (!less(heap[p]!, heap[i]!)) break;
        [heap[p], heap[i]] = [heap[i]!, heap[p]!];
        i = p;
      }
    };
    const pop = () => {
      const top = heap[0]!;
      const last = heap.pop()!;
      if (heap.length > 0) {
        heap[0] = last;
        let i = 0;
        for (;;) {
          const l = 2 * i + 1, r = l + 1;
          let m = i;
          if (l < heap.length && less(heap[m]!, heap[l]!)) m = l;
          if (r < heap.length && less(heap[m]!, heap[r]!)) m = r;
          if (m === i) break;
          [heap[m], heap[i]] = [heap[i]!, heap[m]!];
          i = m;
        }
      }
      return top;
    };
    const tryAdd = (left: number, right: number) => {
      if (left < 0 || right < 0) return;
      const text = sym[left]! + sym[right]!;
      const id = this.ids.get(text);
      if (id < 0) return;
      push({ left, right, score: this.vocab.scores[id]!, text });
    };
    for (let i = 0; i + 1 < n; i++) tryAdd(i, i + 1);
    while (heap.length > 0) {
      const b = pop();
      // Skip stale candidates: either side changed since it was queued.
      if (!alive[b.left] || !alive[b.right] || sym[b.left]! + sym[b.right]! !== b.text || next[b.left] !== b.right) continue;
      sym[b.left] = b.text;
      alive[b.right] = 0;
      next[b.left] = next[b.right]!;
      if (next[b.right]! >= 0) prev[next[b.right]!] = b.left;
      tryAdd(prev[b.left]!, b.left);
      tryAdd(b.left, next[b.left]!);
    }
    const out: number[] = [];
    const enc = new TextEncoder();
    for (let i = 0; i >= 0 && i < n; i = next[i]!) {
      const id = this.ids.get(sym[i]!);
      if (id >= 0) { out.push(id); continue; }
      for (const byte of enc.encode(sym[i]!)) {
        const bid = this.byteIds[byte]!;
        out.push(bid >= 0 ? bid : this.vocab.unkId);
      }
    }
    return out;
  }

  /** Text of one token as it appears in output: U+2581 -> space, byte tokens -> their byte. */
  tokenBytes(id: number): Uint8Array {
    const t = this.vocab.tokens[id];
    if (t === undefined) return new Uint8Array(0);
    const type = this.vocab.types[id];
    if (type === TOKEN_TYPE.byte) {
      const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(t);
      return Uint8Array.of(m ? parseInt(m[1]!, 16) : 0);
    }
    if (type === TOKEN_TYPE.control || type === TOKEN_TYPE.unknown) return new Uint8Array(0);
    return new TextEncoder().encode(t.replaceAll(SPM_SPACE, " "));
  }

  /** Decodes ids to text; drops the dummy-prefix space of the first piece, as llama.cpp does. */
  decode(ids: readonly number[]): string {
    const parts: Uint8Array[] = [];
    let len = 0;
    for (const id of ids) { const b = this.tokenBytes(id); parts.push(b); len += b.length; }
    const all = new Uint8Array(len);
    let o = 0;
    for (const p of parts) { all.set(p, o); o += p.length; }
    let text = new TextDecoder().decode(all);
    if (this.vocab.addSpacePrefix && text.startsWith(" ")) text = text.slice(1);
    return text;
  }
}
