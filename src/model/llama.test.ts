import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { readGgufHeader } from "../gguf/header.js";
import { requireShared, sharedPath } from "../../test/helpers/shared.js";
import { DenseKv } from "./dense-kv.js";
import { createModel } from "./architectures.js";
import { SpmTokenizer } from "./tokenizer/spm.js";
import { spmVocabFromMetadata } from "./tokenizer/spm-metadata.js";

const MODEL = "models/stories260K.gguf";
const have = requireShared(MODEL) && requireShared("golden/stories260K-greedy.json");

async function load() {
  const path = sharedPath(MODEL);
  const header = await readGgufHeader(path);
  const file = readFileSync(path);
  const model = createModel(header, new Uint8Array(file.buffer, file.byteOffset + header.dataOffset, file.length - header.dataOffset));
  return { header, model };
}

function argmax(a: Float32Array): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i]! > a[best]!) best = i;
  return best;
}

describe.skipIf(!have)("stories260K against the llama2.c golden outputs (../shared/golden)", () => {
  it("logits of the first 128 stream positions within 1e-4", async () => {
    const { model } = await load();
    const ids: number[] = JSON.parse(readFileSync(sharedPath("golden/stories260K-stream-ids-4096.json"), "utf8")).ids;
    const raw = readFileSync(sharedPath("golden/stories260K-stream-logits-128x512.f32"));
    const golden = new Float32Array(raw.buffer, raw.byteOffset, raw.length / 4);
    const kv = new DenseKv(model);
    const logits = new Float32Array(model.hp.nVocab);
    let maxErr = 0;
    for (let p = 0; p < 128; p++) {
      kv.setPosition(p);
      model.forward(ids[p]!, p, kv, logits);
      for (let i = 0; i < 512; i++) maxErr = Math.max(maxErr, Math.abs(logits[i]! - golden[p * 512 + i]!));
    }
    expect(maxErr).toBeLessThan(1e-4);
  });

  it("the 256 greedy ids after 'Once upon a time'", async () => {
    const { header, model } = await load();
    const golden = JSON.parse(readFileSync(sharedPath("golden/stories260K-greedy.json"), "utf8"));
    const tok = new SpmTokenizer(spmVocabFromMetadata(header.metadata));
    const prompt = [tok.vocab.bosId, ...tok.encode("Once upon a time")];
    expect(prompt).toEqual(golden.promptIds);
    const kv = new DenseKv(model);
    const logits = new Float32Array(model.hp.nVocab);
    let pos = 0;
    for (const id of prompt) { kv.setPosition(pos); model.forward(id, pos++, kv, logits); }
    const out: number[] = [];
    while (out.length < golden.greedyIds.length) {
      const next = argmax(logits);
      out.push(next);
      kv.setPosition(pos);
      model.forward(next, pos++, kv, logits);
    }
    expect(out).toEqual(golden.greedyIds);
  });
});
