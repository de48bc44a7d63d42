// A persistent pool of worker threads that share one model's WebAssembly memory (a
// SharedArrayBuffer) and split its matmuls by output rows: Node worker_threads or browser Web
// Workers, started lazily on the first matmul big enough to split, and stopped by dispose() (or
// when the arena that owns the pool is collected). The caller and the workers it wakes claim rows
// from a shared counter, smaller claims as the rows run out, so a worker that wakes late or a core
// the host slows takes fewer; the caller, finding none left, closes the job and watches for the
// claims still running for at most CALLER_SPIN_MS, sleeping in Atomics.wait past it; workers sleep
// in Atomics.wait between jobs, after watching for the next one for at most WORKER_SPIN_MS. Both
// watches are bounded and each holds only its own thread's core: an unbounded spin takes the core
// another thread needs (llama.cpp's spin barrier made its 2-thread decode 2x slower than 1 thread
// on a 2-core machine).
//
// A job is up to MAX_JOB_CALLS RowCalls that read the same input (q, k, v; gate, up): each is split
// by rows, and the threads meet once per job, not once per matmul. Calls of equal rows (and block)
// are claimed together: a claim runs its rows through each of them in order, so a call may read
// what an earlier call of the same job wrote in the same rows (SwiGLU after gate and up: linear.ts
// swigluRows); calls after a fenced one (RowCall.fence: the quantization of the matmuls' input)
// start once all of its rows are done. The control block that carries it is pool-worker.ts's CONTROL.
// Other modules over other shared memories run on the same threads as attached tables (attach): a
// cache's attention kernels over its pages, split by KV head (src/cache/wasm/attend-wasm.ts).
// A worker is handed jobs only once it says ready, so a caller never waits on a thread that has not
// started (a browser may not start a nested worker while its parent is busy).

import { MAX_ROW_ARGS, ROW_KERNELS, runRows, type RowCall, type RowKernelFn } from "../../wasm/row-call.js";
import type { KernelTable, RowCallPool } from "../../wasm/row-call.js";
import { CONTROL, FENCE_SPIN_MS, POOL_WORKER_SOURCE } from "./pool-worker.js";

export { MAX_JOB_CALLS } from "./pool-worker.js";
export { ROW_BLOCK } from "../../wasm/row-call.js";

/** Most threads a model splits its matmuls over (a request above it is clamped). */
export const MAX_THREADS = 64;
/**
 * Most threads the default takes from the cores available. Measured only on 2 cores (2 threads:
 * 1.4-1.8x decode, 1.5-1.6x prefill on the SmolLM2 and Qwen2.5 shapes, bench/model.ts). Past that it is a judgement: decode is bound by
 * memory bandwidth, which a few cores saturate, and every extra worker costs the caller one
 * Atomics.notify per job (~9 us on the bench VM; decode runs ~120 jobs per token of SmolLM2), so
 * more threads pay less and less; `threads` asks for more explicitly.
 */
export const MAX_DEFAULT_THREADS = 4;
/**
 * Multiply-adds (rows x cols x tokens, summed over a job's matmuls) below which the caller runs a
 * job alone: waking a worker costs the caller ~9 us (Atomics.notify) and the worker starts ~10-15 us
 * later, more than a small matmul saves. bench/threads-threshold.ts on the 2-core bench machine, a
 * Q8_0 matvec split over 2 threads, with the caller's watch (CALLER_SPIN_MS): 216k multiply-adds
 * 0.94x, 324k 1.0x, 576k 1.2x, 864k 1.5x. In the SmolLM2-shaped model (decode after a 512-token
 * prompt, 2 threads against 1, alternated in one process) 640k gave 1.19x and 320k 1.41x: q/k/v
 * (553k) and o (332k) then split too. (Before the watch 320k lost to 640k: docs/RESULTS.md.)
 */
export const MIN_SPLIT_WORK = 320 * 1024;
/**
 * How long a worker that finished a job watches for the next before it sleeps (ms). Decode sends
 * ~120 jobs per token (SmolLM2), tens of microseconds apart (the caller's attention, norms and
 * quantization in between); a sleeping worker woke 10-110 us after the notify in Node (p50-p99)
 * and up to ~0.9 ms in Chromium's nested workers, which the caller then waits for. A bounded watch
 * keeps the worker awake across those gaps; past it, or between requests, the worker sleeps.
 */
export const WORKER_SPIN_MS = 0.1;
/**
 * How long the caller, the job's rows all claimed, watches for the workers' last claims to finish
 * before it sleeps (ms). Claims shrink as the rows run out, so most waits are short, and a sleeping
 * caller woke ~30-70 us after the last worker's notify (bench VM), which every split job paid.
 * SmolLM2-shaped model, decode after a 512-token prompt, 2 threads against 1 (configurations
 * alternated in one process, with the static shares of the time): 1.37x without the watch, 1.52x
 * with it (0.1 ms: 1.52x too).
 */
export const CALLER_SPIN_MS = 0.05;

/**
 * The fewest multiply-adds a claim of rows takes (run): a claim takes the rows left over the
 * threads (half of them, with 2), shrinking as they run out, down to this. A claim costs a compare-
 * exchange and a kernel call from JS (well under a microsecond); 64k multiply-adds run ~4 us on
 * one core of the bench machine.
 */
export const MIN_CLAIM_WORK = 64 * 1024;

/**
 * Rows [r0, claimEnd) of the row group at G of the job in `ctrl` (CONTROL), or -1 when none are
 * left: the rows left over the group's DIV, in whole blocks, at least MIN (the last claim takes the
 * rest). pool-worker.ts claim does the same steps.
 */
function claimRows(ctrl: Int32Array, G: number): number {
  const rows = ctrl[G + CONTROL.ROWS]!, block = ctrl[G + CONTROL.BLOCK]!, min = ctrl[G + CONTROL.MIN]!, div = ctrl[G + CONTROL.DIV]!;
  for (;;) {
    const r0 = Atomics.load(ctrl, G + CONTROL.NEXT);
    if (r0 >= rows) return -1;
    const r1 = Math.min(rows, r0 + Math.max(min, Math.ceil((rows - r0) / div / block) * block));
    if (Atomics.compareExchange(ctrl, G + CONTROL.NEXT, r0, r1) === r0) {
      claimEnd = r1;
      return r0;
    }
  }
}
let claimEnd = 0;

/**
 * Whether the job's row groups 0 .. g are all done: watched for FENCE_SPIN_MS, then waited for 1 ms
 * at a time; false as soon as a thread has failed (its claimed rows will never be done).
 * pool-worker.ts groupsDone does the same steps.
 */
function groupsDone(ctrl: Int32Array, g: number): boolean {
  for (let h = 0, H = CONTROL.GROUP; h < g; h++, H += CONTROL.GROUP_INTS) {
    const rows = ctrl[H + CONTROL.ROWS]!;
    let t0 = 0;
    for (let d = Atomics.load(ctrl, H + CONTROL.DONE); d < rows; d = Atomics.load(ctrl, H + CONTROL.DONE)) {
      if (Atomics.load(ctrl, CONTROL.FAILED) !== 0) return false;
      if (t0 === 0) t0 = performance.now();
      else if (performance.now() - t0 > FENCE_SPIN_MS) Atomics.wait(ctrl, H + CONTROL.DONE, d, 1);
    }
  }
  return true;
}

/**
 * Claims rows of every group of the job until none are left, each claim through its group's calls
 * in order and counted done; a group of a later phase once the earlier groups are done (pool-worker.ts
 * runClaims).
 */
function runClaims(ctrl: Int32Array, calls: readonly RowCall[], fns: readonly RowKernelFn[], slice: number, slices: number): void {
  const ng = ctrl[CONTROL.GROUPS]!;
  for (let g = 0, G = CONTROL.GROUP; g < ng; g++, G += CONTROL.GROUP_INTS) {
    const n = ctrl[G + CONTROL.N]!, rows = ctrl[G + CONTROL.ROWS]!;
    if (g > 0 && ctrl[G + CONTROL.PHASE] !== ctrl[G - CONTROL.GROUP_INTS + CONTROL.PHASE] && !groupsDone(ctrl, g)) return;
    for (let r0 = claimRows(ctrl, G); r0 >= 0; r0 = claimRows(ctrl, G)) {
      const r1 = claimEnd;
      for (let i = 0; i < n; i++) runRows(fns, calls[ctrl[G + CONTROL.CALL0 + i]!]!, r0, r1, slice, slices);
      if (Atomics.add(ctrl, G + CONTROL.DONE, r1 - r0) + r1 - r0 === rows) Atomics.notify(ctrl, G + CONTROL.DONE);
    }
  }
}

/** Split jobs so far and what they cost the thread that sent them. */
export interface PoolStats {
  /** Jobs split over the workers. */
  splits: number;
  /** Time in split jobs, from writing one to its last worker done (ms). */
  jobMs: number;
  /** Jobs whose workers this thread waited for once it found no rows left to claim, and that wait (ms). */
  waited: number;
  waitMs: number;
}

/** What a worker needs: the kernels module, compiled for a shared memory, and that memory. */
interface PoolInit {
  readonly module: WebAssembly.Module;
  readonly memory: WebAssembly.Memory;
}

/** Kernels attached as a table (attach): a module over a shared memory, and the exports calls name. */
interface Attached extends KernelTable {
  readonly module: WebAssembly.Module;
  readonly memory: WebAssembly.Memory;
  readonly names: readonly string[];
}

/** A worker, Node's or the browser's, as the pool uses it. */
interface PoolWorker {
  post(msg: unknown): void;
  terminate(): void;
  /** Node: whether the worker keeps the process alive (only while someone awaits it being up). */
  keepAlive(on: boolean): void;
}

type WorkerFactory = (onMessage: (msg: { type: string; message?: string }) => void) => PoolWorker;

/** Whether a SharedArrayBuffer-backed WebAssembly memory can be made here (a page needs COOP/COEP). */
function sharedMemoryWorks(): boolean {
  if (typeof SharedArrayBuffer !== "function" || typeof Atomics !== "object") return false;
  try {
    return new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true }).buffer instanceof SharedArrayBuffer;
  } catch {
    return false;
  }
}

/** Whether this thread may block in Atomics.wait (not a browser page's main thread). */
function threadMayWait(): boolean {
  try {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 1, 0); // "not-equal" at once, or TypeError
    return true;
  } catch {
    return false;
  }
}

interface NodeWorkerThreads {
  Worker: new (code: string, opts: { eval: true; name?: string }) => {
    postMessage(msg: unknown): void;
    terminate(): Promise<number>;
    unref(): void;
    ref(): void;
    on(ev: "message", f: (m: { type: string; message?: string }) => void): void;
    on(ev: "error", f: (e: Error) => void): void;
  };
}

/** Node's worker_threads without importing it (this module runs in browsers too), when this Node has process.getBuiltinModule (20.16+). */
function nodeWorkerThreads(): NodeWorkerThreads | null {
  const p = (globalThis as { process?: { versions?: { node?: string }; getBuiltinModule?: (id: string) => unknown } }).process;
  if (p?.versions?.node === undefined || typeof p.getBuiltinModule !== "function") return null;
  return (p.getBuiltinModule("node:worker_threads") as NodeWorkerThreads | undefined) ?? null;
}

/** How this runtime starts a pool worker, or why it cannot. */
function workerFactory(): WorkerFactory | string {
  const wt = nodeWorkerThreads();
  if (wt !== null) {
    return (onMessage) => {
      const w = new wt.Worker(POOL_WORKER_SOURCE, { eval: true, name: "kvbound-matmul" });
      w.on("message", onMessage);
      w.on("error", (e) => onMessage({ type: "failed", message: e.message }));
      w.unref(); // after the listeners (adding one refs the worker's port): a sleeping worker must not keep the process alive
      return { post: (m) => w.postMessage(m), terminate: () => void w.terminate(), keepAlive: (on) => (on ? w.ref() : w.unref()) };
    };
  }
  const g = globalThis as { Worker?: new (url: string, opts?: { name?: string }) => Worker; Blob?: typeof Blob; URL?: typeof URL };
  if (typeof g.Worker === "function" && typeof g.Blob === "function" && typeof g.URL?.createObjectURL === "function") {
    let url: string | null = null;
    return (onMessage) => {
      url ??= URL.createObjectURL(new Blob([POOL_WORKER_SOURCE], { type: "text/javascript" }));
      const w = new g.Worker!(url, { name: "kvbound-matmul" });
      w.onmessage = (e: MessageEvent<{ type: string; message?: string }>) => onMessage(e.data);
      w.onerror = (e: ErrorEvent) => {
        e.preventDefault();
        onMessage({ type: "failed", message: e.message });
      };
      return { post: (m) => w.postMessage(m), terminate: () => w.terminate(), keepAlive: () => undefined };
    };
  }
  return "no worker threads in this runtime (Node >= 20.16 or a Worker API is needed)";
}

/**
 * Why `threads` > 1 cannot run here, or null when it can: no SharedArrayBuffer (a page without
 * COOP/COEP headers), a thread that may not wait (a page's main thread), no worker API.
 */
export function threadsUnavailable(): string | null {
  if (!sharedMemoryWorks()) return "SharedArrayBuffer is unavailable (a page must be cross-origin isolated: COOP/COEP headers)";
  if (!threadMayWait()) return "this thread may not block in Atomics.wait (a page's main thread: run the model in a Web Worker)";
  const f = workerFactory();
  return typeof f === "string" ? f : null;
}

/**
 * The threads a model asks for by default: the cores this runtime reports, at most
 * MAX_DEFAULT_THREADS. Where threads cannot run, the model then runs one and says why (threadsNote).
 */
export function defaultThreads(): number {
  const g = globalThis as { navigator?: { hardwareConcurrency?: number }; process?: { getBuiltinModule?: (id: string) => unknown } };
  let cores = g.navigator?.hardwareConcurrency;
  if (cores === undefined && typeof g.process?.getBuiltinModule === "function") {
    const os = g.process.getBuiltinModule("node:os") as { availableParallelism?: () => number; cpus(): unknown[] } | undefined;
    cores = os?.availableParallelism?.() ?? os?.cpus().length;
  }
  return Math.max(1, Math.min(MAX_DEFAULT_THREADS, Math.floor(cores ?? 1)));
}

/** Stops a pool whose arena was collected without dispose() (its workers hold the memory). */
const orphans = typeof FinalizationRegistry === "function" ? new FinalizationRegistry<MatmulPool>((pool) => pool.dispose()) : null;

/**
 * `threads - 1` workers over `init.memory` plus the calling thread. Construct it only where
 * threadsUnavailable() is null. Holds no reference to its owner (see `watch`).
 */
export class MatmulPool implements RowCallPool {
  /** Threads a split uses once every worker is up (the caller included). */
  readonly threads: number;
  /** What split jobs cost this thread so far (tests: that the workers took part; bench/kernel-profile.ts). */
  readonly stats: PoolStats = { splits: 0, jobMs: 0, waited: 0, waitMs: 0 };
  private readonly control: Int32Array; // see CONTROL
  private readonly workers: PoolWorker[] = [];
  private readonly nWorkers: number;
  /** Indices of the workers that said ready, in the order they did. */
  private readonly ready: number[] = [];
  private started = false;
  private disposed = false;
  private failure: string | null = null;
  private readyWaiters: Array<() => void> = [];
  /** Tables of kernels attached to every worker (by table number, from 1). */
  private readonly attached = new Map<number, Attached>();
  private nextTable = 1;
  /** The number of the last job run (CONTROL.OPEN), 1 .. 2^31 - 2. */
  private job = 0;

  /** `minSplitWork`: what the owner splits at (MIN_SPLIT_WORK by default), for other users of the pool (the cache's attention). */
  constructor(private readonly init: PoolInit, threads: number, readonly minSplitWork = MIN_SPLIT_WORK) {
    this.threads = Math.max(1, Math.min(MAX_THREADS, Math.floor(threads)));
    this.nWorkers = this.threads - 1;
    this.control = new Int32Array(new SharedArrayBuffer((CONTROL.SLOTS + CONTROL.SLOT * this.nWorkers) * 4));
  }

  /** Stops the workers when `owner` is garbage-collected without dispose(). */
  watch(owner: object): void {
    orphans?.register(owner, this, this);
  }

  /** Why the pool runs fewer threads than asked (a worker failed to start), or null. */
  get note(): string | null {
    return this.failure;
  }

  /** Threads running splits now: 1 + the workers that are up. */
  get activeThreads(): number {
    this.pollReady();
    return 1 + this.ready.length;
  }

  /** Starts the workers (once; run() does it on the first big matmul). */
  start(): void {
    if (this.started || this.disposed) return;
    this.started = true;
    const factory = workerFactory();
    if (typeof factory === "string") {
      this.fail(factory);
      return;
    }
    const names = [...ROW_KERNELS];
    for (let i = 0; i < this.nWorkers; i++) {
      let w: PoolWorker;
      try {
        w = factory((m) => {
          if (m.type === "failed") this.fail(`a matmul worker failed: ${m.message ?? "unknown error"}`);
          this.wakeReadyWaiters();
        });
      } catch (e) {
        this.fail(`cannot start a matmul worker: ${(e as Error).message}`);
        return;
      }
      this.workers.push(w);
      const attached = [...this.attached.values()].map(({ table, module, memory, names }) => ({ table, module, memory, names }));
      w.post({ module: this.init.module, memory: this.init.memory, control: this.control.buffer, index: i, names, spinMs: WORKER_SPIN_MS, attached });
    }
  }

  /** Resolves once every worker is up (or failed, or the pool was disposed); starts them if needed. */
  whenReady(): Promise<void> {
    this.start();
    return new Promise((resolve) => {
      const check = (): void => {
        if (this.disposed || this.failure !== null || this.activeThreads === this.threads) {
          for (const w of this.workers) w.keepAlive(false);
          resolve();
        } else {
          // Their "ready" messages must be able to arrive: the process may not exit meanwhile.
          for (const w of this.workers) w.keepAlive(true);
          this.readyWaiters.push(check);
        }
      };
      check();
    });
  }

  /**
   * Instantiates `module` over `memory` (a SharedArrayBuffer's) on every worker, as a table of the
   * exports `names`, which run()'s calls then name by index: each worker takes it as mail before its
   * next job (at its start, if it has not started). The pool holds module and memory until detach().
   */
  attach(module: WebAssembly.Module, memory: WebAssembly.Memory, names: readonly string[]): KernelTable {
    const a: Attached = { table: this.nextTable++, module, memory, names };
    this.attached.set(a.table, a);
    this.mail({ type: "attach", table: a.table, module, memory, names });
    return a;
  }

  /** Lets the workers drop a table attach() made (and the memory it holds). */
  detach(t: KernelTable): void {
    if (!this.attached.delete(t.table)) return;
    this.mail({ type: "detach", table: t.table });
  }

  /** Posts `msg` to every worker started, and tells it through its slot (pool-worker.ts MAIL). */
  private mail(msg: object): void {
    if (this.disposed) return;
    const ctrl = this.control;
    for (let i = 0; i < this.workers.length; i++) {
      this.workers[i]!.post(msg);
      const s = CONTROL.SLOTS + i * CONTROL.SLOT;
      Atomics.add(ctrl, s + CONTROL.MAIL, 1);
      Atomics.add(ctrl, s + CONTROL.GEN, 1);
      Atomics.notify(ctrl, s + CONTROL.GEN);
    }
  }

  /**
   * Runs calls[0 .. n) with `fns` (this thread's instance's kernels: ROW_KERNELS, or those of the
   * table `table` attached) over this thread and the workers that are up (alone until they are):
   * calls of equal rows and block form a group, whose rows the threads claim from a shared counter
   * (claimRows) and run through each of the group's calls in order, until none are left. A worker
   * that wakes late finds fewer rows, or none, and this thread never waits for one that has not
   * started: it closes the job once it finds nothing left to claim, then waits only for the claims
   * still running. `work` (multiply-adds of the job) sizes the smallest claim (MIN_CLAIM_WORK).
   */
  run(calls: readonly RowCall[], n: number, fns: readonly RowKernelFn[], work: number, table?: KernelTable): void {
    if (!this.started) this.start();
    this.pollReady();
    const nw = this.ready.length;
    const claims = nw === 0 || this.disposed ? 0 : this.writeGroups(calls, n, work, nw + 1);
    const wake = Math.min(nw, claims - 1); // a worker for each claim past this thread's first
    if (wake <= 0) {
      for (let i = 0; i < n; i++) runRows(fns, calls[i]!, 0, calls[i]!.rows);
      return;
    }
    const start = performance.now();
    const ctrl = this.control;
    ctrl[CONTROL.TABLE] = table?.table ?? 0;
    ctrl[CONTROL.CALLS] = n;
    // A prelude's scratch is cut into one slice per thread: worker p's is p, this thread's nw.
    ctrl[CONTROL.SLICES] = nw + 1;
    for (let i = 0; i < n; i++) this.writeCall(i, calls[i]!);
    this.job = (this.job % 0x7ffffffe) + 1; // never 0: OPEN's "closed"
    Atomics.store(ctrl, CONTROL.OPEN, this.job);
    for (let p = 0; p < wake; p++) {
      const slot = CONTROL.SLOTS + this.ready[p]! * CONTROL.SLOT;
      ctrl[slot + CONTROL.SLICE] = p;
      Atomics.store(ctrl, slot + CONTROL.JOBS, this.job);
      Atomics.add(ctrl, slot + CONTROL.GEN, 1);
      Atomics.notify(ctrl, slot + CONTROL.GEN, 1);
    }
    let mineFailed: unknown = null;
    try {
      runClaims(ctrl, calls, fns, nw, nw + 1);
    } catch (e) {
      // A trap: still close and wait, so that no worker is left on this job when the next is
      // written; FAILED lets the workers waiting at a fence go.
      mineFailed = e;
      Atomics.store(ctrl, CONTROL.FAILED, -1);
    }
    Atomics.store(ctrl, CONTROL.OPEN, 0);
    const stats = this.stats;
    let left = Atomics.load(ctrl, CONTROL.ACTIVE);
    if (left !== 0) {
      const t0 = performance.now();
      while ((left = Atomics.load(ctrl, CONTROL.ACTIVE)) !== 0 && performance.now() - t0 < CALLER_SPIN_MS) {}
      for (; left !== 0; left = Atomics.load(ctrl, CONTROL.ACTIVE)) Atomics.wait(ctrl, CONTROL.ACTIVE, left);
      stats.waited++;
      stats.waitMs += performance.now() - t0;
    }
    stats.splits++;
    stats.jobMs += performance.now() - start;
    const failed = Atomics.load(ctrl, CONTROL.FAILED);
    if (failed !== 0) Atomics.store(ctrl, CONTROL.FAILED, 0);
    if (mineFailed !== null) throw mineFailed;
    if (failed > 0) {
      const fn = calls[0]!.fn;
      const first = table === undefined ? ROW_KERNELS[fn] : `${this.attached.get(table.table)?.names[fn] ?? `kernel ${fn}`} of table ${table.table}`;
      throw new Error(`matmul worker ${failed - 1} failed in a job of ${n} calls (${first} first)`);
    }
  }

  /**
   * Writes the job's row groups (calls of equal rows, block and phase: the fences before them; in
   * call order) for `threads` threads, their counters at 0; returns the most claims the job can take
   * (each group's rows over its smallest claim): the threads past that would find nothing to do.
   */
  private writeGroups(calls: readonly RowCall[], n: number, work: number, threads: number): number {
    const ctrl = this.control;
    let ng = 0, callRows = 0, phase = 0;
    for (let i = 0; i < n; phase += calls[i++]!.fence ? 1 : 0) {
      const c = calls[i]!;
      callRows += c.rows;
      let G = CONTROL.GROUP;
      for (let g = 0; g < ng; g++, G += CONTROL.GROUP_INTS) {
        if (ctrl[G + CONTROL.ROWS] === c.rows && ctrl[G + CONTROL.BLOCK] === c.block && ctrl[G + CONTROL.PHASE] === phase) break;
      }
      if (G === CONTROL.GROUP + ng * CONTROL.GROUP_INTS) {
        ng++;
        ctrl[G + CONTROL.NEXT] = 0;
        ctrl[G + CONTROL.DONE] = 0;
        ctrl[G + CONTROL.PHASE] = phase;
        ctrl[G + CONTROL.ROWS] = c.rows;
        ctrl[G + CONTROL.BLOCK] = c.block;
        ctrl[G + CONTROL.DIV] = threads;
        ctrl[G + CONTROL.N] = 0;
      }
      const k = ctrl[G + CONTROL.N]!;
      ctrl[G + CONTROL.CALL0 + k] = i;
      ctrl[G + CONTROL.N] = k + 1;
    }
    ctrl[CONTROL.GROUPS] = ng;
    // No bigger than each thread's share of a job of minSplitWork (all of them split: tests).
    const minClaimWork = Math.min(MIN_CLAIM_WORK, this.minSplitWork / threads);
    let claims = 0;
    for (let g = 0, G = CONTROL.GROUP; g < ng; g++, G += CONTROL.GROUP_INTS) {
      // A row of the group costs its calls' share of the job's work (equal per row of any call: a
      // job's matrices read the same input).
      const rowWork = callRows > 0 ? (work / callRows) * ctrl[G + CONTROL.N]! : 0;
      const block = ctrl[G + CONTROL.BLOCK]!, rows = ctrl[G + CONTROL.ROWS]!;
      const min = Math.max(1, Math.ceil(Math.min(rows, rowWork > 0 ? minClaimWork / rowWork : 1) / block)) * block;
      ctrl[G + CONTROL.MIN] = min;
      claims += Math.ceil(rows / min);
    }
    return claims;
  }

  /** Call i of the job = c, for the workers to read. */
  private writeCall(i: number, c: RowCall): void {
    const ctrl = this.control;
    const b = CONTROL.JOB + i * CONTROL.CALL;
    ctrl[b + CONTROL.FN] = c.fn;
    ctrl[b + CONTROL.TOKENS] = c.tokens;
    ctrl[b + CONTROL.ROWS_AT] = c.rowsAt;
    ctrl[b + CONTROL.PRE_FN] = c.preFn;
    ctrl[b + CONTROL.PRE_COUNT_AT] = c.preCountAt;
    ctrl[b + CONTROL.PRE_COUNT_PER_ROW] = c.preCountPerRow;
    ctrl[b + CONTROL.SCRATCH] = c.scratch;
    ctrl[b + CONTROL.SCRATCH_ROWS] = c.scratchRows;
    ctrl[b + CONTROL.SCRATCH_ROW_BYTES] = c.scratchRowBytes;
    for (let j = 0; j < MAX_ROW_ARGS; j++) {
      const used = j < c.nArgs, preUsed = j < c.preNArgs;
      ctrl[b + CONTROL.ARGS + j] = used ? c.args[j]! : 0;
      ctrl[b + CONTROL.PER_ROW + j] = used ? c.perRow[j]! : 0;
      ctrl[b + CONTROL.PER_TOKEN + j] = used ? c.perToken[j]! : 0;
      ctrl[b + CONTROL.PRE_ARGS + j] = preUsed ? c.preArgs[j]! : 0;
      ctrl[b + CONTROL.PRE_PER_ROW + j] = preUsed ? c.prePerRow[j]! : 0;
    }
  }

  private pollReady(): void {
    if (this.ready.length === this.nWorkers || !this.started) return;
    for (let i = 0; i < this.nWorkers; i++) {
      if (this.ready.includes(i)) continue;
      if (Atomics.load(this.control, CONTROL.SLOTS + i * CONTROL.SLOT + CONTROL.STATE) === CONTROL.READY) this.ready.push(i);
    }
  }

  private fail(why: string): void {
    this.failure ??= why;
    this.wakeReadyWaiters();
  }

  private wakeReadyWaiters(): void {
    const waiting = this.readyWaiters;
    this.readyWaiters = [];
    for (const f of waiting) f();
  }

  /** Tells every worker to leave its wait loop (the first half of dispose: no call into the worker API). */
  wakeToExit(): void {
    const ctrl = this.control;
    for (let i = 0; i < this.nWorkers; i++) {
      const s = CONTROL.SLOTS + i * CONTROL.SLOT;
      ctrl[s + CONTROL.EXIT] = 1;
      Atomics.add(ctrl, s + CONTROL.GEN, 1);
      Atomics.notify(ctrl, s + CONTROL.GEN);
    }
  }

  /** Stops the workers (idempotent); later matmuls run on the calling thread alone. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    orphans?.unregister(this);
    this.wakeToExit();
    for (const w of this.workers) w.terminate();
    this.workers.length = 0;
    this.ready.length = 0;
    this.wakeReadyWaiters();
  }
}
