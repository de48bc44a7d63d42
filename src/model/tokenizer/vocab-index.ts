// Token text -> id for a vocabulary, as one open-addressing table of ids in an Int32Array over the
// vocabulary's own strings. A Map of a 49k-token vocabulary is ~1.8 MiB of JS heap (and ~2.7 MiB
// allocated young while it grows, which V8 counts towards growing its young generation); this is
// 4 bytes per slot outside the JS heap, and the strings are the ones the vocabulary already holds.

export class VocabIndex {
  /** [capacity] id + 1 of the token whose text hashes to (or probed into) the slot; 0 = empty. */
  private readonly slots: Int32Array;
  private readonly mask: number;

  /** Indexes `tokens[i]` for every i with `include(i)`; the first id of a repeated text wins (as Map `has`/`set` did). */
  constructor(private readonly tokens: readonly string[], include: (id: number) => boolean) {
    // Load factor <= 1/2: linear probes stay short.
    let capacity = 16;
    while (capacity < tokens.length * 2) capacity *= 2;
    this.slots = new Int32Array(capacity);
    this.mask = capacity - 1;
    for (let i = 0; i < tokens.length; i++) {
      if (!include(i)) continue;
      const t = tokens[i]!;
      let s = hashText(t) & this.mask;
      for (;;) {
        const at = this.slots[s]!;
        if (at === 0) {
          this.slots[s] = i + 1;
          break;
        }
        if (tokens[at - 1] === t) break; // an earlier id has this text
        s = (s + 1) & this.mask;
      }
    }
  }

  /** The id of `text`, or -1. */
  get(text: string): number {
    let s = hashText(text) & this.mask;
    for (;;) {
      const at = this.slots[s]!;
      if (at === 0) return -1;
      if (this.tokens[at - 1] === text) return at - 1;
      s = (s + 1) & this.mask;
    }
  }
}

/** FNV-1a over the UTF-16 code units (any hash works; this one is cheap on short strings). */
function hashText(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return h >>> 0;
}
