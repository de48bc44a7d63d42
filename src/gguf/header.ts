// Reads a GGUF header (metadata + tensor infos) from a path, URL, Blob or bytes, reading only the
// header bytes, and validates it against gguf/limits.ts. Browser-safe: the Node file reader is
// imported only when a local path is given.
//
// Two passes over the header bytes:
//  1. scanHeader: a bounded structural walk over the bytes read so far. It checks every count and
//     length against our limits before it is used, names the offset and field of any fault, finds
//     where the header ends, and asks for more bytes (in growing reads) when needed.
//  2. decodeMetadata: the values, read once from the bytes scan 1 accepted, at the offsets it
//     recorded (so every length is already checked). Strings are decoded from views of the header
//     bytes and numbers read straight into their arrays: a 49k-token vocabulary costs its strings
//     and arrays, not a copy of each string's bytes and an object per value (@huggingface/gguf,
//     which decoded this pass before, grew the JS heap by ~20 MiB on such a header; it stays the
//     reference header.test.ts compares this decoder with).
// Between the two, the tensor infos from the scan are validated (block divisibility, alignment,
// overlap, file size), so a file that fails cheaply never pays for the decode.

import { AbortError, GgufLimitError, GgufParseError, KvboundError, UnknownModelError } from "../errors.js";
import { ggmlRowBytes, ggmlTypeById, type GgmlType } from "./ggml-types.js";
import {
  DEFAULT_ALIGNMENT,
  HEADER_INITIAL_READ_BYTES,
  HEADER_MAX_READ_BYTES,
  MAX_ALIGNMENT,
  MAX_ARRAY_DEPTH,
  MAX_ARRAY_LENGTH,
  MAX_DIMS,
  MAX_FILE_BYTES,
  MAX_HEADER_BYTES,
  MAX_KEY_BYTES,
  MAX_KV_COUNT,
  MAX_STRING_BYTES,
  MAX_TENSOR_COUNT,
  MAX_TENSOR_ELEMENTS,
  MAX_TENSOR_NAME_BYTES,
  MIN_ALIGNMENT,
} from "./limits.js";
import { blobSource, bytesSource } from "./readers/blob.js";
import type { ByteSource } from "./readers/byte-source.js";
import { httpSource } from "./readers/http.js";

/** A metadata value: u64/i64 are numbers when they fit exactly in a double, bigints otherwise. */
export type GgufValue = number | bigint | string | boolean | GgufValue[];

export interface GgufTensorInfo {
  name: string;
  /** ne0 first (ne0 = row length), as stored in GGUF. */
  shape: number[];
  type: GgmlType;
  /** Byte offset from the start of the tensor data (GgufHeader.dataOffset). */
  offset: number;
  bytes: number;
}

export interface GgufHeader {
  version: number;
  /** Keys in file order. */
  metadata: Record<string, GgufValue>;
  tensors: GgufTensorInfo[];
  alignment: number;
  /** Absolute byte offset of the tensor data (end of header, padded to `alignment`). */
  dataOffset: number;
  /** Sum of the tensors' `bytes` (without alignment padding). */
  tensorBytes: number;
  /** Total file bytes when the source knows them (files, Blobs, most HTTP servers). */
  fileBytes: number | undefined;
  /** The path or URL read, or "blob" / "memory". */
  source: string;
}

export interface ReadGgufHeaderOptions {
  /** A fetch to use for URLs instead of the global one. */
  fetch?: typeof fetch;
  signal?: AbortSignal;
  /** Extra HTTP request headers for URLs (e.g. Authorization). */
  headers?: Record<string, string>;
}

/**
 * Reads and validates the header of a GGUF file: `source` is a local path or file: URL (Node
 * only), an http(s) URL (read with Range requests, header bytes only), a Blob, or bytes.
 * Throws GgufParseError / GgufLimitError (with details.offset / details.field), FetchError,
 * UnknownModelError (no such file) or AbortError; never reads tensor data.
 */
export async function readGgufHeader(
  source: string | URL | Blob | ArrayBuffer | Uint8Array,
  opts: ReadGgufHeaderOptions = {},
): Promise<GgufHeader> {
  const src = await openSource(source, opts);
  try {
    return await readGgufHeaderFromSource(src, opts.signal === undefined ? {} : { signal: opts.signal });
  } finally {
    await src.close().catch(() => undefined);
  }
}

/** Opens the ByteSource readGgufHeader would use for `source` (caller closes it). */
export async function openSource(
  source: string | URL | Blob | ArrayBuffer | Uint8Array,
  opts: ReadGgufHeaderOptions = {},
): Promise<ByteSource> {
  if (typeof source === "string" || source instanceof URL) {
    const ref = String(source);
    if (/^https?:\/\//i.test(ref)) {
      const httpOpts: Parameters<typeof httpSource>[1] = {};
      if (opts.fetch) httpOpts.fetch = opts.fetch;
      if (opts.headers) httpOpts.headers = opts.headers;
      if (opts.signal) httpOpts.signal = opts.signal;
      return httpSource(ref, httpOpts);
    }
    const isFileUrl = /^file:/i.test(ref);
    if (!isFileUrl && /^[a-z][a-z0-9+.-]*:\/\//i.test(ref)) {
      throw new UnknownModelError(`cannot read ${ref}: only http(s) URLs, file: URLs and local paths are supported`, {
        model: ref,
      });
    }
    const { fileSource } = await import("./readers/fs.js");
    return fileSource(isFileUrl ? new URL(ref) : ref);
  }
  if (typeof Blob !== "undefined" && source instanceof Blob) return blobSource(source);
  return bytesSource(source as ArrayBuffer | Uint8Array);
}

/** readGgufHeader over an already open ByteSource (which it does not close). */
export async function readGgufHeaderFromSource(src: ByteSource, opts: { signal?: AbortSignal } = {}): Promise<GgufHeader> {
  try {
    return await readHeader(src, opts.signal);
  } catch (err) {
    if (err instanceof KvboundError) throw err;
    if (opts.signal?.aborted) throw new AbortError("reading the GGUF header was aborted");
    // Anything else (a RangeError, a reader's own error) is a bug or an I/O fault; it must still
    // reach the caller as a typed error.
    const msg = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    throw new GgufParseError(`${src.name}: cannot read the GGUF header (${msg})`, { source: src.name, field: "header" });
  }
}

async function readHeader(src: ByteSource, signal: AbortSignal | undefined): Promise<GgufHeader> {
  let buf = new Uint8Array(0);
  let eof = false;
  let target = HEADER_INITIAL_READ_BYTES;
  let scan: ScanResult | undefined;
  // Each pass rescans from byte 0; reads double, so the rescans cost O(header * log(header)).
  while (scan === undefined) {
    if (src.size !== undefined) target = Math.min(target, src.size);
    if (target > buf.length) {
      if (signal?.aborted) throw new AbortError("reading the GGUF header was aborted");
      const want = target - buf.length;
      const grown = new Uint8Array(target);
      grown.set(buf, 0);
      // A file reads straight into the grown buffer: no second transient copy of each read.
      const into = (src as ByteSource & { readInto?: (offset: number, target: Uint8Array) => Promise<number> }).readInto;
      let got: number;
      if (into !== undefined) got = await into.call(src, buf.length, grown.subarray(buf.length));
      else {
        const chunk = await src.read(buf.length, want, signal);
        got = Math.min(chunk.length, want);
        grown.set(chunk.subarray(0, got), buf.length);
      }
      if (got < want) eof = true;
      buf = grown.subarray(0, buf.length + got);
    } else {
      eof = true;
    }
    if (src.size !== undefined && buf.length >= src.size) eof = true;
    const outcome = scanHeader(buf, eof, src.name);
    if (outcome instanceof NeedMoreBytes) {
      const grow = Math.min(buf.length, HEADER_MAX_READ_BYTES);
      target = Math.min(MAX_HEADER_BYTES, Math.max(outcome.end, buf.length + grow));
    } else {
      scan = outcome;
    }
  }
  const valid = validateTensors(scan, src);
  return {
    version: scan.version,
    metadata: decodeMetadata(buf.subarray(0, scan.headerEnd), scan, src.name),
    tensors: valid.tensors,
    alignment: scan.alignment,
    dataOffset: valid.dataOffset,
    tensorBytes: valid.tensorBytes,
    fileBytes: src.size,
    source: src.name,
  };
}

// ---------------------------------------------------------------------------------------------
// Pass 1: bounded structural scan

/** GGUF value type ids (ggml/include/gguf.h enum gguf_type). */
const T_UINT32 = 4;
const T_STRING = 8;
const T_ARRAY = 9;
const T_FLOAT64 = 12;
const TYPE_NAMES = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool", "string", "array", "uint64", "int64", "float64"];
/** Bytes of each fixed-size type; 0 for string and array. */
const FIXED_BYTES = [1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8];

class NeedMoreBytes {
  constructor(readonly end: number) {}
}

interface ScannedKey {
  key: string;
  offset: number;
  /** GGUF value type id and the offset of the value (after the type). */
  type: number;
  valueOffset: number;
}

interface ScannedTensor {
  name: string;
  /** Offset of the tensor info (its name). */
  offset: number;
  dimsOffset: number;
  shape: number[];
  elements: number;
  type: GgmlType;
  typeOffset: number;
  dataOffsetField: number;
  dataOffset: bigint;
}

interface ScanResult {
  version: number;
  /** Little-endian file (false: a big-endian one). */
  littleEndian: boolean;
  keys: ScannedKey[];
  alignment: number;
  alignmentOffset: number;
  tensors: ScannedTensor[];
  headerEnd: number;
}

const UTF8 = new TextDecoder("utf-8");
const MAGIC = [0x47, 0x47, 0x55, 0x46]; // "GGUF"

class Cursor {
  pos = 0;
  readonly view: DataView;
  constructor(
    readonly bytes: Uint8Array,
    readonly eof: boolean,
    readonly source: string,
    public le = true,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  need(n: number, field: string): void {
    const end = this.pos + n;
    if (end > MAX_HEADER_BYTES) {
      throw new GgufLimitError(
        `${this.source}: the GGUF header would extend to byte ${end} (at ${field}), beyond MAX_HEADER_BYTES ` +
          `${MAX_HEADER_BYTES}; the file is corrupt or not a model kvbound can plan`,
        { limit: "MAX_HEADER_BYTES", value: end, max: MAX_HEADER_BYTES, offset: this.pos, field, source: this.source },
      );
    }
    if (end > this.bytes.length) {
      if (this.eof) {
        throw new GgufParseError(
          `${this.source}: the data ends at byte ${this.bytes.length} inside ${field} (offset ${this.pos}, ` +
            `${n} bytes needed); the file is truncated or not GGUF`,
          { offset: this.pos, field, source: this.source },
        );
      }
      throw new NeedMoreBytes(end);
    }
  }

  u32(field: string): number {
    this.need(4, field);
    const v = this.view.getUint32(this.pos, this.le);
    this.pos += 4;
    return v;
  }

  u64(field: string): bigint {
    this.need(8, field);
    const v = this.view.getBigUint64(this.pos, this.le);
    this.pos += 8;
    return v;
  }

  /**
   * A u64 count or length, checked against `max` (< 2^32) before it is used. Read as two u32
   * halves: no BigInt per string, which matters when scanning a 256k-token vocabulary.
   */
  count(field: string, limit: string, max: number): number {
    this.need(8, field);
    const at = this.pos;
    const lo = this.view.getUint32(at + (this.le ? 0 : 4), this.le);
    const hi = this.view.getUint32(at + (this.le ? 4 : 0), this.le);
    if (hi !== 0 || lo > max) {
      const v = this.view.getBigUint64(at, this.le);
      throw new GgufLimitError(`${this.source}: ${field} is ${v} at offset ${at}, above ${limit} ${max}; the file is corrupt`, {
        limit,
        value: v,
        max,
        offset: at,
        field,
        source: this.source,
      });
    }
    this.pos += 8;
    return lo;
  }

  string(field: string, limit: string, max: number): string {
    const len = this.count(`${field} length`, limit, max);
    this.need(len, field);
    const s = UTF8.decode(this.bytes.subarray(this.pos, this.pos + len));
    this.pos += len;
    return s;
  }

  skip(n: number, field: string): void {
    this.need(n, field);
    this.pos += n;
  }
}

function parseError(c: Cursor, message: string, offset: number, field: string, extra: Record<string, unknown> = {}): GgufParseError {
  return new GgufParseError(`${c.source}: ${message} (offset ${offset}, ${field})`, { offset, field, source: c.source, ...extra });
}

/** Walks the header in `bytes`; returns NeedMoreBytes when it runs past them and `eof` is false. */
function scanHeader(bytes: Uint8Array, eof: boolean, source: string): ScanResult | NeedMoreBytes {
  const c = new Cursor(bytes, eof, source);
  try {
    return scan(c);
  } catch (err) {
    if (err instanceof NeedMoreBytes) return err;
    throw err;
  }
}

function scan(c: Cursor): ScanResult {
  c.need(4, "magic");
  for (let i = 0; i < 4; i++) {
    if (c.bytes[i] !== MAGIC[i]) {
      throw parseError(c, `not a GGUF file: it does not start with the bytes "GGUF"`, 0, "magic");
    }
  }
  c.pos = 4;
  c.need(4, "version");
  // As llama.cpp and @huggingface/gguf do: a version with its low 16 bits zero read little-endian
  // is a big-endian file (ggml/docs/gguf.md: the version is 3 on either byte order).
  let version = c.view.getUint32(4, true);
  if ((version & 0xffff) === 0 && version !== 0) {
    c.le = false;
    version = c.view.getUint32(4, false);
  }
  if (version === 1) {
    throw parseError(c, "GGUF version 1 is not supported (llama.cpp dropped it); re-convert the model", 4, "version", {
      version,
    });
  }
  if (version !== 2 && version !== 3) {
    throw parseError(c, `unsupported GGUF version ${version}; kvbound reads versions 2 and 3`, 4, "version", { version });
  }
  c.pos = 8;
  const tensorCount = c.count("tensor_count", "MAX_TENSOR_COUNT", MAX_TENSOR_COUNT);
  const kvCount = c.count("kv_count", "MAX_KV_COUNT", MAX_KV_COUNT);

  const keys: ScannedKey[] = [];
  const seenKeys = new Set<string>();
  let alignment = DEFAULT_ALIGNMENT;
  let alignmentOffset = -1;
  for (let i = 0; i < kvCount; i++) {
    const keyOffset = c.pos;
    const key = c.string(`metadata[${i}].key`, "MAX_KEY_BYTES", MAX_KEY_BYTES);
    const field = `metadata.${key}`;
    if (seenKeys.has(key)) throw parseError(c, `duplicate metadata key "${key}"`, keyOffset, field);
    // Assigning "__proto__" into a plain object replaces its prototype instead of adding a key
    // (in @huggingface/gguf's output and in ours); no real file has it.
    if (key === "__proto__") throw parseError(c, `metadata key "__proto__" is not allowed`, keyOffset, field);
    seenKeys.add(key);
    const typeOffset = c.pos;
    const type = c.u32(`${field} type`);
    if (type > T_FLOAT64) throw parseError(c, `metadata value type ${type} is not a GGUF type (0-12)`, typeOffset, field, { type });
    keys.push({ key, offset: keyOffset, type, valueOffset: c.pos });
    if (key === "general.alignment") {
      if (type !== T_UINT32) {
        throw parseError(c, `general.alignment must be a uint32, not ${TYPE_NAMES[type]}`, typeOffset, field);
      }
      alignmentOffset = c.pos;
      alignment = c.u32(field);
      if (alignment < MIN_ALIGNMENT || alignment > MAX_ALIGNMENT || (alignment & (alignment - 1)) !== 0) {
        throw parseError(
          c,
          `general.alignment ${alignment} must be a power of two in [${MIN_ALIGNMENT}, ${MAX_ALIGNMENT}]`,
          alignmentOffset,
          field,
          { value: alignment },
        );
      }
    } else {
      skipValue(c, type, 0, field);
    }
  }

  const tensors: ScannedTensor[] = [];
  const seenNames = new Set<string>();
  for (let i = 0; i < tensorCount; i++) {
    const offset = c.pos;
    const name = c.string(`tensors[${i}].name`, "MAX_TENSOR_NAME_BYTES", MAX_TENSOR_NAME_BYTES);
    const field = `tensors.${name}`;
    if (seenNames.has(name)) throw parseError(c, `duplicate tensor name "${name}"`, offset, `${field}.name`, { tensor: name });
    seenNames.add(name);
    const nDimsOffset = c.pos;
    const nDims = c.u32(`${field}.n_dims`);
    if (nDims === 0 || nDims > MAX_DIMS) {
      throw parseError(c, `tensor "${name}" has ${nDims} dimensions; GGUF tensors have 1 to ${MAX_DIMS}`, nDimsOffset, `${field}.n_dims`, {
        tensor: name,
      });
    }
    const dimsOffset = c.pos;
    const shape: number[] = [];
    let elements = 1;
    for (let d = 0; d < nDims; d++) {
      const at = c.pos;
      const dim = c.u64(`${field}.shape[${d}]`);
      if (dim === 0n) {
        throw parseError(c, `tensor "${name}" has dimension ${d} of size 0`, at, `${field}.shape[${d}]`, { tensor: name });
      }
      // Checked before multiplying, so the product never leaves exact double range.
      if (dim > BigInt(MAX_TENSOR_ELEMENTS) || Number(dim) > MAX_TENSOR_ELEMENTS / elements) {
        throw new GgufLimitError(
          `${c.source}: tensor "${name}" has more than MAX_TENSOR_ELEMENTS ${MAX_TENSOR_ELEMENTS} elements ` +
            `(dimension ${d} is ${dim}, offset ${at}); the file is corrupt`,
          { limit: "MAX_TENSOR_ELEMENTS", value: dim, max: MAX_TENSOR_ELEMENTS, offset: at, field: `${field}.shape[${d}]`, tensor: name },
        );
      }
      shape.push(Number(dim));
      elements *= Number(dim);
    }
    const typeOffset = c.pos;
    const typeId = c.u32(`${field}.type`);
    const type = ggmlTypeById(typeId);
    if (type === undefined) {
      throw parseError(c, `tensor "${name}" has unknown ggml type id ${typeId}`, typeOffset, `${field}.type`, {
        tensor: name,
        type: typeId,
      });
    }
    const dataOffsetField = c.pos;
    const dataOffset = c.u64(`${field}.offset`);
    tensors.push({ name, offset, dimsOffset, shape, elements, type, typeOffset, dataOffsetField, dataOffset });
  }
  return { version, littleEndian: c.le, keys, alignment, alignmentOffset, tensors, headerEnd: c.pos };
}

function skipValue(c: Cursor, type: number, depth: number, field: string): void {
  const fixed = FIXED_BYTES[type] ?? 0;
  if (fixed > 0) {
    c.skip(fixed, field);
    return;
  }
  if (type === T_STRING) {
    const len = c.count(`${field} length`, "MAX_STRING_BYTES", MAX_STRING_BYTES);
    c.skip(len, field);
    return;
  }
  // T_ARRAY
  if (depth >= MAX_ARRAY_DEPTH) {
    throw new GgufLimitError(`${c.source}: ${field} nests arrays deeper than MAX_ARRAY_DEPTH ${MAX_ARRAY_DEPTH} (offset ${c.pos})`, {
      limit: "MAX_ARRAY_DEPTH",
      value: depth + 1,
      max: MAX_ARRAY_DEPTH,
      offset: c.pos,
      field,
    });
  }
  const typeOffset = c.pos;
  const elemType = c.u32(`${field} element type`);
  if (elemType > T_FLOAT64) {
    throw parseError(c, `array element type ${elemType} is not a GGUF type (0-12)`, typeOffset, field, { type: elemType });
  }
  const n = c.count(`${field} array length`, "MAX_ARRAY_LENGTH", MAX_ARRAY_LENGTH);
  const elemFixed = FIXED_BYTES[elemType] ?? 0;
  if (elemFixed > 0) {
    c.skip(n * elemFixed, field);
    return;
  }
  // Each element consumes >= 8 bytes, so these loops are bounded by the header size as well.
  // One field name for all elements: building one per element would dominate a 256k-token scan.
  const elemField = `${field}[]`;
  if (elemType === T_STRING) {
    const lenField = `${elemField} length`;
    for (let i = 0; i < n; i++) {
      const len = c.count(lenField, "MAX_STRING_BYTES", MAX_STRING_BYTES);
      c.skip(len, elemField);
    }
    return;
  }
  for (let i = 0; i < n; i++) skipValue(c, elemType, depth + 1, elemField);
}

// ---------------------------------------------------------------------------------------------
// Pass 2: the metadata values, from the bytes the scan accepted

/**
 * The metadata, keys in file order. `bytes` is the header the scan walked, so every count, length,
 * type and nesting depth was checked there; the Cursor still bounds each read (a scan bug would
 * surface as a GgufParseError, not a wrong value).
 */
function decodeMetadata(bytes: Uint8Array, scan: ScanResult, source: string): Record<string, GgufValue> {
  const c = new Cursor(bytes, true, source, scan.littleEndian);
  const metadata: Record<string, GgufValue> = {};
  for (const { key, type, valueOffset } of scan.keys) {
    c.pos = valueOffset;
    metadata[key] = decodeValue(c, type, `metadata.${key}`);
  }
  return metadata;
}

/** u64/i64 as a number when exact, else a bigint. */
function safeNumber(v: bigint): number | bigint {
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

function decodeValue(c: Cursor, type: number, field: string): GgufValue {
  const fixed = FIXED_BYTES[type] ?? 0;
  if (fixed > 0) {
    c.need(fixed, field);
    const v = readFixed(c.view, c.pos, type, c.le);
    c.pos += fixed;
    return v;
  }
  if (type === T_STRING) return c.string(field, "MAX_STRING_BYTES", MAX_STRING_BYTES);
  // T_ARRAY (the scan checked the element type, the length and the depth)
  const elemType = c.u32(`${field} element type`);
  const n = c.count(`${field} array length`, "MAX_ARRAY_LENGTH", MAX_ARRAY_LENGTH);
  const out = new Array<GgufValue>(n);
  const elemFixed = FIXED_BYTES[elemType] ?? 0;
  const elemField = `${field}[]`;
  if (elemFixed > 0) {
    // One bounds check for the whole run of numbers, then plain reads.
    c.need(n * elemFixed, elemField);
    const view = c.view, le = c.le;
    let at = c.pos;
    for (let i = 0; i < n; i++, at += elemFixed) out[i] = readFixed(view, at, elemType, le);
    c.pos = at;
  } else if (elemType === T_STRING) {
    for (let i = 0; i < n; i++) out[i] = c.string(elemField, "MAX_STRING_BYTES", MAX_STRING_BYTES);
  } else {
    for (let i = 0; i < n; i++) out[i] = decodeValue(c, elemType, elemField);
  }
  return out;
}

/** A fixed-size value of GGUF type `type` at `at` (the caller checked the bytes are there). */
function readFixed(view: DataView, at: number, type: number, le: boolean): GgufValue {
  switch (type) {
    case 0: return view.getUint8(at);
    case 1: return view.getInt8(at);
    case 2: return view.getUint16(at, le);
    case 3: return view.getInt16(at, le);
    case 4: return view.getUint32(at, le);
    case 5: return view.getInt32(at, le);
    case 6: return view.getFloat32(at, le);
    case 7: return view.getUint8(at) !== 0;
    case 10: return safeNumber(view.getBigUint64(at, le));
    case 11: return safeNumber(view.getBigInt64(at, le));
    default: return view.getFloat64(at, le); // 12, the only other fixed-size type
  }
}

// ---------------------------------------------------------------------------------------------
// Tensor infos, checked against each other and the file (from the scan, before the costly decode)

interface ValidatedTensors {
  tensors: GgufTensorInfo[];
  dataOffset: number;
  tensorBytes: number;
}

function validateTensors(scan: ScanResult, src: ByteSource): ValidatedTensors {
  const source = src.name;
  const alignment = scan.alignment;
  const dataOffset = Math.ceil(scan.headerEnd / alignment) * alignment;
  const fileBytes = src.size;
  const tensors: GgufTensorInfo[] = [];
  for (let i = 0; i < scan.tensors.length; i++) {
    const t = scan.tensors[i]!;
    const field = `tensors.${t.name}`;
    const ne0 = t.shape[0]!;
    const rowBytes = ggmlRowBytes(t.type, ne0);
    if (rowBytes === null) {
      throw new GgufParseError(
        `${source}: tensor "${t.name}" has rows of ${ne0} values, not a multiple of ${t.type.name}'s block of ${t.type.blockSize} ` +
          `(offset ${t.dimsOffset}, ${field}.shape[0])`,
        { source, offset: t.dimsOffset, field: `${field}.shape[0]`, tensor: t.name },
      );
    }
    const bytes = rowBytes * (t.elements / ne0);
    if (t.dataOffset > BigInt(MAX_FILE_BYTES) || Number(t.dataOffset) + bytes > MAX_FILE_BYTES) {
      throw new GgufLimitError(
        `${source}: tensor "${t.name}" would end past MAX_FILE_BYTES ${MAX_FILE_BYTES} (its offset is ${t.dataOffset}, ` +
          `offset ${t.dataOffsetField}); the file is corrupt`,
        { limit: "MAX_FILE_BYTES", value: t.dataOffset, max: MAX_FILE_BYTES, offset: t.dataOffsetField, field: `${field}.offset`, tensor: t.name },
      );
    }
    const offset = Number(t.dataOffset);
    if (offset % alignment !== 0) {
      throw new GgufParseError(
        `${source}: tensor "${t.name}" data offset ${offset} is not a multiple of the alignment ${alignment} ` +
          `(offset ${t.dataOffsetField}, ${field}.offset)`,
        { source, offset: t.dataOffsetField, field: `${field}.offset`, tensor: t.name },
      );
    }
    if (fileBytes !== undefined && dataOffset + offset + bytes > fileBytes) {
      throw new GgufParseError(
        `${source}: tensor "${t.name}" spans bytes ${dataOffset + offset}..${dataOffset + offset + bytes} but the file has ` +
          `${fileBytes} bytes; the file is truncated (offset ${t.dataOffsetField}, ${field}.offset)`,
        { source, offset: t.dataOffsetField, field: `${field}.offset`, tensor: t.name, fileBytes },
      );
    }
    tensors.push({ name: t.name, shape: t.shape, type: t.type, offset, bytes });
  }

  // No two tensors may share bytes: sort by offset and compare neighbours.
  const order = new Array<number>(tensors.length);
  for (let i = 0; i < order.length; i++) order[i] = i;
  order.sort((a, b) => tensors[a]!.offset - tensors[b]!.offset);
  let tensorBytes = 0;
  for (let k = 0; k < order.length; k++) {
    const cur = tensors[order[k]!]!;
    tensorBytes += cur.bytes;
    if (k === 0) continue;
    const prev = tensors[order[k - 1]!]!;
    if (prev.offset + prev.bytes > cur.offset) {
      const t = scan.tensors[order[k]!]!;
      throw new GgufParseError(
        `${source}: tensor "${cur.name}" (data offset ${cur.offset}) overlaps "${prev.name}" ` +
          `(${prev.offset}..${prev.offset + prev.bytes}) (offset ${t.dataOffsetField}, tensors.${cur.name}.offset)`,
        { source, offset: t.dataOffsetField, field: `tensors.${cur.name}.offset`, tensor: cur.name, other: prev.name },
      );
    }
  }
  return { tensors, dataOffset, tensorBytes };
}
