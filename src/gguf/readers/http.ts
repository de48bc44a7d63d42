// ByteSource over an http(s) URL: each read is one GET with a Range header, and the body is read
// only as far as the requested bytes. A server that ignores Range (200 with the whole file) is
// still served: the reader skips to the offset in the stream and keeps the stream open, so reads
// that go forward (a model streamed tensor by tensor) continue the same download instead of
// starting it over; close() drops it, so a header read never downloads tensor data.
// Browser-safe (fetch + ReadableStream only).

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
  /** The open whole-file body of a server that ignores Range, positioned after what was read. */
  let live: Cursor | null = null;
  const dropLive = (): void => {
    if (live === null) return;
    live.controller.abort();
    void live.reader.cancel().catch(() => undefined);
    live = null;
  };
  const keep = (cursor: Cursor): void => {
    dropLive();
    live = cursor;
  };

  async function read(offset: number, length: number, signal?: AbortSignal): Promise<Uint8Array> {
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
      throw new FetchError(`invalid byte range ${offset}+${length} for ${url}`, { url, offset, length });
    }
    if (length === 0 || (size !== undefined && offset >= size)) return new Uint8Array(0);
    const signals = [opts.signal, signal].filter((s): s is AbortSignal => s !== undefined);
    throwIfAborted(signals);
    if (live !== null && offset >= live.pos && offset - live.pos <= MAX_RANGE_IGNORED_SKIP_BYTES) {
      // Taken while in use: a concurrent read opens its own request.
      const cursor = live;
      live = null;
      const onAbortLive = (): void => cursor.controller.abort();
      for (const s of signals) s.addEventListener("abort", onAbortLive, { once: true });
      try {
        const want = size === undefined ? length : Math.min(length, size - offset);
        const out = await pull(cursor, offset - cursor.pos, Math.max(0, want), url, signals);
        keep(cursor);
        return out;
      } catch (err) {
        cursor.controller.abort();
        throw err;
      } finally {
        for (const s of signals) s.removeEventListener("abort", onAbortLive);
      }
    }
    dropLive();
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
      if (res.body === null) return new Uint8Array(0);
      const cursor: Cursor = { reader: res.body.getReader(), controller, pos: 0, rest: new Uint8Array(0) };
      try {
        const out = await pull(cursor, skip, Math.max(0, want), url, signals);
        // A whole-file body goes on serving the reads after this one.
        if (res.status === 200) keep(cursor);
        return out;
      } finally {
        if (live !== cursor) await cursor.reader.cancel().catch(() => undefined);
      }
    } finally {
      // Ends the transfer whether or not the body was fully read, unless it serves the next reads.
      if (live?.controller !== controller) controller.abort();
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
    async close(): Promise<void> {
      dropLive();
    },
  };
}

interface Cursor {
  readonly reader: ReadableStreamDefaultReader<Uint8Array>;
  readonly controller: AbortController;
  /** File offset of the next byte the cursor gives (rest first, then the stream). */
  pos: number;
  /** Bytes of the last chunk read but not yet given. */
  rest: Uint8Array;
}

/** Reads `want` bytes from the cursor after discarding `skip`; short at the end of the body. */
async function pull(cursor: Cursor, skip: number, want: number, url: string, signals: AbortSignal[]): Promise<Uint8Array> {
  const out = new Uint8Array(want);
  let skipped = 0;
  let filled = 0;
  while (filled < want) {
    let bytes = cursor.rest;
    if (bytes.length === 0) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await cursor.reader.read();
      } catch (err) {
        throwIfAborted(signals);
        throw new FetchError(`reading ${url} failed: ${err instanceof Error ? err.message : String(err)}`, { url });
      }
      if (chunk.done) break;
      bytes = chunk.value;
    }
    if (skipped < skip) {
      const drop = Math.min(skip - skipped, bytes.length);
      skipped += drop;
      bytes = bytes.subarray(drop);
    }
    const take = Math.min(bytes.length, want - filled);
    out.set(bytes.subarray(0, take), filled);
    filled += take;
    cursor.rest = bytes.subarray(take);
  }
  cursor.pos += skipped + filled;
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
