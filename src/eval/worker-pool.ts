// Runs evaluation jobs in N forked worker processes (the machine's cores), longest first as the
// caller orders them; each worker loads the model and stream once. With workers = 1 the jobs run
// in this process instead (tests, debugging). A job's failure stops the pool and rejects with the
// job's typed error rebuilt (errors.ts errorFromJSON).

import { fork, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";

import { AbortError, errorFromJSON } from "../errors.js";
import type { FromWorker, ToWorker } from "./eval-worker.js";
import { loadEvalContext, runJob, type EvalInit, type EvalJob, type EvalJobResult } from "./jobs.js";

/** Most worker processes: each holds the model and stream; more than the cores only slows them. */
export const MAX_WORKERS = 64;

export interface PoolOptions {
  readonly workers: number;
  readonly onResult?: (r: EvalJobResult, done: number, total: number) => void;
  readonly signal?: AbortSignal;
}

/** The worker script beside this module: .ts under tsx (the fork inherits tsx's loader flags), .js when built. */
function workerPath(): string {
  const self = fileURLToPath(import.meta.url);
  return self.replace(/worker-pool\.(ts|js)$/, (_m, ext: string) => `eval-worker.${ext}`);
}

/** Results in job order. */
export async function runJobs(init: EvalInit, jobs: readonly EvalJob[], opts: PoolOptions): Promise<EvalJobResult[]> {
  const results = new Map<string, EvalJobResult>();
  const nWorkers = Math.max(1, Math.min(opts.workers, jobs.length, MAX_WORKERS));
  if (nWorkers === 1) {
    const ctx = await loadEvalContext(init);
    for (const job of jobs) {
      if (opts.signal?.aborted) throw new AbortError("evaluation aborted");
      const r = await runJob(ctx, job, opts.signal);
      results.set(job.key, r);
      opts.onResult?.(r, results.size, jobs.length);
    }
    return jobs.map((j) => results.get(j.key)!);
  }

  const children: ChildProcess[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      let next = 0;
      let failed = false;
      const fail = (err: unknown): void => {
        if (failed) return;
        failed = true;
        reject(err);
      };
      opts.signal?.addEventListener("abort", () => fail(new AbortError("evaluation aborted")), { once: true });
      const feed = (child: ChildProcess): void => {
        if (failed) return;
        if (next >= jobs.length) {
          child.disconnect();
          if (results.size === jobs.length) resolve();
          return;
        }
        const msg: ToWorker = { type: "job", job: jobs[next++]! };
        child.send(msg);
      };
      for (let w = 0; w < nWorkers; w++) {
        const child = fork(workerPath(), [], { serialization: "advanced", stdio: ["ignore", "inherit", "inherit", "ipc"] });
        children.push(child);
        child.on("message", (m: FromWorker) => {
          if (m.type === "ready") feed(child);
          else if (m.type === "result") {
            results.set(m.result.key, m.result);
            opts.onResult?.(m.result, results.size, jobs.length);
            if (results.size === jobs.length) resolve();
            else feed(child);
          } else fail(m.error.code === "INTERNAL" ? new Error(`${m.error.name}: ${m.error.message}`) : errorFromJSON(m.error));
        });
        child.on("exit", (code) => {
          if (code !== 0 && code !== null && results.size < jobs.length) fail(new Error(`evaluation worker exited with code ${code}`));
        });
        child.on("error", fail);
        const init0: ToWorker = { type: "init", init };
        child.send(init0);
      }
    });
  } finally {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill();
  }
  return jobs.map((j) => results.get(j.key)!);
}

