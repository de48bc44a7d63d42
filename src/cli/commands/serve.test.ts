// The static server behind `kvbound serve`: isolation headers, MIME types, byte ranges, and no
// way out of its folder (.., encoded .., symlinks), tested against a real socket on 127.0.0.1; and
// `serve --model`: the API under /v1 and /health with the pages still at /, flags checked first.

import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { InvalidSettingError } from "../../errors.js";
import { requireShared, sharedPath } from "../../../test/helpers/shared.js";
import { parseRange, serveCommand, startStaticServer, type StaticServer } from "./serve.js";

let base: string;
let server: StaticServer;

/** A raw GET (fetch would normalise `..` out of the path before sending it). */
function get(path: string, headers: Record<string, string> = {}, method = "GET"): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((ok, fail) => {
    const req = request({ host: "127.0.0.1", port: server.port, path, method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => ok({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") }));
    });
    req.on("error", fail);
    req.end();
  });
}

beforeAll(async () => {
  base = mkdtempSync(join(tmpdir(), "kvbound-serve-"));
  const root = join(base, "web");
  mkdirSync(join(root, "assets"), { recursive: true });
  writeFileSync(join(root, "index.html"), "<!doctype html><title>t</title>");
  writeFileSync(join(root, "assets", "app.js"), "export const x = 1;\n");
  writeFileSync(join(root, "assets", "app.css"), "body{}\n");
  writeFileSync(join(root, "assets", "k.wasm"), new Uint8Array([0, 97, 115, 109]));
  writeFileSync(join(root, "data.bin"), "0123456789");
  writeFileSync(join(base, "secret.txt"), "do not serve");
  symlinkSync(join(base, "secret.txt"), join(root, "link.txt"));
  server = await startStaticServer({ dir: root, port: 0 });
});

afterAll(async () => {
  await server?.close();
  rmSync(base, { recursive: true, force: true });
});

describe("kvbound serve", () => {
  it("serves index.html for / with COOP/COEP and the HTML type", async () => {
    const r = await get("/");
    expect(r.status).toBe(200);
    expect(r.body).toContain("<title>t</title>");
    expect(r.headers["content-type"]).toBe("text/html; charset=utf-8");
    expect(r.headers["cross-origin-opener-policy"]).toBe("same-origin");
    expect(r.headers["cross-origin-embedder-policy"]).toBe("require-corp");
  });

  it("gives JS, CSS and wasm their MIME types", async () => {
    expect((await get("/assets/app.js")).headers["content-type"]).toBe("text/javascript; charset=utf-8");
    expect((await get("/assets/app.css?v=1")).headers["content-type"]).toBe("text/css; charset=utf-8");
    expect((await get("/assets/k.wasm")).headers["content-type"]).toBe("application/wasm");
  });

  it("refuses paths out of the folder: .., encoded .., encoded slashes, backslashes, symlinks", async () => {
    for (const p of ["/../secret.txt", "/assets/../../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt", "/assets%2f..%2f..%2fsecret.txt", "/..\\secret.txt", "/link.txt", "/%00", "/%E0%A4%A"]) {
      const r = await get(p);
      expect(r.status, p).toBe(404);
      expect(r.body).not.toContain("do not serve");
    }
  });

  it("answers single byte ranges with 206 and refuses unsatisfiable ones", async () => {
    const r = await get("/data.bin", { Range: "bytes=2-5" });
    expect(r.status).toBe(206);
    expect(r.body).toBe("2345");
    expect(r.headers["content-range"]).toBe("bytes 2-5/10");
    expect((await get("/data.bin", { Range: "bytes=-3" })).body).toBe("789");
    expect((await get("/data.bin", { Range: "bytes=20-" })).status).toBe(416);
  });

  it("allows GET and HEAD only", async () => {
    expect((await get("/", {}, "POST")).status).toBe(405);
    const head = await get("/data.bin", {}, "HEAD");
    expect(head.status).toBe(200);
    expect(head.headers["content-length"]).toBe("10");
    expect(head.body).toBe("");
  });

  it("parseRange covers the forms the GGUF reader sends", () => {
    expect(parseRange("bytes=0-99", 50)).toEqual({ start: 0, end: 49 });
    expect(parseRange("bytes=10-", 50)).toEqual({ start: 10, end: 49 });
    expect(parseRange("bytes=5-2", 50)).toBeNull();
    expect(parseRange("bytes=0-1,3-4", 50)).toBeUndefined();
  });

  it("a folder without a built page is a typed error naming the fix", async () => {
    await expect(startStaticServer({ dir: join(base, "nope"), port: 0 })).rejects.toThrow(InvalidSettingError);
    await expect(startStaticServer({ dir: join(base, "nope"), port: 0 })).rejects.toThrow(/build:web/);
  });
});

const STORIES_GGUF = "models/stories260K.gguf";

describe.skipIf(!requireShared(STORIES_GGUF))("kvbound serve --model", () => {
  const io = (out: string[]) => ({ stdout: (t: string) => void out.push(t), stderr: () => undefined });

  it("answers the API under /v1 and /health and keeps the pages at /", async () => {
    const out: string[] = [];
    const started = await serveCommand({ model: sharedPath(STORIES_GGUF), port: "0", dir: join(base, "web"), parallel: "2", contextWindow: "128", temperature: "0" }, io(out));
    try {
      expect(out.join("")).toMatch(/OpenAI-compatible API for stories260K at http:\/\/127\.0\.0\.1:\d+\/v1 \(2 slots, context window 128 tokens/);
      expect(out.join("")).toContain("web pages from");
      const url = started.url;
      const page = await fetch(url);
      expect(page.status).toBe(200);
      expect(await page.text()).toContain("<title>t</title>");
      expect(page.headers.get("cross-origin-embedder-policy")).toBe("require-corp");
      const models = (await (await fetch(`${url}v1/models`)).json()) as { data: { id: string }[] };
      expect(models.data[0]!.id).toBe("stories260K");
      const health = (await (await fetch(`${url}health`)).json()) as { slots: { total: number }; windowTokens: number };
      expect(health.slots.total).toBe(2);
      expect(health.windowTokens).toBe(128);
      // --temperature 0 is the server's default: two requests give the same text.
      const ask = async () => {
        const r = await fetch(`${url}v1/completions`, { method: "POST", body: JSON.stringify({ prompt: "Once upon a time", max_tokens: 12 }) });
        return ((await r.json()) as { choices: { text: string }[] }).choices[0]!.text;
      };
      expect(await ask()).toBe(await ask());
    } finally {
      await started.close();
    }
  });

  it("refuses API flags without --model, and bad values before loading the model", async () => {
    await expect(serveCommand({ parallel: "2", port: "0", dir: join(base, "web") }, io([]))).rejects.toThrow(/--parallel configures the API, which needs --model/);
    await expect(serveCommand({ model: "/nonexistent.gguf", parallel: "0", port: "0" }, io([]))).rejects.toThrow(InvalidSettingError);
    await expect(serveCommand({ model: "/nonexistent.gguf", queue: "-1", port: "0" }, io([]))).rejects.toThrow(/queue "-1" is invalid/);
    await expect(serveCommand({ model: "/nonexistent.gguf", codec: "nope", port: "0" }, io([]))).rejects.toThrow(/codec "nope" is unknown/);
  });
});
