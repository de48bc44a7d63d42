// Where a forward pass's time goes on a synthetic model of a real shape (bench/model.ts's SmolLM2-135M
// or Qwen2.5-0.5B): run under `node --cpu-prof` and read the profile's self time per function (wasm
// kernels show by function index: map them through the module's export section), or read the times
// this prints. With several --threads counts (1,2), one model per count, interleaved within each
// repetition, and each prefill's CPU time split into the calling thread's (Linux: its schedstat) and
// the workers': on a loaded machine the caller's CPU time is the figure to compare, since it is what
// the prefill would take on an idle one if the workers kept pace (the caller waits on them, watching
// at most matmul-pool.ts CALLER_SPIN_MS before it sleeps), while wall time also counts the time other
// processes held the cores. With threads, it also splits the calling thread's prefill wall time into
// split jobs (its share, then its waits for the workers: MatmulPool.stats) and the work it runs alone
// between them; bench/threads-ceiling.ts gives the machine's own ceiling for the split part.
// Run: npx tsx bench/kernel-profile.ts [--shape smollm2|qwen2.5] [--type Q8_0|Q4_K] [--prompt 64] [--decode 32] [--threads 1[,2]] [--reps 3] [--ctx 1024]
//      node --cpu-prof --cpu-prof-dir=/tmp/prof --import tsx bench/kernel-profile.ts ...

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { QWEN25_05B, SMOLLM2_135M, writeSyntheticModel } from "../test/fixtures/synthetic-model.js";
import { kvboundRunner, type KvboundRunner } from "./lib/kvbound-runner.js";

const argv = process.argv.slice(2);
const opt = (name: string, def: string): string => (argv.includes(name) ? argv[argv.indexOf(name) + 1]! : def);
const shape = opt("--shape", "smollm2") === "qwen2.5" ? QWEN25_05B : SMOLLM2_135M;
const type = opt("--type", "Q8_0");
const nPrompt = Number(opt("--prompt", "64"));
const nDecode = Number(opt("--decode", "32"));
const threadCounts = opt("--threads", "1").split(",").map(Number);
const reps = Number(opt("--reps", "3"));
const ctx = Number(opt("--ctx", "1024")); // the cache's window (bench/model.ts: 4096)

/** This thread's CPU time in ms (Linux schedstat: ns on the CPU), or NaN elsewhere. */
function callerCpuMs(): number {
  try {
    return Number(readFileSync(`/proc/self/task/${process.pid}/schedstat`, "utf8").split(" ")[0]) / 1e6;
  } catch {
    return Number.NaN;
  }
}
const cpuMs = (c: NodeJS.CpuUsage) => (c.user + c.system) / 1000;
/** A copy of the runner's split-job counters (null on one thread). */
const statsOf = (r: KvboundRunner) => {
  const s = r.threadStats();
  return s === null ? null : { ...s };
};
const median = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1]!;

const dir = mkdtempSync(join(tmpdir(), "kvbound-prof-"));
try {
  const path = join(dir, "model.gguf");
  writeFileSync(path, writeSyntheticModel(shape, type));
  const runners: KvboundRunner[] = [];
  for (const t of threadCounts) runners.push(await kvboundRunner(path, { contextSize: ctx, model: { threads: t } }));
  const prompt = Array.from({ length: nPrompt }, (_, i) => 1 + ((i * 7919) % (shape.nVocab - 1)));
  const rows = threadCounts.map(() => ({ wall: [] as number[], cpu: [] as number[], caller: [] as number[], decodeCpu: [] as number[], decodeWall: [] as number[], jobs: [] as number[], waits: [] as number[], waitMs: [] as number[], alone: [] as number[] }));
  for (let rep = -1; rep < reps; rep++) {
    for (let j = 0; j < runners.length; j++) {
      const i = (rep & 1) === 0 ? j : runners.length - 1 - j;
      const r = runners[i]!;
      await r.reset();
      const s0 = statsOf(r), c0 = process.cpuUsage(), m0 = callerCpuMs(), w0 = performance.now();
      await r.prefill(prompt);
      const wall = performance.now() - w0, caller = callerCpuMs() - m0, cpu = cpuMs(process.cpuUsage(c0));
      const s1 = statsOf(r);
      const c2 = process.cpuUsage(), w2 = performance.now();
      if (nDecode > 0) await r.decode(prompt[nPrompt - 1]!, nDecode);
      const dcpu = cpuMs(process.cpuUsage(c2)), dwall = performance.now() - w2;
      if (rep < 0) continue; // warm-up
      rows[i]!.wall.push(wall);
      rows[i]!.cpu.push(cpu);
      rows[i]!.caller.push(caller);
      rows[i]!.decodeCpu.push(dcpu);
      rows[i]!.decodeWall.push(dwall);
      if (s0 !== null && s1 !== null) {
        rows[i]!.jobs.push(s1.jobMs - s0.jobMs);
        rows[i]!.alone.push(wall - (s1.jobMs - s0.jobMs));
        rows[i]!.waits.push(s1.waited - s0.waited);
        rows[i]!.waitMs.push(s1.waitMs - s0.waitMs);
      }
    }
  }
  const base = rows[0]!;
  for (let i = 0; i < threadCounts.length; i++) {
    const x = rows[i]!;
    const vs = i === 0 ? "" : `; vs ${threadCounts[0]} thread: wall ${(median(base.wall) / median(x.wall)).toFixed(2)}x, caller cpu ${(median(base.caller) / median(x.caller)).toFixed(2)}x`;
    console.log(
      `${type} ${threadCounts[i]} thread(s), prefill ${nPrompt} tokens, median of ${reps}: wall ${median(x.wall).toFixed(1)} ms, ` +
        `cpu ${median(x.cpu).toFixed(1)} ms (caller ${median(x.caller).toFixed(1)}, workers ${(median(x.cpu) - median(x.caller)).toFixed(1)})` +
        (nDecode > 0 ? `, decode ${((nDecode / median(x.decodeWall)) * 1000).toFixed(1)} tok/s (${((nDecode / median(x.decodeCpu)) * 1000).toFixed(1)} tok/cpu-s)` : "") + vs +
        (i > 0 && nDecode > 0 ? `, decode ${(median(base.decodeWall) / median(x.decodeWall)).toFixed(2)}x` : ""),
    );
    // Where a split prefill's wall time goes on the calling thread: in split jobs (its own share,
    // then waiting for the workers), or outside them, alone (norms, quantization, K/V writes, JS).
    if (x.jobs.length > 0) {
      console.log(
        `  prefill on the calling thread: ${median(x.jobs).toFixed(1)} ms in split jobs, of which ${median(x.waitMs).toFixed(1)} ms waiting for the workers ` +
          `(after ${median(x.waits)} jobs); ${median(x.alone).toFixed(1)} ms outside them, alone (medians of ${reps})`,
      );
    }
  }
  for (const r of runners) await r.dispose();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
