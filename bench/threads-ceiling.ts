// The machine's own ceiling for splitting prefill over threads: the batched matmul's kernels
// (packQ8 + matmulPacked, a Q8_0 matrix of SmolLM2's gate, 1536 x 576, or --rows x --cols; 64 tokens) run by N workers at
// once with no job, no wake-up and no wait between them. Their summed throughput against one
// worker alone is what N threads can give at best; kvbound's 2-thread prefill (bench/kernel-profile.ts
// prints where its calling thread's time goes) is read against it. Two layouts:
//   private  each worker its own memory (a SharedArrayBuffer's, as the pool's, but no other thread's) and matrix;
//   shared   one SharedArrayBuffer memory, one matrix and one set of activations, each worker its
//            share of the rows (as the pool splits a matmul), its own packed chunk and outputs.
// Run: npx tsx bench/threads-ceiling.ts [--threads 2] [--ms 1000] [--reps 5] [--rows 1536 --cols 576]

import { Worker } from "node:worker_threads";
import { KERNELS_WASM_BASE64 } from "../src/model/wasm/kernels-wasm.js";
import { compileEmbedded } from "../src/wasm/embedded.js";
import { otherProcessesMeter } from "./lib/load.js";
import { machineInfo, machineLines } from "./lib/machine.js";
import { fmt, markdownTable } from "./lib/table.js";

const argv = process.argv.slice(2);
const opt = (name: string, def: number) => (argv.includes(name) ? Number(argv[argv.indexOf(name) + 1]) : def);
const THREADS = opt("--threads", 2);
const MS = opt("--ms", 1000);
const REPS = opt("--reps", 5);
const ROWS = opt("--rows", 1536), COLS = opt("--cols", 576), TOKENS = 64, PACKED_ROWS = 64, NB = COLS / 32;

/** Byte offsets in a memory: the matrix (int8 values, f16 scales), the activations (widened), then per worker a packed chunk and outputs. */
const WQ = 0, WD = WQ + ROWS * COLS, X16 = WD + ROWS * NB * 2, DXT = X16 + TOKENS * COLS * 2, OWN = DXT + TOKENS * NB * 4;
const OWN_BYTES = PACKED_ROWS * NB * 260 + TOKENS * ROWS * 4;
const PAGES = Math.ceil((OWN + THREADS * OWN_BYTES) / 65536);

// A worker: packs and multiplies its rows chunk after chunk until `ms` have passed, then reports the
// multiply-adds it did per second.
const WORKER = `
const { parentPort, workerData: d } = require("node:worker_threads");
const k = new WebAssembly.Instance(d.mod, { env: { memory: d.memory } }).exports;
const pk = d.own, out = d.own + ${PACKED_ROWS * NB * 260};
parentPort.on("message", (ms) => {
  let work = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < ms) {
    for (let r = d.r0; r < d.r1; r += ${PACKED_ROWS}) {
      k.packQ8(pk, ${WQ} + r * ${COLS}, ${WD} + r * ${NB * 2}, 0, ${PACKED_ROWS}, ${COLS}, 0);
      k.matmulPacked(out + r * 4, ${ROWS}, pk, ${PACKED_ROWS}, ${COLS}, ${X16}, ${DXT}, ${TOKENS}, 0, 0);
    }
    work += (d.r1 - d.r0) * ${COLS * TOKENS};
  }
  parentPort.postMessage(work / (performance.now() - t0) * 1000);
});
`;

/** A memory holding the matrix and the activations (peaked enough that nothing is zero). */
function filledMemory(): WebAssembly.Memory {
  const memory = new WebAssembly.Memory({ initial: PAGES, maximum: PAGES, shared: true });
  const b = memory.buffer;
  const q = new Uint8Array(b, WQ, ROWS * COLS);
  for (let i = 0; i < q.length; i++) q[i] = (i * 2654435761) >>> 25;
  new Uint16Array(b, WD, ROWS * NB).fill(0x2000);
  const x = new Int16Array(b, X16, TOKENS * COLS);
  for (let i = 0; i < x.length; i++) x[i] = ((i * 40503) & 255) - 128;
  new Float32Array(b, DXT, TOKENS * NB).fill(0.01);
  return memory;
}

type Layout = "private" | "shared";
/** `n` workers of a layout, each with its rows. */
function startWorkers(layout: Layout, n: number): Worker[] {
  const mod = compileEmbedded(KERNELS_WASM_BASE64, "shared")!;
  const shared = layout === "shared" ? filledMemory() : null;
  const per = Math.ceil(ROWS / n / PACKED_ROWS) * PACKED_ROWS;
  return Array.from({ length: n }, (_, i) => {
    const [r0, r1] = shared === null ? [0, ROWS] : [Math.min(ROWS, i * per), Math.min(ROWS, (i + 1) * per)];
    const workerData = { mod, memory: shared ?? filledMemory(), own: OWN + i * OWN_BYTES, r0, r1 };
    return new Worker(WORKER, { eval: true, workerData });
  });
}

const run = (ws: Worker[]) =>
  Promise.all(ws.map((w) => new Promise<number>((res) => { w.once("message", res); w.postMessage(MS); }))).then((r) => r.reduce((a, b) => a + b, 0));

const meter = otherProcessesMeter();
const rows: string[][] = [];
for (const layout of ["private", "shared"] as const) {
  const one = startWorkers(layout, 1), all = startWorkers(layout, THREADS);
  await run(all); // warm-up
  await run(one);
  const a: number[] = [], b: number[] = [];
  for (let rep = 0; rep < REPS; rep++) {
    a.push(await run(one));
    b.push(await run(all));
  }
  for (const w of [...one, ...all]) await w.terminate();
  const median = (x: number[]) => [...x].sort((p, q) => p - q)[x.length >> 1]!;
  rows.push([layout, fmt(median(a) / 1e9), fmt(median(b) / 1e9), fmt(median(b) / median(a)), b.map((v, i) => fmt(v / a[i]!)).join(" ")]);
}
console.log(markdownTable(
  [{ title: "memory" }, { title: "1 thread G mul-add/s", align: "right" }, { title: `${THREADS} threads G mul-add/s`, align: "right" }, { title: `${THREADS} / 1`, align: "right" }, { title: "per repetition" }],
  rows,
));
const other = meter();
console.log(`\n${machineLines(machineInfo(), [`median of ${REPS} repetitions of ${MS} ms, 1 and ${THREADS} threads alternated; other processes ${other === null ? "n/a" : fmt(other, 2)} cores on average`])}`);
