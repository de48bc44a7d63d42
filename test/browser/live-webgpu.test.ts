// The live page on WebGPU in Chromium (SwiftShader's adapter: --enable-unsafe-webgpu
// --use-webgpu-adapter=swiftshader): `live.html?backend=webgpu` loads stories260K in its worker on
// the worker's navigator.gpu, decodes with a 64-token sliding window (4 sinks) on f32 pages, and
// shows the same text and the same cache picture (bytes, page map) as the CPU page with the same
// settings. The CPU page links to the WebGPU form when an adapter is there. Without Chromium: skip
// locally, FAIL under CI; the same for ../shared/models/stories260K.gguf (requireShared).

import { join } from "node:path";

import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { ARTIFACTS, runBrowser, startWebHarness, WEBGPU_ARGS, type WebHarness } from "../helpers/browser.js";
import { requireShared, sharedPath } from "../helpers/shared.js";

const MODEL_REL = "models/stories260K.gguf";
// stories260K: 5 layers, 4 KV heads of 8 dims. One f32 page of 16 tokens: 16 x 5 x 4 x 8 x 2 (K, V) x 4 bytes.
const F32_PAGE_BYTES = 16 * 5 * 4 * 8 * 2 * 4;

let modelMissing: Error | null = null;
let haveModel = false;
try {
  haveModel = runBrowser && requireShared(MODEL_REL);
} catch (err) {
  modelMissing = err as Error;
}
const runModel = haveModel || modelMissing !== null;

describe.skipIf(!runBrowser || !runModel)("live page on WebGPU in Chromium", () => {
  let web: WebHarness;

  beforeAll(async () => {
    if (modelMissing !== null) throw modelMissing;
    web = await startWebHarness({ [MODEL_REL]: sharedPath(MODEL_REL) }, WEBGPU_ARGS);
  }, 60_000);

  afterAll(async () => {
    await web?.close();
  });

  async function loadAndRun(page: Page): Promise<{ text: string; tokens: number; bytes: number; peak: number; sinks: string | null; window: string | null; pages: string | null; codec: string }> {
    await page.locator("#model-url").fill(MODEL_REL);
    await page.locator("#load-url").click();
    await page.waitForSelector("html[data-model=loaded]", { timeout: 30_000 });
    await page.locator("#codec").selectOption("f32");
    await page.locator("#policy").selectOption("sliding");
    await page.locator("#window").fill("64");
    await page.locator("#sinks").fill("4");
    await page.locator("#max-tokens").fill("150");
    await page.locator("#temperature").fill("0");
    await page.locator("#generate").click();
    await page.waitForSelector("#stat-finish[data-finish=length]", { timeout: 60_000 });
    const num = async (sel: string, attr: string) => Number(await page.locator(sel).getAttribute(attr));
    return {
      text: await page.locator("#output").innerText(),
      tokens: await num("#stat-tokens", "data-tokens"),
      bytes: await num("#stat-bytes", "data-bytes"),
      peak: await num("#stat-peak", "data-bytes"),
      sinks: await page.locator("#role-sink").getAttribute("data-slots"),
      window: await page.locator("#role-window").getAttribute("data-slots"),
      pages: await page.locator("#cache-map").getAttribute("data-pages"),
      codec: await page.locator("#codec").inputValue(),
    };
  }

  it("?backend=webgpu decodes stories260K on the GPU with a sliding window: the CPU page's text and cache picture", async () => {
    const gpuPage = await web.open("live.html?backend=webgpu", 1280, 800);
    expect(await gpuPage.page.locator("#codec").inputValue()).toBe("f32");
    const gpu = await loadAndRun(gpuPage.page);
    expect(await gpuPage.page.evaluate(() => document.documentElement.dataset.backend)).toBe("webgpu");
    expect(await gpuPage.page.locator("#load-status").innerText()).toMatch(/WebGPU/);
    await gpuPage.page.screenshot({ path: join(ARTIFACTS, "live-webgpu-1280x800.png"), fullPage: true });

    const cpuPage = await web.open("live.html", 1280, 800);
    // The CPU page offers the WebGPU form when this browser has an adapter.
    await cpuPage.page.waitForSelector("html[data-webgpu=available]", { timeout: 10_000 });
    expect(await cpuPage.page.locator("#backend-webgpu").getAttribute("href")).toBe("?backend=webgpu");
    const cpu = await loadAndRun(cpuPage.page);
    expect(await cpuPage.page.evaluate(() => document.documentElement.dataset.backend)).toBe("cpu");

    expect(gpu.tokens).toBe(150);
    expect(gpu.text.length).toBeGreaterThan(50);
    expect(gpu.text).toBe(cpu.text);
    // The same cache picture: 4 sinks + 60 recent tokens, 6 f32 pages at the peak (as on the CPU).
    expect(gpu.peak).toBe(6 * F32_PAGE_BYTES);
    expect({ ...gpu, text: "" }).toEqual({ ...cpu, text: "" });
    expect(gpu.sinks).toBe("4");
    expect(gpu.window).toBe("60");
    expect(gpuPage.errors).toEqual([]);
    expect(cpuPage.errors).toEqual([]);
    await gpuPage.page.close();
    await cpuPage.page.close();
  }, 180_000);
});
