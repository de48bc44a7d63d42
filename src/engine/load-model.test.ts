// Loading models from a path, bytes, a Blob and a local HTTP server into one buffer, and the typed
// refusals of bad files (wrong tensor shape, truncated data, unknown architecture).

import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { gv, writeGguf, type GgufWriterValue, type WriterTensor } from "../../test/fixtures/gguf-writer.js";
import { requireShared, sharedPath } from "../../test/helpers/shared.js";
import { FetchError, KvboundError, TensorShapeError, UnsupportedArchitectureError } from "../errors.js";
import { loadModel, type LoadedModel } from "./load-model.js";
import { DenseKv } from "../model/dense-kv.js";

/** The logits after two tokens: equal models give equal values. */
function logitsOf(m: LoadedModel): Float32Array {
  const out = new Float32Array(m.model.hp.nVocab);
  const kv = new DenseKv(m.model);
  m.model.forward(1, 0, kv, null);
  m.model.forward(2, 1, kv, out);
  return out;
}

// A tiny llama: 1 layer, dim 8, 2 heads, 1 KV head (head dim 4), ffn 16, vocab 6.
const DIM = 8;
const KV = 4;
const FF = 16;
const VOCAB = 6;

function tinyGguf(opts: { arch?: string; override?: Record<string, number[]> } = {}): Uint8Array {
  const arch = opts.arch ?? "llama";
  const tokens = ["<unk>", "<s>", "</s>", "▁a", "▁b", "c"];
  const metadata: Array<[string, GgufWriterValue]> = [
    ["general.architecture", gv.str(arch)],
    [`${arch}.block_count`, gv.u32(1)],
    [`${arch}.embedding_length`, gv.u32(DIM)],
    [`${arch}.attention.head_count`, gv.u32(2)],
    [`${arch}.attention.head_count_kv`, gv.u32(1)],
    [`${arch}.feed_forward_length`, gv.u32(FF)],
    [`${arch}.context_length`, gv.u32(64)],
    ["tokenizer.ggml.model", gv.str("llama")],
    ["tokenizer.ggml.tokens", gv.arr("string", tokens.map((t) => gv.str(t)))],
    ["tokenizer.ggml.scores", gv.arr("f32", tokens.map(() => gv.f32(0)))],
    ["tokenizer.ggml.token_type", gv.arr("i32", [2, 3, 3, 1, 1, 1].map((t) => gv.i32(t)))],
  ];
  const shapes: Record<string, number[]> = {
    "token_embd.weight": [DIM, VOCAB],
    "output_norm.weight": [DIM],
    "blk.0.attn_norm.weight": [DIM],
    "blk.0.attn_q.weight": [DIM, DIM],
    "blk.0.attn_k.weight": [DIM, KV],
    "blk.0.attn_v.weight": [DIM, KV],
    "blk.0.attn_output.weight": [DIM, DIM],
    "blk.0.ffn_norm.weight": [DIM],
    "blk.0.ffn_gate.weight": [DIM, FF],
    "blk.0.ffn_up.weight": [DIM, FF],
    "blk.0.ffn_down.weight": [FF, DIM],
    ...opts.override,
  };
  const tensors: WriterTensor[] = Object.entries(shapes).map(([name, shape]) => ({ name, shape, type: "F32" }));
  return writeGguf({ metadata, tensors }).bytes;
}

describe("loadModel: typed refusals", () => {
  it("loads a well-formed tiny model from bytes without copying them", async () => {
    const bytes = tinyGguf();
    const m = await loadModel(bytes);
    // Bytes in memory stay the caller's: tensors are views of them, counted as resident.
    expect(m.weights).toEqual({ residentBytes: bytes.byteLength, mode: "memory" });
    expect(m.model.hp.nLayer).toBe(1);
    expect(m.tokenizer.vocab.tokens.length).toBe(VOCAB);
  });

  it("a tensor of the wrong shape is refused with its name", async () => {
    const bad = tinyGguf({ override: { "blk.0.attn_k.weight": [DIM, KV + 1] } });
    const err = await loadModel(bad).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TensorShapeError);
    expect((err as TensorShapeError).details.tensor).toBe("blk.0.attn_k.weight");
    expect((err as Error).message).toContain("blk.0.attn_k.weight");
  });

  it("a file cut short inside a tensor is refused with that tensor's name", async () => {
    const good = tinyGguf();
    // The last tensor (ffn_down, FF*DIM floats) loses its final 4 bytes.
    const err = await loadModel(good.slice(0, good.length - 4)).catch((e: unknown) => e);
    // The header reader already sees that the data region is too short (GgufParseError); either
    // way the error is typed and names the tensor.
    expect(err).toBeInstanceOf(KvboundError);
    expect((err as Error).message).toContain("blk.0.ffn_down.weight");
  });

  it("an architecture without a forward pass is refused by name", async () => {
    const err = await loadModel(tinyGguf({ arch: "mamba" })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnsupportedArchitectureError);
    expect((err as Error).message).toContain("mamba");
  });
});

const have = requireShared("models/stories260K.gguf");

describe.skipIf(!have)("loadModel: stories260K from every source", () => {
  const path = sharedPath("models/stories260K.gguf");
  let file: Uint8Array;
  let server: Server;
  let base = "";
  let sendLength = true;
  beforeAll(async () => {
    file = new Uint8Array(readFileSync(path));
    server = createServer((req, res) => {
      if (req.url === "/missing.gguf") {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, sendLength ? { "content-length": String(file.length) } : {});
      // Several chunks, so progress is reported more than once.
      const step = 64 * 1024;
      for (let o = 0; o < file.length; o += step) res.write(file.subarray(o, o + step));
      res.end();
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it("path, file: URL, ArrayBuffer and Blob give the same model; streamed loads keep only the non-wasm tensors", async () => {
    const fromPath = await loadModel(path);
    const fromAb = await loadModel(file.slice().buffer);
    expect(fromAb.weights.mode).toBe("memory");
    expect(fromPath.weights.mode).toBe("stream");
    // stories260K is all F32 with an untied output: only the norms and token_embd stay JS-side.
    if (fromPath.model.kernels === "wasm") expect(fromPath.weights.residentBytes).toBeLessThan(file.length / 2);
    const ref = logitsOf(fromAb);
    expect(logitsOf(fromPath)).toEqual(ref);
    const fromUrl = await loadModel(new URL(`file://${path}`));
    expect(logitsOf(fromUrl)).toEqual(ref);
    const fromBlob = await loadModel(new Blob([new Uint8Array(file)]));
    expect(logitsOf(fromBlob)).toEqual(ref);
  });

  it("an http URL streams into a buffer of Content-Length with progress; without it, too", async () => {
    const progress: Array<[number, number | undefined]> = [];
    const m = await loadModel(`${base}/stories260K.gguf`, { onProgress: (d, t) => progress.push([d, t]) });
    expect(logitsOf(m)).toEqual(logitsOf(await loadModel(file)));
    expect(progress.length).toBeGreaterThan(1);
    expect(progress.at(-1)).toEqual([file.length, file.length]);
    sendLength = false;
    try {
      const chunked = await loadModel(`${base}/stories260K.gguf`);
      expect(logitsOf(chunked)).toEqual(logitsOf(await loadModel(file)));
    } finally {
      sendLength = true;
    }
    await expect(loadModel(`${base}/missing.gguf`)).rejects.toBeInstanceOf(FetchError);
  });

  it("an hf: reference is downloaded once into the cache folder, then read from there", async () => {
    const cacheDir = mkdtempSync(join(tmpdir(), "kvbound-hf-"));
    try {
      let requests = 0;
      const countingFetch: typeof fetch = (input, init) => {
        requests++;
        return fetch(input, init);
      };
      const opts = { fetch: countingFetch, cacheDir, resolve: { endpoint: base, env: {} } };
      const a = await loadModel("hf:someone/stories/stories260K.gguf", opts);
      expect(a.weights.mode).toBe("stream");
      const firstRequests = requests;
      expect(firstRequests).toBeGreaterThan(0);
      const b = await loadModel("hf:someone/stories/stories260K.gguf", opts);
      expect(logitsOf(b)).toEqual(logitsOf(a));
      expect(requests).toBe(firstRequests);
    } finally {
      rmSync(cacheDir, { recursive: true, force: true });
    }
  });
});
