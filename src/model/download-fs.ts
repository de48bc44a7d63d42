// Node-only: downloads an hf: model file once into the local cache folder. The body is streamed
// to a uniquely named `.part` file next to the target and renamed into place only when complete,
// so the final name never holds a partial file (after an abort, an error or a crash).
// Imported dynamically by model-ref.ts, which stays browser-safe.

import { randomBytes } from "node:crypto";
import { mkdir, open, rename, stat, unlink } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { AbortError, FetchError, KvboundError } from "../errors.js";
import { MAX_FILE_BYTES } from "../gguf/limits.js";
import { DEFAULT_HF_ENDPOINT, hfResolveUrl, type HfFileRef, type ResolvedModelRef, type ResolveModelRefOptions } from "./model-ref.js";

type Env = Readonly<Record<string, string | undefined>>;

/** The models folder: $KVBOUND_CACHE, else $XDG_CACHE_HOME/kvbound/models, else ~/.cache/kvbound/models. */
export function defaultModelCacheDir(env: Env = process.env): string {
  if (env.KVBOUND_CACHE) return env.KVBOUND_CACHE;
  const base = env.XDG_CACHE_HOME || join(env.HOME || homedir(), ".cache");
  return join(base, "kvbound", "models");
}

/** Where an hf: file lives in the cache: `<cacheDir>/<owner>/<repo>/<revision>/<file>`. */
export function hfCachePath(hf: HfFileRef, cacheDir: string): string {
  // A revision such as "refs/pr/1" is one folder, not three.
  return join(cacheDir, hf.owner, hf.repo, encodeURIComponent(hf.revision), ...hf.file.split("/"));
}

/** Returns the cached file of `hf`, downloading it first when it is not in the cache. */
export async function downloadHfFile(hf: HfFileRef, opts: ResolveModelRefOptions = {}): Promise<ResolvedModelRef> {
  const env = opts.env ?? process.env;
  const url = hfResolveUrl(hf, opts.endpoint ?? (env.HF_ENDPOINT || DEFAULT_HF_ENDPOINT));
  const path = hfCachePath(hf, opts.cacheDir ?? defaultModelCacheDir(env));
  if (await isFile(path)) return { kind: "file", path, url };
  const token = opts.token ?? env.HF_TOKEN;
  await downloadToFile(url, path, {
    headers: token ? { Authorization: `Bearer ${token}` } : {},
    ...(opts.fetch === undefined ? {} : { fetch: opts.fetch }),
    ...(opts.onProgress === undefined ? {} : { onProgress: opts.onProgress }),
    ...(opts.signal === undefined ? {} : { signal: opts.signal }),
  });
  return { kind: "file", path, url };
}

export interface DownloadOptions {
  readonly fetch?: typeof fetch;
  readonly headers?: Readonly<Record<string, string>>;
  readonly onProgress?: (doneBytes: number, totalBytes: number | undefined) => void;
  readonly signal?: AbortSignal;
  /** Refuse bodies larger than this; default MAX_FILE_BYTES (gguf/limits.ts). */
  readonly maxBytes?: number;
}

/**
 * Streams `url` into `dest` through `<dest>.<random>.part`, renamed into place once the body is
 * complete. Throws FetchError (HTTP status, network error, truncated or oversized body) or
 * AbortError; either way the `.part` file is removed and `dest` is untouched.
 */
export async function downloadToFile(url: string, dest: string, opts: DownloadOptions = {}): Promise<void> {
  const doFetch = opts.fetch ?? globalThis.fetch;
  const maxBytes = opts.maxBytes ?? MAX_FILE_BYTES;
  const signal = opts.signal;
  if (signal?.aborted) throw new AbortError(`download of ${url} aborted`);
  let res: Response;
  try {
    res = await doFetch(url, { headers: { ...opts.headers }, ...(signal === undefined ? {} : { signal }), redirect: "follow" });
  } catch (err) {
    if (signal?.aborted) throw new AbortError(`download of ${url} aborted`);
    throw new FetchError(`cannot fetch ${url}: ${errText(err)}; check the network and the endpoint`, { url });
  }
  if (!res.ok) {
    await res.body?.cancel().catch(() => undefined);
    throw new FetchError(`GET ${url} answered ${res.status} ${res.statusText}; ${statusHint(res.status)}`, { url, status: res.status });
  }
  const lengthHeader = res.headers.get("content-length");
  const total = lengthHeader !== null && /^\d+$/.test(lengthHeader) ? Number(lengthHeader) : undefined;
  if (total !== undefined && total > maxBytes) {
    await res.body?.cancel().catch(() => undefined);
    throw new FetchError(`${url} is ${total} bytes, above the ${maxBytes}-byte limit for a model file`, { url, status: res.status, bytes: total });
  }
  if (res.body === null) throw new FetchError(`GET ${url} answered without a body`, { url, status: res.status });

  await mkdir(dirname(dest), { recursive: true });
  const part = `${dest}.${randomBytes(6).toString("hex")}.part`;
  const fh = await open(part, "wx");
  const reader = res.body.getReader();
  let done = 0;
  let ok = false;
  try {
    opts.onProgress?.(0, total);
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (err) {
        if (signal?.aborted) throw new AbortError(`download of ${url} aborted after ${done} bytes`);
        throw new FetchError(`the download of ${url} broke off after ${done} bytes: ${errText(err)}; run again to retry`, { url, bytes: done });
      }
      if (chunk.done) break;
      if (signal?.aborted) throw new AbortError(`download of ${url} aborted after ${done} bytes`);
      const bytes = chunk.value;
      done += bytes.byteLength;
      if (done > maxBytes || (total !== undefined && done > total)) {
        throw new FetchError(`${url} sent more than ${total ?? maxBytes} bytes; the server is misbehaving`, { url, bytes: done });
      }
      await fh.write(bytes, 0, bytes.byteLength);
      opts.onProgress?.(done, total);
    }
    if (total !== undefined && done !== total) {
      throw new FetchError(`${url} ended after ${done} of ${total} bytes; run again to retry`, { url, bytes: done, total });
    }
    await fh.sync();
    ok = true;
  } catch (err) {
    await reader.cancel().catch(() => undefined);
    if (err instanceof KvboundError) throw err;
    if (signal?.aborted) throw new AbortError(`download of ${url} aborted after ${done} bytes`);
    throw new FetchError(`writing ${part} failed: ${errText(err)}`, { url, bytes: done });
  } finally {
    await fh.close().catch(() => undefined);
    if (!ok) await unlink(part).catch(() => undefined);
  }
  // rename() replaces atomically on POSIX: a concurrent download of the same file just wins or loses.
  try {
    await rename(part, dest);
  } catch (err) {
    await unlink(part).catch(() => undefined);
    throw new FetchError(`cannot move the download into ${dest}: ${errText(err)}`, { url });
  }
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

function statusHint(status: number): string {
  if (status === 401 || status === 403) return "the repository may be gated or private: set HF_TOKEN to a token with access (and accept the model's terms on the Hub)";
  if (status === 404) return "check the owner, repository, file path and revision";
  if (status === 429) return "rate limited: wait and retry, or set HF_TOKEN";
  return "retry later or check the endpoint";
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
