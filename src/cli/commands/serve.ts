// `kvbound serve [--port N] [--dir D] [--host H]`: serves the built web pages (dist/web, made by
// `vite build web`) on localhost. A small node:http static server: GET/HEAD only, no directory
// listings, no path outside the root (`..`, encoded slashes, symlinks out), single byte ranges
// (the GGUF reader reads headers by Range), and the cross-origin isolation headers
// (COOP same-origin + COEP require-corp) that SharedArrayBuffer needs in a page.

import { createReadStream } from "node:fs";
import { realpath, stat } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { dirname, extname, join, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

import type { Command } from "commander";

import { InvalidSettingError } from "../../errors.js";
import type { CliIo } from "../main.js";

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

/** Starts serving `dir`; resolves once listening (port 0 = a free port). */
export async function startStaticServer(opts: StaticServerOptions): Promise<StaticServer> {
  const root = await realpath(resolve(opts.dir)).catch(() => null);
  const index = root === null ? null : await stat(join(root, "index.html")).catch(() => null);
  if (root === null || index === null || !index.isFile()) {
    throw new InvalidSettingError(`${opts.dir} holds no built page (index.html); run \`npm run build:web\` first or pass --dir`, {
      setting: "dir",
      value: opts.dir,
    });
  }
  const host = opts.host ?? DEFAULT_HOST;
  const server = createServer(staticHandler(root));
  await new Promise<void>((ok, fail) => {
    server.once("error", (err: NodeJS.ErrnoException) => {
      fail(
        err.code === "EADDRINUSE"
          ? new InvalidSettingError(`port ${opts.port ?? DEFAULT_PORT} on ${host} is in use; pass another --port (0 picks a free one)`, {
              setting: "port",
              value: opts.port ?? DEFAULT_PORT,
            })
          : err,
      );
    });
    server.listen(opts.port ?? DEFAULT_PORT, host, () => ok());
  });
  const port = (server.address() as AddressInfo).port;
  const shownHost = host.includes(":") ? `[${host}]` : host;
  return {
    server,
    port,
    url: `http://${shownHost}:${port}/`,
    close: () =>
      new Promise<void>((ok) => {
        server.closeAllConnections();
        server.close(() => ok());
      }),
  };
}

/** dist/web of the kvbound package this file belongs to (src/cli/commands or dist/cli/commands). */
export function defaultWebDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  // Both layouts sit three levels below the package root.
  return resolve(here, "..", "..", "..", "dist", "web");
}

export interface ServeFlags {
  port?: string;
  dir?: string;
  host?: string;
}

function parsePort(text: string | undefined): number {
  if (text === undefined) return DEFAULT_PORT;
  const n = /^\d+$/.test(text.trim()) ? Number(text.trim()) : NaN;
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    throw new InvalidSettingError(`port ${JSON.stringify(text)} is invalid: use an integer in [0, 65535] (0 = any free port)`, { setting: "port", value: text });
  }
  return n;
}

/** Starts the server and prints its URL; the process then stays up until interrupted. */
export async function serveCommand(flags: ServeFlags, io: CliIo): Promise<StaticServer> {
  const started = await startStaticServer({ dir: flags.dir ?? defaultWebDir(), port: parsePort(flags.port), host: flags.host ?? DEFAULT_HOST });
  io.stdout(`kvbound: serving ${flags.dir ?? defaultWebDir()} at ${started.url} (Ctrl+C to stop)\n`);
  return started;
}

/** Adds `serve` to the CLI. */
export function registerServe(program: Command, io: CliIo, setExit: (code: number) => void): Command {
  return program
    .command("serve")
    .description("serve the web planner (built by `npm run build:web`) on localhost, with COOP/COEP headers")
    .option("--port <n>", `port to listen on (0 = any free port)`, String(DEFAULT_PORT))
    .option("--dir <folder>", "folder of the built page (default: the package's dist/web)")
    .option("--host <address>", "address to listen on", DEFAULT_HOST)
    .action(async (flags: ServeFlags) => {
      await serveCommand(flags, io);
      setExit(0);
    });
}
