// The matmul pool: row splits of every row kernel give the bits one thread gives, several calls
// run as one job, a kernel that traps in a worker is an error and not a hang, dispose() stops the
// workers and the kernels go on alone, idle workers do not keep a process alive; and the module's
// shared memory import can be declared plain (embedded.ts unshareMemoryImport).

import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { compileEmbedded, unshareMemoryImport } from "../../wasm/embedded.js";
import { KERNELS_WASM_BASE64 } from "./kernels-wasm.js";
import { defaultThreads, MAX_DEFAULT_THREADS, ROW_BLOCK, threadsUnavailable, type MatmulPool } from "./matmul-pool.js";
import { f32ToF16Bits } from "../../cache/codecs/half.js";
import { packedRowBytes } from "../../wasm/model-layout.js";
import { ROW_KERNEL, ROW_KERNELS, RowCall, runRows, SCRATCH_ARG, type RowKernelFn } from "../../wasm/row-call.js";
import { WasmArena, wasmKernelsAvailable } from "./wasm-kernels.js";

const ROWS = 203, COLS = 512, NTOK = 6; // ragged rows: the last range is short
/** Rows the batch preludes' scratch holds: small, so every thread packs several chunks. */
const SCRATCH_ROWS = 40;

/** A row kernel that does nothing but sleep `ms` the first time it runs (Atomics.wait: Node's main thread may block). */
function sleeper(ms: number): RowKernelFn {
  let slept = false;
  return () => {
    if (!slept) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
    slept = true;
  };
}

function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s / 4294967296;
  };
}

interface Setup {
  readonly arena: WasmArena;
  /** Runs every row kernel once (a batch of four when `batch`) and returns all outputs. */
  run(batch: boolean): Float32Array;
}

/**
 * One arena with random weights for each row kernel, laid out alike for any thread count: q8
 * int8 + f32 scales (matvecQ8, matmulPacked over widened activations, matvecQ8g16 with offsets),
 * the same int8 with f16 scales (matvecQ8 widening them itself; matmulPacked after a packQ8
 * prelude into a scratch of SCRATCH_ROWS rows), Q4_K nibbles + scale/offset (one token at a time,
 * and a batch after a packQ4K prelude), the per-16 rows as a batch too (g16, Q2_K's offsets), f32.
 */
function setup(threads: number): Setup {
  const rand = rng(5);
  const arena = new WasmArena({ threads, minSplitWork: 0 });
  const n = ROWS * COLS;
  const wq = arena.reserve(n), wd = arena.reserve(n / 4), wc = arena.reserve(n / 4);
  const w4 = arena.reserve(n / 2), wa = arena.reserve(n / 8), wb = arena.reserve(n / 8);
  const wf = arena.reserve(n * 4);
  const x = arena.reserve(NTOK * COLS * 4), qx = arena.reserve(NTOK * COLS), dx = arena.reserve((NTOK * COLS) / 8);
  const sx = arena.reserve((NTOK * COLS) / 8), s16 = arena.reserve((NTOK * COLS) / 4);
  const x16 = arena.reserve(8 * COLS * 2), dT = arena.reserve((8 * COLS) / 8);
  const d16 = arena.reserve(n / 16), pk = arena.reserve(SCRATCH_ROWS * packedRowBytes(COLS));
  const OUTS = 10;
  const out = arena.reserve(OUTS * NTOK * ROWS * 4);
  expect(arena.commit()).toBe(true);
  const fill = (at: number, bytes: number, f: (i: number) => number, kind: "i8" | "u8" | "f32") => {
    const v = kind === "f32" ? arena.f32(at, bytes / 4) : kind === "i8" ? arena.i8(at, bytes) : arena.u8(at, bytes);
    for (let i = 0; i < v.length; i++) v[i] = f(i);
  };
  fill(wq, n, () => Math.floor(rand() * 256) - 128, "i8");
  fill(wd, n / 4, () => rand() * 0.01, "f32");
  fill(wc, n / 4, () => -rand() * 0.01, "f32");
  fill(w4, n / 2, () => Math.floor(rand() * 256), "u8");
  fill(wa, n / 8, () => rand() * 0.01, "f32");
  fill(wb, n / 8, () => -rand() * 0.01, "f32");
  fill(wf, n * 4, () => rand() * 2 - 1, "f32");
  const h = arena.u16(d16, n / 32);
  for (let i = 0; i < h.length; i++) h[i] = f32ToF16Bits(rand() * 0.01);
  fill(x, NTOK * COLS * 4, () => rand() * 2 - 1, "f32");
  const k = arena.k;
  k.quantizeQ8(x, NTOK * COLS, qx, dx);
  k.blockSumsQ8(qx, dx, NTOK * COLS, sx, false);
  k.blockSumsQ8(qx, dx, NTOK * COLS, s16, true);
  k.widenQ8(qx, dx, NTOK, COLS, x16, dT);
  const o = (i: number) => out + i * NTOK * ROWS * 4;
  const ob = ROWS * 4;
  const packedMatmul = (c: RowCall, to: number) =>
    arena.run(c.start(ROW_KERNEL.matmulPacked, ROWS).arg(to, 4).arg(ROWS).arg(SCRATCH_ARG).rowsArg().arg(COLS).arg(x16).arg(dT).arg(NTOK).arg(0).arg(0)
      .pre(ROW_KERNEL.packQ8, pk, SCRATCH_ROWS, packedRowBytes(COLS)).preArg(SCRATCH_ARG).preArg(wq, COLS).preArg(d16, COLS / 16).preArg(0).preCountArg(1).preArg(COLS).preArg(0), n * NTOK);
  return {
    arena,
    run(batch) {
      arena.f32(out, OUTS * NTOK * ROWS).fill(NaN);
      if (batch) arena.batch();
      let c = arena.nextCall();
      arena.run(c.start(ROW_KERNEL.matvecQ8, ROWS, NTOK).arg(o(0), 4, ob).arg(wq, COLS).arg(wd, COLS / 8).rowsArg().arg(COLS).arg(x16, 0, COLS * 2).arg(dx, 0, COLS / 8).arg(0), n * NTOK);
      c = arena.nextCall();
      packedMatmul(c, o(1)); // its prelude inside a batched job
      c = arena.nextCall();
      arena.run(c.start(ROW_KERNEL.matmulF32, ROWS).arg(o(2), 4).arg(ROWS).arg(wf, COLS * 4).rowsArg().arg(COLS).arg(x).arg(COLS).arg(NTOK), n * NTOK);
      // SwiGLU over the first two outputs, in the same job when batched: each thread must read the
      // rows it wrote itself (equal rows, equal ranges); another's rows could still be NaN.
      c = arena.nextCall();
      arena.run(c.start(ROW_KERNEL.swiglu, ROWS, NTOK).arg(o(0), 4, ob).arg(o(1), 4, ob).rowsArg(), 0);
      if (batch) arena.flush();
      c = arena.nextCall();
      arena.run(c.start(ROW_KERNEL.matvecQ4K, ROWS, NTOK).arg(o(3), 4, ob).arg(w4, COLS / 2).arg(wa, COLS / 8).arg(wb, COLS / 8).rowsArg().arg(COLS)
        .arg(x16, 0, COLS * 2).arg(qx, 0, COLS).arg(dx, 0, COLS / 8).arg(sx, 0, COLS / 8), n * NTOK);
      c = arena.nextCall();
      arena.run(c.start(ROW_KERNEL.matvecQ8g16, ROWS, NTOK).arg(o(4), 4, ob).arg(wq, COLS).arg(wd, COLS / 4).rowsArg().arg(COLS)
        .arg(x16, 0, COLS * 2).arg(dx, 0, COLS / 8).arg(wc, COLS / 4).arg(s16, 0, COLS / 4), n * NTOK);
      c = arena.nextCall();
      arena.run(c.start(ROW_KERNEL.matvecQ8, ROWS, NTOK).arg(o(6), 4, ob).arg(wq, COLS).arg(d16, COLS / 16).rowsArg().arg(COLS).arg(x16, 0, COLS * 2).arg(dx, 0, COLS / 8).arg(1), n * NTOK);
      c = arena.nextCall();
      packedMatmul(c, o(7));
      c = arena.nextCall();
      arena.run(c.start(ROW_KERNEL.matvecQ8g16, ROWS, NTOK).arg(o(5), 4, ob).arg(wq, COLS).arg(wd, COLS / 4).rowsArg().arg(COLS)
        .arg(x16, 0, COLS * 2).arg(dx, 0, COLS / 8).arg(0).arg(s16, 0, COLS / 4), n * NTOK);
      c = arena.nextCall();
      arena.run(c.start(ROW_KERNEL.matmulPacked, ROWS).arg(o(8), 4).arg(ROWS).arg(SCRATCH_ARG).rowsArg().arg(COLS).arg(x16).arg(dT).arg(NTOK).arg(sx).arg(0)
        .pre(ROW_KERNEL.packQ4K, pk, SCRATCH_ROWS, packedRowBytes(COLS)).preArg(SCRATCH_ARG).preArg(w4, COLS / 2).preArg(wa, COLS / 8).preArg(wb, COLS / 8).preCountArg(1).preArg(COLS), n * NTOK);
      c = arena.nextCall();
      arena.run(c.start(ROW_KERNEL.matmulPacked, ROWS).arg(o(9), 4).arg(ROWS).arg(SCRATCH_ARG).rowsArg().arg(COLS).arg(x16).arg(dT).arg(NTOK).arg(s16).arg(1)
        .pre(ROW_KERNEL.packQ8, pk, SCRATCH_ROWS, packedRowBytes(COLS)).preArg(SCRATCH_ARG).preArg(wq, COLS).preArg(wd, COLS / 4).preArg(wc, COLS / 4).preCountArg(1).preArg(COLS).preArg(1), n * NTOK);
      return arena.f32(out, OUTS * NTOK * ROWS).slice();
    },
  };
}

function expectSameBits(a: Float32Array, b: Float32Array): void {
  expect(a.length).toBe(b.length);
  const ua = new Uint32Array(a.buffer), ub = new Uint32Array(b.buffer);
  let differ = 0;
  for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) differ++;
  expect(differ).toBe(0);
}

const threadsHere = wasmKernelsAvailable() && threadsUnavailable() === null;

describe.skipIf(!threadsHere)("the matmul pool", () => {
  const one = setup(1);
  const want = one.run(false);

  it("one thread: no pool, a plain memory", () => {
    expect(one.arena.threads).toBe(1);
    expect(one.arena.shared).toBe(false);
    expect(one.arena.memory.buffer).toBeInstanceOf(ArrayBuffer);
    expect(want.some((v) => Number.isNaN(v))).toBe(false);
    // Every output was written (they start as NaN), the prelude's chunks included.
    expect(want.subarray(6 * NTOK * ROWS).some((v) => v === 0)).toBe(false);
    // The packed batch gives matvecQ8's bits, token by token, in a batched job or alone.
    const block = (i: number) => want.slice(i * NTOK * ROWS, (i + 1) * NTOK * ROWS);
    expectSameBits(block(7), block(6));
    expectSameBits(block(1), block(6));
    // The Q4_K batch (packQ4K, offsets added per block) is matvecQ4K's to float rounding, and the
    // per-16 batch (g16, Q2_K's offsets) matvecQ8g16's.
    for (const [batched, one] of [[8, 3], [9, 4]] as const) {
      const b = block(batched), o = block(one);
      let err = 0, scale = 0;
      for (let i = 0; i < b.length; i++) {
        err = Math.max(err, Math.abs(b[i]! - o[i]!));
        scale = Math.max(scale, Math.abs(o[i]!));
      }
      expect(err / scale, `output ${batched}`).toBeLessThan(1e-5);
    }
  });

  for (const threads of [2, 3, 5]) {
    it(`${threads} threads: every row kernel, alone and batched, gives one thread's bits`, async () => {
      const s = setup(threads);
      expect(s.arena.memory.buffer).toBeInstanceOf(SharedArrayBuffer);
      await s.arena.whenThreadsReady();
      expect(s.arena.threads).toBe(threads);
      expect(s.arena.threadsNote).toBeNull();
      for (let rep = 0; rep < 3; rep++) {
        expectSameBits(s.run(false), want);
        expectSameBits(s.run(true), want);
      }
      // 11 calls alone + (one job of 4 + 7 alone) batched, three times
      expect(s.arena.splits).toBe(3 * (11 + 8));
      s.arena.dispose();
      // Disposed: the same again on the calling thread alone.
      const before = s.arena.splits;
      expectSameBits(s.run(true), want);
      expect(s.arena.splits).toBe(before);
    });
  }

  it("a module over another shared memory, attached as a table (mail to idle workers), runs its rows on them; after detach they have dropped it", async () => {
    const a = new WasmArena({ threads: 2, minSplitWork: 0 });
    a.reserve(64);
    expect(a.commit()).toBe(true);
    await a.whenThreadsReady();
    const pool = a.rowCallPool!;
    // The kernels module again, over a memory of its own: as a cache's attention module is attached.
    const mod = compileEmbedded(KERNELS_WASM_BASE64, "shared")!;
    const memory = new WebAssembly.Memory({ initial: 2, maximum: 2, shared: true });
    const fns = [(new WebAssembly.Instance(mod, { env: { memory } }).exports as Record<string, RowKernelFn>).matmulF32!];
    const rows = 37, cols = 40, w = 64, x = w + rows * cols * 4, out = x + cols * 4;
    const f = new Float32Array(memory.buffer);
    const rand = rng(9);
    for (let i = 0; i < (out - w) / 4; i++) f[w / 4 + i] = rand() * 2 - 1;
    const c = new RowCall().start(0, rows, 1, 1).arg(out, 4).arg(rows).arg(w, cols * 4).rowsArg().arg(cols).arg(x).arg(cols).arg(1);
    runRows(fns, c, 0, rows);
    const want = f.slice(out / 4, out / 4 + rows);
    f.fill(0, out / 4, out / 4 + rows);
    const table = pool.attach(mod, memory, ["matmulF32"]);
    const before = { ...a.threadStats! };
    let ms = 0;
    for (let rep = 0; rep < 3; rep++) {
      const t0 = performance.now();
      pool.run([c], 1, fns, 1e9, table);
      ms += performance.now() - t0;
      // The stats count the job's whole time and no more; a wait is part of it.
      const s = a.threadStats!;
      expect(s.jobMs - before.jobMs).toBeGreaterThan(0);
      expect(s.jobMs - before.jobMs).toBeLessThanOrEqual(ms);
      expect(s.waitMs - before.waitMs).toBeLessThanOrEqual(s.jobMs - before.jobMs);
      expect(s.waited - before.waited).toBeLessThanOrEqual(rep + 1);
      expectSameBits(f.slice(out / 4, out / 4 + rows), want);
    }
    expect(a.splits - before.splits).toBe(3);
    // Detached: a job that names the table fails in the worker (typed, no hang); the pool goes on.
    // This thread's kernel only sleeps on its first claim, so the worker claims the other rows.
    pool.detach(table);
    expect(() => pool.run([c], 1, [sleeper(50)], 1e9, table)).toThrow(/matmul worker 0 failed in a job of 1 calls \(kernel 0 of table 1 first\)/);
    a.dispose();
  });

  it("a matmul with fewer row blocks than threads leaves the extra workers asleep", async () => {
    const a = new WasmArena({ threads: 4, minSplitWork: 0 });
    const rows = 2 * ROW_BLOCK, cols = 64;
    const wq = a.reserve(rows * cols), wd = a.reserve((rows * cols) / 8), x16 = a.reserve(cols * 2), dx = a.reserve(cols / 8), out = a.reserve(rows * 4);
    expect(a.commit()).toBe(true);
    a.i8(wq, rows * cols).fill(2);
    a.f32(wd, (rows * cols) / 32).fill(1);
    a.u16(x16, cols).fill(3); // the activations as matvecQ8 reads them: widened to int16 (widenQ8)
    a.f32(dx, cols / 32).fill(1);
    await a.whenThreadsReady();
    const c = a.nextCall();
    a.run(c.start(ROW_KERNEL.matvecQ8, rows).arg(out, 4).arg(wq, cols).arg(wd, cols / 8).rowsArg().arg(cols).arg(x16).arg(dx), 1e9);
    expect(Array.from(a.f32(out, rows))).toEqual(new Array(rows).fill(2 * 3 * cols));
    a.dispose();
  });

  it("a kernel that traps, in a worker or on the caller, throws instead of hanging; the pool goes on", async () => {
    const a = new WasmArena({ threads: 2, minSplitWork: 0 });
    const rows = 2 * ROW_BLOCK, cols = 32;
    const out = a.reserve(rows * 4), qx = a.reserve(cols), dx = a.reserve(cols / 8);
    expect(a.commit()).toBe(true);
    await a.whenThreadsReady();
    const end = a.memory.buffer.byteLength;
    // Every row reads past the end of the memory.
    const call = () => {
      const c = a.nextCall();
      return c.start(ROW_KERNEL.matvecQ8, rows).arg(out, 4).arg(end, cols).arg(end, cols / 8).rowsArg().arg(cols).arg(qx).arg(dx);
    };
    // The worker's claims trap; this thread's kernel only sleeps on its first claim, so the worker
    // claims the other rows.
    const fns = a.k as unknown as Record<string, RowKernelFn>;
    const caller = ROW_KERNELS.map((name) => (name === "matvecQ8" ? sleeper(50) : fns[name]!));
    expect(() => (a.rowCallPool as MatmulPool).run([call()], 1, caller, 1e9)).toThrow(/matmul worker 0 failed in a job of 1 calls \(matvecQ8 first\)/);
    // This thread's claims trap too (a trapping worker stops at its first claim, so this thread
    // always gets rows): its own error is thrown, after waiting for the worker.
    expect(() => a.run(call(), 1e9)).toThrow(WebAssembly.RuntimeError);
    // The next job runs normally.
    const c = a.nextCall();
    a.f32(dx, 1)[0] = 0;
    a.run(c.start(ROW_KERNEL.matvecQ8, rows).arg(out, 4).arg(0, cols).arg(0, cols / 8).rowsArg().arg(cols).arg(qx).arg(dx), 1e9);
    expect(a.splits).toBe(3);
    a.dispose();
  });

  it("a fenced job (RowCall.fence) whose rows before the fence fail, on a worker or on the caller, throws instead of hanging at the fence", async () => {
    const a = new WasmArena({ threads: 2, minSplitWork: 0 });
    const rows = 2 * ROW_BLOCK, cols = 32;
    const out = a.reserve(2 * rows * 4), qx = a.reserve(cols), dx = a.reserve(cols / 8), wq = a.reserve(rows * cols), wd = a.reserve((rows * cols) / 16);
    expect(a.commit()).toBe(true);
    await a.whenThreadsReady();
    const end = a.memory.buffer.byteLength;
    // A fenced call whose rows all read past the end of the memory, then one that reads in bounds.
    const job = (): RowCall[] => {
      const bad = new RowCall().start(ROW_KERNEL.matvecQ8, rows).arg(out, 4).arg(end, cols).arg(end, cols / 8).rowsArg().arg(cols).arg(qx).arg(dx).arg(1);
      bad.fence = true;
      const good = new RowCall().start(ROW_KERNEL.matvecQ8, rows).arg(out + rows * 4, 4).arg(wq, cols).arg(wd, cols / 16).rowsArg().arg(cols).arg(qx).arg(dx).arg(1);
      return [bad, good];
    };
    const fns = a.k as unknown as Record<string, RowKernelFn>;
    const pool = a.rowCallPool as MatmulPool;
    // The worker traps before the fence (this thread sleeps on its first claim), this thread waits there.
    const caller = ROW_KERNELS.map((name) => (name === "matvecQ8" ? sleeper(50) : fns[name]!));
    expect(() => pool.run(job(), 2, caller, 1e9)).toThrow(/matmul worker 0 failed in a job of 2 calls/);
    // The rows before the fence in bounds: the worker's claim of them is done and it waits at the
    // fence, while this thread's (after a sleep) throws; the worker lets go of the fence.
    const [, good] = job();
    const first = new RowCall().start(ROW_KERNEL.matvecQ8, rows).arg(out, 4).arg(wq, cols).arg(wd, cols / 16).rowsArg().arg(cols).arg(qx).arg(dx).arg(1);
    first.fence = true;
    const sleepThenThrow = sleeper(50);
    const throwing = ROW_KERNELS.map((name) => (name === "matvecQ8" ? (...args: number[]) => {
      sleepThenThrow(...args);
      throw new Error("the caller's claim failed");
    } : fns[name]!));
    expect(() => pool.run([first, good!], 2, throwing, 1e9)).toThrow(/the caller's claim failed/);
    // The pool goes on.
    pool.run([good!], 1, ROW_KERNELS.map((name) => fns[name]!), 1e9);
    a.dispose();
  });

  it("idle workers do not keep Node alive: a script that never disposes its pool exits at once", () => {
    const dir = mkdtempSync(join(tmpdir(), "kvbound-pool-"));
    try {
      const file = join(dir, "script.mts");
      const arena = fileURLToPath(new URL("./wasm-kernels.ts", import.meta.url));
      writeFileSync(file, `
        import { WasmArena } from ${JSON.stringify(arena)};
        const a = new WasmArena({ threads: 2 });
        a.reserve(1024);
        a.commit();
        await a.whenThreadsReady(); // workers up, then idle in Atomics.wait
        console.log("threads", a.threads);`);
      const t0 = performance.now();
      const out = execFileSync(process.execPath, ["--import", "tsx", file], { cwd: fileURLToPath(new URL("../../../", import.meta.url)), timeout: 20_000, encoding: "utf8" });
      expect(out.trim()).toBe("threads 2");
      // Workers that keep the event loop alive hold a process like this one for seconds (7 s once,
      // when the listeners re-referenced the workers after unref()); an exit takes well under 1 s.
      expect(performance.now() - t0).toBeLessThan(5000);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);

  it("defaultThreads: the cores, at most MAX_DEFAULT_THREADS", () => {
    const n = defaultThreads();
    expect(n).toBeGreaterThanOrEqual(1);
    expect(n).toBeLessThanOrEqual(MAX_DEFAULT_THREADS);
  });
});

describe.skipIf(!wasmKernelsAvailable())("the kernels module's memory import", () => {
  const bytes = Uint8Array.from(Buffer.from(KERNELS_WASM_BASE64, "base64"));

  it("is built shared: it takes a SharedArrayBuffer-backed memory", () => {
    const mod = compileEmbedded(KERNELS_WASM_BASE64, "shared")!;
    const memory = new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true });
    expect(() => new WebAssembly.Instance(mod, { env: { memory } })).not.toThrow();
    expect(() => new WebAssembly.Instance(mod, { env: { memory: new WebAssembly.Memory({ initial: 1 }) } })).toThrow();
  });

  it("unshared: the import declared plain and without a maximum, the code byte for byte the same", () => {
    const plain = unshareMemoryImport(bytes);
    expect(plain.length).toBeLessThan(bytes.length); // the maximum's LEB128 is gone
    const mod = new WebAssembly.Module(plain);
    expect(() => new WebAssembly.Instance(mod, { env: { memory: new WebAssembly.Memory({ initial: 1 }) } })).not.toThrow();
    // Only the import section differs: the code section (the last) is the same bytes.
    const tail = 3000;
    expect(Buffer.from(plain.subarray(plain.length - tail)).equals(Buffer.from(bytes.subarray(bytes.length - tail)))).toBe(true);
    // A module whose import is plain already comes back as it is.
    expect(unshareMemoryImport(plain)).toBe(plain);
  });
});
