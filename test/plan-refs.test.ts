// `kvbound plan` end to end for the references and refusals of the planner issue: hf: references as
// `kvbound run` takes them, vLLM tensor-parallel sizes vLLM refuses, the verdict's caveats.

import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { parseModelRef } from "../src/model/model-ref.js";
import { runCli } from "./helpers/cli.js";

const REPO = fileURLToPath(new URL("..", import.meta.url));
const STORIES = join(REPO, "../shared/models/stories260K.gguf");
const haveStories = existsSync(STORIES);
if (process.env.CI && !haveStories) throw new Error(`CI: test model missing: ${STORIES}`);

let dir = "";
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "kvbound-plan-refs-"));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!haveStories)("kvbound plan hf:owner/repo/file.gguf", () => {
  it("plans what `kvbound run --model hf:...` would run, reading only the header from the Hub endpoint", async () => {
    const data = new Uint8Array(readFileSync(STORIES));
    const server: Server = createServer((req, res) => {
      if (req.url !== "/ggml-org/models/resolve/main/tinyllamas/stories260K.gguf") {
        res.writeHead(404);
        res.end();
        return;
      }
      const m = /bytes=(\d+)-(\d*)/.exec(req.headers.range ?? "");
      const start = m ? Number(m[1]) : 0;
      const end = m && m[2] ? Math.min(Number(m[2]), data.length - 1) : data.length - 1;
      res.writeHead(m ? 206 : 200, { ...(m ? { "content-range": `bytes ${start}-${end}/${data.length}` } : {}), "content-length": end - start + 1 });
      res.end(data.subarray(start, end + 1));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const saved = process.env.HF_ENDPOINT;
    process.env.HF_ENDPOINT = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const ref = "hf:ggml-org/models/tinyllamas/stories260K.gguf";
      expect(parseModelRef(ref).kind).toBe("hf"); // the reference `run` accepts
      const viaHf = await runCli("plan", ref, "--ctx", "128", "--json");
      expect(viaHf.err).toBe("");
      expect(viaHf.code).toBe(0);
      const local = await runCli("plan", STORIES, "--ctx", "128", "--json");
      const a = JSON.parse(viaHf.out) as Record<string, any>;
      const b = JSON.parse(local.out) as Record<string, any>;
      expect(a.kv).toEqual(b.kv);
      expect(a.weights).toEqual(b.weights);
      expect(a.model.source).toBe(ref);
    } finally {
      if (saved === undefined) delete process.env.HF_ENDPOINT;
      else process.env.HF_ENDPOINT = saved;
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe("kvbound plan: refusals and caveats", () => {
  it("--engine vllm --tp 3 on a 32-head model is a typed error (exit 1) naming vLLM's rule", async () => {
    const r = await runCli("plan", "llama-3.1-8b", "--engine", "vllm", "--tp", "3", "--budget", "80GiB");
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^error: InvalidSettingError: vLLM refuses --tensor-parallel-size 3 .*Total number of attention heads \(32\) must be divisible by tensor parallel size \(3\).*use 1, 2, 4, 8/);
  });

  it("--ctx 200k on Llama-3.1-8B: the plan notes the training context, and the verdict says 'memory only'", async () => {
    const r = await runCli("plan", "llama-3.1-8b", "--ctx", "200k", "--budget", "64GiB");
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/past the training context: 204800 tokens per sequence > the model's 131072/);
    expect(r.out).toMatch(/^fits: .*; memory only: 204800 tokens per sequence is past the model's training context of 131072$/m);
    // fit --ctx and rank say so too.
    const fit = await runCli("fit", "llama-3.1-8b", "--ctx", "200k", "--budget", "64GiB");
    expect(fit.out).toMatch(/memory only: 204800 tokens per sequence is past the model's training context/);
    const rank = await runCli("rank", "--ctx", "200k", "--budget", "64GiB", "--json");
    const llama = (JSON.parse(rank.out) as { models: Array<{ id: string; fits: boolean; reason: string }> }).models.find((m) => m.id === "llama-3.1-8b")!;
    expect(llama.fits).toBe(false);
    expect(llama.reason).toMatch(/past its training context/);
  });

  it("the machine plan marks rows whose --ctx is past the training context", async () => {
    const r = await runCli("plan", "--ctx", "200k", "--budget", "4TiB", "--json");
    expect(r.code).toBe(0);
    const rows = (JSON.parse(r.out) as { models: Array<{ id: string; fits: boolean; pastTraining: boolean }> }).models;
    expect(rows.find((m) => m.id === "llama-3.1-8b")).toMatchObject({ fits: true, pastTraining: true });
    const table = await runCli("plan", "--ctx", "200k", "--budget", "4TiB");
    expect(table.out).toMatch(/yes\*/);
    expect(table.out).toMatch(/^\* memory only: the context is past the model's training context$/m);
  });

  it("a config.json without weights: 'fits' says it does not count them", async () => {
    const path = join(dir, "config.json");
    writeFileSync(path, JSON.stringify({ model_type: "llama", hidden_size: 2048, intermediate_size: 8192, num_hidden_layers: 16, num_attention_heads: 32, num_key_value_heads: 8, max_position_embeddings: 131072, vocab_size: 128256 }));
    const r = await runCli("plan", path, "--ctx", "8k", "--budget", "8GiB");
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^fits: .*; not counting the weights \(unknown\)$/m);
  });
});

describe("the planner page's verdict is the CLI's", () => {
  it("vLLM: one request at max_model_len must fit the pool (the page used to compare the total), with the CLI's fix", async () => {
    const { verdictText } = await import("../web/src/planner/render.js");
    const { planMemory } = await import("../src/plan/plan.js");
    const { suggestFix } = await import("../src/plan/advice.js");
    const { registrySpec } = await import("../src/spec/registry.js");
    const GIB = 1024 ** 3;
    const spec = registrySpec("llama-3.1-8b");
    const request = { engine: "vllm" as const, ctx: 131072, budgetBytes: 8 * GIB };
    const plan = planMemory(spec, request);
    expect(plan.totalBytes).toBeLessThanOrEqual(8 * GIB); // vLLM takes at most budget x utilization ...
    const page = verdictText(plan, 8 * GIB, () => suggestFix(spec, request, 131072));
    expect(page.fits).toBe(false); // ... but one 128k request does not fit what is left
    const cli = await runCli("plan", "llama-3.1-8b", "--engine", "vllm", "--ctx", "128k", "--budget", "8GiB");
    const cliLine = cli.out.split("\n").find((l) => l.startsWith("does not fit"));
    expect(page.text).toBe(cliLine);
  });
});
