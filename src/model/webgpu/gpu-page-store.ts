// A page store whose pages live in a GPU buffer (f32, [nPages][pageSize][nHeadKv][headDim]): the
// cache keeps its page table, policy and stats on the CPU and asks this store only for what moves
// page contents (copy-on-write copies; truncation is free for f32). The WebGPU forward pass writes
// and attends the pages itself (kernels.ts kvWrite / attention); what would read pages back
// synchronously (the JS attention kernels, snapshots) is refused with a typed error.
/// <reference types="@webgpu/types" />

import { WebGpuUnsupportedError } from "../../errors.js";
import type { CodecKind, KvRole, PageShape, PageStore } from "../../cache/codecs/types.js";
import type { StoreFactory } from "../../cache/paged-kv-cache.js";
import type { GpuKernels } from "./kernels.js";

/** Bytes of one GPU f32 store (what the cache reports as reserved). */
export function gpuPageStoreBytes(shape: PageShape): number {
  return shape.nPages * shape.pageSize * shape.nHeadKv * shape.headDim * 4;
}

function refuse(what: string): never {
  throw new WebGpuUnsupportedError("reading cache pages on the CPU for", what, "the pages live on the GPU; use --backend cpu for snapshots and CPU attention");
}

export class GpuPageStore implements PageStore {
  readonly kind = "f32" as const;
  readonly reservedBytes: number;
  readonly buffer: GPUBuffer;
  private readonly pageBytes: number;
  /** One page: WebGPU copies never read and write the same buffer, so a page copy goes through it. */
  private readonly bounce: GPUBuffer;

  constructor(private readonly gpu: GpuKernels, readonly role: KvRole, readonly shape: PageShape) {
    this.reservedBytes = gpuPageStoreBytes(shape);
    this.pageBytes = shape.pageSize * shape.nHeadKv * shape.headDim * 4;
    if (this.reservedBytes > gpu.maxBindingBytes) {
      throw new WebGpuUnsupportedError("a page store of", `${this.reservedBytes} bytes`, `one layer's ${role.toUpperCase()} pages must fit the adapter's ${gpu.maxBindingBytes}-byte storage binding; lower the cache budget`);
    }
    this.buffer = gpu.storage(this.reservedBytes, `${role} pages`);
    this.bounce = gpu.storage(this.pageBytes, `${role} page copy`);
  }

  writeToken(): void {
    refuse("writeToken (the forward pass writes pages on the GPU)");
  }

  // f32 slots carry no state: a truncated slot is overwritten by the next write.
  truncatePage(): void {}

  copyPage(dstPage: number, srcPage: number): void {
    const enc = this.gpu.device.createCommandEncoder();
    enc.copyBufferToBuffer(this.buffer, srcPage * this.pageBytes, this.bounce, 0, this.pageBytes);
    enc.copyBufferToBuffer(this.bounce, 0, this.buffer, dstPage * this.pageBytes, this.pageBytes);
    this.gpu.device.queue.submit([enc.finish()]);
  }

  dotRun(): void {
    refuse("attention (dotRun)");
  }

  axpyRun(): void {
    refuse("attention (axpyRun)");
  }

  readToken(): void {
    refuse("readToken");
  }

  exportPage(): Uint8Array {
    return refuse("snapshots (exportPage)");
  }

  importPage(): void {
    refuse("snapshots (importPage)");
  }
}

/**
 * A StoreFactory for PagedKvCache that puts every page on the GPU; `stores` receives them in the
 * order the cache creates them (per layer: K, then V).
 */
export function gpuStoreFactory(gpu: GpuKernels, stores: GpuPageStore[]): StoreFactory {
  return (kind: CodecKind, role: KvRole, shape: PageShape) => {
    if (kind !== "f32") throw new WebGpuUnsupportedError("cache pages of codec", kind, "use codec f32 with the WebGPU backend (f16/int8/int4 pages are not on the GPU yet)");
    const s = new GpuPageStore(gpu, role, shape);
    stores.push(s);
    return s;
  };
}
