// The planner page in Chromium: vite builds web/ once, `kvbound serve`'s server serves it on
// 127.0.0.1, and playwright-core drives Debian's /usr/bin/chromium. Checks exact bytes of a
// published case, that a hostile GGUF's strings stay text, the 390 px layout and the keyboard.
// Screenshots go to test-artifacts/ (gitignored). Without Chromium: skip locally, FAIL under CI.

import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

import { chromium, type Browser, type Page } from "playwright-core";
import { build } from "vite";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { startStaticServer, type StaticServer } from "../../src/cli/commands/serve.js";
import { gv, writeGguf } from "../fixtures/gguf-writer.js";

const CHROMIUM = "/usr/bin/chromium";
const haveChromium = existsSync(CHROMIUM);
const ARTIFACTS = fileURLToPath(new URL("../../test-artifacts/", import.meta.url));
const VITE_CONFIG = fileURLToPath(new URL("../../web/vite.config.ts", import.meta.url));

const LAUNCH_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  // Nothing but the local server resolves: the page must work offline (no CDN).
  "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
];

// Hand computation for Llama 3.2 1B (config.json: 16 layers, 8 KV heads, hidden 2048 / 32 heads
// = head_dim 64): one cell = 16 layers x 8 heads x 64 x (K+V = 2) values.
const VALUES_PER_CELL = 16 * 8 * 64 * 2; // 16384
// f16: 2 bytes per value; at -c 2048 (already a multiple of 256): 2048 x 16384 x 2 = 67,108,864 B
// = 64.00 MiB, the figure llama.cpp prints for this model at -c 2048
// ("llama_kv_cache: size = 64.00 MiB (2048 cells, 16 layers, 1/1 seqs)").
const F16_2048 = 2048 * VALUES_PER_CELL * 2;
// q8_0: blocks of 32 values in 34 bytes (ggml-common.h block_q8_0: f16 scale + 32 int8).
const Q8_2048 = (2048 * VALUES_PER_CELL * 34) / 32;

const HOSTILE = `<img src=x onerror="window.__pwned=1">`;

/** A GGUF whose name, chat template and tokens carry markup; Llama-3.2-1B-shaped metadata. */
function hostileGguf(): Buffer {
  const { bytes } = writeGguf({
    metadata: [
      ["general.architecture", gv.str("llama")],
      ["general.name", gv.str(`${HOSTILE} evil model`)],
      ["llama.block_count", gv.u32(16)],
      ["llama.context_length", gv.u32(131072)],
      ["llama.embedding_length", gv.u32(2048)],
      ["llama.feed_forward_length", gv.u32(8192)],
      ["llama.attention.head_count", gv.u32(32)],
      ["llama.attention.head_count_kv", gv.u32(8)],
      ["tokenizer.chat_template", gv.str(`{{ '${HOSTILE}' }}{% for m in messages %}{{ m.content }}{% endfor %}`)],
      ["tokenizer.ggml.tokens", gv.arr("string", [gv.str(HOSTILE), gv.str("<script>window.__pwned=2</script>"), gv.str("ok")])],
    ],
  });
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

const runBrowser = haveChromium || Boolean(process.env.CI);

describe.skipIf(!runBrowser)("planner page in Chromium", () => {
  let outDir: string;
  let server: StaticServer;
  let browser: Browser;

  beforeAll(async () => {
    if (!haveChromium) throw new Error(`CI: ${CHROMIUM} is missing; install Debian's chromium (apt-get install -y chromium)`);
    mkdirSync(ARTIFACTS, { recursive: true });
    outDir = mkdtempSync(join(tmpdir(), "kvbound-web-"));
    await build({ configFile: VITE_CONFIG, logLevel: "error", build: { outDir, emptyOutDir: true, sourcemap: false } });
    server = await startStaticServer({ dir: outDir, port: 0 });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: LAUNCH_ARGS });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await server?.close();
    if (outDir !== undefined) rmSync(outDir, { recursive: true, force: true });
  });

  async function open(width: number, height: number): Promise<{ page: Page; errors: string[] }> {
    const page = await browser.newPage({ viewport: { width, height } });
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(m.text());
    });
    await page.goto(server.url);
    await page.waitForSelector("html[data-ready=true]", { timeout: 10_000 });
    return { page, errors };
  }

  const text = (page: Page, sel: string): Promise<string> => page.locator(sel).innerText();

  it("shows llama.cpp's published KV bytes for Llama 3.2 1B at -c 2048: 64.00 MiB f16, 34.00 MiB q8_0", async () => {
    const { page, errors } = await open(1280, 800);
    expect(await page.evaluate(() => self.crossOriginIsolated)).toBe(true);
    expect(await page.locator("#registry-model").inputValue()).toBe("llama-3.2-1b");
    await page.locator("#engine").selectOption("llama.cpp");
    await page.locator("#ctx").fill("2048");
    expect(await text(page, "#kv-total")).toBe("64.00 MiB");
    expect(await page.locator("#kv-total").getAttribute("data-bytes")).toBe(String(F16_2048));

    await page.locator("#type-k").selectOption("q8_0");
    await page.locator("#type-v").selectOption("q8_0");
    expect(await text(page, "#kv-total")).toBe("34.00 MiB");
    expect(await page.locator("#kv-total").getAttribute("data-bytes")).toBe(String(Q8_2048));
    expect(await text(page, "#export-llama-cpp")).toContain("-c 2048");
    expect(await text(page, "#export-llama-cpp")).toContain("-ctk q8_0 -ctv q8_0");
    expect(await text(page, "#export-webllm")).toContain('"context_window_size": 2048');
    expect(await text(page, "#export-vllm")).toContain("--max-model-len 2048");
    // uPlot drew the chart (a canvas and its legend with the three KV types and the window).
    expect(await page.locator("#chart canvas").count()).toBeGreaterThan(0);
    const legend = await text(page, "#chart .u-legend");
    for (const label of ["f16", "q8_0", "q4_0", "sliding window", "budget"]) expect(legend).toContain(label);
    await page.screenshot({ path: join(ARTIFACTS, "planner-1280x800.png"), fullPage: true });

    // kvbound with a sliding window: the WebLLM export carries the window and sinks, and the KV
    // bytes do not grow with the context (the window bounds them).
    await page.locator("#engine").selectOption("kvbound");
    await page.locator("#window").fill("512");
    await page.locator("#sinks").fill("4");
    expect(await text(page, "#export-webllm")).toContain('"sliding_window_size": 512');
    expect(await text(page, "#export-webllm")).toContain('"attention_sink_size": 4');
    const windowed = await page.locator("#kv-total").getAttribute("data-bytes");
    await page.locator("#ctx").fill("65536");
    expect(await page.locator("#kv-total").getAttribute("data-bytes")).toBe(windowed);
    expect(Number(windowed)).toBeLessThan(F16_2048);

    // A bad setting is shown as its typed error, name and message.
    await page.locator("#ctx").fill("12abc");
    expect(await text(page, "#error")).toMatch(/^InvalidSettingError: ctx "12abc" is invalid/);
    expect(errors).toEqual([]);
    await page.close();
  });

  it("renders a hostile GGUF's name, chat template and tokens as text, creating no element", async () => {
    const { page, errors } = await open(1280, 800);
    await page.locator('input[name="source"][value="gguf"]').check();
    await page.locator("#gguf-file").setInputFiles({ name: "hostile.gguf", mimeType: "application/octet-stream", buffer: hostileGguf() });
    await page.waitForSelector("#gguf-name");
    expect(await text(page, "#gguf-name")).toBe(`${HOSTILE} evil model`);
    expect(await text(page, "#model-name")).toBe(`${HOSTILE} evil model`);
    expect(await text(page, "#gguf-template")).toContain(HOSTILE);
    expect(await text(page, "#gguf-tokens")).toContain("<script>window.__pwned=2</script>");
    expect(await page.locator("#gguf-name").isVisible()).toBe(true);
    expect(await page.evaluate(() => document.querySelectorAll("img").length)).toBe(0);
    expect(await page.evaluate(() => document.querySelectorAll("main script").length)).toBe(0);
    expect(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();
    // The file is Llama-3.2-1B-shaped: the plan is the same as the registry's at the same context.
    await page.locator("#ctx").fill("2048");
    expect(await text(page, "#kv-total")).toBe("64.00 MiB");
    await page.screenshot({ path: join(ARTIFACTS, "planner-hostile-gguf.png"), fullPage: true });

    // A pasted config.json: Mistral-Small-24B-Instruct-2501 (huggingface.co/mistralai/...: 40
    // layers, 8 KV heads, head_dim 128). f16 at -c 4096: 4096 x 40 x 8 x 128 x 2 (K+V) x 2 B =
    // 671,088,640 B = 640.00 MiB.
    await page.locator('input[name="source"][value="config"]').check();
    await page.locator("#config-json").fill("{");
    await page.locator("#use-config").click();
    expect(await text(page, "#error")).toMatch(/^ModelConfigError: the pasted text is not valid JSON/);
    const mistral = { model_type: "mistral", hidden_size: 5120, intermediate_size: 32768, num_hidden_layers: 40, num_attention_heads: 32, num_key_value_heads: 8, head_dim: 128, max_position_embeddings: 32768, vocab_size: 131072 };
    await page.locator("#config-json").fill(JSON.stringify(mistral));
    await page.locator("#use-config").click();
    await page.locator("#ctx").fill("4096");
    expect(await page.locator("#kv-total").getAttribute("data-bytes")).toBe(String(4096 * 40 * 8 * 128 * 2 * 2));
    expect(await text(page, "#kv-total")).toBe("640.00 MiB");
    expect(await page.locator("#gguf-facts").isHidden()).toBe(true);
    expect(errors).toEqual([]);
    await page.close();
  });

  it("fits a 390 px wide viewport and works from the keyboard", async () => {
    const { page, errors } = await open(390, 844);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    expect(overflow).toBeLessThanOrEqual(0);
    // Every control has a label.
    const unlabeled = await page.evaluate(() =>
      Array.from(document.querySelectorAll("input, select, textarea"))
        .filter((c) => (c as HTMLInputElement).labels === null || (c as HTMLInputElement).labels!.length === 0)
        .map((c) => c.id),
    );
    expect(unlabeled).toEqual([]);

    // Tab from the top of the page to the context field, then retype it with keys only.
    await page.locator("body").focus();
    let reached = false;
    for (let i = 0; i < 40 && !reached; i++) {
      await page.keyboard.press("Tab");
      reached = await page.evaluate(() => document.activeElement?.id === "ctx");
    }
    expect(reached).toBe(true);
    await page.keyboard.press("Control+A");
    await page.keyboard.type("8192");
    // 8192 cells x 16384 values x 2 bytes = 268,435,456 B = 256.00 MiB (f16, the default).
    expect(await page.locator("#kv-total").getAttribute("data-bytes")).toBe(String(8192 * VALUES_PER_CELL * 2));
    expect(await text(page, "#kv-total")).toBe("256.00 MiB");
    // One Tab on: the sequences field, changed with the arrow key.
    await page.keyboard.press("Tab");
    expect(await page.evaluate(() => document.activeElement?.id)).toBe("seqs");
    await page.keyboard.press("ArrowUp");
    expect(await page.locator("#seqs").inputValue()).toBe("2");
    expect(await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth)).toBeLessThanOrEqual(0);
    await page.screenshot({ path: join(ARTIFACTS, "planner-390.png"), fullPage: true });
    expect(errors).toEqual([]);
    await page.close();
  });
});
