import { describe, expect, it } from "vitest";
import { Rope, type RopeSpec } from "./rope.js";

describe("Rope's cos/sin table", () => {
  it("gives the bits of a fresh Rope at every position, whatever was rotated before (slot collisions, fractions, negatives)", () => {
    const specs: RopeSpec[] = [
      { nRot: 64, freqBase: 10000, neox: false },
      { nRot: 32, freqBase: 500000, neox: true, mscale: 1.1 },
      { nRot: 64, freqBase: 10000, neox: false, angleF32: true },
    ];
    // A prefill's batch twice (keys, then queries), positions 128 apart (one slot), a fraction, a negative.
    const positions = [0, 1, 2, 63, 0, 1, 2, 63, 128, 0, 256, 1.5, 1, -3, 5000, 5000 - 128, 5000];
    for (const spec of specs) {
      const shared = new Rope(spec, 64);
      for (const pos of positions) {
        const x = new Float32Array(3 * 64);
        for (let i = 0; i < x.length; i++) x[i] = Math.sin(i * 0.37 + pos);
        const y = x.slice();
        shared.rotate(x, 0, 3, pos);
        new Rope(spec, 64).rotate(y, 0, 3, pos);
        expect(Array.from(x)).toEqual(Array.from(y));
      }
    }
  });
});
