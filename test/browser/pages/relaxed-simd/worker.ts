// The worker of the relaxed-SIMD test page (main.ts): a page's main thread may not block in
// Atomics.wait, so a WasmArena of 2 threads (the caller and one pool worker) runs here, in a
// dedicated worker of the cross-origin isolated page. Each message runs matmul.ts's runQ4K once.

import { runQ4K, type Q4KRun } from "./matmul.js";

export interface WorkerRequest {
  readonly relaxedSimd: boolean;
  readonly threads: number;
}

export type WorkerReply = { readonly ok: true; readonly run: Q4KRun } | { readonly ok: false; readonly message: string };

const scope = globalThis as unknown as { onmessage: ((e: MessageEvent<WorkerRequest>) => void) | null; postMessage(m: WorkerReply): void };

scope.onmessage = (e) => {
  runQ4K(e.data).then(
    (run) => scope.postMessage({ ok: true, run }),
    (err: unknown) => scope.postMessage({ ok: false, message: err instanceof Error ? `${err.name}: ${err.message}` : String(err) }),
  );
};
