// Realistic shapes with random weights (issue "kvbound run"): every quantized matmul of the model
// equals the dequantize-to-f32 reference within 1e-3 relative, and the forward pass runs.

import { describe, expect, it } from "vitest";
import { readGgufHeader } from "../src/gguf/header.js";
import { matvec, matvecReference } from "../src/model/kernels/matvec.js";
import { DenseKv } from "../src/model/dense-kv.js";
import { createModel } from "../src/model/architectures.js";
import { WeightSet } from "../src/model/weights.js";
import { QWEN25_05B, SMOLLM2_135M, writeSyntheticModel, type SyntheticShape } from "./fixtures/synthetic-model.js";

async function open(shape: SyntheticShape, type: string) {
  const bytes = writeSyntheticModel(shape, type);
  const header = await readGgufHeader(bytes);
  const data = bytes.subarray(header.dataOffset);
  return { header, data };
}

// Qwen2.5-0.5B keeps its layer dims and 151936-token vocabulary but 4 of its 24 layers: the full
// 0.5B file is 0.5 GB of random bytes and only repeats the same kernels 20 more times.
const QWEN_4_LAYERS: SyntheticShape = { ...QWEN25_05B, nLayer: 4 };
const cases: Array<[string, SyntheticShape, string]> = [
  ["SmolLM2-135M shape", SMOLLM2_135M, "Q8_0"],
  ["SmolLM2-135M shape", SMOLLM2_135M, "Q4_K"],
  ["Qwen2.5-0.5B shape, 4 layers (QKV bias)", QWEN_4_LAYERS, "Q8_0"],
  ["Qwen2.5-0.5B shape, 4 layers (QKV bias)", QWEN_4_LAYERS, "Q4_K"],
];

describe("synthetic models with realistic shapes", () => {
  for (const [label, shape, type] of cases) {
    it(`${label} in ${type}: matmuls equal the dequantized reference, forward runs`, async () => {
      const { header, data } = await open(shape, type);
      const weights = new WeightSet(header, data);
      const headDim = shape.nEmbd / shape.nHead;
      const mats = [
        weights.matrix("blk.0.attn_q.weight", shape.nEmbd, shape.nEmbd),
        weights.matrix("blk.0.attn_k.weight", shape.nEmbd, shape.nHeadKv * headDim),
        weights.matrix("blk.0.ffn_gate.weight", shape.nEmbd, shape.nFf),
        weights.matrix(`blk.${shape.nLayer - 1}.ffn_down.weight`, shape.nFf, shape.nEmbd),
      ];
      const typesSeen = new Set(mats.map((m) => m.type));
      // Q4_K files hold Q5_0 where a row is not a multiple of 256 (576 and 896 are not), as llama-quantize does.
      expect([...typesSeen].sort()).toEqual(type === "Q4_K" ? ["Q4_K", "Q5_0"] : ["Q8_0"]);
      for (const m of mats) {
        const x = new Float32Array(m.cols);
        for (let i = 0; i < m.cols; i++) x[i] = Math.sin(i * 0.37) * 0.5;
        const fast = new Float32Array(m.rows), ref = new Float32Array(m.rows);
        matvec(fast, x, m);
        matvecReference(ref, x, m);
        for (let r = 0; r < m.rows; r++) {
          expect(Math.abs(fast[r]! - ref[r]!)).toBeLessThanOrEqual(1e-3 * Math.max(1e-3, Math.abs(ref[r]!)));
        }
      }
      const model = createModel(header, data);
      const kv = new DenseKv(model);
      const logits = new Float32Array(shape.nVocab);
      for (let p = 0; p < 2; p++) { kv.setPosition(p); model.forward(p + 5, p, kv, logits); }
      let finite = 0;
      for (let i = 0; i < logits.length; i++) if (Number.isFinite(logits[i]!)) finite++;
      expect(finite).toBe(shape.nVocab);
    });
  }
});
