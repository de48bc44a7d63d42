import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { AbortError, FetchError } from "../errors.js";
import { defaultModelCacheDir } from "./download-fs.js";
import { resolveModelRef } from "./model-ref.js";

// A local stand-in for the Hub on 127.0.0.1: tests never touch the internet.
const BODY = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7 + 3) & 0xff));
const requests: Array<{ url: string; auth: string | undefined }> = [];
let stall: (() => void) | undefined;
let server: Server;
let base: string;
let cacheDir: string;

function handler(req: IncomingMessage, res: ServerResponse): void {
  requests.push({ url: req.url ?? "", auth: req.headers.authorization });
  const url = req.url ?? "";
  if (url === "/o/r/resolve/main/m.gguf" || url === "/o/r/resolve/v1.0/sub/dir/m.gguf") {
    res.writeHead(200, { "content-length": String(BODY.length) });
    // Several chunks, so progress is reported more than once.
    for (let off = 0; off < BODY.length; off += 65536) res.write(BODY.subarray(off, off + 65536));
    res.end();
  } else if (url === "/o/gated/resolve/main/m.gguf") {
    res.writeHead(401).end("unauthorized");
  } else if (url === "/o/r/resolve/main/truncated.gguf") {
    res.writeHead(200, { "content-length": "1000" });
    res.write(BODY.subarray(0, 500), () => res.destroy());
  } else if (url === "/o/r/resolve/main/slow.gguf") {
    res.writeHead(200, { "content-length": String(BODY.length) });
    res.write(BODY.subarray(0, 1000));
    stall = () => res.destroy(); // never finishes unless the client goes away
  } else {
    res.writeHead(404).end("not found");
  }
}

beforeAll(async () => {
  server = createServer(handler);
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  stall?.();
  server.closeAllConnections();
  await new Promise<void>((ok) => server.close(() => ok()));
});
beforeEach(async () => {
  requests.length = 0;
  cacheDir = await mkdtemp(join(tmpdir(), "kvbound-models-"));
  return () => rm(cacheDir, { recursive: true, force: true });
});

async function filesUnder(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true, withFileTypes: true })).filter((d) => d.isFile()).map((d) => d.name);
}

describe("resolveModelRef hf:", () => {
  it("downloads once into <cache>/owner/repo/rev/file with progress, then serves the cache", async () => {
    const progress: Array<[number, number | undefined]> = [];
    const opts = { cacheDir, endpoint: base, env: { HF_TOKEN: "secret" }, onProgress: (d: number, t: number | undefined) => progress.push([d, t]) };
    const first = await resolveModelRef("hf:o/r/m.gguf", opts);
    expect(first).toEqual({ kind: "file", path: join(cacheDir, "o", "r", "main", "m.gguf"), url: `${base}/o/r/resolve/main/m.gguf` });
    expect((await readFile(join(cacheDir, "o/r/main/m.gguf"))).equals(BODY)).toBe(true);
    expect(requests).toEqual([{ url: "/o/r/resolve/main/m.gguf", auth: "Bearer secret" }]);
    expect(progress.length).toBeGreaterThan(2);
    expect(progress.at(-1)).toEqual([BODY.length, BODY.length]);
    for (let i = 1; i < progress.length; i++) expect(progress[i]![0]).toBeGreaterThanOrEqual(progress[i - 1]![0]);

    const second = await resolveModelRef("hf:o/r/m.gguf", opts);
    expect(second).toEqual(first);
    expect(requests.length).toBe(1); // no request the second time
    expect(await filesUnder(cacheDir)).toEqual(["m.gguf"]); // no .part left behind
  });

  it("honours HF_ENDPOINT, sub folders and revisions, and sends no token when there is none", async () => {
    const r = await resolveModelRef("hf:o/r/sub/dir/m.gguf@v1.0", { cacheDir, env: { HF_ENDPOINT: base } });
    expect(r).toMatchObject({ kind: "file", path: join(cacheDir, "o", "r", "v1.0", "sub", "dir", "m.gguf") });
    expect(requests).toEqual([{ url: "/o/r/resolve/v1.0/sub/dir/m.gguf", auth: undefined }]);
  });

  it("turns HTTP errors into FetchError and leaves no file", async () => {
    const e404 = await resolveModelRef("hf:o/r/missing.gguf", { cacheDir, endpoint: base, env: {} }).catch((e: unknown) => e);
    expect(e404).toBeInstanceOf(FetchError);
    expect((e404 as FetchError).details.status).toBe(404);
    const e401 = await resolveModelRef("hf:o/gated/m.gguf", { cacheDir, endpoint: base, env: {} }).catch((e: unknown) => e);
    expect(e401).toBeInstanceOf(FetchError);
    expect((e401 as Error).message).toContain("HF_TOKEN");
    const cut = await resolveModelRef("hf:o/r/truncated.gguf", { cacheDir, endpoint: base, env: {} }).catch((e: unknown) => e);
    expect(cut).toBeInstanceOf(FetchError);
    expect(await filesUnder(cacheDir)).toEqual([]);
  });

  it("aborts with AbortError, removing the partial download", async () => {
    const ac = new AbortController();
    const p = resolveModelRef("hf:o/r/slow.gguf", {
      cacheDir,
      endpoint: base,
      env: {},
      signal: ac.signal,
      onProgress: (done) => { if (done > 0) ac.abort(); },
    });
    await expect(p).rejects.toBeInstanceOf(AbortError);
    stall?.();
    expect(await filesUnder(cacheDir)).toEqual([]);
  });

  it("refuses a network failure with FetchError", async () => {
    const failing = (async () => { throw new TypeError("fetch failed"); }) as unknown as typeof fetch;
    await expect(resolveModelRef("hf:o/r/m.gguf", { cacheDir, endpoint: base, env: {}, fetch: failing })).rejects.toBeInstanceOf(FetchError);
  });
});

describe("defaultModelCacheDir", () => {
  it("prefers KVBOUND_CACHE, then XDG_CACHE_HOME, then ~/.cache", () => {
    expect(defaultModelCacheDir({ KVBOUND_CACHE: "/c" })).toBe("/c");
    expect(defaultModelCacheDir({ XDG_CACHE_HOME: "/x" })).toBe(join("/x", "kvbound", "models"));
    expect(defaultModelCacheDir({ HOME: "/h" })).toBe(join("/h", ".cache", "kvbound", "models"));
  });
});
