// The benchmark helpers in bench/lib: statistics, the Markdown table, the RSS sampler and the GGUF
// metadata splice that makes synthetic models loadable by llama.cpp.

import { describe, expect, it } from "vitest";
import { readGgufHeader } from "../src/gguf/header.js";
import { median, timeRepeated, tokensPerSecond } from "../bench/lib/timing.js";
import { markdownTable, fmt } from "../bench/lib/table.js";
import { RssSampler, relativeError, withPeakRss } from "../bench/lib/rss.js";
import { spmVocabMetadata, withExtraMetadata } from "../bench/lib/synthetic-vocab.js";
import { gv, writeGguf } from "./fixtures/gguf-writer.js";

describe("timing", () => {
  it("median of odd and even counts, unsorted input", () => {
    expect(median([5, 1, 3])).toBe(3);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(() => median([])).toThrow();
  });
  it("timeRepeated runs setup before every timed body, warm-ups excluded from the runs", async () => {
    const log: string[] = [];
    const t = await timeRepeated(3, 2, () => { log.push("s"); }, () => { log.push("b"); });
    expect(t.runsMs).toHaveLength(3);
    expect(log.join("")).toBe("sbsbsbsbsb");
    expect(tokensPerSecond(128, 500)).toBe(256);
  });
});

describe("markdownTable", () => {
  it("pads columns and marks right alignment", () => {
    const s = markdownTable([{ title: "a" }, { title: "n", align: "right" }], [["xy", 5], ["z", 123]]);
    expect(s.split("\n")).toEqual(["| a   |   n |", "|:----|----:|", "| xy  |   5 |", "| z   | 123 |"]);
    expect(fmt(1234.5)).toBe("1235");
    expect(fmt(0.04512, 2)).toBe("0.045");
    expect(fmt(Number.NaN)).toBe("n/a");
  });
});

describe("RssSampler", () => {
  it("sees a 64 MiB allocation that is still held at the end", async () => {
    let keep: Uint8Array | null = null;
    const { rss } = await withPeakRss((s) => {
      keep = new Uint8Array(64 * 1048576).fill(1); // touched, so resident
      s.sample();
    });
    expect(keep).not.toBeNull();
    expect(rss.peakBytes - rss.startBytes).toBeGreaterThan(60 * 1048576);
    expect(rss.peakBytes).toBeGreaterThanOrEqual(rss.endBytes);
    expect(relativeError(110, 100)).toBeCloseTo(0.1, 12);
    new RssSampler().stop();
  });
});

describe("withExtraMetadata", () => {
  it("adds typed KVs and keeps every tensor's bytes, for any padding remainder", async () => {
    const data = new Uint8Array(64 * 4);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
    const base = writeGguf({
      metadata: [["general.architecture", gv.str("llama")], ["llama.rope.freq_base", gv.f32(10000)]],
      tensors: [{ name: "a", shape: [64], type: "F32", data }, { name: "b", shape: [32, 2], type: "F32", data: data.subarray(0, 256) }],
    }).bytes;
    for (const key of ["x", "xy", "xyz0123456789abcdef"]) {
      const out = await withExtraMetadata(base, [[key, gv.u32(42)], ...spmVocabMetadata(300)]);
      const h = await readGgufHeader(out);
      expect(h.metadata[key]).toBe(42);
      expect(h.metadata["tokenizer.ggml.model"]).toBe("llama");
      const toks = h.metadata["tokenizer.ggml.tokens"] as string[];
      expect(toks.length).toBe(300);
      expect(toks[3 + 0x0a]).toBe("<0x0A>");
      expect(new Set(toks).size).toBe(300);
      expect(h.metadata["llama.rope.freq_base"]).toBe(10000);
      for (const t of h.tensors) {
        const bytes = out.subarray(h.dataOffset + t.offset, h.dataOffset + t.offset + t.bytes);
        expect(Array.from(bytes)).toEqual(Array.from(data.subarray(0, t.bytes)));
      }
    }
  });
});
