// The page side of test/browser/webgpu-arch.test.ts (index.html beside it): a synthetic GGUF fetched from the test's
// server runs through the WebGPU forward pass on this page's navigator.gpu, teacher-forced one
// token at a time, and every position's logits go back to Node (base64 of the f32 bytes), where
// the CPU backend's logits of the same bytes and tokens are computed and compared.
/// <reference types="@webgpu/types" />

import { resolveCacheConfig } from "../../../../src/cache/config.js";
import { readGgufHeader } from "../../../../src/gguf/header.js";
import { transformerPlan } from "../../../../src/model/architectures.js";
import { requestGpu } from "../../../../src/model/webgpu/device.js";
import { WebGpuTransformer } from "../../../../src/model/webgpu/forward.js";

/** What one run sends back to Node (plain data: it crosses page.evaluate). */
export interface ArchRun {
  /** The adapter's vendor, architecture, device and description (SwiftShader's: "google swiftshader ..."). */
  readonly adapter: string;
  readonly nVocab: number;
  /** Cache groups of the GPU cache (gemma3: 2, its sliding layers apart from the global ones). */
  readonly groups: number;
  /** base64 of a Float32Array [positions][nVocab]: the logits after each teacher-forced token. */
  readonly logits: string;
  /** Milliseconds the forward passes took on the page (upload excluded). */
  readonly forwardMs: number;
}

/** The same settings as test/webgpu-arch.test.ts: a 512-token f32 cache, batches of up to 16. */
async function runArch(url: string, ids: readonly number[]): Promise<ArchRun> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`fetch ${url}: HTTP ${res.status}`);
  const bytes = new Uint8Array(await res.arrayBuffer());
  const header = await readGgufHeader(bytes);
  const data = bytes.subarray(header.dataOffset);
  const config = resolveCacheConfig({ contextWindowSize: 512, codec: "f32" });
  const ctx = await requestGpu();
  try {
    const gpu = new WebGpuTransformer(ctx, header, data, transformerPlan(header, data), { window: 512, maxBatchTokens: 16 });
    const gc = gpu.createCache(config);
    gc.cache.add(0);
    const nVocab = gpu.hp.nVocab;
    const out = new Float32Array(ids.length * nVocab); // [positions][nVocab]
    const t0 = performance.now();
    for (let p = 0; p < ids.length; p++) {
      gc.cache.reserveOrThrow(0, 1);
      await gpu.forward(ids[p]!, gc, 0, out.subarray(p * nVocab, (p + 1) * nVocab));
    }
    const forwardMs = performance.now() - t0;
    const info = ctx.adapter.info;
    const adapter = [info.vendor, info.architecture, info.device, info.description].filter((x) => x !== "").join(" ");
    return { adapter, nVocab, groups: gc.cache.groups.length, logits: toBase64(new Uint8Array(out.buffer)), forwardMs };
  } finally {
    ctx.device.destroy();
  }
}

function toBase64(u8: Uint8Array): string {
  let s = "";
  // In chunks: String.fromCharCode's arguments are bounded by the call stack.
  for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode(...u8.subarray(i, i + 0x8000));
  return btoa(s);
}

declare global {
  interface Window {
    kvboundArch?: { runArch: typeof runArch };
  }
}

window.kvboundArch = { runArch };
document.documentElement.dataset.ready = "true";
