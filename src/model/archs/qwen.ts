// The qwen family as llama.cpp computes it (src/models/qwen2.cpp, qwen3.cpp): the llama block with
// NeoX RoPE pairs; qwen2 adds Q/K/V biases, qwen3 a per-head RMSNorm of Q and K before RoPE.

import { outputTensor, readRope, readSizes, standardLayer, uniformAttention, type Architecture, type ArchContext, type TransformerPlan } from "./plan.js";

function qwenPlan(ctx: ArchContext): TransformerPlan {
  const sizes = readSizes(ctx);
  const rope = readRope(ctx, sizes.headDim, { neox: true });
  const layers = [];
  for (let l = 0; l < sizes.nLayer; l++) layers.push(standardLayer(l, sizes));
  return { hp: { ...sizes, rope }, attention: uniformAttention(sizes, rope), layers, embedScale: 1, activation: "silu", output: outputTensor(ctx), finalSoftcap: 0 };
}

export const qwen: Architecture = { names: ["qwen2", "qwen3"], plan: qwenPlan };
