// kvbound's side of bench/model.ts: LlamaModel driven one token at a time. The KV backend is
// DenseKv for now; swap `makeKv` for the paged cache session when it lands (one place to change).

import { readFileSync } from "node:fs";
import { readGgufHeader } from "../../src/gguf/header.js";
import { DenseKv } from "../../src/model/dense-kv.js";
import { LlamaModel } from "../../src/model/llama.js";
import type { EngineRunner } from "./runner.js";

function argmax(a: Float32Array): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i]! > a[best]!) best = i;
  return best;
}

export async function kvboundRunner(path: string): Promise<EngineRunner> {
  const header = await readGgufHeader(path);
  const file = readFileSync(path);
  const model = new LlamaModel(header, new Uint8Array(file.buffer, file.byteOffset + header.dataOffset, file.length - header.dataOffset));
  const makeKv = () => new DenseKv(model.hp);
  let kv = makeKv();
  let pos = 0;
  const logits = new Float32Array(model.hp.nVocab); // [nVocab]
  const step = (token: number, withLogits: boolean) => {
    kv.setPosition(pos);
    model.forward(token, pos, kv, withLogits ? logits : null);
    pos++;
  };
  return {
    engine: "kvbound",
    async reset() {
      kv = makeKv();
      pos = 0;
    },
    async prefill(ids) {
      for (let i = 0; i < ids.length; i++) step(ids[i]!, false);
    },
    async decode(first, n) {
      const out: number[] = [];
      let t = first;
      for (let i = 0; i < n; i++) {
        step(t, true);
        t = argmax(logits);
        out.push(t);
      }
      return out;
    },
    async dispose() {},
  };
}
