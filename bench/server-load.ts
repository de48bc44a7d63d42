// Load on `kvbound serve --model`'s OpenAI-compatible API: an in-process server on 127.0.0.1 (port 0)
// and N concurrent streaming clients (the official `openai` package), each making R chat requests:
// five-turn conversations that share one system prompt, with 10% of the requests aborted mid-stream
// (the client stops reading and aborts). Bounded by --timeout-s; exits 1 when a check fails:
//   - every request completed (finish_reason stop/length, usage present) or was aborted by its client;
//   - the server counted the same: completed + aborted = all, nothing failed or rejected, no slot
//     busy, nothing queued; once the idle slots' conversations (kept for their next turn) are
//     released, the pool's pages used are back at the baseline (0), the cache's invariants intact;
//   - RSS (after a full GC) when round 5 and round R finished differ by less than --rss-tolerance-mib.
// Prints per-client time to first token (p50 / p95) and decode tokens/s, the command and the machine.
//
//   npm run bench:server -- [--clients 8] [--requests 20] [--abort-rate 0.1] [--max-tokens 48]
//     [--parallel N (default: clients)] [--context-window 1024] [--model PATH] [--timeout-s 300]

import { parseArgs } from "node:util";

import OpenAI from "openai";
import type { ChatCompletionCreateParamsStreaming, ChatCompletionMessageParam } from "openai/resources/chat/completions";

import { startApiServer } from "../src/cli/commands/serve.js";
import { loadModel } from "../src/engine/load-model.js";
import type { ServerHealth } from "../src/engine/server.js";
import { sharedPath } from "../test/helpers/shared.js";
import { machineInfo, machineLines } from "./lib/machine.js";
import { fmt, markdownTable } from "./lib/table.js";

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    clients: { type: "string", default: "8" },
    requests: { type: "string", default: "20" },
    "abort-rate": { type: "string", default: "0.1" },
    "max-tokens": { type: "string", default: "48" },
    parallel: { type: "string" },
    "context-window": { type: "string", default: "1024" },
    "timeout-s": { type: "string", default: "300" },
    "rss-tolerance-mib": { type: "string", default: "16" },
    seed: { type: "string", default: "1" },
  },
});
const CLIENTS = Number(values.clients);
const REQUESTS = Number(values.requests);
const ABORT_RATE = Number(values["abort-rate"]);
const MAX_TOKENS = Number(values["max-tokens"]);
const PARALLEL = values.parallel === undefined ? CLIENTS : Number(values.parallel);
const TIMEOUT_MS = Number(values["timeout-s"]) * 1000;
const RSS_TOLERANCE = Number(values["rss-tolerance-mib"]) * 1048576;
const RSS_ROUND = Math.min(5, REQUESTS);
const MODEL = values.model ?? sharedPath("models/stories260K.gguf");

const gc = (globalThis as { gc?: () => void }).gc;
const MiB = (b: number) => (b / 1048576).toFixed(1);

/** mulberry32: which requests abort and after how many tokens, reproducibly. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SYSTEM = "You are a storyteller. You tell short, happy stories about a cat named Tom and a dog named Max, who live in a small house by the park.";
const ASKS = ["Tell me about the cat.", "Where did the dog go?", "What did Lily find?", "The sun is hot.", "Tom ran to the park.", "Max was sad.", "They ate a cake."];

interface RequestResult {
  readonly outcome: "completed" | "aborted";
  readonly ttftMs: number | null;
  readonly tokens: number;
  readonly decodeMs: number;
  readonly cachedTokens: number;
  readonly promptTokens: number;
}

function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
}

const loaded = await loadModel(MODEL);
const started = await startApiServer({ loaded, port: 0, parallel: PARALLEL, maxQueue: Math.max(16, CLIENTS), cache: { contextWindowSize: Number(values["context-window"]) } });
const api = started.api;
const client = new OpenAI({ baseURL: `${started.url}v1`, apiKey: "none", maxRetries: 0, timeout: TIMEOUT_MS });
const health = async (): Promise<ServerHealth> => (await (await fetch(`${started.url}health`)).json()) as ServerHealth;
// One untimed request first: the first forward pass compiles the kernels (wasm, JIT).
await client.chat.completions.create({ model: "m", messages: [{ role: "user", content: "Warm up." }], max_tokens: 8 });
api.releaseIdle();
const baseline = (await health()).pages.used;
const warmup = (await health()).requests.completed;
// The deadline aborts the requests in flight (one controller each: a shared signal would collect a
// listener per request in the client).
const deadline = new AbortController();
const inFlight = new Set<AbortController>();
const timer = setTimeout(() => {
  deadline.abort();
  for (const c of inFlight) c.abort();
}, TIMEOUT_MS);

const failures: string[] = [];
let finishedRequests = 0;
let rssAtRound5 = -1;
let rssAtEnd = -1;
const roundDone = new Map<number, number>();
const rssSeries: string[] = [];

let heapAtRound5 = -1;
let heapAtEnd = -1;

/** RSS and V8 heap used after a full GC (with --expose-gc). */
function memNow(): { rss: number; heapUsed: number } {
  gc?.();
  const m = process.memoryUsage();
  return { rss: m.rss, heapUsed: m.heapUsed };
}

/** Counts a client's r-th request done; when every client has done round r, reads RSS if it is one we report. */
function markRound(r: number): void {
  finishedRequests++;
  const n = (roundDone.get(r) ?? 0) + 1;
  roundDone.set(r, n);
  if (n !== CLIENTS) return;
  // Every fifth round, to tell a plateau from growth in longer runs.
  if ((r + 1) % 5 !== 0 && r + 1 !== RSS_ROUND) return;
  const m = memNow();
  rssSeries.push(`${r + 1}: ${MiB(m.rss)}`);
  if (r + 1 === RSS_ROUND) {
    rssAtRound5 = m.rss;
    heapAtRound5 = m.heapUsed;
  }
}

async function runClient(c: number): Promise<RequestResult[]> {
  const random = rng(Number(values.seed) * 1000 + c);
  // Exactly round(rate x R) aborted requests per client, at random places, each after 1..8 tokens.
  const nAbort = Math.round(ABORT_RATE * REQUESTS);
  const abortAt = new Map<number, number>();
  while (abortAt.size < nAbort) abortAt.set(Math.floor(random() * REQUESTS), 1 + Math.floor(random() * 8));
  const results: RequestResult[] = [];
  let history: ChatCompletionMessageParam[] = [];
  for (let r = 0; r < REQUESTS; r++) {
    if (deadline.signal.aborted) break;
    // Five-turn conversations: a fresh one (the shared system prompt) every fifth request.
    if (r % 5 === 0) history = [{ role: "system", content: SYSTEM }];
    const messages: ChatCompletionMessageParam[] = [...history, { role: "user", content: `${ASKS[(c + r) % ASKS.length]} (${c}.${r})` }];
    const stopAfter = abortAt.get(r);
    const params: ChatCompletionCreateParamsStreaming = {
      model: "m",
      messages,
      max_tokens: MAX_TOKENS,
      temperature: 0.8,
      seed: c * 1000 + r,
      stream: true,
      stream_options: { include_usage: true },
    };
    const t0 = performance.now();
    let tFirst = -1;
    let tokens = 0;
    let text = "";
    let finish: string | null = null;
    let usage: { prompt_tokens: number; completion_tokens: number; cached: number } | null = null;
    let aborted = false;
    const ac = new AbortController();
    inFlight.add(ac);
    try {
      const stream = await client.chat.completions.create(params, { signal: ac.signal });
      for await (const chunk of stream) {
        const delta = chunk.choices[0]?.delta.content;
        if (delta) {
          if (tFirst < 0) tFirst = performance.now();
          tokens++;
          text += delta;
        }
        if (chunk.choices[0]?.finish_reason) finish = chunk.choices[0].finish_reason;
        if (chunk.usage) usage = { prompt_tokens: chunk.usage.prompt_tokens, completion_tokens: chunk.usage.completion_tokens, cached: chunk.usage.prompt_tokens_details?.cached_tokens ?? 0 };
        if (stopAfter !== undefined && tokens >= stopAfter) {
          aborted = true;
          stream.controller.abort();
          break;
        }
      }
    } catch (err) {
      if (!deadline.signal.aborted) failures.push(`client ${c} request ${r}: ${String(err)}`);
      break;
    } finally {
      inFlight.delete(ac);
    }
    const tEnd = performance.now();
    if (aborted) {
      results.push({ outcome: "aborted", ttftMs: tFirst < 0 ? null : tFirst - t0, tokens, decodeMs: 0, cachedTokens: 0, promptTokens: 0 });
    } else {
      if (finish !== "stop" && finish !== "length") failures.push(`client ${c} request ${r}: finish_reason ${finish}`);
      if (usage === null) failures.push(`client ${c} request ${r}: no usage chunk`);
      else if (usage.completion_tokens < tokens) failures.push(`client ${c} request ${r}: usage says ${usage.completion_tokens} tokens, ${tokens} deltas came`);
      results.push({
        outcome: "completed",
        ttftMs: tFirst < 0 ? null : tFirst - t0,
        tokens: usage?.completion_tokens ?? tokens,
        decodeMs: tFirst < 0 ? 0 : tEnd - tFirst,
        cachedTokens: usage?.cached ?? 0,
        promptTokens: usage?.prompt_tokens ?? 0,
      });
      history = [...messages, { role: "assistant", content: text }];
    }
    markRound(r);
  }
  return results;
}

const tStart = performance.now();
const perClient = await Promise.all(Array.from({ length: CLIENTS }, (_, c) => runClient(c)));
const wallS = (performance.now() - tStart) / 1000;
clearTimeout(timer);
if (deadline.signal.aborted) failures.push(`the run passed --timeout-s ${values["timeout-s"]} and was stopped`);
const memEnd = memNow();
rssAtEnd = memEnd.rss;
heapAtEnd = memEnd.heapUsed;

// The server's side, once every client is done.
await new Promise((r) => setTimeout(r, 50));
const end = await health();
const total = CLIENTS * REQUESTS;
const all = perClient.flat();
const completed = all.filter((r) => r.outcome === "completed").length;
const abortedN = all.filter((r) => r.outcome === "aborted").length;
if (all.length !== total) failures.push(`${all.length} of ${total} requests ran`);
if (end.requests.completed - warmup !== completed || end.requests.aborted !== abortedN) {
  failures.push(`the server counted ${end.requests.completed - warmup} completed / ${end.requests.aborted} aborted, the clients ${completed} / ${abortedN}`);
}
if (end.requests.failed !== 0 || end.requests.rejected !== 0) failures.push(`the server failed ${end.requests.failed} and rejected ${end.requests.rejected} requests`);
if (end.slots.busy !== 0 || end.queue.waiting !== 0) failures.push(`${end.slots.busy} slots busy and ${end.queue.waiting} requests queued after the run`);
const heldIdle = end.pages.used;
const released = api.releaseIdle();
const afterRelease = await health();
if (afterRelease.pages.used !== baseline) failures.push(`pages used ${afterRelease.pages.used} after releasing the idle conversations, baseline ${baseline}`);
try {
  api.cache.checkInvariants();
} catch (err) {
  failures.push(`cache invariants: ${String(err)}`);
}
if (rssAtRound5 < 0) failures.push(`round ${RSS_ROUND} never finished for every client`);
else if (Math.abs(rssAtEnd - rssAtRound5) > RSS_TOLERANCE) failures.push(`RSS moved ${MiB(rssAtEnd - rssAtRound5)} MiB between round ${RSS_ROUND} and ${REQUESTS} (tolerance ${values["rss-tolerance-mib"]} MiB)`);
await started.close();

const rows = perClient.map((rs, c) => {
  const ttft = rs.filter((r) => r.ttftMs !== null && r.outcome === "completed").map((r) => r.ttftMs!);
  const done = rs.filter((r) => r.outcome === "completed");
  let tok = 0;
  let ms = 0;
  for (const r of done) {
    // The first token is in the TTFT; the rate is over the tokens after it.
    tok += Math.max(0, r.tokens - 1);
    ms += r.decodeMs;
  }
  return [String(c), rs.length, done.length, rs.length - done.length, fmt(quantile(ttft, 0.5)), fmt(quantile(ttft, 0.95)), fmt(ms > 0 ? (tok * 1000) / ms : NaN)];
});
const allTtft = all.filter((r) => r.ttftMs !== null && r.outcome === "completed").map((r) => r.ttftMs!);
let allTokens = 0;
let cached = 0;
let prompt = 0;
for (const r of all) {
  allTokens += r.tokens;
  cached += r.cachedTokens;
  prompt += r.promptTokens;
}
rows.push(["all", all.length, completed, abortedN, fmt(quantile(allTtft, 0.5)), fmt(quantile(allTtft, 0.95)), `${fmt(allTokens / wallS)} (server total)`]);

const m = machineInfo();
console.log(`# server load: ${CLIENTS} streaming clients x ${REQUESTS} requests, ${PARALLEL} slots, ${Math.round(ABORT_RATE * 100)}% aborted mid-stream\n`);
console.log(
  machineLines(m, [
    `npm script: \`npm run bench:server\``,
    `model: ${MODEL}; context window ${values["context-window"]}, max_tokens ${MAX_TOKENS}, temperature 0.8; five-turn conversations sharing one system prompt`,
    `wall ${wallS.toFixed(2)} s; prompt tokens ${prompt}, of them cached ${cached} (${((100 * cached) / Math.max(1, prompt)).toFixed(0)}%)`,
  ]),
);
console.log("");
console.log(
  markdownTable(
    [
      { title: "client" },
      { title: "requests", align: "right" },
      { title: "completed", align: "right" },
      { title: "aborted", align: "right" },
      { title: "TTFT p50 ms", align: "right" },
      { title: "TTFT p95 ms", align: "right" },
      { title: "decode tok/s", align: "right" },
    ],
    rows,
  ),
);
console.log("");
console.log(`pages: baseline ${baseline}, in use after the run ${heldIdle} (the ${released} idle conversations kept for their next turn), after releasing them ${afterRelease.pages.used} of ${afterRelease.pages.total}`);
console.log(`RSS after a full GC${gc ? "" : " (no --expose-gc: without GC)"}: round ${RSS_ROUND} ${MiB(rssAtRound5)} MiB, round ${REQUESTS} ${MiB(rssAtEnd)} MiB (${rssAtEnd >= rssAtRound5 ? "+" : ""}${MiB(rssAtEnd - rssAtRound5)} MiB); V8 heap used ${MiB(heapAtRound5)} -> ${MiB(heapAtEnd)} MiB`);
console.log(`RSS by round (MiB): ${rssSeries.join(", ")}`);
console.log(`server: ${end.requests.completed - warmup} completed (+ ${warmup} warm-up), ${end.requests.aborted} aborted, ${end.requests.failed} failed, ${end.requests.rejected} rejected`);
if (failures.length > 0) {
  console.log(`\nFAILED:\n${failures.map((f) => `- ${f}`).join("\n")}`);
  process.exitCode = 1;
} else console.log("\nall checks passed");
