// The worker of the relaxed-SIMD test page (main.ts): a page's main thread may not block in
// Atomics.wait, so a WasmArena of 2 threads (the caller and one pool worker) runs here, in a
// dedicated worker of the cross-origin isolated page. Each message runs matmul.ts's runQ4K once,
// or (with a url) test/helpers/attention-run.ts's runAttention over the model there.

import { runAttention, type AttentionRun } from "../../../helpers/attention-run.js";
import { runQ4K, type Q4KRun } from "./matmul.js";

export type WorkerRequest =
  | { readonly relaxedSimd: boolean; readonly threads: number }
  | { readonly url: string; readonly ids: readonly number[]; readonly prefill: number; readonly threads: number };

export type WorkerReply = { readonly ok: true; readonly run: Q4KRun | AttentionRun } | { readonly ok: false; readonly message: string };

const scope = globalThis as unknown as { onmessage: ((e: MessageEvent<WorkerRequest>) => void) | null; postMessage(m: WorkerReply): void };

async function handle(req: WorkerRequest): Promise<Q4KRun | AttentionRun> {
  if (!("url" in req)) return runQ4K(req);
  const res = await fetch(req.url);
  if (!res.ok) throw new Error(`fetch ${req.url}: HTTP ${res.status}`);
  return runAttention(new Uint8Array(await res.arrayBuffer()), req.ids, req.prefill, req.threads);
}

scope.onmessage = (e) => {
  handle(e.data).then(
    (run) => scope.postMessage({ ok: true, run }),
    (err: unknown) => scope.postMessage({ ok: false, message: err instanceof Error ? `${err.name}: ${err.message}` : String(err) }),
  );
};
