// The dense half of the long-stream claim, in its own file so vitest runs it beside eval.test.ts
// (dense attention costs O(position) per token: this is the slow one).

import { readFileSync } from "node:fs";

import { describe, expect, it } from "vitest";

import { resolveCacheConfig } from "../src/cache/config.js";
import { loadModel } from "../src/engine/load-model.js";
import { perplexity, rangePerplexity } from "../src/engine/perplexity.js";
import { encodeTextStream } from "../src/engine/text-stream.js";
import { requireShared, sharedPath } from "./helpers/shared.js";

const MODEL = "models/stories260K.gguf";
const TEXT = "text/tinystories-valid-excerpt.txt";
const haveFiles = requireShared(MODEL) && requireShared(TEXT);

describe.skipIf(!haveFiles)("dense attention past the training length (stories260K)", () => {
  it("is far worse than a sliding window with re-assigned positions", async () => {
    // ../shared/golden/stories260K-stream-dense-nll-4096.f32 (llama2.c's run.c, dense, f32): the
    // perplexity of positions 2560..2815 is about 140; the numpy StreamingLLM measured
    // about 5.6 for sinks 4 + window 252. "Far worse" here: 5x.
    const N = 2560 + 256;
    const { model, tokenizer } = await loadModel(sharedPath(MODEL));
    const ids = encodeTextStream(tokenizer, readFileSync(sharedPath(TEXT), "utf8"), { skipDocs: 1, maxTokens: N });
    const dense = await perplexity(model, ids, { cacheConfig: resolveCacheConfig({ contextWindowSize: N }) });
    const window = await perplexity(model, ids, { cacheConfig: resolveCacheConfig({ slidingWindowSize: 256, attentionSinkSize: 4 }) });
    const far = (nlls: Float32Array): number => rangePerplexity(nlls, 2560, nlls.length);
    expect(far(window.nlls)).toBeLessThan(10);
    expect(far(dense.nlls)).toBeGreaterThan(5 * far(window.nlls));
  }, 120_000);
});
