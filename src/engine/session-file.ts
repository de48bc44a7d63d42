// The bytes of a saved session (Session.save / Session.restore): a conversation as the cache holds
// it, to resume in another process or tab. Versioned and checksummed; the model is named by a
// digest of its GGUF header, so a file restored into another model, codec or policy is refused
// with the field that differs.
//
//   "KVBS" | u32 version | u32 CRC-32 of everything after it | u32 JSON bytes | JSON | cache snapshot

import type { CacheConfig } from "../cache/config.js";
import { SessionFileError } from "../errors.js";
import type { GgufHeader } from "../gguf/header.js";
import type { ChatMessage } from "../model/chat-template.js";
import type { SamplerState } from "./sampler.js";

const MAGIC = 0x5342564b; // "KVBS" little-endian
export const SESSION_FILE_VERSION = 1;
const PREFIX_BYTES = 16;
/** A session's JSON holds ids up to a window and one turn's messages; beyond this it is not ours. */
const MAX_JSON_BYTES = 64 * 1024 * 1024;

/** What a session keeps beside its cache snapshot. */
export interface SessionState {
  readonly model: { readonly digest: string; readonly arch: string; readonly nVocab: number };
  readonly cache: { readonly codec: string; readonly policy: unknown; readonly windowTokens: number; readonly pageSize: number };
  /** Ids the sequence holds (empty after evictions), ids emitted but not fed. */
  readonly held: readonly number[];
  readonly pending: readonly number[];
  readonly conversation: { readonly ctx: readonly ChatMessage[]; readonly inCache: boolean; readonly count: number; readonly digest: string };
  readonly sampler: SamplerState | null;
}

export function encodeSessionFile(state: SessionState, snapshot: Uint8Array): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(state));
  const out = new Uint8Array(PREFIX_BYTES + json.length + snapshot.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, MAGIC, true);
  dv.setUint32(4, SESSION_FILE_VERSION, true);
  dv.setUint32(12, json.length, true);
  out.set(json, PREFIX_BYTES);
  out.set(snapshot, PREFIX_BYTES + json.length);
  dv.setUint32(8, crc32(out, 12), true);
  return out;
}

/** The state and snapshot of a session file; SessionFileError when it is not one, or is corrupt. */
export function decodeSessionFile(bytes: Uint8Array): { state: SessionState; snapshot: Uint8Array } {
  if (bytes.length < PREFIX_BYTES) throw new SessionFileError(`a session file is at least ${PREFIX_BYTES} bytes; this is ${bytes.length}`, { field: "length" });
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (dv.getUint32(0, true) !== MAGIC) throw new SessionFileError("not a kvbound session file (no KVBS magic)", { field: "magic" });
  const version = dv.getUint32(4, true);
  if (version !== SESSION_FILE_VERSION) {
    throw new SessionFileError(`session file version ${version}; this kvbound reads version ${SESSION_FILE_VERSION}`, { field: "version", value: version });
  }
  const stored = dv.getUint32(8, true);
  const actual = crc32(bytes, 12);
  if (stored !== actual) {
    throw new SessionFileError(`the session file is corrupt: CRC-32 ${hex(actual)} != ${hex(stored)} stored`, { field: "checksum" });
  }
  const jsonBytes = dv.getUint32(12, true);
  if (jsonBytes > MAX_JSON_BYTES || PREFIX_BYTES + jsonBytes > bytes.length) {
    throw new SessionFileError(`the session file's state (${jsonBytes} bytes) does not fit in its ${bytes.length} bytes`, { field: "length" });
  }
  let state: unknown;
  try {
    state = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(PREFIX_BYTES, PREFIX_BYTES + jsonBytes)));
  } catch (err) {
    throw new SessionFileError(`the session file's state is not JSON: ${err instanceof Error ? err.message : String(err)}`, { field: "state" });
  }
  return { state: checkState(state), snapshot: bytes.subarray(PREFIX_BYTES + jsonBytes) };
}

/** Throws SessionFileError naming the first thing the file was saved with that differs from `now`. */
export function checkCompatible(saved: SessionState, now: Pick<SessionState, "model" | "cache">): void {
  const m = saved.model;
  if (m.digest !== now.model.digest) {
    throw new SessionFileError(
      `the session was saved with another model (${m.arch}, ${m.nVocab} tokens, header digest ${m.digest}); this is ${now.model.arch}, ${now.model.nVocab} tokens, digest ${now.model.digest}`,
      { field: "model", saved: m.digest, current: now.model.digest },
    );
  }
  const c = saved.cache;
  const fields: Array<[string, unknown, unknown]> = [
    ["codec", c.codec, now.cache.codec],
    ["policy", c.policy, now.cache.policy],
    ["window", c.windowTokens, now.cache.windowTokens],
    ["pageSize", c.pageSize, now.cache.pageSize],
  ];
  for (const [field, was, is] of fields) {
    if (JSON.stringify(was) !== JSON.stringify(is)) {
      throw new SessionFileError(
        `the session was saved with ${field} ${JSON.stringify(was)} and is restored into ${field} ${JSON.stringify(is)}; restore it with the cache settings it was saved with`,
        { field, saved: was, current: is },
      );
    }
  }
}

/** The cache facts a session file records. */
export function cacheIdentity(config: CacheConfig): SessionState["cache"] {
  return { codec: config.codec, policy: config.policy, windowTokens: config.windowTokens, pageSize: config.pageSize };
}

const digests = new WeakMap<GgufHeader, string>();

/** A digest of the GGUF header (metadata and tensor table): the model's identity in a session file. */
export function headerDigest(header: GgufHeader): string {
  let d = digests.get(header);
  if (d === undefined) {
    const text = JSON.stringify([header.metadata, header.tensors, header.alignment], (_k, v: unknown) => (typeof v === "bigint" ? `${v}n` : v));
    d = fnv64(text);
    digests.set(header, d);
  }
  return d;
}

function checkState(x: unknown): SessionState {
  const bad = (field: string): never => {
    throw new SessionFileError(`the session file's state has no valid ${field}`, { field });
  };
  const obj = (v: unknown, field: string): Record<string, unknown> => (typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : bad(field));
  const ids = (v: unknown, field: string): number[] => (Array.isArray(v) && v.every((i) => Number.isSafeInteger(i) && i >= 0) ? (v as number[]) : bad(field));
  const s = obj(x, "state");
  const model = obj(s.model, "model");
  if (typeof model.digest !== "string" || typeof model.arch !== "string" || !Number.isSafeInteger(model.nVocab)) bad("model");
  const cache = obj(s.cache, "cache");
  if (typeof cache.codec !== "string" || !Number.isSafeInteger(cache.windowTokens) || !Number.isSafeInteger(cache.pageSize)) bad("cache");
  const conv = obj(s.conversation, "conversation");
  const ctxOk =
    Array.isArray(conv.ctx) &&
    conv.ctx.every((m: unknown) => typeof m === "object" && m !== null && typeof (m as ChatMessage).role === "string" && typeof (m as ChatMessage).content === "string");
  if (!ctxOk || typeof conv.inCache !== "boolean" || !Number.isSafeInteger(conv.count) || typeof conv.digest !== "string" || !/^[0-9a-f]{16}$/.test(conv.digest)) {
    bad("conversation");
  }
  ids(s.held, "held");
  ids(s.pending, "pending");
  if (s.sampler !== null) {
    const smp = obj(s.sampler, "sampler");
    if (!Number.isSafeInteger(smp.rng)) bad("sampler");
    ids(smp.recent, "sampler");
  }
  return s as unknown as SessionState;
}

let crcTable: Uint32Array | null = null;

/** CRC-32 (IEEE 802.3, as zlib) of bytes[from..]. */
function crc32(bytes: Uint8Array, from: number): number {
  if (crcTable === null) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (let i = from; i < bytes.length; i++) crc = crcTable[(crc ^ bytes[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** FNV-1a over UTF-16 code units in two 32-bit lanes (an identity, not a security digest). */
function fnv64(text: string): string {
  let h1 = 0x811c9dc5;
  let h2 = 0xcbf29ce4;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 0x01000193) >>> 0;
    h2 = Math.imul(h2 ^ c, 0x85ebca6b) >>> 0;
  }
  return hex(h1) + hex(h2);
}

function hex(n: number): string {
  return n.toString(16).padStart(8, "0");
}
