import { existsSync } from "node:fs";
import { defineConfig } from "vitest/config";

// WebGPU tests in Node run Dawn (the `webgpu` package) on SwiftShader, the Vulkan driver Debian's
// Chromium ships: Dawn needs the driver's ICD file and the Vulkan loader beside it, which the
// dynamic loader only finds through LD_LIBRARY_PATH set before the test process starts.
const CHROMIUM_LIB = "/usr/lib/chromium";
const swiftshader = `${CHROMIUM_LIB}/vk_swiftshader_icd.json`;
const gpuEnv: Record<string, string> = {};
if (!process.env.VK_ICD_FILENAMES && existsSync(swiftshader)) {
  gpuEnv.VK_ICD_FILENAMES = swiftshader;
  gpuEnv.LD_LIBRARY_PATH = [process.env.LD_LIBRARY_PATH, CHROMIUM_LIB].filter(Boolean).join(":");
}

export default defineConfig({
  test: {
    include: ["src/**/*.test.ts", "test/**/*.test.ts"],
    testTimeout: 60_000,
    pool: "forks",
    env: gpuEnv,
  },
});
