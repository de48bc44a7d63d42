// What the attention kernel needs from the cache's page table each step, in the buffers it reads:
// the runs (page, first slot, length, retained index) and, per (query, run), a row of cos/sin for
// the angle the query turns by: its attention position plus the run's rotation offset (rotPos -
// pos, runs.ts), as src/cache/attention.ts's attendRuns computes it. Rows are shared between
// (query, run) pairs with the same angle, so under original positions there is one per query.

import type { RunTable } from "../../cache/attention.js";
import type { Rope } from "../../cache/rope.js";

const NONE = 0xffffffff;

export class AttentionMeta {
  /** [maxRuns][4] runs, then [maxTok][maxRuns] cos/sin row per (query, run). */
  readonly meta: Uint32Array;
  /** [maxTok * maxRuns][half][2] (cos, sin). */
  readonly cs: Float32Array;
  private readonly rowOf = new Map<number, number>();
  nRuns = 0;
  nRows = 0;

  constructor(readonly maxRuns: number, readonly maxTok: number, readonly half: number) {
    this.meta = new Uint32Array(4 * maxRuns + maxTok * maxRuns);
    this.cs = new Float32Array(Math.max(1, maxTok * maxRuns * half * 2));
  }

  /** Bytes of meta the kernel reads. */
  get metaBytes(): number {
    return this.meta.byteLength;
  }

  /** Fills both tables for the last `nQuery` of `held` retained tokens (the batch just written). */
  fill(runs: RunTable, held: number, nQuery: number, rope: Rope | null): void {
    if (runs.n > this.maxRuns) throw new RangeError(`${runs.n} runs exceed the ${this.maxRuns} the attention tables hold`);
    const meta = this.meta, M = this.maxRuns;
    for (let r = 0; r < runs.n; r++) {
      meta[4 * r] = runs.page[r]!;
      meta[4 * r + 1] = runs.slotStart[r]!;
      meta[4 * r + 2] = runs.length[r]!;
      meta[4 * r + 3] = runs.index[r]!;
    }
    this.nRuns = runs.n;
    this.rowOf.clear();
    let rows = 0;
    for (let qi = 0; qi < nQuery; qi++) {
      const self = held - nQuery + qi;
      let qr = runs.n - 1;
      while (qr > 0 && runs.index[qr]! > self) qr--;
      const qPos = runs.pos[qr]! + (self - runs.index[qr]!);
      for (let r = 0; r < runs.n; r++) {
        const at = 4 * M + qi * M + r;
        if (rope === null || runs.index[r]! > self) {
          meta[at] = NONE;
          continue;
        }
        const angle = qPos + (runs.rotPos[r]! - runs.pos[r]!);
        let row = this.rowOf.get(angle);
        if (row === undefined) {
          row = rows++;
          this.rowOf.set(angle, row);
          rope.cosSin(angle, this.cs, row * this.half * 2);
        }
        meta[at] = row;
      }
    }
    this.nRows = rows;
  }
}
