// GPT-2 byte-level BPE as llama.cpp runs it for `tokenizer.ggml.model = "gpt2"` (src/llama-vocab.cpp,
// llm_tokenizer_bpe_session::tokenize): special tokens are cut out first (tokenizer_st_partition),
// the rest is pre-tokenized into words by the regexes of `tokenizer.ggml.pre`, each word's UTF-8
// bytes are mapped to printable code points (GPT-2's bytes_to_unicode), and the adjacent pair with
// the lowest merge rank is merged (leftmost first on ties) until no pair has a rank.

import { ModelConfigError } from "../../errors.js";
import { preTokenize, preTokenizerSpec, type PreTokenizerKind } from "./pretokenize.js";
import { SpecialTokenSplitter, type TextSpan } from "./special-split.js";
import { TOKEN_TYPE } from "./token-type.js";

export interface BpeVocab {
  /** Token texts in byte-level form (" hello" is stored as "Ġhello"). */
  readonly tokens: readonly string[];
  /** llama_token_type per token (1 normal, 3 control, 4 user-defined...); empty means all normal. */
  readonly types: readonly number[];
  /** "left right" pairs; a merge's rank is its index. */
  readonly merges: readonly string[];
  /** -1 when the model has none. */
  readonly bosId: number;
  readonly eosId: number;
  /** `tokenizer.ggml.pre`; undefined gives llama.cpp's "default" regexes. */
  readonly pre: string | undefined;
}

export interface EncodeOptions {
  /**
   * Cut control (and unknown) tokens out of the text by their text (llama.cpp `parse_special`).
   * Default true, so a rendered chat template's `<|im_start|>` becomes one token; pass false to
   * tokenize untrusted text literally. User-defined tokens are always cut out, as in llama.cpp.
   * Ignored when the input is spans: each span says for itself.
   */
  readonly parseSpecial?: boolean;
}

// Words cached per tokenizer: repeated words ("the", " of") are the bulk of any text. Bounded
// because the text is arbitrary; long words are rare and not worth a slot.
const WORD_CACHE_ENTRIES = 8192;
const WORD_CACHE_MAX_CHARS = 64;

/** GPT-2's byte -> code point map: printable bytes map to themselves, the rest to 256 + n in order. */
export const BYTE_TO_UNICODE: readonly string[] = (() => {
  const out: string[] = new Array<string>(256);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    out[b] = String.fromCodePoint(printable ? b : 256 + n++);
  }
  return out;
})();

const UNICODE_TO_BYTE: ReadonlyMap<string, number> = new Map(BYTE_TO_UNICODE.map((c, b) => [c, b] as const));

const utf8 = new TextEncoder();

/** The byte-level form of `text`: one code point per UTF-8 byte. */
export function toByteLevel(text: string): string {
  const bytes = utf8.encode(text);
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += BYTE_TO_UNICODE[bytes[i]!]!;
  return s;
}

const EMPTY = new Uint8Array(0);

export class BpeTokenizer {
  readonly vocab: BpeVocab;
  readonly preKind: PreTokenizerKind;
  readonly ignoreMerges: boolean;
  /** llama.cpp's add_bos default for this pre-tokenizer (metadata add_bos_token overrides it). */
  readonly addBosDefault: boolean;
  private readonly ids = new Map<string, number>();
  private readonly ranks = new Map<string, number>();
  private readonly specials: SpecialTokenSplitter;
  private readonly cache = new Map<string, readonly number[]>();
  /** Output bytes per id, filled on first use (decoding is per generated token). */
  private readonly bytesCache: Array<Uint8Array | undefined>;

  constructor(vocab: BpeVocab) {
    const n = vocab.tokens.length;
    if (vocab.types.length !== 0 && vocab.types.length !== n) {
      throw new ModelConfigError(`tokenizer.ggml.token_type has ${vocab.types.length} entries for ${n} tokens; the GGUF is inconsistent`, {
        field: "tokenizer.ggml.token_type",
      });
    }
    const spec = preTokenizerSpec(vocab.pre);
    this.vocab = vocab;
    this.preKind = spec.kind;
    this.ignoreMerges = spec.ignoreMerges;
    this.addBosDefault = spec.addBosDefault;
    this.bytesCache = new Array<Uint8Array | undefined>(n).fill(undefined);
    // Later duplicates win, as in llama.cpp's token_to_id[text] = id.
    for (let i = 0; i < n; i++) this.ids.set(vocab.tokens[i]!, i);
    for (let r = 0; r < vocab.merges.length; r++) {
      const m = vocab.merges[r]!;
      // llama.cpp splits at the first space after the first character, so a merge may start with one.
      const sp = m.indexOf(" ", 1);
      if (sp < 0) {
        throw new ModelConfigError(`tokenizer.ggml.merges[${r}] "${m}" has no space between its two parts`, { field: "tokenizer.ggml.merges", index: r });
      }
      if (!this.ranks.has(m)) this.ranks.set(m, r);
    }
    this.specials = new SpecialTokenSplitter(vocab.tokens, vocab.types);
  }

  /** Whether `text` holds a control token's text, which parsing specials would make a control token. */
  hasSpecial(text: string): boolean {
    return this.specials.hasSpecial(text);
  }

  /** Token ids of `text` (no BOS/EOS; the caller decides). */
  encode(text: string | readonly TextSpan[], opts: EncodeOptions = {}): number[] {
    const out: number[] = [];
    if (text.length === 0) return out;
    const fragments = typeof text === "string" ? this.specials.split(text, opts.parseSpecial ?? true) : this.specials.splitSpans(text);
    for (let f = 0; f < fragments.length; f++) {
      const frag = fragments[f]!;
      if (typeof frag === "number") { out.push(frag); continue; }
      const words = preTokenize(this.preKind, frag);
      for (let w = 0; w < words.length; w++) {
        const ids = this.encodeWord(words[w]!);
        for (let k = 0; k < ids.length; k++) out.push(ids[k]!);
      }
    }
    return out;
  }

  /**
   * The bytes one token stands for in output: control and unknown tokens give none (llama.cpp
   * token_to_piece without `special`), user-defined tokens their text, others their byte-level
   * text mapped back to bytes. The array is shared between calls: do not modify it.
   */
  tokenBytes(id: number): Uint8Array {
    const cached = this.bytesCache[id];
    if (cached !== undefined) return cached;
    const t = this.vocab.tokens[id];
    if (t === undefined) return EMPTY;
    const bytes = this.computeTokenBytes(t, id);
    this.bytesCache[id] = bytes;
    return bytes;
  }

  private computeTokenBytes(t: string, id: number): Uint8Array {
    const type = this.vocab.types[id] ?? TOKEN_TYPE.normal;
    if (type === TOKEN_TYPE.control || type === TOKEN_TYPE.unknown) return EMPTY;
    if (type === TOKEN_TYPE.userDefined) return utf8.encode(t);
    const out: number[] = [];
    for (const ch of t) {
      const b = UNICODE_TO_BYTE.get(ch);
      // A code point outside the byte map cannot come from a byte-level vocab; keep its UTF-8
      // rather than fail (llama.cpp would throw out_of_range here).
      if (b === undefined) for (const x of utf8.encode(ch)) out.push(x);
      else out.push(b);
    }
    return Uint8Array.from(out);
  }

  /** Decodes ids to text (invalid UTF-8, e.g. half a character at the end, becomes U+FFFD). */
  decode(ids: readonly number[]): string {
    const parts: Uint8Array[] = [];
    let len = 0;
    for (let i = 0; i < ids.length; i++) { const b = this.tokenBytes(ids[i]!); parts.push(b); len += b.length; }
    const all = new Uint8Array(len);
    let o = 0;
    for (let i = 0; i < parts.length; i++) { all.set(parts[i]!, o); o += parts[i]!.length; }
    return new TextDecoder().decode(all);
  }

  private encodeWord(word: string): readonly number[] {
    const cached = this.cache.get(word);
    if (cached !== undefined) {
      // Refresh recency: Map keeps insertion order, so the first key is the least recently used.
      this.cache.delete(word);
      this.cache.set(word, cached);
      return cached;
    }
    const ids = this.bpeWord(toByteLevel(word));
    if (word.length <= WORD_CACHE_MAX_CHARS) {
      if (this.cache.size >= WORD_CACHE_ENTRIES) this.cache.delete(this.cache.keys().next().value!);
      this.cache.set(word, ids);
    }
    return ids;
  }

  /** BPE over one byte-level word. */
  private bpeWord(word: string): number[] {
    if (this.ignoreMerges) {
      const whole = this.ids.get(word);
      if (whole !== undefined) return [whole];
    }
    const sym = Array.from(word); // one symbol per byte: byte-level code points are all below U+0144
    const n = sym.length;
    const next = new Int32Array(n);
    const prev = new Int32Array(n);
    for (let i = 0; i < n; i++) { prev[i] = i - 1; next[i] = i + 1 < n ? i + 1 : -1; }
    const heap = new MergeHeap();
    const tryAdd = (left: number, right: number): void => {
      if (left < 0 || right < 0) return;
      const rank = this.ranks.get(sym[left]! + " " + sym[right]!);
      if (rank !== undefined) heap.push(rank, left, right, sym[left]! + sym[right]!);
    };
    for (let i = 0; i + 1 < n; i++) tryAdd(i, i + 1);
    while (heap.size > 0) {
      const top = heap.pop();
      const l = top.left, r = top.right;
      // Stale entries: a side was merged away (empty) or grew since the pair was queued.
      if (sym[l] === "" || sym[r] === "" || next[l] !== r || sym[l]! + sym[r]! !== top.text) continue;
      sym[l] = top.text;
      sym[r] = "";
      next[l] = next[r]!;
      if (next[r]! >= 0) prev[next[r]!] = l;
      tryAdd(prev[l]!, l);
      tryAdd(l, next[l]!);
    }
    const out: number[] = [];
    for (let i = 0; i >= 0 && i < n; i = next[i]!) {
      const id = this.ids.get(sym[i]!);
      if (id !== undefined) { out.push(id); continue; }
      // No token for the merged piece: fall back to one token per byte, dropping bytes the vocab
      // lacks, as llama.cpp does.
      for (const ch of sym[i]!) {
        const bid = this.ids.get(ch);
        if (bid !== undefined) out.push(bid);
      }
    }
    return out;
  }
}

interface MergeCandidate { rank: number; left: number; right: number; text: string }

/** Min-heap of merge candidates by (rank, left position), as llama.cpp's llm_bigram_bpe::comparator. */
class MergeHeap {
  private readonly items: MergeCandidate[] = [];

  get size(): number { return this.items.length; }

  push(rank: number, left: number, right: number, text: string): void {
    const a = this.items;
    a.push({ rank, left, right, text });
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!before(a[i]!, a[p]!)) break;
      const t = a[p]!; a[p] = a[i]!; a[i] = t;
      i = p;
    }
  }

  pop(): MergeCandidate {
    const a = this.items;
    const top = a[0]!;
    const last = a.pop()!;
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < a.length && before(a[l]!, a[m]!)) m = l;
        if (r < a.length && before(a[r]!, a[m]!)) m = r;
        if (m === i) break;
        const t = a[m]!; a[m] = a[i]!; a[i] = t;
        i = m;
      }
    }
    return top;
  }
}

function before(x: MergeCandidate, y: MergeCandidate): boolean {
  return x.rank < y.rank || (x.rank === y.rank && x.left < y.left);
}
