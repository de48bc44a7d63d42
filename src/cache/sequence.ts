// One sequence's page table: an ordered deque of page entries, each with the slot metadata this
// sequence sees (which slots are live, their original positions). Liveness is per sequence, not per
// page, so two forks that share a page can evict different tokens of it without copying it.

/** A page as one sequence sees it. Slots [0, used) were written; `alive` marks the retained ones. */
export class PageEntry {
  page = -1;
  /** Slots written (live or evicted); the next append goes to slot `used`. */
  used = 0;
  /** Live slots. */
  live = 0;
  /** True while pos[s] = pos[0] + s for every s < used: one run per page, no per-slot scan. */
  contiguous = true;
  readonly alive: Uint8Array; // [pageSize] 1 = retained
  /** Original position of each slot's token: its place in the text, and the position its key was rotated by. */
  readonly pos: Int32Array; // [pageSize]

  constructor(pageSize: number) {
    this.alive = new Uint8Array(pageSize);
    this.pos = new Int32Array(pageSize);
  }

  reset(page: number): void {
    this.page = page;
    this.used = 0;
    this.live = 0;
    this.contiguous = true;
  }

  copyFrom(other: PageEntry): void {
    this.page = other.page;
    this.used = other.used;
    this.live = other.live;
    this.contiguous = other.contiguous;
    this.alive.set(other.alive);
    this.pos.set(other.pos);
  }
}

/**
 * A ring-buffer deque with removal at any index by shifting the shorter side: a sliding window
 * removes the page right after its sink pages (index 1), which costs O(1) here and O(pages) with
 * Array.splice.
 */
export class Deque<T> {
  private buf: (T | undefined)[];
  private head = 0;
  private len = 0;

  constructor(capacity = 8) {
    let c = 8;
    while (c < capacity) c *= 2;
    this.buf = new Array<T | undefined>(c);
  }

  get length(): number {
    return this.len;
  }

  get(i: number): T {
    return this.buf[(this.head + i) & (this.buf.length - 1)]!;
  }

  push(x: T): void {
    if (this.len === this.buf.length) this.grow();
    this.buf[(this.head + this.len) & (this.buf.length - 1)] = x;
    this.len++;
  }

  pop(): T {
    const mask = this.buf.length - 1;
    const i = (this.head + this.len - 1) & mask;
    const x = this.buf[i]!;
    this.buf[i] = undefined;
    this.len--;
    return x;
  }

  /** Removes and returns element i, moving whichever side of it is shorter. */
  removeAt(i: number): T {
    const mask = this.buf.length - 1;
    const buf = this.buf;
    const x = buf[(this.head + i) & mask]!;
    if (i < this.len - 1 - i) {
      for (let j = i; j > 0; j--) buf[(this.head + j) & mask] = buf[(this.head + j - 1) & mask];
      buf[this.head] = undefined;
      this.head = (this.head + 1) & mask;
    } else {
      for (let j = i; j < this.len - 1; j++) buf[(this.head + j) & mask] = buf[(this.head + j + 1) & mask];
      buf[(this.head + this.len - 1) & mask] = undefined;
    }
    this.len--;
    return x;
  }

  private grow(): void {
    const old = this.buf;
    const mask = old.length - 1;
    const next = new Array<T | undefined>(old.length * 2);
    for (let i = 0; i < this.len; i++) next[i] = old[(this.head + i) & mask];
    this.buf = next;
    this.head = 0;
  }
}

export class SequenceState {
  readonly id: number;
  readonly entries = new Deque<PageEntry>();
  /** Retained tokens. */
  held = 0;
  /** Original position the next appended token gets. */
  nextPos = 0;
  /**
   * Per retained token (in retained order) the record a score-based policy keeps (its score first);
   * null otherwise. A view of the group's scratch (cache-scratch.ts), one per live sequence.
   */
  readonly scores: Float64Array | null; // [window][scoresPerToken]
  /** Bumped by every change to the retained set; attention caches its runs by it. */
  version = 0;
  /** The last reserve: `pendingCount` tokens starting at entry `pendingEntry`, slot `pendingSlot`. */
  pendingEntry = 0;
  pendingSlot = 0;
  pendingCount = 0;
  evictionEvents = 0;
  evictedTokens = 0;

  constructor(id: number, scores: Float64Array | null = null) {
    this.id = id;
    this.scores = scores;
  }
}
