// The jobs `kvbound eval` runs and the context they share (model, planner spec, token stream,
// passkey filler), loaded once per process: the parent when it runs jobs itself, else each worker.

import { readFile } from "node:fs/promises";

import type { Tokenizer } from "../model/tokenizer/index.js";
import type { CausalLM } from "../model/causal-lm.js";
import { loadModel } from "../engine/load-model.js";
import type { Backend } from "../model/async-forward.js";
import { encodeTextStream } from "../engine/text-stream.js";
import { loadModelSpec } from "../spec/load.js";
import type { ModelSpec } from "../spec/model-spec.js";
import { nameFreeFiller, runPasskey, type PasskeyOptions, type PasskeyResult, type PasskeySetting } from "./passkey.js";
import type { StreamConfig } from "./streams-matrix.js";
import { runStreamRow, type StreamRowResult } from "./streams-run.js";

/** What every process needs to know to rebuild the shared context. */
export interface EvalInit {
  readonly model: string;
  readonly text: string;
  /** Stream tokens (undefined: the whole text). */
  readonly maxTokens?: number;
  readonly skipDocs?: number;
  /** Documents of the text skipped before the passkey filler is taken (keeps it apart from the stream's start). */
  readonly fillerSkipDocs?: number;
  /** Where the forward pass runs (default cpu). */
  readonly backend?: Backend;
  /** The longest window the jobs use (a WebGPU model is built for it; unset: its default). */
  readonly nCtx?: number;
}

export type EvalJob =
  | { readonly kind: "stream"; readonly key: string; readonly row: StreamConfig }
  | { readonly kind: "passkey"; readonly key: string; readonly setting: PasskeySetting; readonly options: Omit<PasskeyOptions, "signal"> };

export type EvalJobResult =
  | { readonly kind: "stream"; readonly key: string; readonly result: StreamRowResult }
  | { readonly kind: "passkey"; readonly key: string; readonly result: PasskeyResult };

export interface EvalContext {
  readonly model: CausalLM;
  readonly tokenizer: Tokenizer;
  readonly spec: ModelSpec;
  /** The stream (BOS + tokens per document), cut at maxTokens. */
  readonly ids: number[];
  /** Encoded name-free filler for the passkey task (built on first use). */
  fillerIds(): number[];
}

/**
 * Loads the model, its planner spec and the token stream. One matmul thread: the evaluation's
 * parallelism is its worker processes, one per core (worker-pool.ts); threads inside each would
 * only oversubscribe the cores.
 */
export async function loadEvalContext(init: EvalInit): Promise<EvalContext> {
  const model = loadModel(init.model, {
    threads: 1,
    ...(init.backend !== undefined ? { backend: init.backend } : {}),
    ...(init.backend === "webgpu" && init.nCtx !== undefined ? { nCtx: init.nCtx } : {}),
  });
  const [loaded, spec, text] = await Promise.all([model, loadModelSpec(init.model), readFile(init.text, "utf8")]);
  const ids = encodeTextStream(loaded.tokenizer, text, {
    skipDocs: init.skipDocs ?? 0,
    ...(init.maxTokens !== undefined ? { maxTokens: init.maxTokens } : {}),
  });
  let filler: number[] | null = null;
  return {
    model: loaded.model,
    tokenizer: loaded.tokenizer,
    spec,
    ids,
    fillerIds: () => (filler ??= loaded.tokenizer.encode(nameFreeFiller(text, init.fillerSkipDocs ?? 0), { parseSpecial: false })),
  };
}

/** Runs one job in this process. */
export async function runJob(ctx: EvalContext, job: EvalJob, signal?: AbortSignal): Promise<EvalJobResult> {
  switch (job.kind) {
    case "stream":
      return { kind: "stream", key: job.key, result: await runStreamRow(ctx.model, ctx.spec, ctx.ids, job.row, signal) };
    case "passkey":
      return {
        kind: "passkey",
        key: job.key,
        result: await runPasskey(ctx.model, ctx.tokenizer, ctx.fillerIds(), job.setting, { ...job.options, ...(signal ? { signal } : {}) }),
      };
    default:
      return job satisfies never;
  }
}
