// Two checkouts of kvbound in one process, on the same synthetic model: this tree and `--base DIR`
// (a worktree of an earlier commit, e.g. `git worktree add /tmp/base HEAD~1`, with node_modules
// linked in), each at every --threads count. Their runs alternate within each repetition, so the
// host's speed changes (the bench VM switches between modes ~1.4x apart) fall on all of them; each
// row's ratio is the median over repetitions of the first row's time over its own.
// Run: npx tsx bench/ab-trees.ts --base /tmp/base [--shape smollm2|qwen2.5] [--type Q8_0|Q4_K]
//        [--prompt 512] [--decode 16] [--threads 1,2] [--reps 8] [--ctx 4096]

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { QWEN25_05B, SMOLLM2_135M, writeSyntheticModel } from "../test/fixtures/synthetic-model.js";
import { kvboundRunner } from "./lib/kvbound-runner.js";
import { machineInfo, machineLines } from "./lib/machine.js";
import type { EngineRunner } from "./lib/runner.js";
import { fmt, markdownTable } from "./lib/table.js";

const argv = process.argv.slice(2);
const opt = (name: string, def?: string): string => {
  const i = argv.indexOf(name);
  if (i >= 0) return argv[i + 1]!;
  if (def === undefined) throw new Error(`${name} is required`);
  return def;
};
const base = resolve(opt("--base"));
const shapeName = opt("--shape", "smollm2");
const shape = shapeName === "qwen2.5" ? QWEN25_05B : SMOLLM2_135M;
const type = opt("--type", "Q8_0");
const nPrompt = Number(opt("--prompt", "512"));
const nDecode = Number(opt("--decode", "16"));
const reps = Number(opt("--reps", "8"));
const ctx = Number(opt("--ctx", "4096"));
const threads = opt("--threads", "1,2").split(",").map(Number);

const { kvboundRunner: baseRunner } = (await import(join(base, "bench/lib/kvbound-runner.ts"))) as { kvboundRunner: typeof kvboundRunner };
const machine = machineInfo();
const dir = mkdtempSync(join(tmpdir(), "kvbound-ab-"));
try {
  const path = join(dir, "model.gguf");
  writeFileSync(path, writeSyntheticModel(shape, type));
  const rows: { name: string; r: EngineRunner; prefill: number[]; decode: number[] }[] = [];
  for (const t of threads) {
    rows.push({ name: `base, ${t} thread(s)`, r: await baseRunner(path, { contextSize: ctx, model: { threads: t } }), prefill: [], decode: [] });
    rows.push({ name: `this tree, ${t} thread(s)`, r: await kvboundRunner(path, { contextSize: ctx, model: { threads: t } }), prefill: [], decode: [] });
  }
  const prompt = Array.from({ length: nPrompt }, (_, i) => 1 + ((i * 7919) % (shape.nVocab - 1)));
  for (let rep = -1; rep < reps; rep++) {
    for (let j = 0; j < rows.length; j++) {
      const row = rows[(rep & 1) === 0 ? j : rows.length - 1 - j]!; // who goes first alternates
      await row.r.reset();
      const t0 = performance.now();
      await row.r.prefill(prompt);
      const t1 = performance.now();
      if (nDecode > 0) await row.r.decode(prompt[nPrompt - 1]!, nDecode);
      if (rep < 0) continue; // warm-up
      row.prefill.push(t1 - t0);
      row.decode.push(performance.now() - t1);
    }
  }
  const median = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1]!;
  const ratio = (first: number[], own: number[]) => median(own.map((v, k) => first[k]! / v));
  const first = rows[0]!;
  console.log(`## ${shapeName} ${type}: ${nPrompt}-token prefill, ${nDecode} decoded, this tree against ${base}\n`);
  console.log(markdownTable(
    [
      { title: "run" },
      { title: "prefill ms", align: "right" },
      { title: `prefill vs ${first.name}`, align: "right" },
      { title: "decode tok/s", align: "right" },
      { title: `decode vs ${first.name}`, align: "right" },
    ],
    rows.map((row) => [
      row.name,
      fmt(median(row.prefill), 4),
      fmt(ratio(first.prefill, row.prefill), 3),
      nDecode > 0 ? fmt((nDecode / median(row.decode)) * 1000, 3) : "",
      nDecode > 0 ? fmt(ratio(first.decode, row.decode), 3) : "",
    ]),
  ));
  console.log("");
  console.log(machineLines(machine, [`median of ${reps} repetitions, the runs alternated within each; cache window ${ctx}, f16 pages`]));
  for (const row of rows) await row.r.dispose();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
