import { describe, expect, it } from "vitest";
import { InvalidSettingError } from "../errors.js";
import { StopMatcher, Utf8Stream, resolveMaxTokens, yieldToEventLoop } from "./generate.js";

describe("StopMatcher", () => {
  it("holds back a possible stop prefix and stops on a string split across tokens", () => {
    const m = new StopMatcher(["\nUser:"]);
    expect(m.push("Hello")).toEqual({ emit: "Hello", stopped: false });
    expect(m.push(" there\n")).toEqual({ emit: " there", stopped: false });
    expect(m.push("Us")).toEqual({ emit: "", stopped: false });
    expect(m.push("er: hi")).toEqual({ emit: "", stopped: true });
    expect(m.text).toBe("Hello there");
  });

  it("releases held text when the prefix does not continue, and on flush", () => {
    const m = new StopMatcher(["END"]);
    expect(m.push("the E")).toEqual({ emit: "the ", stopped: false });
    expect(m.push("gg")).toEqual({ emit: "Egg", stopped: false });
    expect(m.push(" EN")).toEqual({ emit: " ", stopped: false });
    expect(m.flush()).toBe("EN");
    expect(m.text).toBe("the Egg EN");
  });

  it("stops at the earliest of several strings; no strings passes everything", () => {
    const m = new StopMatcher(["b", "cd"]);
    expect(m.push("acdb")).toEqual({ emit: "a", stopped: true });
    const none = new StopMatcher();
    expect(none.push("xyz")).toEqual({ emit: "xyz", stopped: false });
    expect(() => new StopMatcher([""])).toThrow(InvalidSettingError);
  });
});

describe("generation helpers", () => {
  it("decodes a UTF-8 character split across tokens whole", () => {
    const u = new Utf8Stream();
    // "é" is C3 A9 in UTF-8.
    expect(u.push(Uint8Array.of(0x63, 0xc3))).toBe("c");
    expect(u.push(Uint8Array.of(0xa9))).toBe("é");
    expect(u.push(Uint8Array.of(0xe2, 0x82))).toBe("");
    expect(u.end()).toBe("\ufffd");
  });

  it("yieldToEventLoop lets a timer run", async () => {
    let fired = false;
    setTimeout(() => (fired = true), 0);
    // A microtask-only "yield" would spin here forever without the timer ever running.
    const t0 = Date.now();
    while (!fired && Date.now() - t0 < 2000) await yieldToEventLoop();
    expect(fired).toBe(true);
  });

  it("maxTokens: default 256, 0 and Infinity allowed, negatives refused", () => {
    expect(resolveMaxTokens(undefined)).toBe(256);
    expect(resolveMaxTokens(0)).toBe(0);
    expect(resolveMaxTokens(Infinity)).toBe(Infinity);
    expect(() => resolveMaxTokens(-1)).toThrow(InvalidSettingError);
  });
});
