// The quantized stories260K files (exact ggml encodings of the same weights) against llama.cpp's
// greedy ids. llama.cpp also quantizes activations, so a dequantize-in-f32 engine agrees only up
// to a known prefix per file (../shared/golden/README.md measured it with an f64 forward pass).

import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { readGgufHeader } from "../gguf/header.js";
import { requireShared, sharedPath } from "../../test/helpers/shared.js";
import { DenseKv } from "./dense-kv.js";
import { createModel } from "./architectures.js";

const GOLDEN = "golden/stories260K-quant-llamacpp-greedy.json";
// From the golden README's table "ids that match llama.cpp" for a float64 dequantized forward pass.
const EXPECTED_PREFIX: Record<string, number> = { q8_0: 200, q5_0: 157, q4_0: 150, q4_1: 51, q5_1: 23 };

const have = requireShared(GOLDEN) && Object.keys(EXPECTED_PREFIX).every((q) => requireShared(`models/stories260K-${q}.gguf`));

function argmax(a: Float32Array): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i]! > a[best]!) best = i;
  return best;
}

describe.skipIf(!have)("quantized stories260K against llama.cpp's greedy ids", () => {
  const golden = have ? JSON.parse(readFileSync(sharedPath(GOLDEN), "utf8")) : null;
  for (const [quant, prefix] of Object.entries(EXPECTED_PREFIX)) {
    it(`${quant}: the first ${prefix} greedy ids equal llama.cpp's`, async () => {
      const path = sharedPath(`models/stories260K-${quant}.gguf`);
      const header = await readGgufHeader(path);
      const file = readFileSync(path);
      // The table above is for a dequantize-to-f32 engine, so run the f32-activation path (the
      // default q8 activations measured 200 / 157 / 74 ids for q8_0 / q5_0 / q4_0: q4_0 leaves
      // llama.cpp at step 74 by a 0.04 logit margin where f32 activations happen to follow it).
      const model = createModel(header, new Uint8Array(file.buffer, file.byteOffset + header.dataOffset, file.length - header.dataOffset), {
        activations: "f32",
      });
      const run = golden.files[quant];
      const kv = new DenseKv(model);
      const logits = new Float32Array(model.hp.nVocab);
      let pos = 0;
      for (const id of run.promptIds as number[]) { kv.setPosition(pos); model.forward(id, pos++, kv, logits); }
      const want: number[] = run.greedyIds;
      let agree = 0;
      while (agree < want.length) {
        const next = argmax(logits);
        if (next !== want[agree]) break;
        agree++;
        kv.setPosition(pos);
        model.forward(next, pos++, kv, logits);
      }
      // Measured here: exactly the f64 reference's prefix for every file (f32 activations did not
      // flip any of the near-ties before it).
      expect(agree).toBeGreaterThanOrEqual(prefix);
    });
  }
});
