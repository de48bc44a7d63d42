import { describe, expect, it } from "vitest";
import { ModelRefError } from "../errors.js";
import { hfResolveUrl, parseModelRef, progressBar, resolveModelRef } from "./model-ref.js";

describe("parseModelRef", () => {
  it("keeps paths and URLs", () => {
    expect(parseModelRef("models/x.gguf")).toEqual({ kind: "file", path: "models/x.gguf" });
    expect(parseModelRef("/abs/x.gguf")).toEqual({ kind: "file", path: "/abs/x.gguf" });
    expect(parseModelRef("https://example.com/a/x.gguf")).toEqual({ kind: "url", url: "https://example.com/a/x.gguf" });
    expect(parseModelRef("HTTP://127.0.0.1:8080/x.gguf").kind).toBe("url");
  });

  it("parses hf: references with sub folders and revisions", () => {
    expect(parseModelRef("hf:owner/repo/file.gguf")).toEqual({ kind: "hf", hf: { owner: "owner", repo: "repo", file: "file.gguf", revision: "main" } });
    expect(parseModelRef("hf:o/r/sub/dir/m-Q8_0.gguf@v1.0")).toEqual({
      kind: "hf",
      hf: { owner: "o", repo: "r", file: "sub/dir/m-Q8_0.gguf", revision: "v1.0" },
    });
    expect(parseModelRef("hf:o/r@abc123/m.gguf")).toEqual({ kind: "hf", hf: { owner: "o", repo: "r", file: "m.gguf", revision: "abc123" } });
    expect(parseModelRef("hf:o/r/m.gguf@refs/pr/1")).toEqual({ kind: "hf", hf: { owner: "o", repo: "r", file: "m.gguf", revision: "refs/pr/1" } });
  });

  it("refuses malformed references with ModelRefError", () => {
    for (const bad of [
      "",
      "hf:owner",
      "hf:owner/repo",
      "hf:owner/repo/",
      "hf:owner/repo/../../etc/x.gguf",
      "hf:../repo/x.gguf",
      "hf:owner/repo/model.bin",
      "hf:owner/repo/x.gguf@",
      "hf:owner/repo/x.gguf@../../up",
      "hf:owner/repo/a\\b.gguf",
      "https://exa mple.com/x.gguf",
      "x".repeat(5000),
    ]) {
      expect(() => parseModelRef(bad), bad.slice(0, 40)).toThrow(ModelRefError);
    }
  });
});

describe("hfResolveUrl", () => {
  it("builds the Hub resolve URL", () => {
    const hf = { owner: "HuggingFaceTB", repo: "SmolLM2-135M-Instruct-GGUF", file: "smollm2-135m-instruct-q8_0.gguf", revision: "main" };
    expect(hfResolveUrl(hf)).toBe("https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/resolve/main/smollm2-135m-instruct-q8_0.gguf");
    expect(hfResolveUrl({ owner: "o", repo: "r", file: "a b/c.gguf", revision: "refs/pr/1" }, "http://127.0.0.1:9/")).toBe(
      "http://127.0.0.1:9/o/r/resolve/refs%2Fpr%2F1/a%20b/c.gguf",
    );
  });
});

describe("resolveModelRef", () => {
  it("leaves paths and URLs alone without any request", async () => {
    const noFetch = (() => { throw new Error("no request expected"); }) as unknown as typeof fetch;
    expect(await resolveModelRef("m.gguf", { fetch: noFetch })).toEqual({ kind: "file", path: "m.gguf" });
    expect(await resolveModelRef("https://h/m.gguf", { fetch: noFetch })).toEqual({ kind: "url", url: "https://h/m.gguf" });
  });
});

describe("progressBar", () => {
  it("draws a bar with percent and sizes", () => {
    expect(progressBar(50, 100, 10)).toBe("[#####-----]  50.0%  50 B / 100 B");
    expect(progressBar(3 * 1024 * 1024, 12 * 1024 * 1024, 8)).toBe("[##------]  25.0%  3.0 MiB / 12.0 MiB");
    expect(progressBar(0, 10, 4)).toBe("[----]   0.0%  0 B / 10 B");
    expect(progressBar(2048, undefined)).toBe("2.0 KiB");
  });
});
