import { describe, expect, it } from "vitest";
import { WebGpuDeviceError, WebGpuUnavailableError } from "../../errors.js";
import { gpuForTests, requestGpu } from "./device.js";
import { GpuKernels } from "./kernels.js";

const ctx = await gpuForTests();

describe("WebGPU device", () => {
  it("a GPU object without adapters is a typed error naming the fix", async () => {
    const gpu = { requestAdapter: async () => null } as unknown as GPU;
    const err = await requestGpu({ gpu }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WebGpuUnavailableError);
    expect((err as Error).message).toMatch(/no WebGPU adapter/);
  });

  it.skipIf(ctx === null)("finds an adapter and a device (SwiftShader here)", () => {
    expect(ctx!.maxBindingBytes).toBeGreaterThanOrEqual(128 * 1024 * 1024);
    expect(ctx!.device.queue).toBeDefined();
  });

  it.skipIf(ctx === null)("a GPU validation error (a buffer over maxBufferSize) is a WebGpuDeviceError naming the allocation, thrown once by the next check or allocation", async () => {
    const gpu = new GpuKernels(ctx!);
    const tooBig = ctx!.device.limits.maxBufferSize + 4;
    // The error comes back asynchronously: the allocation itself returns (an invalid buffer).
    gpu.storage(tooBig, "too big");
    const err = await gpu.check().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WebGpuDeviceError);
    expect((err as WebGpuDeviceError).code).toBe("WEBGPU_DEVICE");
    expect((err as Error).message).toMatch(/^WebGPU validation error while allocating buffer "too big" of \d+ bytes: .*exceeds the max buffer size.*; .*use --backend cpu$/);
    await expect(gpu.check()).resolves.toBeUndefined(); // reported once
    // Once the scope has answered, the next allocation throws it.
    gpu.storage(tooBig, "too big again");
    await new Promise((r) => setTimeout(r, 100));
    await ctx!.device.queue.onSubmittedWorkDone();
    let thrown: unknown = null;
    for (let i = 0; i < 50 && thrown === null; i++) {
      try {
        gpu.storage(16, "small");
      } catch (e) {
        thrown = e;
      }
      if (thrown === null) await new Promise((r) => setTimeout(r, 20));
    }
    expect(thrown).toBeInstanceOf(WebGpuDeviceError);
    expect((thrown as Error).message).toMatch(/"too big again"/);
    // An error outside every scope (the device's uncapturederror event) is kept for the next check, not a crash.
    const stray = ctx!.device.createBuffer({ size: tooBig, usage: GPUBufferUsage.STORAGE, label: "stray" });
    await ctx!.device.queue.onSubmittedWorkDone();
    await new Promise((r) => setTimeout(r, 100));
    await expect(gpu.check()).rejects.toThrow(/validation error while running WebGPU work outside an error scope: .*stray/);
    stray.destroy();
    gpu.destroy();
  });
});
