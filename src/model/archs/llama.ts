// The llama family as llama.cpp computes it (src/models/llama.cpp): llama and mistral share the
// graph; smollm3 (src/models/smollm3.cpp) is the same block with RoPE skipped on every 4th layer.
// Normal (GPT-J) RoPE pairs on the converter's permuted Q/K; rope_freqs.weight is llama3 scaling,
// rope_factors_long/short LongRoPE; the softmax scale is 1/sqrt(head_dim).

import { longRopeChoice, outputTensor, readRope, readSizes, standardLayer, uniformAttention, type Architecture, type ArchContext, type TransformerPlan } from "./plan.js";

function llamaPlan(ctx: ArchContext, noRopeStep: number): TransformerPlan {
  const sizes = readSizes(ctx);
  const rope = readRope(ctx, sizes.headDim, { neox: false, freqs: true, longShort: true });
  const attention = uniformAttention(sizes, rope).map((a, l) =>
    // llama.cpp: use_rope = (il + 1) % n_no_rope_layer_step != 0 (hard-coded 4 for smollm3, no GGUF key).
    noRopeStep > 0 && (l + 1) % noRopeStep === 0 ? { ...a, rope: null } : a,
  );
  const layers = [];
  for (let l = 0; l < sizes.nLayer; l++) layers.push(standardLayer(l, sizes));
  return { hp: { ...sizes, rope }, attention, layers, embedScale: 1, activation: "silu", output: outputTensor(ctx), finalSoftcap: 0, longRope: longRopeChoice(ctx) };
}

export const llama: Architecture = { names: ["llama", "mistral"], plan: (ctx) => llamaPlan(ctx, 0) };

export const smollm3: Architecture = { names: ["smollm3"], plan: (ctx) => llamaPlan(ctx, 4) };
