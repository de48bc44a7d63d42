// loadModelSpec's input detection: GGUF file / URL, GGUF metadata JSON, HF config.json (+ the
// safetensors index beside it), registry id, and the typed errors for everything else.

import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { gv, writeGguf, type GgufWriterValue, type WriterTensor } from "../../test/fixtures/gguf-writer.js";
import { loadModelSpec, quantFromFileType } from "./load.js";

const STORIES = fileURLToPath(new URL("../../../shared/models/stories260K.gguf", import.meta.url));
const haveStories = existsSync(STORIES);
if (process.env.CI && !haveStories) throw new Error(`CI: test model missing: ${STORIES}`);

/**
 * An independent GGUF v2/v3 tensor-info reader written for this test (GGUF spec:
 * ggml-org/ggml docs/gguf.md): returns the sum over tensors of ne x bytes-per-element for the
 * plain float types (stories260K is all F32), so it shares no code with src/gguf.
 */
function handSumTensorBytes(buf: Buffer): { count: number; bytes: number } {
  let p = 0;
  const u32 = (): number => {
    const v = buf.readUInt32LE(p);
    p += 4;
    return v;
  };
  const u64 = (): number => {
    const v = Number(buf.readBigUInt64LE(p));
    p += 8;
    return v;
  };
  const str = (): string => {
    const n = u64();
    const s = buf.toString("utf8", p, p + n);
    p += n;
    return s;
  };
  const SCALAR: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
  const skipValue = (type: number): void => {
    if (type === 8) {
      str();
    } else if (type === 9) {
      const inner = u32();
      const n = u64();
      for (let i = 0; i < n; i++) skipValue(inner);
    } else {
      const size = SCALAR[type];
      if (size === undefined) throw new Error(`bad type ${type}`);
      p += size;
    }
  };
  if (buf.toString("latin1", 0, 4) !== "GGUF") throw new Error("not GGUF");
  p = 4;
  u32(); // version
  const nTensors = u64();
  const nKv = u64();
  for (let i = 0; i < nKv; i++) {
    str();
    skipValue(u32());
  }
  const ELEMENT_BYTES: Record<number, number> = { 0: 4, 1: 2, 30: 2 }; // F32, F16, BF16
  let bytes = 0;
  for (let i = 0; i < nTensors; i++) {
    str();
    const nDims = u32();
    let ne = 1;
    for (let d = 0; d < nDims; d++) ne *= u64();
    const type = u32();
    u64(); // offset
    const eb = ELEMENT_BYTES[type];
    if (eb === undefined) throw new Error(`test reader handles float tensors only, got type ${type}`);
    bytes += ne * eb;
  }
  return { count: nTensors, bytes };
}

let dir = "";
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "kvbound-load-"));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

function write(name: string, content: string | Uint8Array): string {
  const path = join(dir, name);
  mkdirSync(join(path, ".."), { recursive: true });
  writeFileSync(path, content);
  return path;
}

async function errorOf(p: Promise<unknown>): Promise<Error & { details?: Record<string, unknown> }> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error("expected a rejection");
}

// Llama 3.2 1B: 16 layers, 32 heads, 8 KV heads, head_dim 64, hidden 2048
// (https://huggingface.co/meta-llama/Llama-3.2-1B/blob/main/config.json).
const LLAMA_32_1B_CONFIG = {
  architectures: ["LlamaForCausalLM"],
  model_type: "llama",
  hidden_size: 2048,
  intermediate_size: 8192,
  num_hidden_layers: 16,
  num_attention_heads: 32,
  num_key_value_heads: 8,
  head_dim: 64,
  max_position_embeddings: 131072,
  vocab_size: 128256,
  torch_dtype: "bfloat16",
};

describe("loadModelSpec: GGUF", () => {
  it.skipIf(!haveStories)("reads stories260K.gguf: weights are the sum of its tensor sizes", async () => {
    const hand = handSumTensorBytes(readFileSync(STORIES));
    // stories260K: 5 blocks x 9 tensors + token_embd, output_norm, output = 48 tensors
    // (llama2.c's model, converted by convert-llama2c-to-ggml), all F32.
    expect(hand.count).toBe(48);
    const spec = await loadModelSpec(STORIES);
    expect(spec.arch).toBe("llama");
    expect(spec.nLayer).toBe(5);
    // No general.file_type in this file; every tensor is F32.
    expect(spec.weights).toEqual({ bytes: hand.bytes, quant: "F32", source: "gguf-tensors" });
    expect(spec.params).toBe(hand.bytes / 4);
  });

  it.skipIf(!haveStories)("detects GGUF by magic without a .gguf name", async () => {
    const path = write("model-without-extension", readFileSync(STORIES));
    const spec = await loadModelSpec(path);
    expect(spec.arch).toBe("llama");
  });

  it.skipIf(!haveStories)("reads a GGUF over http(s) from a local server", async () => {
    const data = readFileSync(STORIES);
    const server: Server = createServer((req, res) => {
      const m = /bytes=(\d+)-(\d*)/.exec(req.headers.range ?? "");
      if (!m) {
        res.writeHead(200, { "content-length": data.length });
        res.end(data);
        return;
      }
      const start = Number(m[1]);
      const end = m[2] ? Math.min(Number(m[2]), data.length - 1) : data.length - 1;
      res.writeHead(206, {
        "content-range": `bytes ${start}-${end}/${data.length}`,
        "content-length": end - start + 1,
        "accept-ranges": "bytes",
      });
      res.end(data.subarray(start, end + 1));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const spec = await loadModelSpec(`http://127.0.0.1:${port}/stories260K.gguf`);
      expect(spec.arch).toBe("llama");
      expect(spec.weights?.bytes).toBe(handSumTensorBytes(data).bytes);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it("a .gguf file with garbage is a GgufParseError", async () => {
    const path = write("garbage.gguf", "this is not a gguf file at all");
    expect((await errorOf(loadModelSpec(path))).name).toBe("GgufParseError");
  });

  it("maps general.file_type to llama.cpp's ftype names (include/llama.h enum llama_ftype)", () => {
    expect(quantFromFileType(0)).toBe("F32");
    expect(quantFromFileType(1)).toBe("F16");
    expect(quantFromFileType(7)).toBe("Q8_0");
    expect(quantFromFileType(15)).toBe("Q4_K_M");
    expect(quantFromFileType(32)).toBe("BF16");
    expect(quantFromFileType(38)).toBe("MXFP4_MOE");
    expect(quantFromFileType(undefined)).toBe("mixed");
    expect(quantFromFileType(1024)).toBe("mixed");
    expect(quantFromFileType("15")).toBe("mixed");
  });
});

describe("loadModelSpec: JSON", () => {
  it("a GGUF metadata dump (general.architecture) goes through the GGUF metadata rules", async () => {
    // Gemma 3 27B's facts (https://huggingface.co/google/gemma-3-27b-it config: 62 layers, 16 KV
    // heads, head_dim 128, sliding_window 1024).
    const path = write(
      "gemma3.json",
      JSON.stringify({
        "general.architecture": "gemma3",
        "gemma3.block_count": 62,
        "gemma3.embedding_length": 5376,
        "gemma3.attention.head_count": 32,
        "gemma3.attention.head_count_kv": 16,
        "gemma3.attention.key_length": 128,
        "gemma3.attention.value_length": 128,
        "gemma3.attention.sliding_window": 1024,
        "gemma3.context_length": 131072,
      }),
    );
    const spec = await loadModelSpec(path);
    expect(spec.arch).toBe("gemma3");
    expect(spec.nLayer).toBe(62);
    expect(spec.nSwa).toBe(1024);
    expect(spec.source).toBe(path);
    expect(spec.weights).toBeNull();
  });

  it("a HF config.json, with the safetensors index beside it", async () => {
    const path = write("llama1b/config.json", JSON.stringify(LLAMA_32_1B_CONFIG));
    // total_size as published in the model's model.safetensors.index.json style (any figure works:
    // it must come through unchanged).
    write("llama1b/model.safetensors.index.json", JSON.stringify({ metadata: { total_size: 2471645184 }, weight_map: {} }));
    const spec = await loadModelSpec(path);
    expect(spec.nLayer).toBe(16);
    const first = spec.layers[0];
    expect(first).toMatchObject({ kind: "attention", nHeadKv: 8, headDimK: 64, headDimV: 64 });
    expect(spec.weights).toMatchObject({ bytes: 2471645184, source: "safetensors-index" });
    // A folder holding config.json is the same input.
    const again = await loadModelSpec(join(dir, "llama1b"));
    expect(again.nLayer).toBe(16);
  });

  it("a HF config.json without an index has no safetensors weights", async () => {
    const path = write("plain/config.json", JSON.stringify(LLAMA_32_1B_CONFIG));
    const spec = await loadModelSpec(path);
    expect(spec.weights?.source).not.toBe("safetensors-index");
  });

  it("JSON that is neither is a ModelConfigError naming the field", async () => {
    const path = write("other.json", JSON.stringify({ hello: "world" }));
    const err = await errorOf(loadModelSpec(path));
    expect(err.name).toBe("ModelConfigError");
    expect(err.message).toMatch(/general\.architecture|model_type/);
  });

  it("invalid JSON and a non-object are ModelConfigErrors", async () => {
    expect((await errorOf(loadModelSpec(write("broken.json", "{ not json")))).name).toBe("ModelConfigError");
    expect((await errorOf(loadModelSpec(write("array.json", "[1,2,3]")))).name).toBe("ModelConfigError");
  });

  it("a file that is neither GGUF nor JSON is a ModelConfigError", async () => {
    const err = await errorOf(loadModelSpec(write("random.bin", new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]))));
    expect(err.name).toBe("ModelConfigError");
    expect(err.details?.["field"]).toBe("file");
  });
});

describe("loadModelSpec: registry", () => {
  it("a registry id becomes the registry's spec", async () => {
    const spec = await loadModelSpec("llama-3.1-8b");
    // Llama 3.1 8B: 32 layers, 8 KV heads, head 128
    // (https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct/blob/main/config.json).
    expect(spec.nLayer).toBe(32);
    expect(spec.layers[0]).toMatchObject({ kind: "attention", nHeadKv: 8, headDimK: 128 });
    expect(spec.weights?.source).toBe("registry");
  });

  it("an unknown id is an UnknownModelError", async () => {
    const err = await errorOf(loadModelSpec("llama-3.1-8bb"));
    expect(err.name).toBe("UnknownModelError");
  });

  it("a missing path says there is no such file", async () => {
    const err = await errorOf(loadModelSpec(join(dir, "missing.gguf")));
    expect(err.name).toBe("UnknownModelError");
    expect(err.message).toMatch(/no such file/);
  });
});

// ---------------------------------------------------------------------------------------------
// Split GGUFs and hf: references

/** A small llama GGUF's metadata (2 blocks, 4 heads, 2 KV heads, head 8). */
const TINY_META: Array<[string, GgufWriterValue]> = [
  ["general.architecture", gv.str("llama")],
  ["general.name", gv.str("tiny")],
  ["llama.block_count", gv.u32(2)],
  ["llama.embedding_length", gv.u32(32)],
  ["llama.feed_forward_length", gv.u32(64)],
  ["llama.attention.head_count", gv.u32(4)],
  ["llama.attention.head_count_kv", gv.u32(2)],
  ["llama.context_length", gv.u32(2048)],
  ["llama.rope.dimension_count", gv.u32(8)],
];

/** gguf-split's layout: the model's metadata in the first shard only, split.* keys in every shard,
 *  tensors spread over the shards. Returns each shard's bytes and the tensors' total bytes. */
function splitGguf(count: number, opts: { wrongNo?: number } = {}): { shards: Uint8Array[]; tensorBytes: number; params: number } {
  const shards: Uint8Array[] = [];
  let tensorBytes = 0;
  let params = 0;
  for (let i = 0; i < count; i++) {
    const split: Array<[string, GgufWriterValue]> = [
      ["split.no", gv.u16(opts.wrongNo !== undefined && i === count - 1 ? opts.wrongNo : i)],
      ["split.count", gv.u16(count)],
      ["split.tensors.count", gv.i32(count * 2)],
    ];
    const tensors: WriterTensor[] = [
      { name: `blk.${i}.attn_q.weight`, shape: [32, 32], type: "F32" },
      { name: `blk.${i}.ffn_up.weight`, shape: [32, 64], type: "F16" },
    ];
    const written = writeGguf({ metadata: i === 0 ? [...TINY_META, ...split] : split, tensors });
    for (const b of written.tensorBytes) tensorBytes += b;
    params += 32 * 32 + 32 * 64;
    shards.push(written.bytes);
  }
  return { shards, tensorBytes, params };
}

const shardName = (prefix: string, i: number, n: number): string => `${prefix}-${String(i).padStart(5, "0")}-of-${String(n).padStart(5, "0")}.gguf`;

/** A local server with Range support over `files` (path -> bytes); records request headers. */
async function serve(files: Map<string, Uint8Array>): Promise<{ base: string; seen: Array<Record<string, unknown>>; close: () => Promise<void> }> {
  const seen: Array<Record<string, unknown>> = [];
  const server: Server = createServer((req, res) => {
    seen.push({ url: req.url, ...req.headers });
    const data = files.get(decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname));
    if (data === undefined) {
      res.writeHead(404);
      res.end();
      return;
    }
    const m = /bytes=(\d+)-(\d*)/.exec(req.headers.range ?? "");
    const start = m ? Number(m[1]) : 0;
    const end = m && m[2] ? Math.min(Number(m[2]), data.length - 1) : data.length - 1;
    res.writeHead(m ? 206 : 200, {
      ...(m ? { "content-range": `bytes ${start}-${end}/${data.length}` } : {}),
      "content-length": end - start + 1,
      "accept-ranges": "bytes",
    });
    res.end(data.subarray(start, end + 1));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return { base: `http://127.0.0.1:${port}`, seen, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

describe("loadModelSpec: split GGUFs (split.count > 1) are read shard by shard", () => {
  it("every shard's tensors are counted, whichever shard is named; the metadata comes from the first", async () => {
    const { shards, tensorBytes, params } = splitGguf(3);
    const paths = shards.map((b, i) => write(join("split", shardName("tiny", i + 1, 3)), b));
    for (const path of [paths[0]!, paths[1]!]) {
      const spec = await loadModelSpec(path);
      expect(spec.arch).toBe("llama");
      expect(spec.nLayer).toBe(2);
      expect(spec.weights).toEqual({ bytes: tensorBytes, quant: "mixed", source: "gguf-tensors" });
      expect(spec.params).toBe(params);
      expect(Object.keys(spec.tensorTypes ?? {})).toHaveLength(6);
      expect(spec.name).toBe("tiny");
    }
    // 3 shards x (32x32 F32 = 4096 B + 32x64 F16 = 4096 B)
    expect(tensorBytes).toBe(3 * 8192);
  });

  it("a missing shard, a name off llama.cpp's pattern, or shards of different splits: ModelConfigError saying how", async () => {
    const { shards } = splitGguf(3);
    write(join("gap", shardName("tiny", 1, 3)), shards[0]!);
    write(join("gap", shardName("tiny", 2, 3)), shards[1]!);
    const missing = await errorOf(loadModelSpec(join(dir, "gap", shardName("tiny", 1, 3))));
    expect(missing.name).toBe("ModelConfigError");
    expect(missing.message).toMatch(/shard 3, .*tiny-00003-of-00003\.gguf, is missing/);
    expect(missing.message).toMatch(/llama-gguf-split --merge/);
    const renamed = await errorOf(loadModelSpec(write(join("renamed", "tiny.gguf"), shards[0]!)));
    expect(renamed.name).toBe("ModelConfigError");
    expect(renamed.message).toMatch(/shard 1 of a GGUF split into 3 files .*tiny-00001-of-00003\.gguf/);
    const mixed = splitGguf(3, { wrongNo: 0 });
    mixed.shards.forEach((b, i) => write(join("mixed", shardName("tiny", i + 1, 3)), b));
    expect((await errorOf(loadModelSpec(join(dir, "mixed", shardName("tiny", 1, 3))))).message).toMatch(/does not say it is shard 3 of 3/);
  });

  it("over http(s): the other shards are fetched by the same naming", async () => {
    const { shards, tensorBytes } = splitGguf(2);
    const files = new Map(shards.map((b, i) => [`/m/${shardName("tiny", i + 1, 2)}`, b] as const));
    const srv = await serve(files);
    try {
      const spec = await loadModelSpec(`${srv.base}/m/${shardName("tiny", 1, 2)}`);
      expect(spec.weights?.bytes).toBe(tensorBytes);
    } finally {
      await srv.close();
    }
  });
});

describe("loadModelSpec: hf:owner/repo/file.gguf, as `kvbound run` takes it", () => {
  it.skipIf(!haveStories)("reads the header from <HF_ENDPOINT>/owner/repo/resolve/<rev>/<file> with HF_TOKEN, downloading nothing", async () => {
    const data = new Uint8Array(readFileSync(STORIES));
    const srv = await serve(new Map([["/acme/tiny/resolve/v1/sub/stories260K.gguf", data]]));
    try {
      const spec = await loadModelSpec("hf:acme/tiny/sub/stories260K.gguf@v1", { env: { HF_ENDPOINT: srv.base, HF_TOKEN: "secret" } });
      expect(spec.arch).toBe("llama");
      expect(spec.source).toBe("hf:acme/tiny/sub/stories260K.gguf@v1");
      expect(spec.name).toBe("stories260K");
      expect(spec.weights?.bytes).toBe(handSumTensorBytes(Buffer.from(data)).bytes);
      expect(srv.seen.every((h) => h["authorization"] === "Bearer secret")).toBe(true);
      // Only the header was read.
      let served = 0;
      for (const h of srv.seen) {
        const m = /bytes=(\d+)-(\d+)/.exec(String(h["range"] ?? ""));
        if (m) served += Number(m[2]) - Number(m[1]) + 1;
      }
      expect(served).toBeLessThan(data.length);
    } finally {
      await srv.close();
    }
  });

  it("a malformed hf: reference is a ModelRefError", async () => {
    expect((await errorOf(loadModelSpec("hf:acme/tiny"))).name).toBe("ModelRefError");
  });
});
