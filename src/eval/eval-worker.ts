// Entry point of an evaluation worker process (forked by worker-pool.ts with the advanced
// serialization, so typed arrays and NaN cross intact): it loads the shared context once from the
// init message, then runs the jobs it is sent one at a time and answers each with its result or
// its error as {name, code, message, details} (errors.ts rebuilds the typed error in the parent).

import { KvboundError, type SerializedKvboundError } from "../errors.js";
import { loadEvalContext, runJob, type EvalContext, type EvalInit, type EvalJob } from "./jobs.js";

export type ToWorker = { readonly type: "init"; readonly init: EvalInit } | { readonly type: "job"; readonly job: EvalJob };
export type FromWorker =
  | { readonly type: "ready" }
  | { readonly type: "result"; readonly result: import("./jobs.js").EvalJobResult }
  | { readonly type: "error"; readonly key: string | null; readonly error: SerializedKvboundError };

function serializeError(err: unknown): SerializedKvboundError {
  if (err instanceof KvboundError) return { name: err.name, code: err.code, message: err.message, details: err.details };
  if (err instanceof Error) return { name: err.name, code: "INTERNAL", message: `${err.message}\n${err.stack ?? ""}`, details: {} };
  return { name: "Error", code: "INTERNAL", message: String(err), details: {} };
}

if (typeof process.send === "function") {
  const send = (m: FromWorker): void => void process.send!(m);
  let ctx: Promise<EvalContext> | null = null;
  process.on("message", (msg: ToWorker) => {
    if (msg.type === "init") {
      ctx = loadEvalContext(msg.init);
      ctx.then(
        () => send({ type: "ready" }),
        (err: unknown) => send({ type: "error", key: null, error: serializeError(err) }),
      );
      return;
    }
    const job = msg.job;
    if (ctx === null) {
      send({ type: "error", key: job.key, error: serializeError(new Error("job before init")) });
      return;
    }
    ctx
      .then((c) => runJob(c, job))
      .then(
        (result) => send({ type: "result", result }),
        (err: unknown) => send({ type: "error", key: job.key, error: serializeError(err) }),
      );
  });
  // The parent going away ends the worker.
  process.on("disconnect", () => process.exit(0));
}
