// The measuring half of bench/load-rss.ts: plain JavaScript so it runs under `node` on the compiled
// library (dist/, `npm run build` first) with no TypeScript loader in the process.
//
//   node [--expose-gc] bench/lib/load-rss-child.mjs stages|bench MODEL [--context-window N] [--gc] [--threads N]
//
// stages: process.memoryUsage() before loadModel, after the header (the first progress callback,
//   which the loader makes once the header is parsed and the resident tensors are read), after the
//   weights, after the tokenizer (loadModel's own order: loadModelWeights, then createTokenizer and
//   tokenizerSettings), after a 128-token prompt + 64-token generation; one JSON line per stage.
// bench: `kvbound bench --model MODEL --context-window N --json` run in this process through the
//   CLI's own main(), with RSS taken just before it; prints {baseline, bench} as JSON.
// --gc (with --expose-gc): a full GC before each reading, to separate live data from V8's slack.

import { pathToFileURL } from "node:url";
import { getHeapSpaceStatistics, getHeapStatistics } from "node:v8";

// KVBOUND_LOAD_RSS_DIST: another build's dist/ (a before/after on the same machine state).
const dist = process.env.KVBOUND_LOAD_RSS_DIST ? pathToFileURL(`${process.env.KVBOUND_LOAD_RSS_DIST.replace(/\/$/, "")}/`) : new URL("../../dist/", import.meta.url);
const [mode, model, ...rest] = process.argv.slice(2);
const flag = (name, dflt) => {
  const i = rest.indexOf(name);
  return i >= 0 ? rest[i + 1] : dflt;
};
const contextWindow = Number(flag("--context-window", "256"));
const forceGc = rest.includes("--gc");
if (model === undefined || (mode !== "stages" && mode !== "bench")) {
  console.error("usage: node bench/lib/load-rss-child.mjs stages|bench MODEL [--context-window N] [--gc]");
  process.exit(2);
}
if (forceGc && typeof globalThis.gc !== "function") {
  console.error("--gc needs node --expose-gc");
  process.exit(2);
}

const { loadModelWeights } = await import(new URL("engine/load-model.js", dist).href);
const { createTokenizer, tokenizerSettings } = await import(new URL("model/tokenizer/index.js", dist).href);
const { Session } = await import(new URL("engine/session.js", dist).href);
const { collect } = await import(new URL("engine/generate.js", dist).href);
const { main } = await import(new URL("cli/main.js", dist).href);

function reading(stage, extra = {}) {
  if (forceGc) globalThis.gc();
  const m = process.memoryUsage();
  // V8's spaces: the young generation (new) grows its semi-spaces when much of what it holds survives.
  const spaces = {};
  for (const s of getHeapSpaceStatistics()) spaces[s.space_name.replace(/_space$/, "")] = s.space_size;
  const malloced = getHeapStatistics().malloced_memory;
  return { stage, rss: m.rss, heapTotal: m.heapTotal, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers, spaces, malloced, ...extra };
}

// Let startup's garbage go before the baseline, as a CLI's imports would have by the time it loads.
await new Promise((r) => setTimeout(r, 200));

if (mode === "bench") {
  const base = reading("baseline");
  let out = "";
  const threads = flag("--threads", undefined);
  const code = await main(["bench", "--model", model, "--context-window", String(contextWindow), "--json", ...(threads === undefined ? [] : ["--threads", threads])], {
    stdout: (t) => void (out += t),
    stderr: (t) => void process.stderr.write(t),
  });
  if (code !== 0) process.exit(code);
  const r = JSON.parse(out);
  console.log(JSON.stringify({ baseline: base, after: reading("after bench"), bench: { rss: r.rssBytes, decodeTokensPerSecond: r.decodeTokensPerSecond, prefillTokensPerSecond: r.prefillTokensPerSecond, kernels: r.kernels } }));
} else {
  const rows = [reading("before load")];
  let headerSeen = false;
  const loaded = await loadModelWeights(model, {
    nCtx: contextWindow,
    onProgress: () => {
      if (headerSeen) return;
      headerSeen = true;
      rows.push(reading("after header"));
    },
  });
  rows.push(reading("after weights", { wasmBytes: loaded.model.wasmBytes, residentBytes: loaded.weights.residentBytes }));
  const tokenizer = createTokenizer(loaded.header.metadata);
  const settings = tokenizerSettings(loaded.header.metadata);
  rows.push(reading("after tokenizer"));
  const session = new Session({ ...loaded, tokenizer, settings }, { contextWindowSize: contextWindow });
  const prompt = [];
  for (let i = 0; prompt.length < 128; i++) prompt.push(3 + ((i * 7919) % (loaded.model.hp.nVocab - 3)));
  const gen = await collect(session.generate(prompt, { maxTokens: 64, temperature: 0, ignoreEos: true }));
  rows.push(reading("after generation", { cacheBytesReserved: session.cache.stats().bytesReserved, tokens: gen.ids.length }));
  for (const r of rows) console.log(JSON.stringify(r));
}
