// `kvbound plan | fit --gpu`: llama.cpp's per-device plan end to end through the CLI. The byte
// figures are held in src/plan/llama-cpp-offload.test.ts; here: flags, the JSON contract's
// `devices`, the table and the exported llama.cpp flags.

import { describe, expect, it } from "vitest";

import { runCli as run } from "../../../test/helpers/cli.js";

const GiB = 1024 ** 3;

async function json(...argv: string[]): Promise<Record<string, any>> {
  const r = await run(...argv, "--json");
  expect(r.err).toBe("");
  expect(r.code).toBe(0);
  return JSON.parse(r.out) as Record<string, any>;
}

describe("kvbound plan --gpu", () => {
  it("the JSON plan gains a devices array; every existing field stays", async () => {
    const p = await json("plan", "llama-3.1-8b", "--ctx", "32k", "--gpu", "8GiB");
    for (const key of ["model", "engine", "settings", "kv", "weights", "compute", "totalBytes", "extra", "notes"]) expect(p).toHaveProperty(key);
    expect(p.settings).toMatchObject({ ctx: 32768, ngl: 26, tensorSplit: null, kvOffload: true });
    expect(p.devices.map((d: any) => d.name)).toEqual(["GPU0", "CPU"]);
    const gpu = p.devices[0];
    for (const key of ["name", "weights", "kv", "compute", "total", "budget", "fits"]) expect(gpu).toHaveProperty(key);
    expect(gpu).toMatchObject({ kind: "gpu", budget: 8 * GiB, reserve: 1024 ** 3, fits: true, output: true });
    expect(gpu.total).toBe(gpu.weights + gpu.kv + gpu.compute);
    expect(p.devices[1]).toMatchObject({ kind: "cpu", budget: null, fits: null, input: true, layers: [0, 1, 2, 3, 4, 5, 6] });
  });

  it("the table shows each device and the verdict is per device", async () => {
    const r = await run("plan", "llama-3.1-8b", "--ctx", "32k", "--gpu", "8GiB", "--ram", "16GiB");
    expect(r.code).toBe(0);
    expect(r.out).toContain("devices: -ngl 26 of 33");
    expect(r.out).toMatch(/GPU0\s+7-31 \(25\) \+ output/);
    expect(r.out).toMatch(/CPU\s+0-6 \(7\) \+ embeddings/);
    expect(r.out).toContain("fits: -ngl 26: GPU0 6.80 GiB of 8.00 GiB (1.00 GiB kept free), CPU 2.10 GiB of 16.00 GiB");
  });

  it("--ngl too high for the GPU does not fit and says which device", async () => {
    const r = await run("plan", "llama-3.1-8b", "--ctx", "32k", "--gpu", "8GiB", "--ngl", "all");
    expect(r.out).toContain("does not fit: GPU0 needs");
  });

  it("--export llama.cpp prints -ngl and --tensor-split", async () => {
    const one = await run("plan", "llama-3.1-8b", "--ctx", "32k", "--gpu", "8GiB", "--export", "llama.cpp");
    expect(one.out.trim()).toBe("-c 32768 -np 1 -ub 512 -ctk f16 -ctv f16 -fa on -ngl 26");
    const two = await run("plan", "llama-3.1-8b", "--ctx", "32k", "--gpu", "4GiB,4GiB", "--export", "llama.cpp");
    expect(two.out.trim()).toBe("-c 32768 -np 1 -ub 512 -ctk f16 -ctv f16 -fa on -ngl 21 --tensor-split 11,10");
  });

  it("device flags without --gpu, or --gpu with another engine, are errors", async () => {
    const r = await run("plan", "llama-3.1-8b", "--ngl", "20");
    expect(r.code).toBe(1);
    expect(r.err).toContain("give the GPUs with --gpu");
    const v = await run("plan", "llama-3.1-8b", "--engine", "vllm", "--gpu", "8GiB");
    expect(v.code).toBe(1);
  });
});

describe("kvbound fit --gpu", () => {
  it("with --ctx: the -ngl per KV type, what stays in RAM, and the llama.cpp flags", async () => {
    const r = await run("fit", "llama-3.1-8b", "--gpu", "8GiB", "--ctx", "32k");
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/f16 K\+V\s+26\/33/);
    expect(r.out).toMatch(/q8_0 K\+V\s+33\/33/);
    expect(r.out).toContain("-c 32768 -np 1 -ub 512 -ctk f16 -ctv f16 -fa on -ngl 26");
    expect(r.out).toContain("in RAM: layers 0-6 (7 of 32), the token embeddings");
    const j = await json("fit", "llama-3.1-8b", "--gpu", "8GiB", "--ctx", "32k");
    expect(j.options[0]).toMatchObject({ label: "f16 K+V", nGpuLayers: 26, fits: true, flags: "-c 32768 -np 1 -ub 512 -ctk f16 -ctv f16 -fa on -ngl 26" });
  });

  it("without --ctx: the largest context at full offload; without --budget or --gpu it is a usage error", async () => {
    const j = await json("fit", "llama-3.1-8b", "--gpu", "8GiB");
    expect(j.options.find((o: any) => o.label === "f16 K+V").maxCtx).toBe(19968);
    expect((await run("fit", "llama-3.1-8b")).code).toBe(2);
  });
});
