// Session over stories260K against the llama2.c golden outputs (../shared/golden/README.md):
// greedy ids, finish reasons, abort safety, prompt refusal and multi-turn prefix reuse.

import { readFileSync } from "node:fs";
import { beforeAll, describe, expect, it } from "vitest";
import { requireShared, sharedPath } from "../../test/helpers/shared.js";
import { ContextWindowSizeExceededError } from "../errors.js";
import { collect, type GenerateEvent } from "./generate.js";
import { loadModel, type LoadedModel } from "./load-model.js";
import { Session } from "./session.js";

const have = requireShared("models/stories260K.gguf") && requireShared("golden/stories260K-greedy.json");

interface Golden {
  promptIds: number[];
  greedyIds: number[];
}

describe.skipIf(!have)("Session on stories260K", () => {
  let loaded: LoadedModel;
  let golden: Golden;
  beforeAll(async () => {
    loaded = await loadModel(sharedPath("models/stories260K.gguf"));
    golden = JSON.parse(readFileSync(sharedPath("golden/stories260K-greedy.json"), "utf8")) as Golden;
  });

  it("greedy 'Once upon a time' gives the 256 golden ids (f32 pages, window 262)", async () => {
    const s = await Session.load(loaded, { contextWindowSize: 262, codec: "f32" });
    expect(s.encode("Once upon a time")).toEqual(golden.promptIds);
    const r = await collect(s.generate("Once upon a time", { maxTokens: 256, temperature: 0 }));
    expect(r.ids).toEqual(golden.greedyIds);
    expect(r.done.finishReason).toBe("length");
    expect(r.done.lengthCause).toBe("maxTokens");
    // The text streamed equals the tokenizer's decoding of the golden ids (after the prompt, so the
    // first token keeps its leading space).
    expect(loaded.tokenizer.decode(golden.promptIds) + r.text).toBe(loaded.tokenizer.decode([...golden.promptIds, ...golden.greedyIds]));
    // The last emitted token is not fed: prompt + 255 tokens held.
    expect(r.done.stats.tokensHeld).toBe(5 + 255);
    s.cache.checkInvariants();
  });

  it("f16 pages give the same first 50 greedy ids", async () => {
    const s = await Session.load(loaded, { contextWindowSize: 262, codec: "f16" });
    const r = await collect(s.generate(golden.promptIds, { maxTokens: 50, temperature: 0 }));
    expect(r.ids).toEqual(golden.greedyIds.slice(0, 50));
  });

  it("streams per-token stats and text that adds up to the done event's text", async () => {
    const s = await Session.load(loaded, { contextWindowSize: 64, codec: "f32" });
    let streamed = "";
    let last: GenerateEvent | undefined;
    for await (const ev of s.generate(golden.promptIds, { maxTokens: 20, temperature: 0 })) {
      if (ev.type === "token") {
        streamed += ev.text;
        // Each emitted token is fed right away, except the last one (maxTokens reached).
        expect(ev.stats.tokensHeld).toBe(5 + ev.index + (ev.index < 19 ? 1 : 0));
        expect(ev.stats.cacheBytes).toBeGreaterThan(0);
        expect(ev.stats.cacheBytes).toBeLessThanOrEqual(ev.stats.cacheBytesReserved);
      }
      last = ev;
    }
    expect(last?.type).toBe("done");
    if (last?.type !== "done") return;
    expect(streamed + last.remainder).toBe(last.text);
  });

  it("decoding into a full context window finishes with 'length' (contextWindow)", async () => {
    const s = await Session.load(loaded, { contextWindowSize: 32, codec: "f32" });
    const r = await collect(s.generate(golden.promptIds, { maxTokens: 1000, temperature: 0 }));
    expect(r.done.finishReason).toBe("length");
    expect(r.done.lengthCause).toBe("contextWindow");
    // 27 tokens fill the 32-slot window after the 5 prompt tokens; the 28th is sampled from the
    // last logits and emitted, but there is no slot to feed it.
    expect(r.ids).toEqual(golden.greedyIds.slice(0, 28));
    expect(s.cache.sequenceStats(0).tokens).toBe(32);
    s.cache.checkInvariants();
  });

  it("a prompt longer than the context window is refused before any compute", async () => {
    const s = await Session.load(loaded, { contextWindowSize: 16, codec: "f32" });
    const ids = [...golden.promptIds, ...golden.greedyIds.slice(0, 20)];
    const gen = s.generate(ids, { maxTokens: 5, temperature: 0 });
    await expect(gen.next()).rejects.toBeInstanceOf(ContextWindowSizeExceededError);
    expect(s.forwardCalls).toBe(0);
    expect(s.cache.sequenceStats(0).tokens).toBe(0);
    // Still usable.
    const r = await collect(s.generate(golden.promptIds, { maxTokens: 5, temperature: 0 }));
    expect(r.ids).toEqual(golden.greedyIds.slice(0, 5));
  });

  it("an abort mid-generation ends with 'abort', frees no page twice, and the next generate works", async () => {
    const s = await Session.load(loaded, { contextWindowSize: 300, pageSize: 4, codec: "f32" });
    const ac = new AbortController();
    const ids: number[] = [];
    let finish = "";
    for await (const ev of s.generate(golden.promptIds, { maxTokens: 200, temperature: 0, signal: ac.signal })) {
      if (ev.type === "token") {
        ids.push(ev.id);
        if (ids.length === 10) ac.abort();
      } else finish = ev.finishReason;
    }
    expect(finish).toBe("abort");
    expect(ids).toEqual(golden.greedyIds.slice(0, 10));
    s.cache.checkInvariants();
    // The same prompt again: only its last token is recomputed, the rest is reused.
    const before = s.forwardCalls;
    const r = await collect(s.generate(golden.promptIds, { maxTokens: 40, temperature: 0 }));
    expect(r.done.reusedTokens).toBe(4);
    expect(r.done.prefilledTokens).toBe(1);
    expect(s.forwardCalls - before).toBe(1 + 39);
    expect(r.ids).toEqual(golden.greedyIds.slice(0, 40));
    s.cache.checkInvariants();
  });

  it("an abort from a timer is observed while decoding an endless sliding window", async () => {
    const s = await Session.load(loaded, { slidingWindowSize: 64, attentionSinkSize: 4, codec: "f16" });
    const ac = new AbortController();
    let n = 0;
    let finish = "";
    // The abort comes from a macrotask: only a loop that yields to the event loop can see it.
    for await (const ev of s.generate(golden.promptIds, { maxTokens: Infinity, temperature: 0, signal: ac.signal })) {
      if (ev.type === "token") {
        n++;
        if (n === 150) setTimeout(() => ac.abort(), 0);
        if (n > 100_000) throw new Error("the abort was never observed");
      } else finish = ev.finishReason;
    }
    expect(finish).toBe("abort");
    expect(n).toBeGreaterThanOrEqual(150);
    s.cache.checkInvariants();
    expect(s.cache.sequenceStats(0).tokens).toBe(64);
    expect(s.cache.sequenceStats(0).evictedTokens).toBeGreaterThan(0);
    // Evictions broke the id mapping: the next call re-prefills from scratch and still works.
    const next = await collect(s.generate(golden.promptIds, { maxTokens: 30, temperature: 0 }));
    expect(next.done.reusedTokens).toBe(0);
    expect(next.done.prefilledTokens).toBe(5);
    s.cache.checkInvariants();
  });

  it("breaking out of the loop leaves the session usable; a newer generate supersedes an older one", async () => {
    const s = await Session.load(loaded, { contextWindowSize: 300, codec: "f32" });
    for await (const ev of s.generate(golden.promptIds, { maxTokens: 50, temperature: 0 })) {
      if (ev.type === "token" && ev.index === 3) break;
    }
    s.cache.checkInvariants();
    const older = s.generate(golden.promptIds, { maxTokens: 50, temperature: 0 });
    await older.next();
    const newer = await collect(s.generate(golden.promptIds, { maxTokens: 10, temperature: 0 }));
    expect(newer.ids).toEqual(golden.greedyIds.slice(0, 10));
    const rest = await older.next();
    expect(rest.value).toMatchObject({ type: "done", finishReason: "abort" });
  });

  it("a stop string ends the generation and is not emitted", async () => {
    const s = await Session.load(loaded, { contextWindowSize: 300, codec: "f32" });
    const promptText = loaded.tokenizer.decode(golden.promptIds);
    const full = loaded.tokenizer.decode([...golden.promptIds, ...golden.greedyIds]).slice(promptText.length);
    const at = full.indexOf("Lily");
    expect(at).toBeGreaterThan(0);
    let streamed = "";
    let text = "";
    let finish = "";
    for await (const ev of s.generate(golden.promptIds, { maxTokens: 256, temperature: 0, stop: ["Lily"] })) {
      if (ev.type === "token") streamed += ev.text;
      else {
        text = ev.text;
        finish = ev.finishReason;
      }
    }
    expect(finish).toBe("stop");
    expect(text).toBe(full.slice(0, at));
    expect(streamed).toBe(full.slice(0, at));
  });

  it("an end-of-generation id ends with 'eos' and is not emitted", async () => {
    const eog = golden.greedyIds[3]!;
    const custom: LoadedModel = { ...loaded, settings: { ...loaded.settings, eogIds: [eog] } };
    const s = await Session.load(custom, { contextWindowSize: 64, codec: "f32" });
    const r = await collect(s.generate(golden.promptIds, { maxTokens: 50, temperature: 0 }));
    expect(r.done.finishReason).toBe("eos");
    expect(r.ids).toEqual(golden.greedyIds.slice(0, 3));
  });

  it("multi-turn: the second turn prefills only the new tokens and gives a fresh prefill's logits", async () => {
    const s = await Session.load(loaded, { contextWindowSize: 256, codec: "f32" });
    const turn1 = await collect(s.generate(golden.promptIds, { maxTokens: 20, temperature: 0 }));
    // The cache holds the prompt and every emitted token but the last (never fed).
    expect(s.cachedIds).toEqual([...golden.promptIds, ...turn1.ids.slice(0, 19)]);
    const turn2 = [...golden.promptIds, ...turn1.ids, ...loaded.tokenizer.encode("Then they went home.")];
    const before = s.forwardCalls;
    const pre = await s.prefill(turn2);
    expect(pre.reused).toBe(5 + 19);
    expect(pre.prefilled).toBe(turn2.length - 24);
    expect(s.forwardCalls - before).toBe(turn2.length - 24);
    const reusedLogits = Float32Array.from(s.logits);

    const fresh = await Session.load(loaded, { contextWindowSize: 256, codec: "f32" });
    await fresh.prefill(turn2);
    expect(fresh.forwardCalls).toBe(turn2.length);
    let maxDiff = 0;
    let maxAbs = 0;
    for (let i = 0; i < reusedLogits.length; i++) {
      maxDiff = Math.max(maxDiff, Math.abs(reusedLogits[i]! - fresh.logits[i]!));
      maxAbs = Math.max(maxAbs, Math.abs(fresh.logits[i]!));
    }
    // Relative to the largest logit: the two prefills group queries into different attention blocks,
    // so f32 sums run in a different order (measured ~1e-6 relative).
    expect(maxDiff / maxAbs).toBeLessThan(1e-5);

    // A diverging prompt truncates back to the common prefix.
    const branch = [...golden.promptIds, ...loaded.tokenizer.encode("there was a dog.")];
    const b = await s.prefill(branch);
    expect(b.reused).toBe(5);
    expect(s.cachedIds).toEqual(branch);
    s.cache.checkInvariants();
  });

  it("chat without a template continues plain text and reuses the previous turns", async () => {
    const s = await Session.load(loaded, { contextWindowSize: 512, codec: "f32" });
    expect(loaded.settings.chatTemplate).toBeUndefined();
    const first = await collect(s.chat([{ role: "user", content: "Once upon a time" }], { maxTokens: 15, temperature: 0 }));
    expect(first.ids).toEqual(golden.greedyIds.slice(0, 15));
    const second = await collect(
      s.chat(
        [
          { role: "user", content: "Once upon a time" },
          { role: "assistant", content: first.text },
          { role: "user", content: "The end." },
        ],
        { maxTokens: 5, temperature: 0 },
      ),
    );
    expect(second.done.reusedTokens).toBeGreaterThanOrEqual(10);
    expect(second.done.prefilledTokens).toBeLessThan(second.done.promptTokens - 10);
  });
});
