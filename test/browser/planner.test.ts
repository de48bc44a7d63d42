// The planner page in Chromium: vite builds web/ once, `kvbound serve`'s server serves it on
// 127.0.0.1, and playwright-core drives Debian's /usr/bin/chromium. Checks exact bytes of a
// published case, that a hostile GGUF's strings stay text, the 390 px layout and the keyboard.
// Screenshots go to test-artifacts/ (gitignored). Without Chromium: skip locally, FAIL under CI.

import { join } from "node:path";

import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { ARTIFACTS, HOSTILE, hostileGguf, runBrowser, startWebHarness, type WebHarness } from "../helpers/browser.js";

// Hand computation for Llama 3.2 1B (config.json: 16 layers, 8 KV heads, hidden 2048 / 32 heads
// = head_dim 64): one cell = 16 layers x 8 heads x 64 x (K+V = 2) values.
const VALUES_PER_CELL = 16 * 8 * 64 * 2; // 16384
// f16: 2 bytes per value; at -c 2048 (already a multiple of 256): 2048 x 16384 x 2 = 67,108,864 B
// = 64.00 MiB, the figure llama.cpp prints for this model at -c 2048
// ("llama_kv_cache: size = 64.00 MiB (2048 cells, 16 layers, 1/1 seqs)").
const F16_2048 = 2048 * VALUES_PER_CELL * 2;
// q8_0: blocks of 32 values in 34 bytes (ggml-common.h block_q8_0: f16 scale + 32 int8).
const Q8_2048 = (2048 * VALUES_PER_CELL * 34) / 32;

// Llama-3.2-1B-shaped metadata, so the hostile file plans to the same 64.00 MiB.
const hostile = () => hostileGguf({ nLayer: 16, nCtx: 131072, nEmbd: 2048, nFf: 8192, nHead: 32, nHeadKv: 8 });

describe.skipIf(!runBrowser)("planner page in Chromium", () => {
  let web: WebHarness;

  beforeAll(async () => {
    web = await startWebHarness();
  }, 60_000);

  afterAll(async () => {
    await web?.close();
  });

  const open = (width: number, height: number) => web.open("", width, height);

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
    await page.locator("#gguf-file").setInputFiles({ name: "hostile.gguf", mimeType: "application/octet-stream", buffer: hostile() });
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
