// One sequence's cache as bytes and back. Layout (little-endian):
//   "KVBS" | u32 version | u32 n + JSON header (codec, page size, policy, positions, window, model
//   shape, rope: each compared by name on restore) | u32 held | u32 nextPos | u32 nEntries |
//   u32 hasScores | per entry: u32 used, u8 alive[pageSize], i32 pos[pageSize], per layer
//   (u32 n + K page bytes, u32 n + V page bytes) | f64 scores[held][scoresPerToken] | u32 FNV-1a of
//   all before. scoresPerToken is the policy's (1 for h2o / tova; scoreWindow + 2 for a windowed
//   h2o, whose header policy names the window so that a mismatch is refused by name).
// The checksum is verified before anything else is read; every count is bounded before use.

import { SnapshotError } from "../errors.js";
import type { PageStore } from "./codecs/types.js";
import type { CachePolicy } from "./config.js";
import type { PageEntry, SequenceState } from "./sequence.js";

export const SNAPSHOT_MAGIC = 0x5342564b; // "KVBS" read as a little-endian u32
export const SNAPSHOT_VERSION = 1;
/** The JSON header is a handful of short fields; 64 KiB bounds a hostile length. */
export const MAX_SNAPSHOT_HEADER_BYTES = 65536;

/** The facts a snapshot must share with the cache it is restored into. */
export interface SnapshotHeader {
  readonly codec: string;
  readonly pageSize: number;
  readonly policy: string;
  readonly positions: string;
  readonly windowTokens: number;
  readonly nHead: number;
  /** Per layer `nHeadKv x headDimK / headDimV`. */
  readonly layers: string;
  readonly rope: string;
}

const HEADER_FIELDS: readonly (keyof SnapshotHeader)[] = ["codec", "pageSize", "policy", "positions", "windowTokens", "nHead", "layers", "rope"];

export interface SnapshotEntry {
  readonly used: number;
  readonly alive: Uint8Array;
  readonly pos: Int32Array;
  readonly k: Uint8Array[];
  readonly v: Uint8Array[];
}

export interface DecodedSnapshot {
  readonly header: SnapshotHeader;
  readonly held: number;
  readonly nextPos: number;
  readonly entries: SnapshotEntry[];
  readonly scores: Float64Array | null;
}

/** The header's policy field: the kind, and the score window when it changes the per-token scores. */
export function snapshotPolicyName(policy: CachePolicy): string {
  return policy.kind === "h2o" && policy.scoreWindow !== null ? `h2o/scoreWindow=${policy.scoreWindow}` : policy.kind;
}

/** FNV-1a, 32-bit: a checksum against corruption (not an integrity guarantee against tampering). */
export function fnv1a32(bytes: Uint8Array, start = 0, end = bytes.length): number {
  let h = 0x811c9dc5;
  for (let i = start; i < end; i++) {
    h ^= bytes[i]!;
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

export function encodeSnapshot(
  header: SnapshotHeader,
  s: SequenceState,
  entries: readonly PageEntry[],
  kStores: readonly PageStore[],
  vStores: readonly PageStore[],
  scoresPerToken = 1,
): Uint8Array {
  const P = header.pageSize;
  const headerBytes = new TextEncoder().encode(JSON.stringify(header));
  const pages: Uint8Array[] = [];
  let size = 3 * 4 + headerBytes.length + 4 * 4;
  for (const e of entries) {
    size += 4 + P + 4 * P;
    for (let l = 0; l < kStores.length; l++) {
      const k = kStores[l]!.exportPage(e.page);
      const v = vStores[l]!.exportPage(e.page);
      pages.push(k, v);
      size += 8 + k.length + v.length;
    }
  }
  const hasScores = s.scores !== null;
  const nScores = hasScores ? s.held * scoresPerToken : 0;
  size += 8 * nScores;
  size += 4;
  const out = new Uint8Array(size);
  const dv = new DataView(out.buffer);
  let o = 0;
  const u32 = (x: number): void => {
    dv.setUint32(o, x, true);
    o += 4;
  };
  u32(SNAPSHOT_MAGIC);
  u32(SNAPSHOT_VERSION);
  u32(headerBytes.length);
  out.set(headerBytes, o);
  o += headerBytes.length;
  u32(s.held);
  u32(s.nextPos);
  u32(entries.length);
  u32(hasScores ? 1 : 0);
  let pi = 0;
  for (const e of entries) {
    u32(e.used);
    out.set(e.alive.subarray(0, P), o);
    o += P;
    for (let slot = 0; slot < P; slot++) {
      dv.setInt32(o, e.pos[slot]!, true);
      o += 4;
    }
    for (let l = 0; l < kStores.length; l++) {
      for (let t = 0; t < 2; t++) {
        const b = pages[pi++]!;
        u32(b.length);
        out.set(b, o);
        o += b.length;
      }
    }
  }
  for (let t = 0; t < nScores; t++) {
    dv.setFloat64(o, s.scores![t]!, true);
    o += 8;
  }
  u32(fnv1a32(out, 0, o));
  return out;
}

/**
 * Parses and checks a snapshot against the header of the cache restoring it. Throws SnapshotError
 * naming the field: "checksum", "magic", "version", a header field, or the structural field that
 * is out of bounds. `maxEntries` / `maxHeld` bound the counts a hostile file may claim.
 */
export function decodeSnapshot(bytes: Uint8Array, expected: SnapshotHeader, maxEntries: number, maxHeld: number, scoresPerToken = 1): DecodedSnapshot {
  if (bytes.length < 36) throw new SnapshotError(`snapshot is ${bytes.length} bytes, shorter than any valid one`, { field: "length" });
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const stored = dv.getUint32(bytes.length - 4, true);
  const actual = fnv1a32(bytes, 0, bytes.length - 4);
  if (dv.getUint32(0, true) !== SNAPSHOT_MAGIC) throw new SnapshotError("not a kvbound sequence snapshot (magic mismatch)", { field: "magic" });
  if (stored !== actual) {
    throw new SnapshotError(`snapshot checksum ${stored.toString(16)} != ${actual.toString(16)}: the bytes are corrupt`, { field: "checksum" });
  }
  let o = 4;
  const end = bytes.length - 4;
  const need = (n: number, field: string): void => {
    if (o + n > end) throw new SnapshotError(`snapshot truncated while reading ${field}`, { field });
  };
  const u32 = (field: string): number => {
    need(4, field);
    const x = dv.getUint32(o, true);
    o += 4;
    return x;
  };
  const version = u32("version");
  if (version !== SNAPSHOT_VERSION) {
    throw new SnapshotError(`snapshot version ${version} is not supported (this build reads ${SNAPSHOT_VERSION})`, { field: "version" });
  }
  const hLen = u32("header");
  if (hLen > MAX_SNAPSHOT_HEADER_BYTES) throw new SnapshotError(`snapshot header of ${hLen} bytes exceeds ${MAX_SNAPSHOT_HEADER_BYTES}`, { field: "header" });
  need(hLen, "header");
  let header: SnapshotHeader;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(o, o + hLen))) as SnapshotHeader;
  } catch {
    throw new SnapshotError("snapshot header is not valid JSON", { field: "header" });
  }
  o += hLen;
  for (const f of HEADER_FIELDS) {
    if (header[f] !== expected[f]) {
      throw new SnapshotError(`snapshot ${f} ${JSON.stringify(header[f])} does not match this cache's ${JSON.stringify(expected[f])}; restore into a cache built with the same model and config`, {
        field: f,
        snapshot: header[f],
        cache: expected[f],
      });
    }
  }
  const P = expected.pageSize;
  const held = u32("held");
  if (held > maxHeld) throw new SnapshotError(`snapshot holds ${held} tokens, more than the window ${maxHeld}`, { field: "held" });
  const nextPos = u32("nextPos");
  const nEntries = u32("entries");
  if (nEntries > maxEntries) throw new SnapshotError(`snapshot has ${nEntries} pages, more than ${maxEntries}`, { field: "entries" });
  const hasScores = u32("scores") === 1;
  const nLayer = expected.layers.split(",").length;
  const entries: SnapshotEntry[] = [];
  let live = 0;
  for (let i = 0; i < nEntries; i++) {
    const used = u32("used");
    if (used < 1 || used > P) throw new SnapshotError(`snapshot page ${i} claims ${used} used slots (1..${P})`, { field: "used" });
    need(P + 4 * P, "slots");
    const alive = bytes.slice(o, o + P);
    o += P;
    const pos = new Int32Array(P);
    let entryLive = 0;
    for (let slot = 0; slot < P; slot++) {
      pos[slot] = dv.getInt32(o, true);
      o += 4;
      const a = alive[slot]!;
      if (a > 1 || (a === 1 && slot >= used)) throw new SnapshotError(`snapshot page ${i} slot ${slot} has an invalid live flag`, { field: "alive" });
      if (a === 1 && (pos[slot]! < 0 || pos[slot]! >= nextPos)) throw new SnapshotError(`snapshot page ${i} slot ${slot} position ${pos[slot]} is out of range`, { field: "pos" });
      entryLive += a;
    }
    if (entryLive === 0) throw new SnapshotError(`snapshot page ${i} holds no live token`, { field: "alive" });
    live += entryLive;
    const k: Uint8Array[] = [];
    const v: Uint8Array[] = [];
    for (let l = 0; l < nLayer; l++) {
      for (const into of [k, v]) {
        const n = u32("page");
        need(n, "page");
        into.push(bytes.slice(o, o + n));
        o += n;
      }
    }
    entries.push({ used, alive, pos, k, v });
  }
  if (live !== held) throw new SnapshotError(`snapshot claims ${held} tokens but its pages hold ${live}`, { field: "held" });
  let scores: Float64Array | null = null;
  if (hasScores) {
    const nScores = held * scoresPerToken;
    need(8 * nScores, "scores");
    scores = new Float64Array(nScores);
    for (let t = 0; t < nScores; t++) {
      scores[t] = dv.getFloat64(o, true);
      o += 8;
    }
  }
  if (o !== end) throw new SnapshotError(`snapshot has ${end - o} trailing bytes`, { field: "length" });
  return { header, held, nextPos, entries, scores };
}
