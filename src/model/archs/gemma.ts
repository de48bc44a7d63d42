// Gemma 2 and Gemma 3 as llama.cpp computes them (src/models/gemma2-iswa.cpp, gemma3.cpp):
// embeddings times sqrt(n_embd), RMSNorm before and after attention and FFN (the converter bakes
// Gemma's 1 + w into the weights), GeGLU (ggml's f16-table GELU), NeoX RoPE, Q scaled by
// 1/sqrt(head_dim) (1/sqrt(n_embd / n_head) for the 27B models, found by layer count as llama.cpp
// does: there is no query_pre_attn_scalar key). Interleaved sliding-window layers: layer il is
// local iff il % p < p - 1 (p = 2 for gemma2, 6 for gemma3), with the standard mask of n_swa.
// Gemma 2: attention logit soft-capping (default 50) and final logit soft-capping (default 30),
// one RoPE for all layers, output tied to the embedding. Gemma 3: per-head QK RMSNorm, local layers
// at RoPE base 10000 and scale 1 while global ones take the metadata's base and scaling, final
// soft-capping only when the file sets it, optional output matrix.

import type { LayerAttention } from "../causal-lm.js";
import { num, readRope, readSizes, standardLayer, type Architecture, type ArchContext, type LayerTensors, type TransformerPlan } from "./plan.js";

function gemmaPlan(ctx: ArchContext, version: 2 | 3): TransformerPlan {
  const { meta, arch } = ctx;
  const sizes = readSizes(ctx);
  const nLayer = sizes.nLayer;
  // llama.cpp's LLM_TYPE_27B: 46 layers (gemma2), 62 (gemma3); n_embd / n_head in integer division.
  const is27B = nLayer === (version === 2 ? 46 : 62);
  const scale = 1 / Math.sqrt(is27B ? Math.floor(sizes.nEmbd / sizes.nHead) : sizes.headDim);
  let nSwa: number;
  let period: number;
  if (version === 2) {
    nSwa = num(meta, `${arch}.attention.sliding_window`, 4096);
    period = num(meta, `${arch}.attention.sliding_window_pattern`, 2);
  } else {
    nSwa = num(meta, `${arch}.attention.sliding_window`, 0);
    period = nSwa > 0 ? num(meta, `${arch}.attention.sliding_window_pattern`, 6) : 1;
  }
  const softcap = version === 2 ? num(meta, `${arch}.attn_logit_softcapping`, 50) : 0;
  const finalSoftcap = num(meta, `${arch}.final_logit_softcapping`, version === 2 ? 30 : 0);
  const globalRope = readRope(ctx, sizes.headDim, { neox: true });
  const localRope =
    version === 3 && nSwa > 0 ? readRope(ctx, sizes.headDim, { neox: true, freqBase: num(meta, `${arch}.rope.freq_base_swa`, 10000), freqScale: 1 }) : globalRope;
  const attention: LayerAttention[] = [];
  const layers: LayerTensors[] = [];
  for (let l = 0; l < nLayer; l++) {
    // set_swa_pattern(p): layer il is SWA iff il % p < p - 1 (p = 1: none).
    const local = nSwa > 0 && period > 1 && l % period < period - 1;
    attention.push({
      nHeadKv: sizes.nHeadKv,
      headDimK: sizes.headDim,
      headDimV: sizes.headDim,
      rope: local ? localRope : globalRope,
      slidingWindow: local ? nSwa : 0,
      scale,
      softcap,
    });
    const p = `blk.${l}.`;
    layers.push(
      standardLayer(l, sizes, {
        attnPostNorm: p + "post_attention_norm.weight",
        ffnPostNorm: p + "post_ffw_norm.weight",
      }),
    );
  }
  // gemma2 always ties the output to the embedding (llama.cpp never reads output.weight there).
  const output = version === 3 && ctx.has("output.weight") ? "output.weight" : "token_embd.weight";
  return { hp: { ...sizes, rope: globalRope }, attention, layers, embedScale: Math.fround(Math.sqrt(sizes.nEmbd)), activation: "gelu", output, finalSoftcap };
}

export const gemma2: Architecture = { names: ["gemma2"], plan: (ctx) => gemmaPlan(ctx, 2) };
export const gemma3: Architecture = { names: ["gemma3"], plan: (ctx) => gemmaPlan(ctx, 3) };
