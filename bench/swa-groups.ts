// Interleaved sliding-window layers in their own cache group, measured: a Gemma-3-shaped synthetic
// model (5 local layers with a 1024-token window : 1 global layer) run to 32,768 tokens under a
// 32,768-token context window. Prints the planner's bytes (`kvbound plan <file> --engine kvbound
// --ctx 32768`) against the runtime's reserved bytes, and each group's bytes in use as the text
// grows: the local group stops at its window while the global one grows with the text.
//
//   npx tsx bench/swa-groups.ts [--tokens N] [--window W] [--json]

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { loadModel } from "../src/engine/load-model.js";
import { Session } from "../src/engine/session.js";
import { kvboundCacheInput } from "../src/plan/kvbound.js";
import { planMemory } from "../src/plan/plan.js";
import type { PlanSettings } from "../src/plan/types.js";
import { loadModelSpec } from "../src/spec/load.js";
import { buildArchModel, xorshift32 } from "../test/fixtures/arch-models.js";
import { machineInfo, machineLines } from "./lib/machine.js";
import { markdownTable } from "./lib/table.js";

const { values } = parseArgs({
  options: { tokens: { type: "string", default: "32768" }, window: { type: "string", default: "1024" }, json: { type: "boolean", default: false } },
});
const nTokens = Number(values.tokens);
const window = Number(values.window);

const dir = mkdtempSync(join(tmpdir(), "kvbound-swa-"));
try {
  const m = buildArchModel({ arch: "gemma3", weights: "Q8_0", slidingWindow: window, contextLength: nTokens, seed: 1 });
  const path = join(dir, "gemma3-shaped.gguf");
  writeFileSync(path, m.bytes);
  const spec = await loadModelSpec(path);
  const settings: PlanSettings = { ctx: nTokens, codec: "f16" };
  const plan = planMemory(spec, { ...settings, engine: "kvbound" });
  const loaded = await loadModel(m.bytes, { nCtx: nTokens });
  const session = new Session(loaded, kvboundCacheInput(spec, settings));
  const cache = session.cache;

  const next = xorshift32(7);
  const ids: number[] = [];
  for (let i = 0; i < nTokens; i++) ids.push(next() % m.nVocab);
  const rows: Array<Array<string | number>> = [];
  const samples: Array<{ tokens: number; groups: Array<{ kind: string; layers: number; tokens: number; bytesUsed: number }>; seconds: number }> = [];
  const t0 = performance.now();
  for (let held = Math.min(512, nTokens); ; held = Math.min(nTokens, held * 2)) {
    await session.prefill(ids.slice(0, held));
    const seconds = (performance.now() - t0) / 1000;
    const groups = cache.stats().groups.map((g) => ({ kind: g.kind, layers: g.layers.length, tokens: g.tokens, bytesUsed: g.bytesUsed }));
    samples.push({ tokens: held, groups, seconds });
    rows.push([held, ...groups.flatMap((g) => [g.tokens, (g.bytesUsed / 2 ** 20).toFixed(2)]), seconds.toFixed(1)]);
    if (held === nTokens) break;
  }
  const result = {
    model: `gemma3-shaped synthetic: ${m.nLayer} layers (${m.notes.join("; ")}), Q8_0`,
    planKvBytes: plan.kv.totalBytes,
    runtimeReservedBytes: cache.reservedBytes,
    equal: plan.kv.totalBytes === cache.reservedBytes,
    planCaches: plan.kv.caches.map((c) => ({ kind: c.kind, cells: c.cells, layers: c.layers, bytes: c.kBytes + c.vBytes })),
    samples,
  };
  if (values.json) {
    console.log(JSON.stringify(result));
  } else {
    console.log(`## Layer groups: a Gemma-3-shaped model to ${nTokens} tokens\n`);
    console.log(machineLines(machineInfo(), [`model: ${result.model}`]));
    console.log(
      `\nplan (kvbound plan ${"<file>"} --engine kvbound --ctx ${nTokens}): ${plan.kv.totalBytes} B; runtime reserved: ${cache.reservedBytes} B; ` +
        `${result.equal ? "equal" : "DIFFERENT"}\n`,
    );
    for (const c of result.planCaches) console.log(`- planned ${c.kind} group: ${c.layers} layers, ${c.cells} cells, ${c.bytes} B`);
    console.log("");
    const cols = [{ title: "tokens", align: "right" as const }];
    for (const g of samples[0]!.groups) cols.push({ title: `${g.kind} tokens`, align: "right" }, { title: `${g.kind} MiB used`, align: "right" });
    cols.push({ title: "seconds", align: "right" });
    console.log(markdownTable(cols, rows));
  }
  if (!result.equal) process.exitCode = 1;
} finally {
  rmSync(dir, { recursive: true, force: true });
}
