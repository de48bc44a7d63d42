// H2O and TOVA on the WebGPU backend: the attention statistic each policy reads is reduced on the
// GPU (one array of held slots per step, read back with the logits) and handed to the cache as the
// CPU attention's hook hands it. Held to the CPU backend step by step on stories260K: the same
// greedy ids, the same retained positions (the same evictions), and every retained token's score
// within a stated tolerance. SwiftShader here (vitest.config.ts); without an adapter the tests skip.

import { describe, expect, it } from "vitest";
import type { CacheConfigInput } from "../src/cache/config.js";
import { loadModel, type LoadedModel } from "../src/engine/load-model.js";
import { Session } from "../src/engine/session.js";
import { gpuForTests } from "../src/model/webgpu/device.js";
import { requireShared, sharedPath } from "./helpers/shared.js";
import { readFileSync } from "node:fs";

const have = requireShared("models/stories260K.gguf") && requireShared("golden/stories260K-greedy.json");
const ctx = have ? await gpuForTests() : null;

/** Scores agree when |gpu - cpu| <= ABS + REL * |cpu| (f32 sums on the GPU, f64 over f32 weights on the CPU). */
const ABS = 1e-5;
const REL = 1e-4;
const TOKENS = 220;

describe.skipIf(!have || ctx === null)("score-based policies on the WebGPU backend = the CPU backend (stories260K)", () => {
  const golden = have ? (JSON.parse(readFileSync(sharedPath("golden/stories260K-greedy.json"), "utf8")) as { promptIds: number[]; greedyIds: number[] }) : null;
  let gpuLoaded: LoadedModel | null = null;
  let cpuLoaded: LoadedModel | null = null;
  const gpuModel = async () => (gpuLoaded ??= await loadModel(sharedPath("models/stories260K.gguf"), { backend: "webgpu", gpuContext: ctx!, nCtx: 512 }));
  const cpuModel = async () => (cpuLoaded ??= await loadModel(sharedPath("models/stories260K.gguf"), { threads: 1 }));

  const policies: { name: string; policy: CacheConfigInput["policy"] }[] = [
    { name: "H2O (4 sinks, 16 recent, 44 heavy)", policy: { kind: "h2o", recent: 16 } },
    { name: "H2O with an 8-query score window", policy: { kind: "h2o", recent: 16, scoreWindow: 8 } },
    { name: "TOVA (4 sinks)", policy: { kind: "tova" } },
  ];
  // The golden 5-token prompt (decode steps evict), and a 120-token one prefilled in 16-token
  // chunks (multi-query steps: sums over queries, per-query rows of the score window, the chunk's
  // last query for TOVA; evictions during the prefill).
  const cases = policies.flatMap((p) => [
    { ...p, long: false, tokens: TOKENS },
    { ...p, long: true, tokens: 100 },
  ]);
  for (const c of cases) {
    it(`${c.name}, a 64-token window${c.long ? ", a 120-token prompt in 16-token chunks" : ""}: ${c.tokens} greedy ids, the evictions and every step's scores as on the CPU`, async () => {
      const cfg: CacheConfigInput = {
        contextWindowSize: -1, slidingWindowSize: 64, attentionSinkSize: 4, codec: "f32", policy: c.policy, ...(c.long ? { prefillChunkSize: 16 } : {}),
      };
      const prompt = c.long ? [...golden!.promptIds, ...golden!.greedyIds.slice(0, 115)] : golden!.promptIds;
      const TOKENS = c.tokens;
      const gen = { maxTokens: TOKENS, temperature: 0, ignoreEos: true };
      const gs = new Session(await gpuModel(), cfg);
      const cs = new Session(await cpuModel(), cfg);
      const g = gs.generate(prompt, gen)[Symbol.asyncIterator]();
      const k = cs.generate(prompt, gen)[Symbol.asyncIterator]();
      const gPos = new Int32Array(64), cPos = new Int32Array(64);
      const gSc = new Float64Array(64), cSc = new Float64Array(64);
      let steps = 0, maxAbs = 0, maxRel = 0, scoreSum = 0, holey = 0;
      for (;;) {
        const [a, b] = await Promise.all([g.next(), k.next()]);
        expect(a.done).toBe(b.done);
        if (a.done || b.done) break;
        const ev = a.value, ref = b.value;
        expect(ev.type).toBe(ref.type);
        if (ev.type !== "token" || ref.type !== "token") continue;
        expect(ev.id, `token ${steps}`).toBe(ref.id);
        // The cache as each backend left it after the same forward steps.
        const n = gs.cache.originalPositions(gs.seqId, gPos);
        expect(n).toBe(cs.cache.originalPositions(cs.seqId, cPos));
        expect(Array.from(gPos.subarray(0, n)), `held positions at token ${steps}`).toEqual(Array.from(cPos.subarray(0, n)));
        expect(gs.cache.policyScores(gs.seqId, gSc)).toBe(n);
        expect(cs.cache.policyScores(cs.seqId, cSc)).toBe(n);
        for (let t = 0; t < n; t++) {
          const d = Math.abs(gSc[t]! - cSc[t]!);
          maxAbs = Math.max(maxAbs, d);
          if (Math.abs(cSc[t]!) > 1e-3) maxRel = Math.max(maxRel, d / Math.abs(cSc[t]!));
          scoreSum += cSc[t]!;
          expect(d, `score of retained token ${t} (position ${cPos[t]}) at token ${steps}`).toBeLessThanOrEqual(ABS + REL * Math.abs(cSc[t]!));
        }
        // Evictions by score leave holes after the sinks (a sliding window would not).
        if (n === 64 && gPos[63]! - gPos[4]! + 1 > 60) holey++;
        steps++;
      }
      console.log(`${c.name}${c.long ? ", 120-token prompt" : ""}: ${steps} steps, score |gpu - cpu| max ${maxAbs.toExponential(2)}, relative max ${maxRel.toExponential(2)}`);
      expect(steps).toBe(TOKENS);
      expect(gs.cache.stats().evictedTokens).toBeGreaterThan(c.long ? 150 : 100);
      expect(gs.cache.stats().evictedTokens).toBe(cs.cache.stats().evictedTokens);
      expect(scoreSum).toBeGreaterThan(0);
      expect(holey).toBeGreaterThan(0);
      gs.dispose();
      cs.dispose();
    }, 600_000);
  }
});
