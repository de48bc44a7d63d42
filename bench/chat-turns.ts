// An endless chat, measured through `kvbound chat` itself: N piped turns on stories260K with a
// sliding window, per turn the tokens the CLI reports reused and prefilled, the tokens the turn's
// message and template markup make (tokenized apart, as a check), the cache bytes and the heap.
// After the first turn, prefilled must equal the new message plus its markup (plus the previous
// reply's unfed last token), evictions or not, and the cache bytes in use must not grow.
//
//   node --expose-gc --import tsx bench/chat-turns.ts [--turns 50] [--window 64] [--sinks 4] [--max-tokens 16] [--template]
//   (without --expose-gc the heap column includes garbage not yet collected)

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";

import { chatCommand } from "../src/cli/commands/chat.js";
import { loadModel } from "../src/engine/load-model.js";
import { sharedPath } from "../test/helpers/shared.js";
import { STORIES_GGUF, writeChatModel } from "../test/helpers/chat-model.js";
import { machineInfo, machineLines } from "./lib/machine.js";
import { markdownTable } from "./lib/table.js";

const { values } = parseArgs({
  options: {
    turns: { type: "string", default: "50" },
    window: { type: "string", default: "64" },
    sinks: { type: "string", default: "4" },
    "max-tokens": { type: "string", default: "16" },
    template: { type: "boolean", default: false },
  },
});
const nTurns = Number(values.turns);
const MESSAGES = ["Tell me about the cat.", "Where did the dog go?", "Lily was happy.", "The sun is hot.", "Tom ran to the park."];

const dir = mkdtempSync(join(tmpdir(), "kvbound-chat-"));
try {
  const model = values.template ? await writeChatModel(join(dir, "stories-chat.gguf")) : sharedPath(STORIES_GGUF);
  const loaded = await loadModel(model);
  const t = loaded.tokenizer;
  const { bosId: bos, eosId: eos } = loaded.settings;
  // What a message adds after a reply, tokenized apart from the session's own code.
  const markup = (content: string): number =>
    loaded.settings.chatTemplate === undefined
      ? t.encode(`\n${content}`, { parseSpecial: false }).length
      : [eos, ...t.encode("\n"), bos, ...t.encode(`user\n${content}`, { parseSpecial: false }), eos, ...t.encode("\n"), bos, ...t.encode("assistant\n")].length;

  const lines = Array.from({ length: nTurns }, (_, i) => MESSAGES[i % MESSAGES.length]!);
  const heap: number[] = [];
  let err = "";
  const gc = (globalThis as { gc?: () => void }).gc;
  const heapUsed = (): number => {
    gc?.();
    return process.memoryUsage().heapUsed;
  };
  async function* feed() {
    for (const line of lines) {
      heap.push(heapUsed());
      yield line;
    }
    heap.push(heapUsed());
  }
  const flags = { model, temperature: "0", maxTokens: values["max-tokens"], slidingWindow: values.window, sinks: values.sinks };
  const code = await chatCommand(flags, { stdout: () => undefined, stderr: (s) => void (err += s) }, feed());
  if (code !== 0) throw new Error(`kvbound chat exited ${code}:\n${err}`);

  const turns = [...err.matchAll(/\[cache (\S+ \S+) of \S+ \S+, (\d+) tokens held, (\d+) evicted; reused (\d+), prefilled (\d+) tokens;.*finish (\w+)\]/g)].map((m) => ({
    cache: m[1]!,
    held: Number(m[2]),
    evicted: Number(m[3]),
    reused: Number(m[4]),
    prefilled: Number(m[5]),
    finish: m[6]!,
  }));
  if (turns.length !== nTurns) throw new Error(`expected ${nTurns} turn summaries, found ${turns.length}:\n${err}`);
  const rows: Array<Array<string | number>> = [];
  let firstEviction = -1;
  let mismatches = 0;
  turns.forEach((r, i) => {
    const expected = i === 0 ? null : (turns[i - 1]!.finish === "eos" ? 0 : 1) + markup(lines[i]!);
    if (firstEviction < 0 && r.evicted > 0) firstEviction = i + 1;
    if (expected !== null && expected !== r.prefilled) mismatches++;
    rows.push([i + 1, r.reused, r.prefilled, expected ?? "(whole prompt)", r.held, r.evicted, r.cache, (heap[i + 1]! / 2 ** 20).toFixed(1)]);
  });
  // Pages fill and empty as the window slides over page boundaries: compare the range early and late.
  const range = (from: number, to: number): string => {
    const kib = turns.slice(from - 1, to).map((r) => r.cache);
    const sorted = [...new Set(kib)].sort();
    return sorted.join(" / ");
  };
  const early = range(5, 10);
  const late = range(nTurns - 5, nTurns);
  console.log(`## An endless chat: ${nTurns} turns through \`kvbound chat\`\n`);
  console.log(
    machineLines(machineInfo(), [
      `model: ${values.template ? "stories260K with a <s>role\\n...</s> chat template" : "stories260K (no chat template: plain continuation)"}`,
      `chat flags: --sliding-window ${values.window} --sinks ${values.sinks} --temperature 0 --max-tokens ${values["max-tokens"]}`,
    ]),
  );
  console.log("");
  console.log(
    markdownTable(
      [
        { title: "turn", align: "right" },
        { title: "reused", align: "right" },
        { title: "prefilled", align: "right" },
        { title: "message + markup (+ unfed)", align: "right" },
        { title: "tokens held", align: "right" },
        { title: "evicted", align: "right" },
        { title: "cache", align: "right" },
        { title: gc ? "heap MiB (after GC)" : "heap MiB (no GC forced)", align: "right" },
      ],
      rows,
    ),
  );
  console.log(
    `\nfirst eviction at turn ${firstEviction}; turns whose prefill differs from message + markup: ${mismatches}; ` +
      `cache in use over turns 5-10: ${early}; over turns ${nTurns - 5}-${nTurns}: ${late} (${early === late ? "the same" : "DIFFERENT"}); ` +
      `the pool is reserved once`,
  );
  if (mismatches > 0 || early !== late) process.exitCode = 1;
} finally {
  rmSync(dir, { recursive: true, force: true });
}
