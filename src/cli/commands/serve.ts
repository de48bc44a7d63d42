// `kvbound serve [--port N] [--dir D] [--host H]`: serves the built web pages (dist/web, made by
// `vite build web`) on localhost. A small node:http static server: GET/HEAD only, no directory
// listings, no path outside the root (`..`, encoded slashes, symlinks out), single byte ranges
// (the GGUF reader reads headers by Range), and the cross-origin isolation headers
// (COOP same-origin + COEP require-corp) that SharedArrayBuffer needs in a page.
// With `--model M [cache flags] [--parallel N]` the same server answers the OpenAI-compatible API
// (src/engine/server.ts) under /v1 and /health, and the pages stay at / when they are built.

import { createReadStream } from "node:fs";
import { realpath, stat } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { dirname, extname, join, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

import type { Command } from "commander";

import { DEFAULT_MAX_QUEUE, DEFAULT_PARALLEL, DEFAULT_QUEUE_TIMEOUT_MS, MAX_PARALLEL, MAX_QUEUE, MAX_REQUEST_MAX_TOKENS, OpenAiServer, type OpenAiServerOptions } from "../../engine/server.js";
import type { LoadedModel } from "../../engine/load-model.js";
import { InvalidSettingError } from "../../errors.js";
import { parseCount } from "../../plan/parse.js";
import { addCacheFlags, cacheConfigFromFlags, DEFAULT_CLI_CONTEXT_WINDOW, type RawCacheFlags } from "../cache-flags.js";
import type { CliIo } from "../main.js";
import { runtimeCache } from "../runtime-cache.js";
import { addSamplingFlags, loadModelForCli, samplerFromFlags, type SamplingFlags } from "./run.js";
import { addThreadsFlag, threadsFromFlags, type ThreadsFlags } from "../threads-flag.js";
import { addBackendFlag, backendDefaultCodec, backendFromFlags, type BackendFlags } from "../backend-flag.js";

/** Default port (an unassigned one, so it rarely collides); --port 0 picks a free one. */
export const DEFAULT_PORT = 5178;
/** Localhost only by default: the page is for this machine. */
export const DEFAULT_HOST = "127.0.0.1";
/** Longest request path considered (anything longer is not a file of ours). */
export const MAX_URL_PATH_CHARS = 2048;

/** Sent with every response: cross-origin isolation for SharedArrayBuffer, and no sniffing. */
export const SERVE_HEADERS: Readonly<Record<string, string>> = {
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Embedder-Policy": "require-corp",
  "Cross-Origin-Resource-Policy": "same-origin",
  "X-Content-Type-Options": "nosniff",
  "Cache-Control": "no-cache",
};

export const MIME_TYPES: Readonly<Record<string, string>> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".wasm": "application/wasm",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".txt": "text/plain; charset=utf-8",
  ".woff2": "font/woff2",
  ".gguf": "application/octet-stream",
  ".bin": "application/octet-stream",
};

export interface StaticServerOptions {
  /** Folder to serve (must hold index.html). */
  readonly dir: string;
  readonly port?: number;
  readonly host?: string;
}

export interface StaticServer {
  readonly server: Server;
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

function send(res: ServerResponse, status: number, body: string, extra: Record<string, string> = {}): void {
  res.writeHead(status, { ...SERVE_HEADERS, "Content-Type": "text/plain; charset=utf-8", "Content-Length": String(Buffer.byteLength(body)), ...extra });
  res.end(body);
}

/** `bytes=a-b`, `bytes=a-`, `bytes=-n` for a file of `size` bytes; null = unsatisfiable; undefined = not a single range (serve it all). */
export function parseRange(header: string, size: number): { start: number; end: number } | null | undefined {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (m === null) return undefined;
  const [, a = "", b = ""] = m;
  if (a === "" && b === "") return null;
  let start: number;
  let end: number;
  if (a === "") {
    const n = Number(b);
    if (n === 0) return null;
    start = Math.max(0, size - n);
    end = size - 1;
  } else {
    start = Number(a);
    end = b === "" ? size - 1 : Math.min(Number(b), size - 1);
  }
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start > end || start >= size) return null;
  return { start, end };
}

/**
 * The file under `root` that a URL path names, or null when it names nothing we serve. `root`
 * must be a real path (no symlinks); the result is checked again after resolving symlinks.
 */
export async function resolveRequestPath(root: string, urlPath: string): Promise<string | null> {
  if (urlPath.length > MAX_URL_PATH_CHARS) return null;
  let decoded: string;
  try {
    decoded = decodeURIComponent(urlPath);
  } catch {
    return null;
  }
  // NUL and backslashes have no business in our file names (backslash is a separator on Windows).
  if (decoded.includes("\0") || decoded.includes("\\")) return null;
  const segments = decoded.split("/");
  for (const s of segments) if (s === "..") return null;
  let path = resolve(root, `.${decoded.startsWith("/") ? decoded : `/${decoded}`}`);
  if (path !== root && !path.startsWith(root + sep)) return null;
  let info = await stat(path).catch(() => null);
  if (info?.isDirectory()) {
    path = join(path, "index.html");
    info = await stat(path).catch(() => null);
  }
  if (info === null || !info.isFile()) return null;
  const real = await realpath(path).catch(() => null);
  if (real === null || (real !== root && !real.startsWith(root + sep))) return null;
  return real;
}

/** The request handler for a folder whose real path is `root`. */
export function staticHandler(root: string): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    void (async () => {
      if (req.method !== "GET" && req.method !== "HEAD") {
        send(res, 405, "method not allowed\n", { Allow: "GET, HEAD" });
        return;
      }
      const rawUrl = req.url ?? "/";
      const pathPart = rawUrl.split("?")[0]!.split("#")[0]!;
      const file = await resolveRequestPath(root, pathPart);
      if (file === null) {
        send(res, 404, "not found\n");
        return;
      }
      const info = await stat(file);
      const size = info.size;
      const type = MIME_TYPES[extname(file).toLowerCase()] ?? "application/octet-stream";
      const headers: Record<string, string> = { ...SERVE_HEADERS, "Content-Type": type, "Accept-Ranges": "bytes" };
      let start = 0;
      let end = size - 1;
      let status = 200;
      const rangeHeader = req.headers.range;
      if (typeof rangeHeader === "string" && size > 0) {
        const range = parseRange(rangeHeader, size);
        if (range === null) {
          send(res, 416, "range not satisfiable\n", { "Content-Range": `bytes */${size}` });
          return;
        }
        if (range !== undefined) {
          ({ start, end } = range);
          status = 206;
          headers["Content-Range"] = `bytes ${start}-${end}/${size}`;
        }
      }
      headers["Content-Length"] = String(size === 0 ? 0 : end - start + 1);
      res.writeHead(status, headers);
      if (req.method === "HEAD" || size === 0) {
        res.end();
        return;
      }
      const stream = createReadStream(file, { start, end });
      stream.on("error", () => res.destroy());
      res.on("close", () => stream.destroy());
      stream.pipe(res);
    })().catch(() => {
      if (!res.headersSent) send(res, 500, "internal error\n");
      else res.destroy();
    });
  };
}

/** The real path of a folder holding a built page (index.html), or null. */
async function webRoot(dir: string): Promise<string | null> {
  const root = await realpath(resolve(dir)).catch(() => null);
  const index = root === null ? null : await stat(join(root, "index.html")).catch(() => null);
  return root !== null && index !== null && index.isFile() ? root : null;
}

function noPageError(dir: string): InvalidSettingError {
  return new InvalidSettingError(`${dir} holds no built page (index.html); run \`npm run build:web\` first or pass --dir`, { setting: "dir", value: dir });
}

/** Listens on host:port (0 = a free port); EADDRINUSE becomes a typed error naming the fix. */
async function listen(server: Server, port: number, host: string): Promise<StaticServer> {
  await new Promise<void>((ok, fail) => {
    server.once("error", (err: NodeJS.ErrnoException) => {
      fail(
        err.code === "EADDRINUSE"
          ? new InvalidSettingError(`port ${port} on ${host} is in use; pass another --port (0 picks a free one)`, { setting: "port", value: port })
          : err,
      );
    });
    server.listen(port, host, () => ok());
  });
  const bound = (server.address() as AddressInfo).port;
  const shownHost = host.includes(":") ? `[${host}]` : host;
  return {
    server,
    port: bound,
    url: `http://${shownHost}:${bound}/`,
    close: () =>
      new Promise<void>((ok) => {
        server.closeAllConnections();
        server.close(() => ok());
      }),
  };
}

/** Starts serving `dir`; resolves once listening (port 0 = a free port). */
export async function startStaticServer(opts: StaticServerOptions): Promise<StaticServer> {
  const root = await webRoot(opts.dir);
  if (root === null) throw noPageError(opts.dir);
  return listen(createServer(staticHandler(root)), opts.port ?? DEFAULT_PORT, opts.host ?? DEFAULT_HOST);
}

export interface ApiServerOptions extends OpenAiServerOptions {
  readonly loaded: LoadedModel;
  readonly port?: number;
  readonly host?: string;
  /** Folder of the built pages to serve at /; null or absent: the API only. It must hold index.html. */
  readonly dir?: string | null;
}

export interface ApiServer extends StaticServer {
  readonly api: OpenAiServer;
  /** The real path of the pages served at /, or null. */
  readonly webRoot: string | null;
}

/** Starts the OpenAI-compatible API (and the pages at / when `dir` is given); resolves once listening. */
export async function startApiServer(opts: ApiServerOptions): Promise<ApiServer> {
  const { loaded, port, host, dir, ...apiOpts } = opts;
  let root: string | null = null;
  if (dir !== undefined && dir !== null) {
    root = await webRoot(dir);
    if (root === null) throw noPageError(dir);
  }
  const api = new OpenAiServer(loaded, { ...apiOpts, ...(root !== null ? { fallback: staticHandler(root) } : {}) });
  const started = await listen(createServer(api.handle), port ?? DEFAULT_PORT, host ?? DEFAULT_HOST);
  return {
    ...started,
    api,
    webRoot: root,
    close: async () => {
      await Promise.all([api.close(), started.close()]);
    },
  };
}

/** dist/web of the kvbound package this file belongs to (src/cli/commands or dist/cli/commands). */
export function defaultWebDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  // Both layouts sit three levels below the package root.
  return resolve(here, "..", "..", "..", "dist", "web");
}

export interface ServeFlags extends RawCacheFlags, SamplingFlags, ThreadsFlags, BackendFlags {
  port?: string;
  dir?: string;
  host?: string;
  model?: string;
  parallel?: string;
  queue?: string;
  queueTimeoutMs?: string;
  maxTokens?: string;
  alias?: string;
}

function parsePort(text: string | undefined): number {
  if (text === undefined) return DEFAULT_PORT;
  const n = /^\d+$/.test(text.trim()) ? Number(text.trim()) : NaN;
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    throw new InvalidSettingError(`port ${JSON.stringify(text)} is invalid: use an integer in [0, 65535] (0 = any free port)`, { setting: "port", value: text });
  }
  return n;
}

/** A whole number in [0, max] (queue length, timeouts). */
function parseWhole(text: string, setting: string, max: number): number {
  const n = /^\d+$/.test(text.trim()) ? Number(text.trim()) : NaN;
  if (!Number.isSafeInteger(n) || n > max) {
    throw new InvalidSettingError(`${setting} ${JSON.stringify(text)} is invalid: use a whole number in [0, ${max}]`, { setting, value: text });
  }
  return n;
}

/** Flags that only mean something with --model (the API). */
const API_ONLY_FLAGS: readonly (keyof ServeFlags)[] = [
  "parallel", "queue", "queueTimeoutMs", "maxTokens", "alias", "contextWindow", "slidingWindow", "sinks", "policy", "prefix", "h2oRecent", "h2oHeavy",
  "h2oWindow", "codec", "pageSize", "prefillChunk", "budget", "cacheBudget", "temperature", "topK", "topP", "minP", "repeatPenalty", "repeatLastN", "presencePenalty",
  "frequencyPenalty", "seed", "threads", "backend",
];

/** The API server's options from the flags (everything but the model, which is loaded after). */
export function apiOptionsFromFlags(flags: ServeFlags, nCtxTrain: number): OpenAiServerOptions {
  const maxTokens = flags.maxTokens === undefined ? undefined : parseWhole(flags.maxTokens, "max-tokens", MAX_REQUEST_MAX_TOKENS);
  return {
    cache: cacheConfigFromFlags(flags, Math.min(nCtxTrain, DEFAULT_CLI_CONTEXT_WINDOW)),
    parallel: flags.parallel === undefined ? DEFAULT_PARALLEL : parseCount(flags.parallel, "parallel", MAX_PARALLEL),
    maxQueue: flags.queue === undefined ? DEFAULT_MAX_QUEUE : parseWhole(flags.queue, "queue", MAX_QUEUE),
    queueTimeoutMs: flags.queueTimeoutMs === undefined ? DEFAULT_QUEUE_TIMEOUT_MS : parseWhole(flags.queueTimeoutMs, "queue-timeout-ms", 24 * 3600 * 1000),
    defaults: { ...samplerFromFlags(flags), ...(maxTokens !== undefined ? { maxTokens } : {}) },
    ...(flags.alias !== undefined ? { modelId: flags.alias } : {}),
  };
}

/**
 * Starts the server and prints its URL; the process then stays up until interrupted. Without
 * --model: the web pages only. With --model: the API, plus the pages at / when --dir is given or the
 * package's dist/web is built.
 */
export async function serveCommand(flags: ServeFlags, io: CliIo): Promise<StaticServer | ApiServer> {
  const port = parsePort(flags.port);
  const host = flags.host ?? DEFAULT_HOST;
  if (flags.model === undefined) {
    const given = API_ONLY_FLAGS.find((k) => flags[k] !== undefined);
    if (given !== undefined) {
      const name = given.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
      throw new InvalidSettingError(`--${name} configures the API, which needs --model M; add --model, or drop --${name} to serve the web pages only`, { setting: name, value: flags[given] });
    }
    const started = await startStaticServer({ dir: flags.dir ?? defaultWebDir(), port, host });
    io.stdout(`kvbound: serving ${flags.dir ?? defaultWebDir()} at ${started.url} (Ctrl+C to stop)\n`);
    return started;
  }
  // Settings first, so a typo is reported before a model is loaded.
  const checked = apiOptionsFromFlags(flags, DEFAULT_CLI_CONTEXT_WINDOW);
  const threads = threadsFromFlags(flags);
  const backend = backendFromFlags(flags);
  const defaultCodec = backendDefaultCodec(backend);
  // The pool serves --parallel sequences: the planner sizes it (and --budget) for all of them.
  const rc = await runtimeCache(flags.model, flags, io, { sequences: checked.parallel ?? DEFAULT_PARALLEL, ...(defaultCodec !== undefined ? { defaultCodec } : {}) });
  const loaded = await loadModelForCli(flags.model, io, rc.window, threads, backend);
  const dir = flags.dir ?? ((await webRoot(defaultWebDir())) !== null ? defaultWebDir() : null);
  const started = await startApiServer({ loaded, port, host, dir, ...apiOptionsFromFlags(flags, loaded.model.hp.nCtxTrain), cache: rc.cacheInput });
  const api = started.api;
  const c = api.config;
  const base = started.url.replace(/\/$/, "");
  io.stdout(
    `kvbound: OpenAI-compatible API for ${api.modelId} at ${base}/v1 (${api.parallel} slot${api.parallel === 1 ? "" : "s"}, ` +
      `${c.policy.kind} window ${c.windowTokens} tokens, ${api.cache.stats().pagesTotal} pages of ${c.pageSize} tokens in the pool; GET ${base}/health)\n` +
      (started.webRoot !== null ? `kvbound: web pages from ${started.webRoot} at ${started.url}\n` : "") +
      "kvbound: Ctrl+C to stop\n",
  );
  return started;
}

/** Adds `serve` to the CLI. */
export function registerServe(program: Command, io: CliIo, setExit: (code: number) => void): Command {
  const cmd = program
    .command("serve")
    .description(
      "serve the web planner (built by `npm run build:web`) on localhost, with COOP/COEP headers; with --model, " +
        "an OpenAI-compatible API (POST /v1/chat/completions, /v1/completions, GET /v1/models, /health) with the pages at /",
    )
    .option("--port <n>", `port to listen on (0 = any free port)`, String(DEFAULT_PORT))
    .option("--dir <folder>", "folder of the built page (default: the package's dist/web; with --model, served when built)")
    .option("--host <address>", "address to listen on", DEFAULT_HOST)
    .option("--model <ref>", "serve the OpenAI-compatible API for this GGUF (path, http(s) URL or hf:owner/repo/file.gguf)")
    .option("--parallel <n>", `conversations served at once, each in its own sequence of one shared page pool (default ${DEFAULT_PARALLEL})`)
    .option("--queue <n>", `requests that may wait for a slot; more get 503 (default ${DEFAULT_MAX_QUEUE})`)
    .option("--queue-timeout-ms <ms>", `how long a request may wait for a slot before it gets 503 (default ${DEFAULT_QUEUE_TIMEOUT_MS})`)
    .option("--max-tokens <n>", "max_tokens for requests that set none (default: the cache window)")
    .option("--alias <name>", "model id the API reports (default: the file name without .gguf)");
  addSamplingFlags(cmd);
  addThreadsFlag(cmd);
  addBackendFlag(cmd);
  return addCacheFlags(cmd, { runtimeBudget: true }).action(async (flags: ServeFlags) => {
    await serveCommand(flags, io);
    setExit(0);
  });
}
