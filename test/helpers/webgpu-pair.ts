// The CPU backend and the WebGPU forward side by side on one model and one cache config, each with
// sequence 0 added: what the WebGPU tests compare logits and ids on.

import type { CacheConfig } from "../../src/cache/config.js";
import type { GgufHeader } from "../../src/gguf/header.js";
import { createModel, transformerPlan } from "../../src/model/architectures.js";
import { CacheKv, createModelCache } from "../../src/model/cache-kv.js";
import type { GpuContext } from "../../src/model/webgpu/device.js";
import { WebGpuTransformer } from "../../src/model/webgpu/forward.js";

export function cpuBesideGpu(
  ctx: GpuContext,
  header: GgufHeader,
  data: Uint8Array,
  config: CacheConfig,
  cpuOpts: Parameters<typeof createModel>[2],
  gpuOpts: ConstructorParameters<typeof WebGpuTransformer>[4],
) {
  const cpu = createModel(header, data, cpuOpts);
  const cache = createModelCache(cpu, config);
  cache.add(0);
  const kv = new CacheKv(cache, 0, cpu);
  const gpu = new WebGpuTransformer(ctx, header, data, transformerPlan(header, data), gpuOpts);
  const gc = gpu.createCache(config);
  gc.cache.add(0);
  return { cpu, cache, kv, gpu, gc };
}
