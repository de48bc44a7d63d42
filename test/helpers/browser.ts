// The shared harness of the Chromium tests: vite builds web/ once into a temp folder, `kvbound
// serve`'s server serves it on 127.0.0.1, and playwright-core drives Debian's /usr/bin/chromium
// (never a downloaded browser). Without Chromium the tests skip locally and FAIL under CI.

import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { chromium, type Browser, type Page } from "playwright-core";
import { build, loadConfigFromFile } from "vite";

import { startStaticServer, type StaticServer } from "../../src/cli/commands/serve.js";
import { gv, writeGguf } from "../fixtures/gguf-writer.js";

export const CHROMIUM = "/usr/bin/chromium";
export const haveChromium = existsSync(CHROMIUM);
/** Run the browser tests: Chromium is here, or CI is set (and then a missing Chromium fails them). */
export const runBrowser = haveChromium || Boolean(process.env.CI);
export const ARTIFACTS = fileURLToPath(new URL("../../test-artifacts/", import.meta.url));
const VITE_CONFIG = fileURLToPath(new URL("../../web/vite.config.ts", import.meta.url));

export const LAUNCH_ARGS = [
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

export interface WebHarness {
  readonly server: StaticServer;
  readonly browser: Browser;
  /** Opens `path` (relative to the served root) at a viewport and waits for the page's ready flag;
   *  `errors` collects page errors and console errors. */
  open(path: string, width: number, height: number): Promise<{ page: Page; errors: string[] }>;
  close(): Promise<void>;
}

/** Chromium flags that give pages (and their workers) a WebGPU adapter on SwiftShader, without a GPU. */
export const WEBGPU_ARGS = ["--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader"];

/**
 * Test-only pages built instead of web/'s (with web/vite.config.ts's plugins, so they bundle the
 * engine as the real pages do): `root` is their folder, `input` names each HTML file in it.
 */
export interface TestPages {
  readonly root: string;
  readonly input: Readonly<Record<string, string>>;
}

/**
 * Builds the pages (web/'s, or `testPages`), copies `files` (served path -> source path) into the
 * build, serves it, launches Chromium (with `extraArgs` after LAUNCH_ARGS: WEBGPU_ARGS for the
 * WebGPU tests).
 */
export async function startWebHarness(files: Readonly<Record<string, string>> = {}, extraArgs: readonly string[] = [], testPages?: TestPages): Promise<WebHarness> {
  if (!haveChromium) throw new Error(`CI: ${CHROMIUM} is missing; install Debian's chromium (apt-get install -y chromium)`);
  mkdirSync(ARTIFACTS, { recursive: true });
  const outDir = mkdtempSync(join(tmpdir(), "kvbound-web-"));
  if (testPages === undefined) {
    await build({ configFile: VITE_CONFIG, logLevel: "error", build: { outDir, emptyOutDir: true, sourcemap: false } });
  } else {
    const web = await loadConfigFromFile({ command: "build", mode: "production" }, VITE_CONFIG, undefined, "error");
    await build({
      configFile: false,
      root: testPages.root,
      base: "./",
      logLevel: "error",
      plugins: web?.config.plugins ?? [],
      build: { outDir, emptyOutDir: true, sourcemap: false, target: "es2022", rolldownOptions: { input: { ...testPages.input }, output: { keepNames: true } } },
    });
  }
  for (const [served, source] of Object.entries(files)) {
    mkdirSync(dirname(join(outDir, served)), { recursive: true });
    copyFileSync(source, join(outDir, served));
  }
  const server = await startStaticServer({ dir: outDir, port: 0 });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: [...LAUNCH_ARGS, ...extraArgs] });
  return {
    server,
    browser,
    async open(path, width, height) {
      const page = await browser.newPage({ viewport: { width, height } });
      const errors: string[] = [];
      page.on("pageerror", (e) => errors.push(String(e)));
      page.on("console", (m) => {
        if (m.type() === "error") errors.push(m.text());
      });
      await page.goto(`${server.url}${path}`);
      await page.waitForSelector("html[data-ready=true]", { timeout: 10_000 });
      return { page, errors };
    },
    async close() {
      await browser.close();
      await server.close();
      rmSync(outDir, { recursive: true, force: true });
    },
  };
}

export const HOSTILE = `<img src=x onerror="window.__pwned=1">`;

/** A GGUF whose name, chat template and tokens carry markup, with llama metadata of the given shape and no tensors. */
export function hostileGguf(shape: { nLayer: number; nCtx: number; nEmbd: number; nFf: number; nHead: number; nHeadKv: number }): Buffer {
  const { bytes } = writeGguf({
    metadata: [
      ["general.architecture", gv.str("llama")],
      ["general.name", gv.str(`${HOSTILE} evil model`)],
      ["llama.block_count", gv.u32(shape.nLayer)],
      ["llama.context_length", gv.u32(shape.nCtx)],
      ["llama.embedding_length", gv.u32(shape.nEmbd)],
      ["llama.feed_forward_length", gv.u32(shape.nFf)],
      ["llama.attention.head_count", gv.u32(shape.nHead)],
      ["llama.attention.head_count_kv", gv.u32(shape.nHeadKv)],
      ["tokenizer.chat_template", gv.str(`{{ '${HOSTILE}' }}{% for m in messages %}{{ m.content }}{% endfor %}`)],
      ["tokenizer.ggml.tokens", gv.arr("string", [gv.str(HOSTILE), gv.str("<script>window.__pwned=2</script>"), gv.str("ok")])],
    ],
  });
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
