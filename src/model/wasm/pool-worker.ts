// The code each matmul pool worker runs (matmul-pool.ts), as plain JavaScript text: Node starts it
// with `new Worker(code, { eval: true })` and a browser from a Blob URL, so it needs no file beside
// the bundle and no loader (tsx, Vite) in between. It instantiates the kernels module it is sent over
// the shared arena memory (and the tables already attached, msg.attached), then sleeps in
// Atomics.wait on its own slot of the control block and, woken for a job, claims rows of its calls
// from the job's shared counters until none are left (matmul-pool.ts claimRows): between jobs it
// watches for the next for at most msg.spinMs before it sleeps
// (matmul-pool.ts WORKER_SPIN_MS). It returns to its event loop only for mail: a table of kernels
// to attach (another module over another shared memory: a cache's attention) or detach, announced
// through the control block after the message is posted. The control block's layout is CONTROL,
// here beside the one reader of it that is not TypeScript (matmul-pool.ts is the writer).

import { MAX_ROW_ARGS, SCRATCH_ARG } from "../../wasm/row-call.js";

/** Most RowCalls one job carries (q, k and v are three). */
export const MAX_JOB_CALLS = 4;
/**
 * How long a thread watches for the rows before a fence (RowCall.fence) to be done before it sleeps
 * in Atomics.wait, 1 ms at a time (ms): what it waits for is the other threads' last claims.
 */
export const FENCE_SPIN_MS = 0.05;

/**
 * The control block (Int32Array over a SharedArrayBuffer), in ints:
 *   [ACTIVE]   workers inside the current job (the caller, having closed it, waits for 0)
 *   [FAILED]   0, or 1 + the index of a worker whose kernel threw, or -1 when the caller's did
 *   [CALLS]    RowCalls in the current job
 *   [SLICES]   threads the job's scratch is sliced for (a call with a prelude)
 *   [TABLE]    whose kernels the job's calls name: 0 the kernels module's ROW_KERNELS, t > 0 the
 *              exports attached as table t (a cache's attention kernels over its own memory)
 *   [OPEN]     the number of the job open to claims, 0 once the caller has closed it: a worker
 *              that wakes after that leaves the job alone (the caller does not wait for it)
 *   [GROUPS]   row groups of the job: its calls of equal rows, block and phase, each at
 *              GROUP + GROUP_INTS g (a line of its own): +NEXT the first row not yet claimed (the
 *              counter claims move), +ROWS, +BLOCK, +MIN the fewest rows a claim takes, +DIV (a
 *              claim takes the rows left over DIV), +N calls and +CALL0.. their indices, run in
 *              order on a claim, +PHASE (the fences, RowCall.fence, before its calls: a group of a
 *              later phase is claimed only once every earlier group's rows are done), +DONE its
 *              rows done
 *   job, from JOB: per call CALL ints: +FN kernel index, +TOKENS token calls, +ROWS_AT index of the
 *     row-count argument, +ARGS arguments at row 0, +PER_ROW bytes each moves per row, +PER_TOKEN
 *     per token call (MAX_ROW_ARGS each); the prelude: +PRE_FN (-1: none), +PRE_COUNT_AT,
 *     +PRE_COUNT_PER_ROW, +PRE_ARGS, +PRE_PER_ROW, and its scratch +SCRATCH, +SCRATCH_ROWS,
 *     +SCRATCH_ROW_BYTES (RowCall's fields; SCRATCH_ARG marks an argument that is the slice)
 *   per worker i, a SLOT-int slot (128 bytes: no two workers' slots share a cache line) at
 *     SLOTS + SLOT i: +GEN (bumped after every change below; the worker sleeps on it), +STATE
 *     (STARTING, READY, GONE), +EXIT (1: stop), +SLICE its slice of the scratch, +JOBS the number
 *     of the job it is woken for, +MAIL messages posted to it (more than it took: it leaves its
 *     loop for its event loop, takes them, and comes back).
 * The caller writes a job only while no worker is inside one (ACTIVE 0 after closing the last), and a
 * worker reads it only after entering (ACTIVE + 1) a job still open, so workers read it freely.
 */
export const CONTROL = {
  ACTIVE: 0, FAILED: 1, CALLS: 2, SLICES: 3, TABLE: 4, OPEN: 5, GROUPS: 6,
  JOB: 16, CALL: 80, FN: 0, TOKENS: 1, ROWS_AT: 2, PRE_FN: 3, PRE_COUNT_AT: 4, PRE_COUNT_PER_ROW: 5,
  SCRATCH: 6, SCRATCH_ROWS: 7, SCRATCH_ROW_BYTES: 8,
  ARGS: 16, PER_ROW: 28, PER_TOKEN: 40, PRE_ARGS: 52, PRE_PER_ROW: 64,
  GROUP: 16 + 80 * MAX_JOB_CALLS, GROUP_INTS: 16, NEXT: 0, ROWS: 1, BLOCK: 2, MIN: 3, DIV: 4, N: 5, CALL0: 6, PHASE: 10, DONE: 11,
  SLOTS: 16 + 96 * MAX_JOB_CALLS, SLOT: 32, GEN: 0, STATE: 1, EXIT: 2, SLICE: 3, JOBS: 4, MAIL: 5,
  STARTING: 0, READY: 1, GONE: 2,
} as const;

const C = CONTROL;

export const POOL_WORKER_SOURCE = `"use strict";
const ACTIVE = ${C.ACTIVE}, FAILED = ${C.FAILED}, CALLS = ${C.CALLS}, SLICES = ${C.SLICES}, TABLE = ${C.TABLE};
const OPEN = ${C.OPEN}, GROUPS = ${C.GROUPS}, GROUP = ${C.GROUP}, GROUP_INTS = ${C.GROUP_INTS};
const NEXT = ${C.NEXT}, ROWS = ${C.ROWS}, BLOCK = ${C.BLOCK}, MIN = ${C.MIN}, DIV = ${C.DIV}, N = ${C.N}, CALL0 = ${C.CALL0};
const PHASE = ${C.PHASE}, DONE = ${C.DONE}, FENCE_SPIN_MS = ${FENCE_SPIN_MS};
const JOB = ${C.JOB}, CALL = ${C.CALL}, FN = ${C.FN}, TOKENS = ${C.TOKENS}, ROWS_AT = ${C.ROWS_AT};
const PRE_FN = ${C.PRE_FN}, PRE_COUNT_AT = ${C.PRE_COUNT_AT}, PRE_COUNT_PER_ROW = ${C.PRE_COUNT_PER_ROW};
const SCRATCH = ${C.SCRATCH}, SCRATCH_ROWS = ${C.SCRATCH_ROWS}, SCRATCH_ROW_BYTES = ${C.SCRATCH_ROW_BYTES};
const ARGS = ${C.ARGS}, PER_ROW = ${C.PER_ROW}, PER_TOKEN = ${C.PER_TOKEN}, PRE_ARGS = ${C.PRE_ARGS}, PRE_PER_ROW = ${C.PRE_PER_ROW};
const NARGS = ${MAX_ROW_ARGS}, SCRATCH_ARG = ${SCRATCH_ARG};
const SLOTS = ${C.SLOTS}, SLOT = ${C.SLOT}, GEN = ${C.GEN}, STATE = ${C.STATE}, EXIT = ${C.EXIT}, SLICE = ${C.SLICE};
const JOBS = ${C.JOBS}, MAIL = ${C.MAIL};
const READY = ${C.READY}, GONE = ${C.GONE};
// row-call.ts runRows, reading the call from the control block at b.
function runRows(ctrl, fns, at, b, r0, r1, slice, slices) {
  const f = fns[ctrl[b + FN]], tokens = ctrl[b + TOKENS], p = b + PER_TOKEN;
  const preFn = ctrl[b + PRE_FN], pre = preFn >= 0 ? fns[preFn] : null;
  const chunk = pre === null ? r1 - r0 : Math.max(4, Math.floor(ctrl[b + SCRATCH_ROWS] / slices / 4) * 4); // row-call.ts preludeChunk
  const mine = ctrl[b + SCRATCH] + slice * chunk * ctrl[b + SCRATCH_ROW_BYTES];
  for (let r = r0; r < r1; r += chunk) {
    const m = Math.min(chunk, r1 - r);
    if (pre !== null) {
      for (let i = 0; i < NARGS; i++) {
        const v = ctrl[b + PRE_ARGS + i];
        at[i] = v === SCRATCH_ARG ? mine : v + r * ctrl[b + PRE_PER_ROW + i];
      }
      at[ctrl[b + PRE_COUNT_AT]] = m * ctrl[b + PRE_COUNT_PER_ROW];
      pre(at[0], at[1], at[2], at[3], at[4], at[5], at[6], at[7], at[8], at[9], at[10], at[11]);
    }
    for (let i = 0; i < NARGS; i++) {
      const v = ctrl[b + ARGS + i];
      at[i] = v === SCRATCH_ARG ? mine : v + r * ctrl[b + PER_ROW + i];
    }
    at[ctrl[b + ROWS_AT]] = m;
    for (let t = 0; t < tokens; t++) {
      f(at[0] + t * ctrl[p], at[1] + t * ctrl[p + 1], at[2] + t * ctrl[p + 2], at[3] + t * ctrl[p + 3], at[4] + t * ctrl[p + 4],
        at[5] + t * ctrl[p + 5], at[6] + t * ctrl[p + 6], at[7] + t * ctrl[p + 7], at[8] + t * ctrl[p + 8], at[9] + t * ctrl[p + 9],
        at[10] + t * ctrl[p + 10], at[11] + t * ctrl[p + 11]);
    }
  }
}
// matmul-pool.ts claimRows: rows [r0, claimEnd) of group G, or -1 when none are left.
let claimEnd = 0;
function claim(ctrl, G) {
  const rows = ctrl[G + ROWS], block = ctrl[G + BLOCK], min = ctrl[G + MIN], div = ctrl[G + DIV];
  for (;;) {
    const r0 = Atomics.load(ctrl, G + NEXT);
    if (r0 >= rows) return -1;
    const r1 = Math.min(rows, r0 + Math.max(min, Math.ceil((rows - r0) / div / block) * block));
    if (Atomics.compareExchange(ctrl, G + NEXT, r0, r1) === r0) {
      claimEnd = r1;
      return r0;
    }
  }
}
// matmul-pool.ts groupsDone: whether groups 0 .. g are all done (false: a thread failed).
function groupsDone(ctrl, g) {
  for (let h = 0; h < g; h++) {
    const H = GROUP + h * GROUP_INTS, rows = ctrl[H + ROWS];
    let t0 = 0;
    for (let d = Atomics.load(ctrl, H + DONE); d < rows; d = Atomics.load(ctrl, H + DONE)) {
      if (Atomics.load(ctrl, FAILED) !== 0) return false;
      if (t0 === 0) t0 = performance.now();
      else if (performance.now() - t0 > FENCE_SPIN_MS) Atomics.wait(ctrl, H + DONE, d, 1);
    }
  }
  return true;
}
// matmul-pool.ts runClaims: every group's rows claimed until none are left, each claim through all
// of its group's calls in order, a later phase's groups once the earlier ones are done.
function runClaims(ctrl, fns, at, slice, slices) {
  const ng = ctrl[GROUPS];
  for (let g = 0; g < ng; g++) {
    const G = GROUP + g * GROUP_INTS, n = ctrl[G + N], rows = ctrl[G + ROWS];
    if (g > 0 && ctrl[G + PHASE] !== ctrl[G - GROUP_INTS + PHASE] && !groupsDone(ctrl, g)) return;
    for (let r0 = claim(ctrl, G); r0 >= 0; r0 = claim(ctrl, G)) {
      const r1 = claimEnd;
      for (let i = 0; i < n; i++) runRows(ctrl, fns, at, JOB + ctrl[G + CALL0 + i] * CALL, r0, r1, slice, slices);
      if (Atomics.add(ctrl, G + DONE, r1 - r0) + r1 - r0 === rows) Atomics.notify(ctrl, G + DONE);
    }
  }
}
function exportsOf(module, memory, names) {
  const ex = new WebAssembly.Instance(module, { env: { memory } }).exports;
  const fns = names.map((n) => ex[n]);
  for (const f of fns) if (typeof f !== "function") throw new Error("a module lacks a row kernel");
  return fns;
}
// The worker's state once started (the first message), and its loop: it returns to take mail
// (attach / detach a table of kernels) and is entered again once the mail is all taken.
let w = null;
function loop() {
  const { ctrl, s, at, spinMs, tables } = w;
  for (;;) {
    const g = Atomics.load(ctrl, s + GEN); // read before the checks: a change after them ends the wait at once
    if (ctrl[s + EXIT] !== 0) break;
    if (Atomics.load(ctrl, s + MAIL) !== w.taken) return true;
    const j = Atomics.load(ctrl, s + JOBS);
    if (j !== w.done) {
      w.done = j;
      // Enter, then look: a job closed before this thread entered is not read at all.
      Atomics.add(ctrl, ACTIVE, 1);
      if (Atomics.load(ctrl, OPEN) === j) {
        try {
          runClaims(ctrl, tables.get(ctrl[TABLE]), at, ctrl[s + SLICE], ctrl[SLICES]);
        } catch (e) {
          Atomics.store(ctrl, FAILED, w.index + 1); // also lets the threads waiting at a fence go
        }
      }
      if (Atomics.sub(ctrl, ACTIVE, 1) === 1) Atomics.notify(ctrl, ACTIVE);
      continue;
    }
    if (spinMs > 0) {
      const t0 = performance.now();
      while (Atomics.load(ctrl, s + GEN) === g && performance.now() - t0 < spinMs) {}
    }
    Atomics.wait(ctrl, s + GEN, g);
  }
  Atomics.store(ctrl, s + STATE, GONE);
  return false;
}
function start(msg, reply) {
  const ctrl = new Int32Array(msg.control);
  const s = SLOTS + msg.index * SLOT;
  const tables = new Map();
  try {
    tables.set(0, exportsOf(msg.module, msg.memory, msg.names));
    for (const a of msg.attached) tables.set(a.table, exportsOf(a.module, a.memory, a.names));
  } catch (e) {
    Atomics.store(ctrl, s + STATE, GONE);
    reply({ type: "failed", message: String(e && e.message || e) });
    return false;
  }
  w = { ctrl, s, tables, index: msg.index, at: new Float64Array(NARGS), spinMs: msg.spinMs, taken: 0, done: Atomics.load(ctrl, s + JOBS) };
  Atomics.store(ctrl, s + STATE, READY);
  reply({ type: "ready" });
  return loop();
}
// One message: the start, or mail. Returns whether the worker goes on (false: it stopped).
function onMessage(msg, reply) {
  if (w === null) return start(msg, reply);
  w.taken++;
  try {
    if (msg.type === "attach") w.tables.set(msg.table, exportsOf(msg.module, msg.memory, msg.names));
    else w.tables.delete(msg.table);
  } catch (e) {
    reply({ type: "failed", message: String(e && e.message || e) });
  }
  return Atomics.load(w.ctrl, w.s + MAIL) !== w.taken || loop();
}
if (typeof self === "object" && typeof self.postMessage === "function" && typeof require !== "function") {
  self.onmessage = (e) => { if (!onMessage(e.data, (m) => self.postMessage(m)) && typeof close === "function") close(); };
} else {
  const { parentPort } = require("node:worker_threads");
  parentPort.on("message", (msg) => { if (!onMessage(msg, (m) => parentPort.postMessage(m))) parentPort.close(); });
}
`;
