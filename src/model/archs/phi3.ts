// Phi-3 / 3.5 / 4-mini as llama.cpp computes them (src/models/phi3.cpp): fused attn_qkv (rows
// Q | K | V), fused ffn_up (rows gate | up, SwiGLU), NeoX RoPE with LongRoPE factors chosen by the
// run's context (long when it exceeds rope.scaling.original_context_length) and
// rope.scaling.attn_factor on cos/sin. llama.cpp disables Phi's sliding window (PR 13676): every
// layer attends over the whole context, so phi3.attention.sliding_window is read and not applied.

import { longRopeChoice, num, outputTensor, readRope, readSizes, standardLayer, uniformAttention, type Architecture, type ArchContext, type TransformerPlan } from "./plan.js";

function phi3Plan(ctx: ArchContext): TransformerPlan {
  const sizes = readSizes(ctx);
  const rope = readRope(ctx, sizes.headDim, { neox: true, longShort: true });
  num(ctx.meta, `${ctx.arch}.attention.sliding_window`, 0); // must be a number when present; unused, as in llama.cpp
  const qDim = sizes.nHead * sizes.headDim;
  const kvDim = sizes.nHeadKv * sizes.headDim;
  const layers = [];
  for (let l = 0; l < sizes.nLayer; l++) {
    const p = `blk.${l}.`;
    const fusedQkv = ctx.has(p + "attn_qkv.weight");
    const qkv = p + "attn_qkv.weight";
    const up = p + "ffn_up.weight";
    layers.push(
      standardLayer(l, sizes, {
        ...(fusedQkv
          ? {
              q: { tensor: qkv, row0: 0, rows: qDim, fusedRows: qDim + 2 * kvDim },
              k: { tensor: qkv, row0: qDim, rows: kvDim, fusedRows: qDim + 2 * kvDim },
              v: { tensor: qkv, row0: qDim + kvDim, rows: kvDim, fusedRows: qDim + 2 * kvDim },
            }
          : {}),
        gate: { tensor: up, row0: 0, rows: sizes.nFf, fusedRows: 2 * sizes.nFf },
        up: { tensor: up, row0: sizes.nFf, rows: sizes.nFf, fusedRows: 2 * sizes.nFf },
      }),
    );
  }
  return { hp: { ...sizes, rope }, attention: uniformAttention(sizes, rope), layers, embedScale: 1, activation: "silu", output: outputTensor(ctx), finalSoftcap: 0, longRope: longRopeChoice(ctx) };
}

export const phi3: Architecture = { names: ["phi3"], plan: phi3Plan };
