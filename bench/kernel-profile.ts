// Where a forward pass's time goes on a synthetic model of a real shape (bench/model.ts's SmolLM2-135M
// or Qwen2.5-0.5B, at one thread): run under `node --cpu-prof` and read the profile's self time per
// function (wasm kernels show by export name), or read the wall times this prints.
// Run: npx tsx bench/kernel-profile.ts [--shape smollm2|qwen2.5] [--type Q8_0|Q4_K] [--prompt 64] [--decode 32]
//      node --cpu-prof --cpu-prof-dir=/tmp/prof --import tsx bench/kernel-profile.ts ...

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { QWEN25_05B, SMOLLM2_135M, writeSyntheticModel } from "../test/fixtures/synthetic-model.js";
import { kvboundRunner } from "./lib/kvbound-runner.js";

const argv = process.argv.slice(2);
const opt = (name: string, def: string): string => (argv.includes(name) ? argv[argv.indexOf(name) + 1]! : def);
const shape = opt("--shape", "smollm2") === "qwen2.5" ? QWEN25_05B : SMOLLM2_135M;
const type = opt("--type", "Q8_0");
const nPrompt = Number(opt("--prompt", "64"));
const nDecode = Number(opt("--decode", "32"));

const dir = mkdtempSync(join(tmpdir(), "kvbound-prof-"));
try {
  const path = join(dir, "model.gguf");
  writeFileSync(path, writeSyntheticModel(shape, type));
  const r = await kvboundRunner(path, { contextSize: 1024, model: { threads: 1 } });
  const prompt = Array.from({ length: nPrompt }, (_, i) => 1 + ((i * 7919) % (shape.nVocab - 1)));
  for (let rep = 0; rep < 3; rep++) {
    await r.reset();
    const c0 = process.cpuUsage();
    await r.prefill(prompt);
    const c1 = process.cpuUsage(c0);
    const c2 = process.cpuUsage();
    await r.decode(prompt[nPrompt - 1]!, nDecode);
    const c3 = process.cpuUsage(c2);
    const ms = (c: NodeJS.CpuUsage) => (c.user + c.system) / 1000;
    console.log(`${type} rep ${rep}: prefill ${((nPrompt / ms(c1)) * 1000).toFixed(1)} tok/cpu-s, decode ${((nDecode / ms(c3)) * 1000).toFixed(1)} tok/cpu-s`);
  }
  await r.dispose();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
