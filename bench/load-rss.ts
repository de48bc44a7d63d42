// Where a model load's memory goes, stage by stage, on the compiled library (the figure of the
// "weights held once" acceptance: `kvbound bench` RSS above the process's own <= 1.15 x file +
// planned cache + compute). Writes the SmolLM2-135M-shaped synthetic Q8_0 file with the benchmark
// vocabulary (as bench/model.ts does) unless --model is given, then runs bench/lib/load-rss-child.mjs
// under plain `node` on dist/ (run `npm run build` first) for:
//   - the stages: process.memoryUsage() before loadModel, after the header, after the weights, after
//     the tokenizer, after a 128 + 64-token generation (with --gc also after a full GC each);
//   - `kvbound bench --model M --context-window N` in-process, RSS just before it and its own figure.
//
//   npx tsx bench/load-rss.ts [--model PATH] [--context-window 256] [--runs 1] [--gc] [--dist DIR] [--node-flags="..."]
//                             [--threads N]  (kvbound bench's --threads; default its own default)
//
// --dist DIR measures another build's dist/ (e.g. `git archive HEAD` built elsewhere): the same
// script before and after a change, on the same machine state.

import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { planMemory } from "../src/plan/plan.js";
import { loadModelSpec } from "../src/spec/load.js";
import { SMOLLM2_135M, writeSyntheticModel } from "../test/fixtures/synthetic-model.js";
import { spmVocabMetadata, withExtraMetadata } from "./lib/synthetic-vocab.js";
import { markdownTable } from "./lib/table.js";

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    "context-window": { type: "string", default: "256" },
    runs: { type: "string", default: "1" },
    gc: { type: "boolean", default: false },
    dist: { type: "string" },
    "node-flags": { type: "string" },
    threads: { type: "string" },
  },
});
const CHILD = fileURLToPath(new URL("./lib/load-rss-child.mjs", import.meta.url));
const DIST = values.dist ?? fileURLToPath(new URL("../dist/", import.meta.url));
if (!existsSync(join(DIST, "engine/load-model.js"))) {
  throw new Error(`${DIST} has no build: run \`npm run build\` first (this measures the compiled library)`);
}
const ctx = values["context-window"]!;
const MiB = (b: number) => (b / 1048576).toFixed(1);

let tmp: string | null = null;
let path = values.model;
if (path === undefined) {
  tmp = mkdtempSync(join(tmpdir(), "kvbound-load-rss-"));
  path = join(tmp, "smollm2-135m-shape-q8_0.gguf");
  writeFileSync(path, await withExtraMetadata(writeSyntheticModel(SMOLLM2_135M, "Q8_0"), spmVocabMetadata(SMOLLM2_135M.nVocab)));
}

interface Reading {
  stage: string;
  rss: number;
  heapTotal: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  wasmBytes?: number;
  spaces: Record<string, number>;
}

// The child runs under the settings the `kvbound` command gives itself (its shebang: env assignments
// and node flags), so the figure is the command's; --node-flags="..." replaces the node flags.
const shebang = /^#!\/usr\/bin\/env -S (.*)$/m.exec(readFileSync(join(DIST, "cli/main.js"), "utf8").split("\n", 1)[0]!)?.[1]?.split(" ") ?? [];
const shebangEnv = Object.fromEntries(shebang.filter((w) => /^\w+=/.test(w)).map((w) => w.split("=", 2) as [string, string]));
const nodeFlags = values["node-flags"]?.split(" ").filter(Boolean) ?? shebang.slice(shebang.indexOf("node") + 1);
function child(args: string[]): string {
  const env = { ...process.env, ...shebangEnv, KVBOUND_LOAD_RSS_DIST: DIST };
  const r = spawnSync(process.execPath, ["--expose-gc", ...nodeFlags, CHILD, ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], env });
  if (r.status !== 0) throw new Error(`load-rss-child ${args.join(" ")} exited ${r.status}`);
  return r.stdout;
}

try {
  const fileBytes = statSync(path).size;
  const plan = planMemory(await loadModelSpec(path), { engine: "kvbound", contextWindowSize: Number(ctx) });
  const cacheBytes = plan.kv.totalBytes;
  const computeBytes = plan.compute?.bytes ?? 0;
  const target = 1.15 * fileBytes + cacheBytes + computeBytes;
  console.log(`build ${DIST}; child: ${Object.entries(shebangEnv).map(([k, v]) => `${k}=${v} `).join("")}node --expose-gc ${nodeFlags.join(" ")}`);
  console.log(`model ${path}: file ${MiB(fileBytes)} MiB; plan (context window ${ctx}): weights ${MiB(plan.weights?.bytes ?? 0)} MiB, cache ${MiB(cacheBytes)} MiB, compute ${MiB(computeBytes)} MiB`);
  console.log(`target: RSS above the baseline <= 1.15 x file + cache + compute = ${MiB(target)} MiB\n`);
  for (const gc of values.gc ? [false, true] : [false]) {
    const rows = child(["stages", path, "--context-window", ctx, ...(gc ? ["--gc"] : [])]).trim().split("\n").map((l) => JSON.parse(l) as Reading);
    const base = rows[0]!;
    console.log(gc ? "After a full GC at each stage (live data):\n" : "Stages (no forced GC), MiB; delta = RSS above `before load`:\n");
    console.log(markdownTable(
      [{ title: "stage" }, ...["rss", "delta", "heapTotal", "heapUsed", "new", "old", "large", "external", "arrayBuffers", "wasm"].map((title) => ({ title, align: "right" as const }))],
      rows.map((r) => [r.stage, MiB(r.rss), MiB(r.rss - base.rss), MiB(r.heapTotal), MiB(r.heapUsed), MiB(r.spaces.new ?? 0), MiB(r.spaces.old ?? 0), MiB((r.spaces.large_object ?? 0) + (r.spaces.new_large_object ?? 0)), MiB(r.external), MiB(r.arrayBuffers), r.wasmBytes === undefined ? "" : MiB(r.wasmBytes)]),
    ));
    console.log("");
  }
  const aboves: number[] = [];
  for (let i = 0; i < Number(values.runs); i++) {
    const b = JSON.parse(child(["bench", path, "--context-window", ctx, ...(values.threads === undefined ? [] : ["--threads", values.threads])])) as { baseline: Reading; after: Reading; bench: { rss: number; decodeTokensPerSecond: number; prefillTokensPerSecond: number } };
    const above = b.bench.rss - b.baseline.rss;
    aboves.push(above);
    console.log(
      `kvbound bench --context-window ${ctx}: RSS ${MiB(b.bench.rss)} MiB, ${MiB(b.baseline.rss)} MiB before loadModel: ${MiB(above)} MiB above ` +
        `(target ${MiB(target)} MiB: ${above <= target ? "met" : "NOT met"}, ${(above / (fileBytes + cacheBytes + computeBytes)).toFixed(3)}x file + cache + compute); ` +
        `prefill ${b.bench.prefillTokensPerSecond.toFixed(1)} tok/s, decode ${b.bench.decodeTokensPerSecond.toFixed(1)} tok/s`,
    );
    const d = (k: keyof Reading & string) => MiB((b.after[k] as number) - (b.baseline[k] as number));
    const ds = (k: string) => MiB((b.after.spaces[k] ?? 0) - (b.baseline.spaces[k] ?? 0));
    console.log(`  growth over the run: heapTotal +${d("heapTotal")} (new +${ds("new")}, old +${ds("old")}, large +${ds("large_object")}, code +${ds("code")}), heapUsed +${d("heapUsed")}, external +${d("external")} MiB`);
  }
  if (aboves.length > 1) {
    aboves.sort((a, b) => a - b);
    const met = aboves.filter((a) => a <= target).length;
    console.log(`\n${aboves.length} runs: RSS above the baseline min ${MiB(aboves[0]!)}, median ${MiB(aboves[aboves.length >> 1]!)}, max ${MiB(aboves[aboves.length - 1]!)} MiB; target ${MiB(target)} MiB met in ${met} of ${aboves.length}`);
  }
} finally {
  if (tmp !== null) rmSync(tmp, { recursive: true, force: true });
}
