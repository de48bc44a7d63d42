import { describe, expect, it } from "vitest";

import { InvalidSettingError } from "../errors.js";
import { MAX_CONTEXT_TOKENS, checkCount, formatBytes, parseBytes, parseCount, parseFraction } from "./parse.js";

describe("parseCount", () => {
  it("reads plain and k/M-suffixed token counts (k = 1024)", () => {
    expect(parseCount("32768")).toBe(32768);
    expect(parseCount("32k")).toBe(32 * 1024);
    expect(parseCount("128K")).toBe(131072);
    expect(parseCount("1M")).toBe(1048576);
    expect(parseCount(" 4096 ")).toBe(4096);
    expect(parseCount("1.5k")).toBe(1536);
    expect(parseCount(8192)).toBe(8192);
  });

  it.each([["-1"], ["0"], ["NaN"], ["1e12"], [""], ["abc"], ["12q"], ["1.3k"], ["0.5"], ["32 kb"]])("refuses %j", (text) => {
    expect(() => parseCount(text)).toThrow(InvalidSettingError);
  });

  it.each([[-5], [0], [Number.NaN], [1e12], [Infinity], [2.5]])("refuses the number %d", (n) => {
    expect(() => parseCount(n)).toThrow(InvalidSettingError);
  });

  it("names the setting and the limit", () => {
    try {
      parseCount("1e12", "ctx");
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(InvalidSettingError);
      expect((err as InvalidSettingError).details.setting).toBe("ctx");
    }
    expect(() => parseCount(MAX_CONTEXT_TOKENS + 1)).toThrow(/at most 16777216/);
    expect(parseCount(MAX_CONTEXT_TOKENS)).toBe(MAX_CONTEXT_TOKENS);
  });
});

describe("parseBytes", () => {
  it("reads binary and decimal units", () => {
    expect(parseBytes("8GiB")).toBe(8 * 1024 ** 3);
    expect(parseBytes("8GB")).toBe(8e9);
    expect(parseBytes("8gb")).toBe(8e9);
    expect(parseBytes("1.5GiB")).toBe(1610612736); // 1.5 x 1073741824
    expect(parseBytes("512MiB")).toBe(512 * 1024 * 1024);
    expect(parseBytes("8G")).toBe(8 * 1024 ** 3);
    expect(parseBytes("1024")).toBe(1024);
    expect(parseBytes("100 B")).toBe(100);
    expect(parseBytes("1.1KB")).toBe(1100);
  });

  it.each([["-8GiB"], ["0GiB"], ["NaN"], ["8XB"], ["1e9"], ["GiB"], ["2PiB"], ["9999999TB"]])("refuses %j", (text) => {
    expect(() => parseBytes(text)).toThrow(InvalidSettingError);
  });

  it("refuses fractional or negative numbers", () => {
    expect(() => parseBytes(1.5)).toThrow(InvalidSettingError);
    expect(() => parseBytes(-1)).toThrow(InvalidSettingError);
  });
});

describe("small helpers", () => {
  it("parseFraction accepts (0, 1]", () => {
    expect(parseFraction("0.9", "gpuMemoryUtilization")).toBe(0.9);
    expect(parseFraction(1, "u")).toBe(1);
    expect(() => parseFraction(0, "u")).toThrow(InvalidSettingError);
    expect(() => parseFraction("1.2", "u")).toThrow(InvalidSettingError);
    expect(() => parseFraction("", "u")).toThrow(InvalidSettingError);
  });

  it("checkCount defaults and bounds", () => {
    expect(checkCount(undefined, "seqs", 1)).toBe(1);
    expect(checkCount(4, "seqs", 1)).toBe(4);
    expect(() => checkCount(0, "seqs", 1)).toThrow(InvalidSettingError);
    expect(() => checkCount(1.5, "seqs", 1)).toThrow(InvalidSettingError);
  });

  it("formatBytes", () => {
    expect(formatBytes(62 * 1024 ** 3)).toBe("62.00 GiB");
    expect(formatBytes(1536)).toBe("1.50 KiB");
    expect(formatBytes(12)).toBe("12 B");
  });
});
