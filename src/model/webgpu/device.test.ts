import { describe, expect, it } from "vitest";
import { WebGpuUnavailableError } from "../../errors.js";
import { gpuForTests, requestGpu } from "./device.js";

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
});
