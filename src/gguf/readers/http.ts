// ByteSource over an http(s) URL: each read is one GET with a Range header, and the body is read
// only as far as the requested bytes. A server that ignores Range (200 with the whole file) is
// still served: the reader skips to the offset in the stream and aborts it once it has the bytes,
// so a header read never downloads tensor data. Browser-safe (fetch + ReadableStream only).

import { AbortError, FetchError } from "../../errors.js";
import { MAX_RANGE_IGNORED_SKIP_BYTES } from "../limits.js";
import type { ByteSource } from "./byte-source.js";

export interface HttpSourceOptions {
  /** A fetch to use instead of the global one (proxies, auth, tests). */
  fetch?: typeof fetch;
  /** Extra request headers (e.g. Authorization). Range is set by the reader. */
  headers?: Record<string, string>;
  /** Aborts every read of this source (each read may also take its own signal). */
  signal?: AbortSignal;
}

export interface HttpByteSource extends ByteSource {
  /** Whether the server answered a Range request with the whole file (status 200). */
  readonly rangeIgnored: boolean;
}

/** A ByteSource reading `url` by HTTP Range requests. */
export function httpSource(url: string, opts: HttpSourceOptions = {}): HttpByteSource {
  const doFetch = opts.fetch ?? globalThis.fetch;
  let size: number | undefined;
  let rangeIgnored = false;

  async function read(offset: number, length: number, signal?: AbortSignal): Promise<Uint8Array> {
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
      throw new FetchError(`invalid byte range ${offset}+${length} for ${url}`, { url, offset, length });
    }
    if (length === 0 || (size !== undefined && offset >= size)) return new Uint8Array(0);
    const signals = [opts.signal, signal].filter((s): s is AbortSignal => s !== undefined);
    throwIfAborted(signals);
    // Our own controller lets us drop the connection as soon as we have the bytes, which is what
    // bounds a download from a server that ignores Range.
    const controller = new AbortController();
    const onAbort = (): void => controller.abort();
    for (const s of signals) s.addEventListener("abort", onAbort, { once: true });
    try {
      let res: Response;
      try {
        res = await doFetch(url, {
          headers: {
            ...opts.headers,
            Range: `bytes=${offset}-${offset + length - 1}`,
            // Ranges address the stored bytes; a compressed response would not. Browsers drop this
            // forbidden header, which is harmless there (they do not compress ranges).
            "Accept-Encoding": "identity",
          },
          signal: controller.signal,
        });
      } catch (err) {
        throwIfAborted(signals);
        throw new FetchError(`cannot fetch ${url}: ${err instanceof Error ? err.message : String(err)}; check the URL and the network`, {
          url,
        });
      }
      if (res.status === 416) {
        // Range Not Satisfiable: offset is at or past the end. "bytes */SIZE" tells the size.
        const total = parseContentRangeTotal(res.headers.get("content-range"));
        if (total !== undefined) size = total;
        await res.body?.cancel().catch(() => undefined);
        return new Uint8Array(0);
      }
      if (res.status !== 206 && res.status !== 200) {
        await res.body?.cancel().catch(() => undefined);
        throw new FetchError(`GET ${url} returned HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ""}`, {
          url,
          status: res.status,
        });
      }
      let skip = 0;
      if (res.status === 206) {
        const range = parseContentRange(res.headers.get("content-range"));
        if (range !== undefined) {
          if (range.total !== undefined) size = range.total;
          if (range.start !== offset) {
            await res.body?.cancel().catch(() => undefined);
            throw new FetchError(
              `GET ${url} answered range bytes=${offset}- with bytes ${range.start}-; the server mishandles Range requests`,
              { url, status: res.status, offset, start: range.start },
            );
          }
        }
      } else {
        rangeIgnored = true;
        const len = Number(res.headers.get("content-length") ?? NaN);
        if (Number.isSafeInteger(len) && len >= 0 && res.headers.get("content-encoding") === null) size = len;
        if (offset > MAX_RANGE_IGNORED_SKIP_BYTES) {
          controller.abort();
          throw new FetchError(
            `${url}: the server ignores Range requests, and reading byte ${offset} would mean downloading ` +
              `everything before it; download the file and pass its local path`,
            { url, status: res.status, offset },
          );
        }
        skip = offset;
      }
      const want = size === undefined ? length : Math.min(length, size - offset);
      const out = await readBody(res, skip, Math.max(0, want), url, signals);
      return out;
    } finally {
      // Ends the transfer whether or not the body was fully read.
      controller.abort();
      for (const s of signals) s.removeEventListener("abort", onAbort);
    }
  }

  return {
    get size() {
      return size;
    },
    get rangeIgnored() {
      return rangeIgnored;
    },
    name: url,
    read,
    async close(): Promise<void> {},
  };
}

/** Reads `want` bytes after discarding `skip`, then stops (the caller aborts the connection). */
async function readBody(res: Response, skip: number, want: number, url: string, signals: AbortSignal[]): Promise<Uint8Array> {
  const out = new Uint8Array(want);
  if (res.body === null) return out.subarray(0, 0);
  const reader = res.body.getReader();
  let skipped = 0;
  let filled = 0;
  try {
    while (filled < want) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (err) {
        throwIfAborted(signals);
        throw new FetchError(`reading ${url} failed: ${err instanceof Error ? err.message : String(err)}`, { url });
      }
      if (chunk.done) break;
      let bytes = chunk.value;
      if (skipped < skip) {
        const drop = Math.min(skip - skipped, bytes.length);
        skipped += drop;
        bytes = bytes.subarray(drop);
      }
      const take = Math.min(bytes.length, want - filled);
      out.set(bytes.subarray(0, take), filled);
      filled += take;
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
  return filled === want ? out : out.subarray(0, filled);
}

function throwIfAborted(signals: AbortSignal[]): void {
  for (const s of signals) if (s.aborted) throw new AbortError("reading the model was aborted");
}

function parseContentRange(header: string | null): { start: number; total: number | undefined } | undefined {
  if (header === null) return undefined;
  const m = /^\s*bytes\s+(\d+)-(\d+)\/(\d+|\*)\s*$/i.exec(header);
  if (m === null) return undefined;
  const start = Number(m[1]);
  const total = m[3] === "*" ? undefined : Number(m[3]);
  return { start, total: total !== undefined && Number.isSafeInteger(total) ? total : undefined };
}

function parseContentRangeTotal(header: string | null): number | undefined {
  if (header === null) return undefined;
  const m = /\/\s*(\d+)\s*$/.exec(header);
  const total = m ? Number(m[1]) : NaN;
  return Number.isSafeInteger(total) ? total : undefined;
}
