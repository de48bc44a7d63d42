// The relaxed-SIMD build of the matmul kernels (build.mjs kernelsRelaxed) is used only where the
// runtime's relaxed int8 dot is exact: Node 20's V8, even with --experimental-wasm-relaxed-simd,
// doubles it, so here the plain build runs. Chromium runs the relaxed build; the browser test
// test/browser/relaxed-simd.test.ts holds its bits equal to the plain build's there.

import { setFlagsFromString } from "node:v8";
import { describe, expect, it } from "vitest";
import { WasmArena, relaxedSimdAvailable } from "./wasm-kernels.js";

describe("relaxed-SIMD kernels in Node", () => {
  it("are used only where the relaxed dot is exact", () => {
    const major = Number(process.versions.node.split(".")[0]);
    if (major === 20) setFlagsFromString("--experimental-wasm-relaxed-simd"); // compiles, and computes 2x
    expect(relaxedSimdAvailable()).toBe(major >= 22);
    const arena = new WasmArena();
    arena.reserve(64);
    expect(arena.commit()).toBe(true);
    expect(arena.relaxedSimd).toBe(relaxedSimdAvailable());
  });
});
