import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { ByteWriter, gv, writeGguf } from "../../test/fixtures/gguf-writer.js";
import { GgufLimitError, GgufParseError, KvboundError, UnknownModelError } from "../errors.js";
import { readGgufHeader, readGgufHeaderFromSource, type GgufHeader } from "./header.js";
import { MAX_HEADER_BYTES, MAX_STRING_BYTES } from "./limits.js";
import type { ByteSource } from "./readers/byte-source.js";

const MODELS = new URL("../../../shared/models/", import.meta.url);
const modelPath = (name: string): string => fileURLToPath(new URL(name, MODELS));
// Files in ../shared may be absent on a laptop (skip) but never in CI (the test then fails).
const itShared = (name: string) => (existsSync(modelPath(name)) || process.env.CI ? it : it.skip);

const pad = (n: number, a: number): number => Math.ceil(n / a) * a;

/** Expects `p` to reject with a KvboundError of `cls` whose details name a number offset and a field. */
async function rejectsWith<T extends KvboundError>(
  p: Promise<unknown>,
  cls: new (...args: never[]) => T,
  expected: { field?: string | RegExp; offset?: number; limit?: string } = {},
): Promise<T> {
  let caught: unknown;
  try {
    await p;
  } catch (err) {
    caught = err;
  }
  expect(caught, "expected a rejection").toBeInstanceOf(cls);
  const err = caught as T;
  expect(typeof err.details.offset, `details.offset of: ${err.message}`).toBe("number");
  expect(typeof err.details.field, `details.field of: ${err.message}`).toBe("string");
  if (expected.field !== undefined) expect(err.details.field).toMatch(expected.field);
  if (expected.offset !== undefined) expect(err.details.offset).toBe(expected.offset);
  if (expected.limit !== undefined) expect(err.details.limit).toBe(expected.limit);
  return err;
}

// ---------------------------------------------------------------------------------------------
// The real files. Expected figures: ../shared/models/PROVENANCE.md (checked there with
// independent Python scripts) and llama2.c's stories260K header (dim 64, hidden 172, 5 layers,
// 8 heads, 4 KV heads, vocab 512).

/** Tensor shapes of stories260K, ne0 first (PROVENANCE.md), with whether the requant tool quantized each. */
function storiesTensors(): Array<{ name: string; shape: number[]; quantized: boolean }> {
  const out = [
    { name: "token_embd.weight", shape: [64, 512], quantized: true },
    { name: "output_norm.weight", shape: [64], quantized: false },
    { name: "output.weight", shape: [64, 512], quantized: true },
  ];
  for (let l = 0; l < 5; l++) {
    out.push(
      { name: `blk.${l}.attn_q.weight`, shape: [64, 64], quantized: true },
      { name: `blk.${l}.attn_k.weight`, shape: [64, 32], quantized: true },
      { name: `blk.${l}.attn_v.weight`, shape: [64, 32], quantized: true },
      { name: `blk.${l}.attn_output.weight`, shape: [64, 64], quantized: true },
      { name: `blk.${l}.attn_norm.weight`, shape: [64], quantized: false },
      { name: `blk.${l}.ffn_gate.weight`, shape: [64, 172], quantized: true },
      { name: `blk.${l}.ffn_down.weight`, shape: [172, 64], quantized: false },
      { name: `blk.${l}.ffn_up.weight`, shape: [64, 172], quantized: true },
      { name: `blk.${l}.ffn_norm.weight`, shape: [64], quantized: false },
    );
  }
  return out;
}

/** Hand size of one tensor: F32 4 B per value; Q8_0 34 B and Q4_0 18 B per 32 values (ggml-common.h). */
function handBytes(shape: number[], type: "F32" | "Q8_0" | "Q4_0"): number {
  let n = 1;
  for (const d of shape) n *= d;
  if (type === "F32") return 4 * n;
  return (n / 32) * (type === "Q8_0" ? 34 : 18);
}

function checkStories(h: GgufHeader, quant: "F32" | "Q8_0" | "Q4_0", fileBytes: number, dataOffset: number): void {
  expect(h.version).toBe(3);
  expect(h.metadata["general.architecture"]).toBe("llama");
  expect(h.metadata["llama.block_count"]).toBe(5);
  expect(h.metadata["llama.embedding_length"]).toBe(64);
  expect(h.metadata["llama.feed_forward_length"]).toBe(172);
  expect(h.metadata["llama.attention.head_count"]).toBe(8);
  expect(h.metadata["llama.attention.head_count_kv"]).toBe(4);
  // The file says 2048 (convert-llama2c-to-ggml's default), though the model was trained at 512.
  expect(h.metadata["llama.context_length"]).toBe(2048);
  expect(h.metadata["llama.rope.dimension_count"]).toBe(8);
  expect(h.metadata["llama.attention.layer_norm_rms_epsilon"]).toBeCloseTo(1e-5, 10);
  expect(h.metadata["tokenizer.ggml.model"]).toBe("llama");
  expect(h.metadata["tokenizer.ggml.bos_token_id"]).toBe(1);
  expect(h.metadata["tokenizer.ggml.eos_token_id"]).toBe(2);
  expect(h.metadata["tokenizer.ggml.padding_token_id"]).toBe(0xffffffff);
  const tokens = h.metadata["tokenizer.ggml.tokens"] as string[];
  expect(tokens).toHaveLength(512);
  expect(tokens[0]).toBe("<unk>");
  expect(tokens[3]).toBe("<0x00>");
  expect((h.metadata["tokenizer.ggml.scores"] as number[]).length).toBe(512);
  expect((h.metadata["tokenizer.ggml.token_type"] as number[]).length).toBe(512);
  expect("general.alignment" in h.metadata).toBe(false);
  expect(h.alignment).toBe(32);
  expect(h.dataOffset).toBe(dataOffset);
  expect(h.fileBytes).toBe(fileBytes);

  const want = storiesTensors();
  expect(h.tensors.map((t) => t.name)).toEqual(want.map((t) => t.name));
  let handTotal = 0;
  let paddedEnd = 0;
  for (let i = 0; i < want.length; i++) {
    const w = want[i]!;
    const t = h.tensors[i]!;
    const type = w.quantized ? quant : "F32";
    expect(t.shape).toEqual(w.shape);
    expect(t.type.name).toBe(type);
    expect(t.bytes).toBe(handBytes(w.shape, type));
    // Written back to back, each padded to 32 bytes, in file order.
    expect(t.offset).toBe(paddedEnd);
    handTotal += handBytes(w.shape, type);
    paddedEnd += pad(handBytes(w.shape, type), 32);
  }
  expect(h.tensorBytes).toBe(handTotal);
  expect(h.dataOffset + paddedEnd).toBe(fileBytes);
}

describe("readGgufHeader on stories260K", () => {
  itShared("stories260K.gguf")("reads the F32 file: llama, 5 blocks, 64 wide, 8/4 heads, 48 tensors", async () => {
    // 1,185,376 bytes, data at 14176 (PROVENANCE.md). 292,800 F32 values = 1,171,200 bytes.
    const h = await readGgufHeader(modelPath("stories260K.gguf"));
    checkStories(h, "F32", 1_185_376, 14_176);
    expect(h.tensorBytes).toBe(292_800 * 4);
    expect(h.source).toBe(modelPath("stories260K.gguf"));
  });

  itShared("stories260K-q8_0.gguf")("reads the Q8_0 file", async () => {
    const h = await readGgufHeader(modelPath("stories260K-q8_0.gguf"));
    checkStories(h, "Q8_0", 489_216, 14_208);
    expect(h.metadata["general.file_type"]).toBe(7);
  });

  itShared("stories260K-q4_0.gguf")("reads the Q4_0 file", async () => {
    const h = await readGgufHeader(modelPath("stories260K-q4_0.gguf"));
    checkStories(h, "Q4_0", 370_688, 14_208);
    expect(h.metadata["general.file_type"]).toBe(2);
  });

  itShared("stories260K.gguf")("gives the same header from a file: URL, a Blob, an ArrayBuffer and a Uint8Array", async () => {
    const bytes = new Uint8Array(readFileSync(modelPath("stories260K.gguf")));
    const fromPath = await readGgufHeader(modelPath("stories260K.gguf"));
    const strip = (h: GgufHeader) => ({ ...h, source: "" });
    for (const src of [new URL("stories260K.gguf", MODELS), new Blob([bytes]), bytes.buffer, bytes]) {
      expect(strip(await readGgufHeader(src))).toEqual(strip(fromPath));
    }
  });

  it("reports a missing file as UnknownModelError", async () => {
    await expect(readGgufHeader("/nonexistent/dir/model.gguf")).rejects.toBeInstanceOf(UnknownModelError);
    await expect(readGgufHeader("ftp://example.invalid/x.gguf")).rejects.toBeInstanceOf(UnknownModelError);
  });
});

// ---------------------------------------------------------------------------------------------
// Synthetic files from the test writer

describe("readGgufHeader on synthetic files", () => {
  it("writes the bytes the GGUF v3 spec prescribes (hand-assembled)", () => {
    const { bytes, dataOffset } = writeGguf({ metadata: [["a", gv.u8(7)]] });
    const hand = [
      ...[0x47, 0x47, 0x55, 0x46], // "GGUF"
      ...[3, 0, 0, 0], // version 3
      ...[0, 0, 0, 0, 0, 0, 0, 0], // 0 tensors
      ...[1, 0, 0, 0, 0, 0, 0, 0], // 1 kv
      ...[1, 0, 0, 0, 0, 0, 0, 0, 0x61], // key "a"
      ...[0, 0, 0, 0], // type uint8
      7,
    ];
    expect(Array.from(bytes.subarray(0, hand.length))).toEqual(hand);
    expect(dataOffset).toBe(64); // 38 bytes padded to 32
    expect(bytes.length).toBe(64);
  });

  it("round-trips every value type, nested arrays, and u64 beyond 2^53 as bigint", async () => {
    const big = 2n ** 60n + 3n;
    const { bytes } = writeGguf({
      metadata: [
        ["t.u8", gv.u8(255)],
        ["t.i8", gv.i8(-128)],
        ["t.u16", gv.u16(65535)],
        ["t.i16", gv.i16(-32768)],
        ["t.u32", gv.u32(4294967295)],
        ["t.i32", gv.i32(-2147483648)],
        ["t.f32", gv.f32(0.5)],
        ["t.f64", gv.f64(Math.PI)],
        ["t.bool", gv.bool(true)],
        ["t.str", gv.str("héllo ▁world")],
        ["t.u64.small", gv.u64(2 ** 53 - 1)],
        ["t.u64.big", gv.u64(big)],
        ["t.i64", gv.i64(-5)],
        ["t.arr.u32", gv.arr("u32", [gv.u32(1), gv.u32(2), gv.u32(3)])],
        ["t.arr.str", gv.arr("string", [gv.str("a"), gv.str(""), gv.str("ccc")])],
        ["t.arr.empty", gv.arr("f32", [])],
        ["t.arr.u64", gv.arr("u64", [gv.u64(1), gv.u64(big)])],
        ["t.arr.nested", gv.arr("array", [gv.arr("i8", [gv.i8(-1)]), gv.arr("i8", [])])],
      ],
    });
    const h = await readGgufHeader(bytes);
    expect(h.metadata).toEqual({
      "t.u8": 255,
      "t.i8": -128,
      "t.u16": 65535,
      "t.i16": -32768,
      "t.u32": 4294967295,
      "t.i32": -2147483648,
      "t.f32": 0.5,
      "t.f64": Math.PI,
      "t.bool": true,
      "t.str": "héllo ▁world",
      "t.u64.small": 2 ** 53 - 1,
      "t.u64.big": big,
      "t.i64": -5,
      "t.arr.u32": [1, 2, 3],
      "t.arr.str": ["a", "", "ccc"],
      "t.arr.empty": [],
      "t.arr.u64": [1, big],
      "t.arr.nested": [[-1], []],
    });
    expect(Object.keys(h.metadata)[0]).toBe("t.u8"); // file order
    expect(h.tensors).toEqual([]);
    expect(h.tensorBytes).toBe(0);
  });

  it("decodes what @huggingface/gguf decodes (the reference): every value type, both byte orders, the shared models", async () => {
    const big = 2n ** 60n + 3n;
    const files: Array<{ name: string; bytes: Uint8Array }> = [];
    for (const bigEndian of [false, true]) {
      const { bytes } = writeGguf({
        metadata: [
          ["t.u8", gv.u8(7)], ["t.i8", gv.i8(-128)], ["t.u16", gv.u16(65535)], ["t.i16", gv.i16(-32768)],
          ["t.u32", gv.u32(4294967295)], ["t.i32", gv.i32(-2147483648)], ["t.f32", gv.f32(-0.1)], ["t.f64", gv.f64(Math.E)],
          ["t.bool", gv.bool(false)], ["t.str", gv.str("\uFEFFbom, h\u00e9llo \u2581world, \u{1F600}")],
          ["t.u64", gv.u64(big)], ["t.i64", gv.i64(-(2n ** 62n))],
          ["t.arr.f32", gv.arr("f32", [gv.f32(1.5), gv.f32(-0), gv.f32(Number.NaN), gv.f32(3e38)])],
          ["t.arr.i16", gv.arr("i16", [gv.i16(-2), gv.i16(300)])],
          ["t.arr.bool", gv.arr("bool", [gv.bool(true), gv.bool(false)])],
          ["t.arr.str", gv.arr("string", [gv.str("\u2581a"), gv.str(""), gv.str("<0x0A>")])],
          ["t.arr.u64", gv.arr("u64", [gv.u64(1), gv.u64(big)])],
          ["t.arr.nested", gv.arr("array", [gv.arr("string", [gv.str("x")]), gv.arr("i8", [])])],
        ],
        tensors: [{ name: "w", shape: [64, 3], type: "Q8_0" }],
        bigEndian,
      });
      files.push({ name: bigEndian ? "big-endian" : "little-endian", bytes });
    }
    for (const name of ["stories260K.gguf", "stories260K-q8_0.gguf", "llama-2-tiny-random.gguf"]) {
      if (existsSync(modelPath(name))) files.push({ name, bytes: new Uint8Array(readFileSync(modelPath(name))) });
      else if (process.env.CI) throw new Error(`missing ${modelPath(name)}`);
    }
    const { gguf } = await import("@huggingface/gguf");
    const exact = (v: unknown): unknown =>
      typeof v === "bigint" ? (v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v) : Array.isArray(v) ? v.map(exact) : v;
    for (const { name, bytes } of files) {
      const h = await readGgufHeader(bytes);
      const serve = async (_input: unknown, init?: RequestInit): Promise<Response> => {
        const range = /bytes=(\d+)-(\d+)/.exec(new Headers(init?.headers).get("range") ?? "")!;
        return new Response(bytes.slice(Number(range[1]), Number(range[2]) + 1), { status: 206 });
      };
      const ref = await gguf("https://kvbound.invalid/ref.gguf", { fetch: serve as typeof fetch });
      const refMeta = ref.metadata as Record<string, unknown>;
      expect(Object.keys(h.metadata), name).toEqual(Object.keys(refMeta).filter((k) => !["version", "tensor_count", "kv_count"].includes(k)));
      for (const key of Object.keys(h.metadata)) expect(h.metadata[key], `${name} ${key}`).toEqual(exact(refMeta[key]));
      expect(h.tensors.map((t) => [t.name, t.shape, t.type.id, t.offset]), name).toEqual(
        ref.tensorInfos.map((t) => [t.name, t.shape.map(Number), t.dtype, Number(t.offset)]),
      );
      expect(h.dataOffset, name).toBe(Number(ref.tensorDataOffset));
    }
    expect(files.length).toBeGreaterThanOrEqual(2);
  });

  it("keeps file keys that @huggingface/gguf uses for itself (version, tensor_count, kv_count)", async () => {
    const { bytes } = writeGguf({ metadata: [["version", gv.str("mine")], ["kv_count", gv.u8(9)]] });
    const h = await readGgufHeader(bytes);
    expect(h.metadata).toEqual({ version: "mine", kv_count: 9 });
  });

  it("reads tensors of several types with alignment 64, and a big-endian file", async () => {
    const tensors = [
      { name: "a", shape: [64, 3], type: "Q8_0" }, // 3 rows x 2 blocks x 34 B = 204
      { name: "b", shape: [7], type: "F16" }, // 14 B
      { name: "c", shape: [256, 2, 1, 1], type: "Q4_K" }, // 2 x 144 B = 288
      { name: "d", shape: [5, 5], type: "F32" }, // 100 B
    ];
    for (const bigEndian of [false, true]) {
      const w = writeGguf({ metadata: [["general.architecture", gv.str("llama")]], tensors, alignment: 64, bigEndian });
      const h = await readGgufHeader(w.bytes);
      expect(h.alignment).toBe(64);
      expect(h.metadata["general.alignment"]).toBe(64);
      expect(h.dataOffset).toBe(w.dataOffset);
      expect(h.dataOffset % 64).toBe(0);
      expect(h.tensors.map((t) => [t.name, t.type.name, t.bytes, t.offset])).toEqual([
        ["a", "Q8_0", 204, 0],
        ["b", "F16", 14, 256],
        ["c", "Q4_K", 288, 320],
        ["d", "F32", 100, 640],
      ]);
      expect(h.tensorBytes).toBe(204 + 14 + 288 + 100);
      expect(h.fileBytes).toBe(h.dataOffset + 768);
    }
  });

  it("reads a 262,144-token vocabulary (Gemma-3 size) within the limits", async () => {
    const n = 262_144;
    const tokens = new Array(n);
    const scores = new Array(n);
    for (let i = 0; i < n; i++) {
      tokens[i] = gv.str(`tok${i}`);
      scores[i] = gv.f32(-i);
    }
    const { bytes } = writeGguf({
      metadata: [
        ["tokenizer.ggml.tokens", gv.arr("string", tokens)],
        ["tokenizer.ggml.scores", gv.arr("f32", scores)],
      ],
      tensors: [{ name: "token_embd.weight", shape: [32, n], type: "Q8_0" }],
    });
    const h = await readGgufHeader(bytes);
    const got = h.metadata["tokenizer.ggml.tokens"] as string[];
    expect(got).toHaveLength(n);
    expect(got[n - 1]).toBe(`tok${n - 1}`);
    expect((h.metadata["tokenizer.ggml.scores"] as number[])[n - 1]).toBe(-(n - 1));
    expect(h.tensors[0]!.bytes).toBe(n * 34);
  });
});

// ---------------------------------------------------------------------------------------------
// Hostile headers: each a typed error naming the offset and field

/** magic, version, tensor count, kv count; then the caller's bytes. */
function header(opts: { version?: number; tensors?: bigint | number; kvs?: bigint | number } = {}): ByteWriter {
  return new ByteWriter()
    .bytes(new Uint8Array([0x47, 0x47, 0x55, 0x46]))
    .u32(opts.version ?? 3)
    .u64(opts.tensors ?? 0)
    .u64(opts.kvs ?? 0);
}

/** A header with one tensor info (after no metadata). */
function tensorFile(name: string, dims: Array<number | bigint>, typeId: number, offset: number | bigint, dataBytes = 4096): Uint8Array {
  const w = header({ tensors: 1 }).str(name).u32(dims.length);
  for (const d of dims) w.u64(d);
  w.u32(typeId).u64(offset).pad(32);
  w.bytes(new Uint8Array(dataBytes));
  return w.finish();
}

describe("readGgufHeader on hostile input", () => {
  it("rejects bad magic and garbage", async () => {
    await rejectsWith(readGgufHeader(new TextEncoder().encode("GGUG\x03\0\0\0")), GgufParseError, { field: "magic", offset: 0 });
    const garbage = new Uint8Array(4096);
    for (let i = 0; i < garbage.length; i++) garbage[i] = (i * 2654435761) >>> 24;
    await rejectsWith(readGgufHeader(garbage), GgufParseError, { field: "magic" });
    await rejectsWith(readGgufHeader(new Uint8Array(0)), GgufParseError, { field: "magic", offset: 0 });
  });

  it("rejects version 999 and version 1", async () => {
    const err = await rejectsWith(readGgufHeader(header({ version: 999 }).finish()), GgufParseError, { field: "version", offset: 4 });
    expect(err.message).toContain("999");
    await rejectsWith(readGgufHeader(header({ version: 1 }).finish()), GgufParseError, { field: "version", offset: 4 });
  });

  it("rejects a header claiming 2^40 tensors or 2^40 KV pairs before looping", async () => {
    await rejectsWith(readGgufHeader(header({ tensors: 2n ** 40n }).finish()), GgufLimitError, {
      field: "tensor_count",
      offset: 8,
      limit: "MAX_TENSOR_COUNT",
    });
    await rejectsWith(readGgufHeader(header({ kvs: 2n ** 40n }).finish()), GgufLimitError, {
      field: "kv_count",
      offset: 16,
      limit: "MAX_KV_COUNT",
    });
  });

  it("rejects 10 GB string lengths (key and value) without allocating them", async () => {
    const tenGB = 10n * 1024n ** 3n;
    await rejectsWith(readGgufHeader(header({ kvs: 1 }).u64(tenGB).finish()), GgufLimitError, {
      field: "metadata[0].key length",
      offset: 24,
      limit: "MAX_KEY_BYTES",
    });
    const w = header({ kvs: 1 }).str("k").u32(8).u64(tenGB);
    await rejectsWith(readGgufHeader(w.finish()), GgufLimitError, { field: "metadata.k length", offset: 24 + 9 + 4, limit: "MAX_STRING_BYTES" });
    // Just above the limit, too.
    const w2 = header({ kvs: 1 }).str("k").u32(8).u64(MAX_STRING_BYTES + 1);
    await rejectsWith(readGgufHeader(w2.finish()), GgufLimitError, { limit: "MAX_STRING_BYTES" });
  });

  it("rejects an array of 2^40 elements, and arrays nested too deep", async () => {
    const w = header({ kvs: 1 }).str("k").u32(9).u32(4).u64(2n ** 40n);
    await rejectsWith(readGgufHeader(w.finish()), GgufLimitError, { field: "metadata.k array length", offset: 24 + 9 + 4 + 4, limit: "MAX_ARRAY_LENGTH" });
    const nested = header({ kvs: 1 }).str("k").u32(9).u32(9).u64(1).u32(9).u64(1).u32(4).u64(1).u32(0);
    await rejectsWith(readGgufHeader(nested.finish()), GgufLimitError, { limit: "MAX_ARRAY_DEPTH", field: /^metadata\.k/ });
  });

  it("rejects bad value type ids (value and array element)", async () => {
    const err = await rejectsWith(readGgufHeader(header({ kvs: 1 }).str("k").u32(13).u32(0).finish()), GgufParseError, {
      field: "metadata.k",
      offset: 24 + 9,
    });
    expect(err.message).toContain("13");
    await rejectsWith(readGgufHeader(header({ kvs: 1 }).str("k").u32(9).u32(0xffffffff).u64(1).finish()), GgufParseError, {
      field: "metadata.k",
      offset: 24 + 9 + 4,
    });
  });

  it("rejects duplicate keys, a __proto__ key and bad general.alignment", async () => {
    const dup = header({ kvs: 2 }).str("k").u32(0).u8(1).str("k").u32(0).u8(2);
    await rejectsWith(readGgufHeader(dup.finish()), GgufParseError, { field: "metadata.k", offset: 24 + 14 });
    await rejectsWith(readGgufHeader(header({ kvs: 1 }).str("__proto__").u32(0).u8(1).finish()), GgufParseError, {
      field: "metadata.__proto__",
    });
    for (const bad of [0, 3, 48, 2 ** 21]) {
      const { bytes } = writeGguf({ metadata: [["general.alignment", gv.u32(bad)]] });
      await rejectsWith(readGgufHeader(bytes), GgufParseError, { field: "metadata.general.alignment" });
    }
    const { bytes } = writeGguf({ metadata: [["general.alignment", gv.str("32")]] });
    await rejectsWith(readGgufHeader(bytes), GgufParseError, { field: "metadata.general.alignment" });
  });

  it("rejects tensors with 0 dims, 5 dims, a 0 dim or too many elements", async () => {
    const at = 24 + 8 + 1; // after the header and the name "t"
    await rejectsWith(readGgufHeader(tensorFile("t", [], 0, 0)), GgufParseError, { field: "tensors.t.n_dims", offset: at });
    await rejectsWith(readGgufHeader(tensorFile("t", [1, 1, 1, 1, 1], 0, 0)), GgufParseError, { field: "tensors.t.n_dims", offset: at });
    await rejectsWith(readGgufHeader(tensorFile("t", [4, 0], 0, 0)), GgufParseError, { field: "tensors.t.shape[1]", offset: at + 4 + 8 });
    await rejectsWith(readGgufHeader(tensorFile("t", [2n ** 63n], 0, 0)), GgufLimitError, {
      field: "tensors.t.shape[0]",
      limit: "MAX_TENSOR_ELEMENTS",
    });
    // Each dim plausible, the product (2^60) not.
    await rejectsWith(readGgufHeader(tensorFile("t", [2 ** 20, 2 ** 20, 2 ** 20], 0, 0)), GgufLimitError, {
      field: "tensors.t.shape[2]",
      offset: at + 4 + 16,
    });
  });

  it("rejects an unknown ggml type, naming the tensor and offset", async () => {
    for (const id of [4, 31, 200, 0xffffffff]) {
      const err = await rejectsWith(readGgufHeader(tensorFile("blk.0.x", [32], id, 0)), GgufParseError, {
        field: "tensors.blk.0.x.type",
        offset: 24 + 8 + 7 + 4 + 8,
      });
      expect(err.message).toContain("blk.0.x");
      expect(err.details.tensor).toBe("blk.0.x");
    }
  });

  it("rejects misaligned, overlapping, out-of-file and huge tensor offsets, and partial blocks", async () => {
    const offsetAt = 24 + 8 + 1 + 4 + 8 + 4;
    await rejectsWith(readGgufHeader(tensorFile("t", [8], 0, 16)), GgufParseError, { field: "tensors.t.offset", offset: offsetAt });
    await rejectsWith(readGgufHeader(tensorFile("t", [8], 0, 2n ** 62n)), GgufLimitError, { field: "tensors.t.offset", limit: "MAX_FILE_BYTES" });
    // 2048 F32 values = 8192 B, but only 4096 data bytes follow the header.
    await rejectsWith(readGgufHeader(tensorFile("t", [2048], 0, 0)), GgufParseError, { field: "tensors.t.offset", offset: offsetAt });
    // Q8_0 rows of 48 values are not whole blocks of 32.
    await rejectsWith(readGgufHeader(tensorFile("t", [48, 2], 8, 0)), GgufParseError, { field: "tensors.t.shape[0]" });
    const { bytes } = writeGguf({
      tensors: [
        { name: "a", shape: [64], type: "F32" },
        { name: "b", shape: [64], type: "F32", offset: 128 },
      ],
    });
    await rejectsWith(readGgufHeader(bytes), GgufParseError, { field: "tensors.b.offset" });
  });

  it("rejects duplicate and over-long tensor names", async () => {
    const { bytes } = writeGguf({
      tensors: [
        { name: "a", shape: [8], type: "F32" },
        { name: "a", shape: [8], type: "F32" },
      ],
    });
    await rejectsWith(readGgufHeader(bytes), GgufParseError, { field: "tensors.a.name" });
    await rejectsWith(readGgufHeader(tensorFile("x".repeat(64), [8], 0, 0)), GgufLimitError, { limit: "MAX_TENSOR_NAME_BYTES", offset: 24 });
  });

  it("stops at MAX_HEADER_BYTES instead of reading on", async () => {
    // A virtual file: 5 string values of MAX_STRING_BYTES each (zeros), 100 MB in all.
    const prefix = header({ kvs: 5 }).finish();
    const entries: Array<{ at: number; bytes: Uint8Array }> = [{ at: 0, bytes: prefix }];
    let at = prefix.length;
    for (let i = 0; i < 5; i++) {
      const e = new ByteWriter().str(`k${i}`).u32(8).u64(MAX_STRING_BYTES).finish();
      entries.push({ at, bytes: e });
      at += e.length + MAX_STRING_BYTES;
    }
    let served = 0;
    const src: ByteSource = {
      size: 100 * 1024 * 1024,
      name: "virtual",
      async read(offset, length) {
        const out = new Uint8Array(Math.min(length, this.size! - offset));
        for (const e of entries) {
          for (let i = 0; i < e.bytes.length; i++) {
            const p = e.at + i - offset;
            if (p >= 0 && p < out.length) out[p] = e.bytes[i]!;
          }
        }
        served += out.length;
        return out;
      },
      async close() {},
    };
    await rejectsWith(readGgufHeaderFromSource(src), GgufLimitError, { limit: "MAX_HEADER_BYTES", field: "metadata.k3" });
    expect(served).toBeLessThanOrEqual(MAX_HEADER_BYTES);
  });

  itShared("stories260K.gguf")("rejects stories260K truncated at every offset in its header", async () => {
    const file = new Uint8Array(readFileSync(modelPath("stories260K.gguf")));
    const headerEnd = 14_176 - 32; // header end lies within the last 32 bytes before the data
    let cases = 0;
    for (let cut = 0; cut < 14_176 + 64; cut += cut < 256 ? 1 : 13) {
      const err = await rejectsWith(readGgufHeader(file.subarray(0, cut)), GgufParseError);
      if (cut < headerEnd) expect(err.details.offset as number).toBeLessThanOrEqual(cut);
      cases++;
    }
    expect(cases).toBeGreaterThan(1000);
  });
});
