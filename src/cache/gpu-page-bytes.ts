// Bytes of the WebGPU backend's page stores, per codec: what src/model/webgpu/gpu-page-store.ts
// allocates and what the planner (src/plan/webgpu.ts) predicts. Here, beside the CPU codecs whose
// page bytes they equal, because the plan may import the cache but not the model.

import { resolveOpenPages } from "./codecs/int4.js";
import type { KvRole, PageShape } from "./codecs/types.js";

/** Page codecs the WebGPU kernels read and write. */
export type GpuCodec = "f32" | "f16" | "int8" | "int4";
export const GPU_CODECS: readonly GpuCodec[] = ["f32", "f16", "int8", "int4"];

/** int4 job slots per list (pre-write, post-write): a pass writes one page. */
export const INT4_MAX_JOBS = 4;

/** Bytes one page takes in a GPU store of `kind` (the same as the CPU codec's page). */
export function gpuPageBytes(kind: GpuCodec, shape: PageShape, role: KvRole = "k"): number {
  const values = shape.pageSize * shape.nHeadKv * shape.headDim;
  switch (kind) {
    case "f32":
      return values * 4;
    case "f16":
      return values * 2;
    case "int8":
      return values + shape.pageSize * shape.nHeadKv * 4;
    case "int4":
      // Nibbles, and f16 (min, scale) pairs: keys per (head, channel), values per (token, head).
      return values / 2 + 4 * shape.nHeadKv * (role === "k" ? shape.headDim : shape.pageSize);
  }
}

/**
 * Bytes of one GPU store (what the cache reports as reserved): its pages, and for int4 the
 * residual pool (openPages f32 pages) and a word per page saying which residual it is open in.
 */
export function gpuPageStoreBytes(shape: PageShape, kind: GpuCodec = "f32", role: KvRole = "k", openPages?: number): number {
  const pages = shape.nPages * gpuPageBytes(kind, shape, role);
  if (kind !== "int4") return pages;
  return pages + resolveOpenPages(shape.nPages, openPages) * shape.pageSize * shape.nHeadKv * shape.headDim * 4 + shape.nPages * 4;
}

