// Node-only ByteSource over a local file: reads byte ranges through one file handle, so a header
// read touches only the header. Imported dynamically by gguf/header.ts to keep it browser-safe.

import { open } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { GgufParseError, UnknownModelError } from "../../errors.js";
import type { ByteSource } from "./byte-source.js";

/** Opens `path` for range reads. A missing file or a directory is an UnknownModelError. */
/** A file source that can also read straight into a caller's buffer (no per-read allocation). */
export interface FileByteSource extends ByteSource {
  /** Fills target[0..) from `offset` (fewer bytes only at EOF); returns the bytes read. */
  readInto(offset: number, target: Uint8Array): Promise<number>;
}

export async function fileSource(file: string | URL): Promise<FileByteSource> {
  let path: string;
  try {
    path = typeof file === "string" ? file : fileURLToPath(file);
  } catch (err) {
    throw new UnknownModelError(`${String(file)} is not a local file URL`, { model: String(file) });
  }
  let handle;
  try {
    handle = await open(path, "r");
  } catch (err) {
    throw ioError(path, err);
  }
  let size: number;
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) {
      await handle.close();
      throw new UnknownModelError(`${path} is not a regular file; pass the path of a .gguf file`, { model: path });
    }
    size = stat.size;
  } catch (err) {
    await handle.close().catch(() => undefined);
    throw ioError(path, err);
  }
  const fh = handle;
  let closed = false;
  const source: FileByteSource = {
    size,
    name: path,
    async read(offset: number, length: number): Promise<Uint8Array> {
      const start = Math.min(Math.max(0, offset), size);
      const end = Math.min(size, start + Math.max(0, length));
      const out = new Uint8Array(end - start);
      const filled = await source.readInto(start, out);
      return filled === out.length ? out : out.subarray(0, filled);
    },
    async readInto(offset: number, target: Uint8Array): Promise<number> {
      if (closed) throw new GgufParseError(`${path} was read after it was closed`, { source: path, field: "file" });
      const start = Math.min(Math.max(0, offset), size);
      const want = Math.min(target.length, size - start);
      let filled = 0;
      try {
        // fh.read may return fewer bytes than asked (pipes, network filesystems): loop until EOF.
        while (filled < want) {
          const { bytesRead } = await fh.read(target, filled, want - filled, start + filled);
          if (bytesRead === 0) break;
          filled += bytesRead;
        }
      } catch (err) {
        throw ioError(path, err);
      }
      return filled;
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      await fh.close();
    },
  };
  return source;
}

function ioError(path: string, err: unknown): Error {
  if (err instanceof UnknownModelError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  if (code === "ENOENT" || code === "EISDIR" || code === "ENOTDIR") {
    return new UnknownModelError(`no GGUF file at ${path} (${String(code)}); check the path`, { model: path });
  }
  const msg = err instanceof Error ? err.message : String(err);
  return new GgufParseError(`cannot read ${path}: ${msg}`, { source: path, field: "file", cause: String(code ?? msg) });
}
