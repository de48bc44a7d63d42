// The live page's cache controls (web/src/live/policy-form.ts) without a browser: which knobs each
// policy shows, and the form's strings as the CacheConfigInput the worker resolves.

import { describe, expect, it } from "vitest";

import { CACHE_POLICY_KINDS, resolveCacheConfig } from "../src/cache/config.js";
import { InvalidSettingError } from "../src/errors.js";
import { cacheFromForm, describePolicy, policyFields, type CacheForm } from "../web/src/live/policy-form.js";

const blank = { sinks: "4", prefix: "16", h2oRecent: "", h2oHeavy: "", h2oWindow: "" };
const form = (kind: CacheForm["kind"], fields: Partial<CacheForm["fields"]> = {}, window = "64"): CacheForm => ({ kind, codec: "f16", window, fields: { ...blank, ...fields } });

describe("live page policy controls", () => {
  it("show each policy's own knobs only", () => {
    expect(policyFields("context")).toEqual([]);
    expect(policyFields("fifo")).toEqual([]);
    expect(policyFields("sliding")).toEqual(["sinks"]);
    expect(policyFields("prefix-recent")).toEqual(["prefix"]);
    expect(policyFields("h2o")).toEqual(["sinks", "h2oRecent", "h2oHeavy", "h2oWindow"]);
    expect(policyFields("tova")).toEqual(["sinks"]);
  });

  it("turn the form into the config the worker resolves", () => {
    expect(cacheFromForm(form("context", {}, "512"))).toEqual({ contextWindowSize: 512, codec: "f16", policy: { kind: "context" } });
    expect(cacheFromForm(form("sliding"))).toEqual({ slidingWindowSize: 64, attentionSinkSize: 4, codec: "f16", policy: { kind: "sliding" } });
    // prefix-recent reads its prefix, not the sinks field.
    expect(cacheFromForm(form("prefix-recent", { prefix: "24" }))).toEqual({ slidingWindowSize: 64, codec: "f16", policy: { kind: "prefix-recent", prefix: 24 } });
    expect(cacheFromForm(form("h2o"))).toEqual({ slidingWindowSize: 64, attentionSinkSize: 4, codec: "f16", policy: { kind: "h2o" } });
    const h2o = cacheFromForm(form("h2o", { h2oRecent: "20", h2oWindow: "16" }));
    expect(h2o.policy).toEqual({ kind: "h2o", recent: 20, scoreWindow: 16 });
    expect(resolveCacheConfig(h2o).policy).toMatchObject({ sinks: 4, recent: 20, heavy: 40, scoreWindow: 16 });
    expect(cacheFromForm(form("fifo"))).toEqual({ slidingWindowSize: 64, codec: "f16", policy: { kind: "fifo" } });
    // Every policy's default form resolves.
    for (const kind of CACHE_POLICY_KINDS) expect(() => resolveCacheConfig(cacheFromForm(form(kind)))).not.toThrow();
  });

  it("refuse bad numbers by field name; leave the window and split rules to resolveCacheConfig", () => {
    expect(() => cacheFromForm(form("h2o", { h2oWindow: "1.5" }))).toThrow(InvalidSettingError);
    expect(() => cacheFromForm(form("h2o", { h2oWindow: "1.5" }))).toThrow(/h2o score window "1.5" is invalid/);
    expect(() => cacheFromForm(form("prefix-recent", { prefix: "" }))).toThrow(/prefix "" is invalid/);
    expect(() => cacheFromForm(form("sliding", {}, "x"))).toThrow(/window "x" is invalid/);
    // Hidden fields are ignored, whatever they hold.
    expect(cacheFromForm(form("sliding", { prefix: "junk", h2oWindow: "junk" })).policy).toEqual({ kind: "sliding" });
    expect(() => resolveCacheConfig(cacheFromForm(form("h2o", { h2oRecent: "10", h2oHeavy: "10" })))).toThrow(/add up to 60/);
  });

  it("describe the resolved split in the run status", () => {
    const d = (f: CacheForm): string => describePolicy(resolveCacheConfig(cacheFromForm(f)).policy);
    expect(d(form("h2o", { h2oWindow: "16" }))).toBe("h2o (sinks 4, recent 30, heavy 30, scores over the last 16 tokens)");
    expect(d(form("h2o"))).toBe("h2o (sinks 4, recent 30, heavy 30, scores over every query)");
    expect(d(form("prefix-recent", { prefix: "16" }))).toBe("prefix-recent (prefix 16, recent 48)");
  });
});
