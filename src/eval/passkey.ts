// Passkey retrieval for a small story model: a name is stated once ("...a little girl named Lily."),
// name-free filler text follows, then a cue ("The girl's name was") whose continuation is the name.
// Retrieval is scored by comparing the log-probability of the true name with that of the other
// candidate names after the cue: the trial retrieves the fact when the true name ranks first.
//
// Every candidate takes a turn as the true name (same filler, same cue), so a model that ignores
// the fact and only follows its prior (TinyStories favours "Lily") retrieves 1/K of the trials:
// chance is exactly 1/K. One pass over fact + filler serves every distance: at each checkpoint the
// sequence is forked (copy-on-write pages), the cue and each candidate are fed to the fork, and the
// fork is dropped, so a trial costs the longest distance plus a few tokens per checkpoint.
// Fact, filler, cue and candidates go through the model in batches where nothing is evicted inside
// one (feedTokens, the rule in src/engine/perplexity.ts), one token at a time elsewhere.

import { resolveCacheConfig, type CacheConfigInput } from "../cache/config.js";
import type { PagedKvCache } from "../cache/paged-kv-cache.js";
import { AbortError, InvalidSettingError } from "../errors.js";
import type { CausalLM } from "../model/causal-lm.js";
import type { Tokenizer } from "../model/tokenizer/index.js";
import { asyncForwardOf, createSessionCache, withBackendCodec } from "../model/async-forward.js";
import { CacheKv } from "../model/cache-kv.js";
import { feedTokens, feedTokensAsync, nllOf } from "../engine/perplexity.js";
import { splitDocuments } from "../engine/text-stream.js";

/** Distances (filler tokens between the fact and the cue) the task measures by default. */
export const PASSKEY_DISTANCES: readonly number[] = [0, 64, 128, 192, 256, 512, 1024, 2048, 4096];
/**
 * Candidate names: common TinyStories names, each tokenized differently from the others, so a
 * prior for one cannot be mistaken for retrieval of another.
 */
export const PASSKEY_NAMES: readonly string[] = ["Lily", "Tim", "Tom", "Ben", "Max", "Sue"];
/** The fact, with {name} replaced. */
export const PASSKEY_FACT = "Once upon a time, there was a little girl named {name}. She had a red ball.";
/**
 * The cue whose continuation is the name: TinyStories open a new paragraph with "One day, <hero>".
 * Chosen by a calibration with dense attention (docs/RESULTS.md): "The girl's name was" and "Her
 * name was" rank the true name first in only about half of the trials even at distance 0.
 */
export const PASSKEY_CUE = "One day,";
/** Longest distance accepted: the stream must fit a context window and the run must end in minutes. */
export const MAX_PASSKEY_DISTANCE = 65536;

/**
 * Words that may start a filler sentence. Any other capitalized word marks a sentence that may
 * name someone, which would compete with the fact, so the sentence is left out.
 */
const SENTENCE_STARTERS = new Set([
  "A", "After", "All", "And", "As", "At", "Be", "But", "Can", "Do", "Don't", "Every", "Everyone", "Finally", "For", "He", "Her", "Here",
  "His", "How", "I", "I'm", "If", "In", "It", "It's", "Just", "Let's", "Look", "Maybe", "My", "No", "Now", "Oh", "On", "One", "Once",
  "Please", "She", "So", "Some", "Soon", "Suddenly", "Thank", "That", "The", "Their", "Then", "There", "These", "They", "This", "Together",
  "Today", "Wait", "We", "What", "When", "Where", "Which", "While", "Who", "Why", "Wow", "Yes", "You", "Your",
]);

export interface PasskeyPrompt {
  /** BOS + fact + filler[0..distance) + cue. */
  readonly ids: number[];
  /** ids index range of the fact, and where the cue starts. */
  readonly factStart: number;
  readonly factEnd: number;
  readonly cueStart: number;
}

/** BOS, then the fact, then exactly `distance` filler tokens, then the cue. */
export function buildPasskeyPrompt(
  bos: number,
  fact: readonly number[],
  filler: readonly number[],
  cue: readonly number[],
  distance: number,
): PasskeyPrompt {
  if (!Number.isSafeInteger(distance) || distance < 0 || distance > filler.length) {
    throw new InvalidSettingError(`passkey distance ${distance} is invalid: use 0..${filler.length} (the filler's length)`, {
      setting: "distance",
      value: distance,
    });
  }
  const ids: number[] = [bos];
  for (let i = 0; i < fact.length; i++) ids.push(fact[i]!);
  const factEnd = ids.length;
  for (let i = 0; i < distance; i++) ids.push(filler[i]!);
  const cueStart = ids.length;
  for (let i = 0; i < cue.length; i++) ids.push(cue[i]!);
  return { ids, factStart: 1, factEnd, cueStart };
}

/**
 * Sentences of the TinyStories text that name no one: every capitalized word other than the first is
 * refused, and the first must be a common sentence starter. Joined with spaces, in text order.
 */
export function nameFreeFiller(text: string, skipDocs = 0): string {
  const docs = splitDocuments(text);
  const kept: string[] = [];
  for (let d = skipDocs; d < docs.length; d++) {
    const sentences = docs[d]!.replace(/\s+/g, " ").match(/[^.!?]+[.!?]+["']?/g) ?? [];
    for (let s = 0; s < sentences.length; s++) {
      const sentence = sentences[s]!.trim();
      if (isNameFree(sentence)) kept.push(sentence);
    }
  }
  return kept.join(" ");
}

function isNameFree(sentence: string): boolean {
  const words = sentence.split(" ");
  for (let i = 0; i < words.length; i++) {
    const w = words[i]!.replace(/^["'(]+|[.,!?;:"')]+$/g, "");
    if (w.length === 0 || !/^[A-Z]/.test(w)) continue;
    // A capital after an opening quote starts speech; treat it as a sentence start.
    const startsSpeech = i > 0 && /^["']/.test(words[i]!);
    if ((i === 0 || startsSpeech) && SENTENCE_STARTERS.has(w)) continue;
    return false;
  }
  return true;
}

export interface PasskeySetting {
  /** Label in tables. */
  readonly label: string;
  /**
   * The cache; maxSequences is set here (3: the stream, its fork for the cue, a fork per candidate).
   * A context window is sized to the longest prompt when contextWindowSize is left unset.
   */
  readonly cache: Omit<CacheConfigInput, "maxSequences">;
}

export interface PasskeyOptions {
  readonly distances?: readonly number[];
  readonly names?: readonly string[];
  readonly fact?: string;
  readonly cue?: string;
  /** Filler variants: each starts this many filler tokens further into the name-free text. */
  readonly fillerOffsets?: readonly number[];
  readonly signal?: AbortSignal;
  /** Most tokens per forward pass, 1..model.maxBatchTokens (default model.maxBatchTokens); 1: one at a time. */
  readonly batchTokens?: number;
}

export interface PasskeyCell {
  readonly distance: number;
  readonly trials: number;
  /** Trials whose true name ranked first among the candidates. */
  readonly retrieved: number;
  /** Mean 1-based rank of the true name. */
  readonly meanRank: number;
  /** Mean log-probability margin: true name minus the best other candidate (> 0: retrieved). */
  readonly meanMargin: number;
  /** Position (as the model saw it) of the cue's last token, averaged over trials. */
  readonly cuePosition: number;
}

export interface PasskeyResult {
  readonly label: string;
  readonly candidates: number;
  readonly cells: PasskeyCell[];
  readonly seconds: number;
}

/** feedTokens for one sequence of a cache, whichever backend the model runs on. */
type Feed = (seq: number, ids: readonly number[], from: number, to: number, logits: Float32Array | null, onLogits?: (p: number, logits: Float32Array) => void) => Promise<number>;

/** A Feed over `cache`: feedTokens on the CPU, feedTokensAsync on an asynchronous backend (WebGPU). */
function feeder(model: CausalLM, cache: PagedKvCache, batchTokens: number): Feed {
  const gpu = asyncForwardOf(model);
  if (gpu !== null) return (seq, ids, from, to, logits, onLogits) => feedTokensAsync(gpu, cache, seq, ids, from, to, batchTokens, logits, onLogits);
  const kv = new CacheKv(cache, 0, model);
  return async (seq, ids, from, to, logits, onLogits) => {
    kv.seqId = seq;
    return feedTokens(model, cache, kv, ids, from, to, batchTokens, logits, onLogits);
  };
}

/** Log-probability of each candidate's tokens (summed) after `context`, which the caller has fed. */
async function scoreCandidates(
  cache: PagedKvCache,
  feed: Feed,
  fromSeq: number,
  scratchSeq: number,
  startLogits: Float32Array,
  candidates: readonly (readonly number[])[],
  logits: Float32Array,
  out: Float64Array,
): Promise<void> {
  for (let c = 0; c < candidates.length; c++) {
    const toks = candidates[c]!;
    let lp = -nllOf(startLogits, toks[0]!);
    if (toks.length > 1) {
      cache.fork(fromSeq, scratchSeq);
      await feed(scratchSeq, toks, 0, toks.length - 1, logits, (j, l) => {
        lp -= nllOf(l, toks[j + 1]!);
      });
      cache.remove(scratchSeq);
    }
    out[c] = lp;
  }
}

/**
 * Runs the passkey task for one cache setting. `fillerIds` is the encoded name-free filler; it
 * must hold the longest distance plus the largest offset.
 */
export async function runPasskey(
  model: CausalLM,
  tokenizer: Tokenizer,
  fillerIds: readonly number[],
  setting: PasskeySetting,
  opts: PasskeyOptions = {},
): Promise<PasskeyResult> {
  const t0 = performance.now();
  const distances = [...(opts.distances ?? PASSKEY_DISTANCES)].sort((a, b) => a - b);
  const names = opts.names ?? PASSKEY_NAMES;
  const offsets = opts.fillerOffsets ?? [0];
  const maxDistance = distances[distances.length - 1] ?? 0;
  for (const d of distances) {
    if (!Number.isSafeInteger(d) || d < 0 || d > MAX_PASSKEY_DISTANCE) {
      throw new InvalidSettingError(`passkey distance ${d} is invalid: use 0..${MAX_PASSKEY_DISTANCE}`, { setting: "distance", value: d });
    }
  }
  let maxOffset = 0;
  for (const o of offsets) maxOffset = Math.max(maxOffset, o);
  if (fillerIds.length < maxDistance + maxOffset) {
    throw new InvalidSettingError(`the filler has ${fillerIds.length} tokens; distance ${maxDistance} at offset ${maxOffset} needs more: use more text`, {
      setting: "filler",
      value: fillerIds.length,
    });
  }
  const batchTokens = opts.batchTokens ?? model.maxBatchTokens;
  if (!Number.isSafeInteger(batchTokens) || batchTokens < 1 || batchTokens > model.maxBatchTokens) {
    throw new InvalidSettingError(`batchTokens ${batchTokens} is invalid: use 1..${model.maxBatchTokens} (the model's maxBatchTokens)`, {
      setting: "batchTokens",
      value: batchTokens,
    });
  }
  const bos = tokenizer.vocab.bosId;
  const cue = tokenizer.encode(opts.cue ?? PASSKEY_CUE, { parseSpecial: false });
  const candidates = names.map((n) => tokenizer.encode(n, { parseSpecial: false }));
  let longestName = 0;
  for (const c of candidates) longestName = Math.max(longestName, c.length);
  const facts = names.map((n) => tokenizer.encode((opts.fact ?? PASSKEY_FACT).replace("{name}", n), { parseSpecial: false }));
  let longestFact = 0;
  for (const f of facts) longestFact = Math.max(longestFact, f.length);

  const gpu = asyncForwardOf(model);
  const input: CacheConfigInput = withBackendCodec(model, { ...setting.cache, maxSequences: 3 });
  const dense = (input.slidingWindowSize === undefined || input.slidingWindowSize === -1) && input.contextWindowSize === undefined;
  const config = resolveCacheConfig(dense ? { ...input, contextWindowSize: 1 + longestFact + maxDistance + cue.length + longestName } : input);

  const K = names.length;
  const acc = distances.map(() => ({ trials: 0, retrieved: 0, rankSum: 0, marginSum: 0, posSum: 0 }));
  const logits = new Float32Array(model.hp.nVocab);
  const cueLogits = new Float32Array(model.hp.nVocab);
  const scores = new Float64Array(K);
  const MAIN = 0, CUE = 1, CAND = 2;
  for (const offset of offsets) {
    const filler = fillerIds.slice(offset, offset + maxDistance);
    for (let truth = 0; truth < K; truth++) {
      const prompt = buildPasskeyPrompt(bos, facts[truth]!, filler, cue, maxDistance);
      const cache = createSessionCache(model, config);
      try {
        const feed = feeder(model, cache, batchTokens);
        cache.add(MAIN);
        let fed = 0;
        for (let di = 0; di < distances.length; di++) {
          const stop = prompt.factEnd + distances[di]!;
          fed += await feed(MAIN, prompt.ids, fed, stop, null);
          // The cue, in a fork, so the main sequence can go on to the next distance.
          cache.fork(MAIN, CUE);
          await feed(CUE, cue, 0, cue.length, cueLogits);
          const cuePosition = cache.sequenceStats(CUE).nextPosition - 1;
          await scoreCandidates(cache, feed, CUE, CAND, cueLogits, candidates, logits, scores);
          cache.remove(CUE);
          let rank = 1;
          let bestOther = -Infinity;
          for (let c = 0; c < K; c++) {
            if (c === truth) continue;
            if (scores[c]! >= scores[truth]!) rank++;
            if (scores[c]! > bestOther) bestOther = scores[c]!;
          }
          const a = acc[di]!;
          a.trials++;
          if (rank === 1) a.retrieved++;
          a.rankSum += rank;
          a.marginSum += scores[truth]! - bestOther;
          a.posSum += cuePosition;
          if (opts.signal?.aborted) throw new AbortError("passkey aborted");
        }
      } finally {
        gpu?.releasePagedCache?.(cache);
      }
      await new Promise<void>((resolve) => setTimeout(resolve, 0));
    }
  }
  const cells: PasskeyCell[] = distances.map((distance, i) => {
    const a = acc[i]!;
    return {
      distance,
      trials: a.trials,
      retrieved: a.retrieved,
      meanRank: a.rankSum / a.trials,
      meanMargin: a.marginSum / a.trials,
      cuePosition: a.posSum / a.trials,
    };
  });
  return { label: setting.label, candidates: K, cells, seconds: (performance.now() - t0) / 1000 };
}
