// The WebGPU backend through the engine: loadModel({ backend: "webgpu" }), Session (prefill, decode,
// sampling, streaming; context and sliding windows on f32 pages) and `kvbound run --backend webgpu`,
// against the golden greedy ids and the CPU backend. SwiftShader here (vitest.config.ts sets the
// Vulkan env); without an adapter the GPU tests skip, and fail under CI.

import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { serveCommand } from "../src/cli/commands/serve.js";
import { collect } from "../src/engine/generate.js";
import { loadModel, type LoadedModel } from "../src/engine/load-model.js";
import { Session } from "../src/engine/session.js";
import { InvalidSettingError, WebGpuUnsupportedError } from "../src/errors.js";
import { asyncForwardOf } from "../src/model/async-forward.js";
import { gpuForTests } from "../src/model/webgpu/device.js";
import { withChatTemplate } from "./helpers/chat-model.js";
import { runCli } from "./helpers/cli.js";
import { requireShared, sharedPath } from "./helpers/shared.js";

const have = requireShared("models/stories260K.gguf") && requireShared("golden/stories260K-greedy.json");
const ctx = have ? await gpuForTests() : null;
const MODEL = "../shared/models/stories260K.gguf";
const REPO = fileURLToPath(new URL("..", import.meta.url));

describe("--backend on the engine commands", () => {
  it("a value that is neither cpu nor webgpu is a typed error naming it, before anything loads", async () => {
    const extra: Record<string, string[]> = { run: ["--prompt", "x"], chat: [], bench: [], serve: [], "eval streams": [], "eval passkey": [] };
    for (const [cmd, args] of Object.entries(extra)) {
      // A model that does not exist: the flag is refused before the model (or its header) is read.
      const bad = await runCli(...cmd.split(" "), "--model", "no-such-model.gguf", ...args, "--backend", "cuda");
      expect(bad.code, `${cmd}: ${bad.err}`).toBe(1);
      expect(bad.err).toMatch(/InvalidSettingError: --backend "cuda" is unknown; use one of cpu, webgpu/);
    }
  });

  it.skipIf(!have)("--backend webgpu with no adapter (a Vulkan driver that is not there) is WebGpuUnavailableError naming the fix", () => {
    // Its own process: the Vulkan env is read once, when Dawn starts. No driver file: no adapter on any machine.
    const r = spawnSync("node", ["--import", "tsx", "src/cli/main.ts", "run", "--model", MODEL, "--prompt", "x", "--max-tokens", "1", "--backend", "webgpu"], {
      cwd: REPO, encoding: "utf8", env: { ...process.env, VK_ICD_FILENAMES: "/nonexistent/vk_icd.json" }, timeout: 60_000,
    });
    expect(r.status, r.stderr).toBe(1);
    expect(r.stderr).toMatch(/error: WebGpuUnavailableError: WebGPU is unavailable: .*(VK_ICD_FILENAMES=|npm install webgpu).*--backend cpu/);
    expect(r.stdout).toBe("");
  }, 90_000);

  it("loadModel refuses an unknown backend with a typed error", async () => {
    await expect(loadModel(new Uint8Array(8), { backend: "tpu" as never })).rejects.toThrow(InvalidSettingError);
  });
});

describe.skipIf(!have || ctx === null)("stories260K on the WebGPU backend through the engine", () => {
  const golden = have ? (JSON.parse(readFileSync(sharedPath("golden/stories260K-greedy.json"), "utf8")) as { promptIds: number[]; greedyIds: number[] }) : null;
  let gpuLoaded: LoadedModel | null = null;
  let cpuLoaded: LoadedModel | null = null;
  const gpuModel = async () => (gpuLoaded ??= await loadModel(sharedPath("models/stories260K.gguf"), { backend: "webgpu", gpuContext: ctx!, nCtx: 512 }));
  const cpuModel = async () => (cpuLoaded ??= await loadModel(sharedPath("models/stories260K.gguf"), { threads: 1 }));

  it("kvbound run --backend webgpu at temperature 0 prints the text --backend cpu prints (f32 pages by default on WebGPU)", async () => {
    const args = ["run", "--model", MODEL, "--prompt", "Once upon a time", "--max-tokens", "64", "--temperature", "0", "--json"];
    const gpu = await runCli(...args, "--backend", "webgpu");
    expect(gpu.code, gpu.err).toBe(0);
    expect(gpu.err).toMatch(/\[backend: webgpu/);
    const cpu = await runCli(...args, "--backend", "cpu", "--codec", "f32");
    expect(cpu.code, cpu.err).toBe(0);
    const g = JSON.parse(gpu.out), c = JSON.parse(cpu.out);
    expect(g.stats.backend).toBe("webgpu");
    expect(g.stats.cache.codec).toBe("f32");
    expect(g.ids).toEqual(golden!.greedyIds.slice(0, 64));
    expect(g.ids).toEqual(c.ids);
    expect(g.text).toBe(c.text);
    expect(g.text.length).toBeGreaterThan(0);
    // The streamed form (prompt, then the continuation token by token) prints the same text.
    const streamed = await runCli(...args.filter((a) => a !== "--json"), "--backend", "webgpu");
    expect(streamed.code, streamed.err).toBe(0);
    expect(streamed.out).toBe(`Once upon a time${c.text}\n`);
  }, 300_000);

  it("kvbound eval streams and passkey --backend webgpu: the CPU's figures on f32 pages, cache bytes as the WebGPU plan", async () => {
    const common = ["--model", MODEL, "--text", "../shared/text/tinystories-valid-excerpt.txt", "--workers", "1", "--json"];
    // An f32 row past its window's first eviction (300 tokens, window 256), on both backends.
    const streams = ["eval", "streams", ...common, "--only", "sinks4-W256-f32", "--max-tokens", "300"];
    const gpu = await runCli(...streams, "--backend", "webgpu");
    expect(gpu.code, gpu.err).toBe(0);
    const cpu = await runCli(...streams);
    expect(cpu.code, cpu.err).toBe(0);
    const [g] = JSON.parse(gpu.out).rows as { tokens: number; ppl: number; bytesReserved: number; plannedBytes: number }[];
    const [c] = JSON.parse(cpu.out).rows as typeof g[];
    expect(g!.tokens).toBe(300);
    expect(g!.plannedBytes).toBe(g!.bytesReserved);
    expect(Math.abs(g!.ppl - c!.ppl) / c!.ppl).toBeLessThan(1e-4);
    // Passkey forks the cue and each candidate off the prompt (copy-on-write pages on the GPU). The
    // setting names no codec: f32 on the GPU, f16 on the CPU, so the margins agree only closely.
    const passkey = ["eval", "passkey", ...common, "--only", "sinks4-W128", "--distances", "0,40"];
    const gp = await runCli(...passkey, "--backend", "webgpu");
    expect(gp.code, gp.err).toBe(0);
    const cp = await runCli(...passkey);
    expect(cp.code, cp.err).toBe(0);
    type Cell = { trials: number; retrieved: number; meanMargin: number };
    const gc = (JSON.parse(gp.out).results[0].cells as Cell[]), cc = (JSON.parse(cp.out).results[0].cells as Cell[]);
    expect(gc.map((x) => x.trials)).toEqual(cc.map((x) => x.trials));
    expect(gc[0]!.trials).toBeGreaterThan(0);
    expect(gc.map((x) => x.retrieved)).toEqual(cc.map((x) => x.retrieved));
    for (let i = 0; i < gc.length; i++) expect(Math.abs(gc[i]!.meanMargin - cc[i]!.meanMargin)).toBeLessThan(0.05);
  }, 300_000);

  it("Session on a WebGPU model reproduces the 256 golden greedy ids, streaming token events whose text is the output", async () => {
    const loaded = await gpuModel();
    expect(asyncForwardOf(loaded.model)?.backend).toBe("webgpu");
    const session = new Session(loaded, { contextWindowSize: 512 });
    expect(session.config.codec).toBe("f32");
    const ids: number[] = [];
    let text = "";
    let done = null;
    for await (const ev of session.generate(golden!.promptIds, { maxTokens: 256, temperature: 0, ignoreEos: true })) {
      if (ev.type === "token") {
        ids.push(ev.id);
        text += ev.text;
        expect(ev.stats.tokensHeld).toBe(golden!.promptIds.length + ids.length - (ids.length === 256 ? 1 : 0));
      } else done = ev;
    }
    expect(ids).toEqual(golden!.greedyIds);
    expect(done!.finishReason).toBe("length");
    expect(text + done!.remainder).toBe(done!.text);
    expect(done!.prefilledTokens).toBe(golden!.promptIds.length);
    // A second generation with the same prompt reuses the cached prefix (one token recomputed for its logits).
    const again = await collect(session.generate(golden!.promptIds, { maxTokens: 8, temperature: 0 }));
    expect(again.ids).toEqual(golden!.greedyIds.slice(0, 8));
    expect(again.done.reusedTokens).toBe(golden!.promptIds.length - 1);
    // Sampling with a seed: the same seed gives the same ids on the same session.
    session.reset();
    const s1 = await collect(session.generate(golden!.promptIds, { maxTokens: 32, temperature: 0.8, seed: 42 }));
    session.reset();
    const s2 = await collect(session.generate(golden!.promptIds, { maxTokens: 32, temperature: 0.8, seed: 42 }));
    expect(s2.ids).toEqual(s1.ids);
    expect(s1.ids.length).toBeGreaterThan(0);
  }, 300_000);

  it("a sliding window of 64 (4 sinks) with eviction: 200 greedy ids and the cache picture as on the CPU backend", async () => {
    const cfg = { contextWindowSize: -1, slidingWindowSize: 64, attentionSinkSize: 4, codec: "f32" as const };
    const gen = { maxTokens: 200, temperature: 0, ignoreEos: true };
    const gpu = await collect(new Session(await gpuModel(), cfg).generate(golden!.promptIds, gen));
    const cpu = await collect(new Session(await cpuModel(), cfg).generate(golden!.promptIds, gen));
    expect(gpu.ids).toHaveLength(200);
    expect(gpu.done.stats.evictions).toBeGreaterThan(100);
    expect(gpu.ids).toEqual(cpu.ids);
    // The same picture; the bytes reserved are each store's own: the CPU's f32 stores also hold a
    // 16-token side buffer of 8 bytes a token (f32.ts), the GPU's pages only (5 layers, K and V).
    expect({ ...gpu.done.stats, cacheBytesReserved: 0 }).toEqual({ ...cpu.done.stats, cacheBytesReserved: 0 });
    expect(gpu.done.stats.cacheBytesReserved).toBe(cpu.done.stats.cacheBytesReserved - 5 * 2 * 16 * 8);
  }, 300_000);

  it("serve --backend webgpu --parallel 2: two requests at once share the GPU model and get the CPU backend's greedy text", async () => {
    const web = mkdtempSync(join(tmpdir(), "kvbound-webgpu-serve-"));
    writeFileSync(join(web, "index.html"), "<!doctype html><title>t</title>");
    const started = await serveCommand(
      { model: sharedPath("models/stories260K.gguf"), port: "0", dir: web, parallel: "2", contextWindow: "128", temperature: "0", backend: "webgpu" },
      { stdout: () => undefined, stderr: () => undefined },
    );
    try {
      const health = (await (await fetch(`${started.url}health`)).json()) as { slots: { total: number } };
      expect(health.slots.total).toBe(2);
      const ask = async (prompt: string) => {
        const r = await fetch(`${started.url}v1/completions`, { method: "POST", body: JSON.stringify({ prompt, max_tokens: 20 }) });
        expect(r.status).toBe(200);
        return ((await r.json()) as { choices: { text: string }[] }).choices[0]!.text;
      };
      const [a, b] = await Promise.all([ask("Once upon a time"), ask("Lily saw a")]);
      const cpu = await cpuModel();
      const ref = async (prompt: string) => {
        const session = new Session(cpu, { contextWindowSize: 128, codec: "f32" });
        return (await collect(session.generate(prompt, { maxTokens: 20, temperature: 0 }))).text;
      };
      expect(a).toBe(await ref("Once upon a time"));
      expect(b).toBe(await ref("Lily saw a"));
    } finally {
      await started.close();
      rmSync(web, { recursive: true, force: true });
    }
  }, 300_000);

  it("Session.saveAsync reads the GPU pages back: the file restores on the GPU and on the CPU, and goes on as the session that saved it (f32, f16, int8, int4 pages)", async () => {
    const words = ["Tell me about the cat.", "Where did the dog go?", "Lily was happy.", "The sun is hot.", "Tom ran to the park."];
    const talk = async (s: Session, from: number, to: number): Promise<number[][]> => {
      const replies: number[][] = [];
      for (let turn = from; turn <= to; turn++) {
        const opts = { maxTokens: 10, temperature: 0.9, ...(turn === 1 ? { seed: 7 } : {}) };
        replies.push([...(await collect(s.continueChat([{ role: "user", content: words[turn % words.length]! }], opts))).ids]);
      }
      return replies;
    };
    const gpu = withChatTemplate(await gpuModel());
    for (const codec of ["f32", "f16", "int8", "int4"] as const) {
      // A 64-token window with 4 sinks: 8 turns have evicted, and int4's last page is open.
      const config = { slidingWindowSize: 64, attentionSinkSize: 4, codec };
      const saved = new Session(gpu, config);
      await talk(saved, 1, 8);
      expect(saved.stats().evictions, codec).toBeGreaterThan(64);
      // The synchronous save has no pages to give until they are read back.
      expect(() => saved.save()).toThrow(/Session\.saveAsync/);
      const bytes = await saved.saveAsync();
      const restored = Session.restore(gpu, bytes, config);
      // Evictions count over a cache's life: the new cache has made none.
      expect({ ...restored.stats(), evictions: 0 }, codec).toEqual({ ...saved.stats(), evictions: 0 });
      // The pages it wrote are the ones it reads back: saved again, the same bytes.
      expect(await restored.saveAsync(), codec).toEqual(bytes);
      // Saving left the session as it was: it and the restored one go on alike (the sampler's state travelled).
      const expected = await talk(saved, 9, 11);
      expect(await talk(restored, 9, 11), codec).toEqual(expected);
      expect(new Set(expected.flat()).size, codec).toBeGreaterThan(5);
      saved.dispose();
      restored.dispose();
      if (codec === "f32") {
        // The CPU codec's bytes: the CPU backend restores the GPU's file and goes on with its ids.
        const onCpu = Session.restore(withChatTemplate(await cpuModel()), bytes, config);
        expect(await talk(onCpu, 9, 11)).toEqual(expected);
      }
    }
  }, 600_000);

  it("what the GPU does not compute is a typed error: small pages, H2O/TOVA on int4 pages, a window beyond the load's, the synchronous forward", async () => {
    const loaded = await gpuModel();
    // The forward pass's own refusals reach the caller as they are (which codecs it runs is its own
    // business: quantized pages are being added there).
    expect(() => new Session(loaded, { contextWindowSize: 256, pageSize: 8 })).toThrow(WebGpuUnsupportedError);
    // H2O / TOVA run (test/webgpu-score-policies.test.ts) except on int4 pages, whose compaction would re-encode tokens.
    new Session(loaded, { slidingWindowSize: 64, attentionSinkSize: 4, policy: { kind: "h2o", recent: 16 } }).dispose();
    expect(() => new Session(loaded, { slidingWindowSize: 64, attentionSinkSize: 4, codec: "int4", policy: { kind: "tova" } })).toThrow(/score-based policy tova with int4 pages/);
    // A window beyond the one the model was loaded for names the fix.
    expect(() => new Session(loaded, { contextWindowSize: 1024 })).toThrow(/load it with nCtx 1024/);
    expect(() => loaded.model.forward(1, 0, null as never, null)).toThrow(WebGpuUnsupportedError);
  });
});
