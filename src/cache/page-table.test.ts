// The page table's asserted preconditions: each broken one throws an Error naming it, before the
// table is left inconsistent where the check allows.

import { describe, expect, it } from "vitest";
import { RunTable } from "./attention.js";
import { PagePool } from "./page-pool.js";
import { PageTable } from "./page-table.js";
import { SequenceState } from "./sequence.js";

const P = 4;
const W = 16;

function setup(nPages = 8): { pool: PagePool; table: PageTable; evictIdx: Int32Array; seq: (id: number) => SequenceState } {
  const pool = new PagePool(nPages);
  const evictIdx = new Int32Array(W);
  const table = new PageTable(pool, P, W, "original", {
    evictIdx,
    doomed: new Int32Array(W + nPages + 1),
    posScratch: new Int32Array(W),
    runs: new RunTable(W),
  });
  return { pool, table, evictIdx, seq: (id) => new SequenceState(id) };
}

describe("PageTable preconditions", () => {
  it("appends, evicts and pops consistently when used as the plan says", () => {
    const { pool, table, evictIdx, seq } = setup();
    const s = seq(0);
    table.append(s, 6);
    evictIdx.set([0, 1, 2, 3]);
    const nDoomed = table.markDoomed(s, 4);
    expect(nDoomed).toBe(1);
    table.applyEvictions(s, 4, nDoomed);
    expect(s.held).toBe(2);
    const out = new Int32Array(W);
    expect(table.originalPositions(s, out)).toBe(2);
    expect([...out.subarray(0, 2)]).toEqual([4, 5]);
    table.pop(s, 1);
    expect(s.nextPos).toBe(5);
    table.checkInvariants([s], 1);
    table.releaseAll(s);
    expect(pool.freePages).toBe(8);
  });

  it("refuses eviction indices out of order or past the retained tokens", () => {
    const { table, evictIdx, seq } = setup();
    const s = seq(0);
    table.append(s, 6);
    evictIdx.set([3, 1]);
    expect(() => table.markDoomed(s, 2)).toThrow(/ascending/);
    evictIdx.set([1, 9]);
    expect(() => table.markDoomed(s, 2)).toThrow(/past the 6 retained/);
    expect(() => table.markDoomed(s, 7)).toThrow(/holds 6/);
    evictIdx.set([2, 1]);
    expect(() => table.applyEvictions(s, 2, 0)).toThrow(/found no live slot/);
  });

  it("refuses a stale doomed list that would release live tokens", () => {
    const { table, evictIdx, seq } = setup();
    const s = seq(0);
    table.append(s, 8);
    evictIdx.set([0]);
    // doomed still says entry 0 (zeros), which keeps three live tokens after this eviction.
    expect(() => table.applyEvictions(s, 1, 1)).toThrow(/released with 3 live tokens/);
  });

  it("refuses to append into a shared page or past the window", () => {
    const { table, seq } = setup();
    const a = seq(0);
    const b = seq(1);
    table.append(a, 2);
    table.share(a, b);
    expect(() => table.append(b, 1)).toThrow(/shared by 2 sequences/);
    const c = seq(2);
    expect(() => table.append(c, W + 1)).toThrow(/passes the window/);
  });

  it("refuses positions that do not grow", () => {
    const { table, seq } = setup();
    const s = seq(0);
    table.append(s, 3);
    s.nextPos = 1;
    expect(() => table.append(s, 1)).toThrow(/appends position 1 after 2/);
  });

  it("refuses copy-on-write of an unshared page, and a commit that outruns the pool", () => {
    const { pool, table, seq } = setup(1);
    const s = seq(0);
    table.append(s, 2);
    expect(() => table.replaceTailPage(s, 0)).toThrow(/not shared/);
    expect(pool.freePages).toBe(0);
    expect(() => table.append(s, 3)).toThrow(/pool ran out/);
  });

  it("refuses compaction over a shared page and a fork into a non-empty sequence", () => {
    const { table, seq } = setup();
    const a = seq(0);
    const b = seq(1);
    table.append(a, 5);
    table.append(b, 1);
    expect(() => table.share(a, b)).toThrow(/already holds 1/);
    const c = seq(2);
    table.share(a, c);
    expect(() => table.compact(a)).toThrow(/shares a page/);
  });

  it("refuses popping more than the sequence holds", () => {
    const { table, seq } = setup();
    const s = seq(0);
    table.append(s, 2);
    expect(() => table.pop(s, 3)).toThrow(/holds 2/);
  });
});
