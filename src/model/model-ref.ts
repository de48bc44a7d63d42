// Model references: a local path, an http(s) URL, or `hf:owner/repo/path/file.gguf[@revision]`.
// Parsing, Hugging Face URL building and the progress bar are browser-safe; downloading an hf:
// file once into the local cache lives in download-fs.ts, imported only when one is resolved.

import { ModelRefError } from "../errors.js";

export const DEFAULT_HF_ENDPOINT = "https://huggingface.co";
export const DEFAULT_HF_REVISION = "main";

/** A reference longer than this is a mistake (or an attack on the cache path), not a model. */
export const MAX_MODEL_REF_CHARS = 2048;

export interface HfFileRef {
  readonly owner: string;
  readonly repo: string;
  /** Path of the file inside the repository ("model.gguf" or "sub/dir/model.gguf"). */
  readonly file: string;
  /** Branch, tag or commit; "main" unless the reference names one. */
  readonly revision: string;
}

export type ParsedModelRef =
  | { readonly kind: "file"; readonly path: string }
  | { readonly kind: "url"; readonly url: string }
  | { readonly kind: "hf"; readonly hf: HfFileRef };

/** What a model reference resolves to: a local file (maybe just downloaded) or a URL to stream. */
export type ResolvedModelRef =
  | { readonly kind: "file"; readonly path: string; /** The URL it was downloaded from, for hf: refs. */ readonly url?: string }
  | { readonly kind: "url"; readonly url: string };

export interface ResolveModelRefOptions {
  /** Folder of downloaded models; default $KVBOUND_CACHE, else ~/.cache/kvbound/models. */
  readonly cacheDir?: string;
  readonly fetch?: typeof fetch;
  /** Called as bytes arrive; `total` is undefined when the server does not say. */
  readonly onProgress?: (doneBytes: number, totalBytes: number | undefined) => void;
  readonly signal?: AbortSignal;
  /** Hugging Face base URL; default $HF_ENDPOINT, else https://huggingface.co. */
  readonly endpoint?: string;
  /** Access token for gated/private repos; default $HF_TOKEN. */
  readonly token?: string;
  /** Environment to read KVBOUND_CACHE / HF_ENDPOINT / HF_TOKEN / HOME from; default process.env. */
  readonly env?: Readonly<Record<string, string | undefined>>;
}

// Owner and repo names on the Hub: letters, digits, '-', '_', '.'; never "." or "..".
const HUB_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const REVISION = /^[A-Za-z0-9._/-]+$/;

/** Classifies a reference without touching the file system or the network. */
export function parseModelRef(ref: string): ParsedModelRef {
  if (ref.length === 0) throw new ModelRefError("the model reference is empty; pass a path, an http(s) URL or hf:owner/repo/file.gguf", { ref });
  if (ref.length > MAX_MODEL_REF_CHARS) {
    throw new ModelRefError(`the model reference is ${ref.length} characters long (limit ${MAX_MODEL_REF_CHARS}); pass a path, a URL or hf:owner/repo/file.gguf`, {
      ref: ref.slice(0, 100),
    });
  }
  if (/^https?:\/\//i.test(ref)) {
    try {
      new URL(ref);
    } catch {
      throw new ModelRefError(`${ref} is not a valid URL`, { ref });
    }
    return { kind: "url", url: ref };
  }
  if (/^hf:/i.test(ref)) return { kind: "hf", hf: parseHfRef(ref) };
  return { kind: "file", path: ref };
}

function parseHfRef(ref: string): HfFileRef {
  const fail = (why: string): never => {
    throw new ModelRefError(`${ref} is not a valid Hugging Face reference: ${why}; write hf:owner/repo/file.gguf or hf:owner/repo/file.gguf@revision`, { ref });
  };
  let body = ref.slice(3);
  let revision: string | undefined;
  // "@rev" after the file, or after the repo (hf:owner/repo@rev/file.gguf).
  const segs0 = body.split("/");
  if (segs0.length >= 2 && segs0[1]!.includes("@")) {
    // In this form the revision ends at the next '/'.
    const at = segs0[1]!.indexOf("@");
    revision = segs0[1]!.slice(at + 1);
    body = [segs0[0]!, segs0[1]!.slice(0, at), ...segs0.slice(2)].join("/");
  } else {
    const at = body.lastIndexOf("@");
    if (at >= 0) {
      revision = body.slice(at + 1);
      body = body.slice(0, at);
    }
  }
  if (revision !== undefined) {
    if (revision === "") fail("the revision after '@' is empty");
    if (!REVISION.test(revision!) || revision!.split("/").some((s) => s === "" || s === "." || s === "..")) {
      fail(`revision "${revision}" has characters or segments a revision cannot have`);
    }
  }
  const segs = body.split("/");
  if (segs.length < 3) fail("it needs an owner, a repository and a file");
  const [owner, repo, ...fileSegs] = segs as [string, string, ...string[]];
  if (!HUB_NAME.test(owner) || owner.includes("..")) fail(`owner "${owner}" is not a Hub name`);
  if (!HUB_NAME.test(repo) || repo.includes("..")) fail(`repository "${repo}" is not a Hub name`);
  for (const s of fileSegs) {
    // These segments become folders of the local cache: nothing may climb out of it.
    // eslint-disable-next-line no-control-regex
    if (s === "" || s === "." || s === ".." || /[\\\u0000-\u001f]/.test(s)) fail(`file path segment "${s}" is not allowed`);
  }
  const file = fileSegs.join("/");
  if (!/\.gguf$/i.test(file)) fail(`"${file}" is not a .gguf file (kvbound runs GGUF models)`);
  return { owner, repo, file, revision: revision ?? DEFAULT_HF_REVISION };
}

/** The download URL of an hf: file: `<endpoint>/<owner>/<repo>/resolve/<revision>/<file>`. */
export function hfResolveUrl(hf: HfFileRef, endpoint: string = DEFAULT_HF_ENDPOINT): string {
  const base = endpoint.replace(/\/+$/, "");
  const file = hf.file.split("/").map(encodeURIComponent).join("/");
  return `${base}/${hf.owner}/${hf.repo}/resolve/${encodeURIComponent(hf.revision)}/${file}`;
}

/**
 * Resolves a reference: a path stays a path, an http(s) URL stays a URL (read by range requests
 * elsewhere), an hf: file is downloaded once into the cache folder and becomes its path (Node only;
 * in a browser, use `hfResolveUrl` and stream the URL instead).
 */
export async function resolveModelRef(ref: string, opts: ResolveModelRefOptions = {}): Promise<ResolvedModelRef> {
  const parsed = parseModelRef(ref);
  switch (parsed.kind) {
    case "file":
      return { kind: "file", path: parsed.path };
    case "url":
      return { kind: "url", url: parsed.url };
    case "hf": {
      const { downloadHfFile } = await import("./download-fs.js");
      return downloadHfFile(parsed.hf, opts);
    }
    default:
      return parsed satisfies never;
  }
}

/**
 * A one-line progress bar: `[########--------]  52.0%  12.3 MiB / 23.6 MiB`, or just the bytes
 * so far when the total is unknown. Whether to draw it (TTY only) is the caller's business.
 */
export function progressBar(doneBytes: number, totalBytes: number | undefined, width = 30): string {
  if (totalBytes === undefined || !(totalBytes > 0)) return `${formatBytes(doneBytes)}`;
  const frac = Math.min(1, Math.max(0, doneBytes / totalBytes));
  const filled = Math.round(frac * width);
  const pct = (frac * 100).toFixed(1).padStart(5);
  return `[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${pct}%  ${formatBytes(doneBytes)} / ${formatBytes(totalBytes)}`;
}

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return `${v.toFixed(1)} ${units[u]}`;
}
