// Where splitting a matmul over threads starts to pay (MIN_SPLIT_WORK in
// src/model/wasm/matmul-pool.ts): a Q8_0 matvec (decode's kernel) of rows x cols, timed on one
// thread and split over N, at sizes around the model's. Each size cycles through enough copies of
// its matrix to exceed the CPU caches (decode streams its weights from memory), and the 1-thread and
// N-thread arenas alternate within each repetition so that load from elsewhere falls on both.
// Run: npx tsx bench/threads-threshold.ts [--threads N] [--cols C] [--reps R]

import { loadavg } from "node:os";
import { WasmArena } from "../src/model/wasm/wasm-kernels.js";
import { ROW_KERNEL } from "../src/wasm/row-call.js";
import { otherProcessesMeter } from "./lib/load.js";
import { machineInfo, machineLines } from "./lib/machine.js";
import { markdownTable, fmt } from "./lib/table.js";

const argv = process.argv.slice(2);
function opt(name: string, dflt: number): number {
  const i = argv.indexOf(name);
  return i >= 0 ? Number(argv[i + 1]) : dflt;
}
const THREADS = opt("--threads", 2);
const COLS = opt("--cols", 576);
const REPS = opt("--reps", 7);
/** Bytes of weights each size cycles through: past a last-level cache. */
const SPAN_BYTES = 64 * 1024 * 1024;
const ROWS = [32, 64, 96, 128, 192, 256, 384, 576, 1024, 1536, 3072, 6144];

interface Bench {
  readonly arena: WasmArena;
  readonly copies: number;
  readonly wq: number;
  readonly wd: number;
  readonly qx: number;
  readonly dx: number;
  readonly out: number;
}

function setup(rows: number, threads: number): Bench {
  const arena = new WasmArena({ threads, minSplitWork: 0 });
  const bytes = rows * COLS * 1.125;
  const copies = Math.max(1, Math.ceil(SPAN_BYTES / bytes));
  const wq = arena.reserve(copies * rows * COLS), wd = arena.reserve((copies * rows * COLS) / 8);
  const qx = arena.reserve(COLS), dx = arena.reserve(COLS / 8), out = arena.reserve(rows * 4);
  if (!arena.commit()) throw new Error("arena refused");
  const q = arena.i8(wq, copies * rows * COLS);
  for (let i = 0; i < q.length; i++) q[i] = ((i * 2654435761) >>> 24) - 128;
  arena.f32(wd, (copies * rows * COLS) / 32).fill(0.01);
  arena.i8(qx, COLS).fill(3);
  arena.f32(dx, COLS / 32).fill(0.1);
  return { arena, copies, wq, wd, qx, dx, out };
}

/** Microseconds per matvec over `calls` calls, cycling through the copies. */
function time(b: Bench, rows: number, calls: number): number {
  const t0 = performance.now();
  for (let i = 0; i < calls; i++) {
    const k = i % b.copies;
    const c = b.arena.nextCall();
    c.start(ROW_KERNEL.matvecQ8, rows).arg(b.out, 4).arg(b.wq + k * rows * COLS, COLS).arg(b.wd + (k * rows * COLS) / 8, COLS / 8).rowsArg().arg(COLS).arg(b.qx).arg(b.dx);
    b.arena.run(c, rows * COLS);
  }
  return ((performance.now() - t0) * 1000) / calls;
}

const machine = machineInfo();
const load0 = loadavg()[0]!;
const others = otherProcessesMeter();
const rows: string[][] = [];
for (const r of ROWS) {
  const one = setup(r, 1), many = setup(r, THREADS);
  await many.arena.whenThreadsReady();
  if (many.arena.threads !== THREADS) throw new Error(`threads unavailable: ${many.arena.threadsNote}`);
  // About 20 ms of calls per sample, after a warm-up that also settles the pool's caller share.
  const calls = Math.max(20, Math.round(20_000 / Math.max(1, time(one, r, 20))));
  time(many, r, calls * 2);
  const t1: number[] = [], tn: number[] = [];
  for (let rep = 0; rep < REPS; rep++) {
    if (rep & 1) {
      t1.push(time(one, r, calls));
      tn.push(time(many, r, calls));
    } else {
      tn.push(time(many, r, calls));
      t1.push(time(one, r, calls));
    }
  }
  const med = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1]!;
  const a = med(t1), b = med(tn);
  rows.push([`${r} x ${COLS}`, fmt(r * COLS / 1024, 0) + "k", fmt(a, 1), fmt(b, 1), fmt(a / b, 2)]);
  process.stderr.write(`${r} x ${COLS}: ${a.toFixed(1)} us alone, ${b.toFixed(1)} us on ${THREADS} threads\n`);
  one.arena.dispose();
  many.arena.dispose();
}
console.log(`## Splitting a Q8_0 matvec over ${THREADS} threads: where it pays\n`);
console.log(markdownTable(
  [
    { title: "matrix" },
    { title: "work (multiply-adds)", align: "right" },
    { title: "1 thread, us", align: "right" },
    { title: `${THREADS} threads, us`, align: "right" },
    { title: "speed-up", align: "right" },
  ],
  rows,
));
console.log("");
console.log(machineLines(machine, [
  `median of ${REPS} interleaved samples of ~20 ms each; weights cycled over ${SPAN_BYTES / 2 ** 20} MiB of copies (streamed from memory, as decode reads them)`,
  `other processes kept ${others()?.toFixed(2) ?? "n/a"} cores busy on average meanwhile; 1-minute load average ${load0.toFixed(2)} at start, ${loadavg()[0]!.toFixed(2)} at end`,
  "the pool's caller share adapts per size: below about 2 row blocks per thread it learns to keep every row (speed-up ~1)",
]));
process.exit(0);
