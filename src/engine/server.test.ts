// The API's request validation and error mapping, and its page accounting under a budget (a pool
// smaller than every slot's window): idle conversations are cleared, least recently used first, to
// make room, and a request whose pages are held by running ones waits in the queue.

import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";

import { afterEach, beforeAll, describe, expect, it } from "vitest";

import { requireShared, sharedPath } from "../../test/helpers/shared.js";
import {
  CacheExhaustedError,
  ContextWindowSizeExceededError,
  InvalidRequestError,
  InvalidSettingError,
  RequestTooLargeError,
  ServerBusyError,
  UnknownRouteError,
} from "../errors.js";
import { loadModel, type LoadedModel } from "./load-model.js";
import {
  OpenAiServer,
  errorBody,
  modelIdOf,
  parseRequest,
  statusOf,
  type OpenAiServerOptions,
  type ServerHealth,
} from "./server.js";

describe("parseRequest", () => {
  const user = [{ role: "user", content: "Hi" }];

  it("applies the server's defaults where the request sets nothing, and the request's values over them", () => {
    const r = parseRequest("chat", { messages: user }, { temperature: 0, topK: 5, maxTokens: 7 });
    expect(r.sampling).toEqual({ temperature: 0, topK: 5 });
    expect(r.maxTokens).toBe(7);
    expect(r.stream).toBe(false);
    const o = parseRequest("chat", { messages: user, temperature: 0.5, top_k: 2, top_p: 0.9, min_p: 0.1, repeat_penalty: 1.1, repeat_last_n: 32, presence_penalty: 0.2, frequency_penalty: -0.2, seed: 3, max_tokens: 9 }, { temperature: 0, topK: 5 });
    expect(o.sampling).toEqual({ temperature: 0.5, topK: 2, topP: 0.9, minP: 0.1, repeatPenalty: 1.1, penaltyLastN: 32, presencePenalty: 0.2, frequencyPenalty: -0.2, seed: 3 });
    expect(o.maxTokens).toBe(9);
  });

  it("reads the API's spellings: max_completion_tokens over max_tokens, stop as a string, null as unset, seed -1 as random, text parts, developer as system", () => {
    const r = parseRequest("chat", {
      messages: [
        { role: "developer", content: [{ type: "text", text: "Be " }, { type: "text", text: "brief." }] },
        { role: "user", content: "Hi", name: "me" },
      ],
      max_tokens: 5,
      max_completion_tokens: 6,
      stop: "\n",
      temperature: null,
      seed: -1,
      stream: true,
      stream_options: { include_usage: true },
      tools: [],
      response_format: { type: "text" },
    });
    expect(r.messages).toEqual([
      { role: "system", content: "Be brief." },
      { role: "user", content: "Hi" },
    ]);
    expect(r.maxTokens).toBe(6);
    expect(r.stop).toEqual(["\n"]);
    expect(r.sampling).toEqual({});
    expect(r.stream && r.includeUsage).toBe(true);
    const c = parseRequest("completion", { prompt: ["Once"], echo: true, ignore_eos: true });
    expect(c.promptText).toBe("Once");
    expect(c.echo && c.ignoreEos).toBe(true);
    expect(parseRequest("completion", { prompt: [1, 2, 3] }, {}, 512).promptIds).toEqual([1, 2, 3]);
  });

  it("refuses wrong types, out-of-range values and features the server does not have, naming the field", () => {
    const bad: [string, "chat" | "completion", unknown, new (...a: never[]) => Error][] = [
      ["body", "chat", [1], InvalidRequestError],
      ["messages", "chat", { messages: [] }, InvalidRequestError],
      ["messages[0]", "chat", { messages: ["hi"] }, InvalidRequestError],
      ["messages[0].content[0]", "chat", { messages: [{ role: "user", content: [{ type: "image_url", image_url: {} }] }] }, InvalidRequestError],
      ["temperature", "chat", { messages: user, temperature: "0" }, InvalidRequestError],
      ["temperature", "chat", { messages: user, temperature: -1 }, InvalidSettingError],
      ["top_p", "chat", { messages: user, top_p: 0 }, InvalidSettingError],
      ["seed", "chat", { messages: user, seed: 1.5 }, InvalidRequestError],
      ["stop", "chat", { messages: user, stop: Array.from({ length: 17 }, (_, i) => `s${i}`) }, InvalidSettingError],
      ["max_tokens", "chat", { messages: user, max_tokens: 1e9 }, InvalidRequestError],
      ["logprobs", "chat", { messages: user, logprobs: true }, InvalidRequestError],
      ["tools", "chat", { messages: user, tools: [{ type: "function" }] }, InvalidRequestError],
      ["response_format", "chat", { messages: user, response_format: { type: "json_object" } }, InvalidRequestError],
      ["stream_options", "chat", { messages: user, stream_options: true }, InvalidRequestError],
      ["prompt", "completion", { prompt: ["a", "b"] }, InvalidRequestError],
      ["prompt", "completion", { prompt: [1, 600] }, InvalidRequestError],
      ["suffix", "completion", { prompt: "a", suffix: "b" }, InvalidRequestError],
      ["model", "completion", { prompt: "a", model: 5 }, InvalidRequestError],
    ];
    for (const [what, kind, body, type] of bad) {
      let caught: unknown = null;
      try {
        parseRequest(kind, body, {}, 512);
      } catch (err) {
        caught = err;
      }
      expect(caught, what).toBeInstanceOf(type);
      expect(statusOf(caught).status, what).toBe(400);
      if (what !== "body") expect(errorBody(caught).error.param, what).toBe(what === "stop" ? "stop" : what);
    }
  });
});

describe("errors on the wire", () => {
  it("map to statuses and OpenAI bodies that keep kvbound's name, code and details", () => {
    expect(statusOf(new ContextWindowSizeExceededError(10, 0, 8)).status).toBe(400);
    expect(statusOf(new RequestTooLargeError(10, 8)).status).toBe(413);
    expect(statusOf(new ServerBusyError("queue_full", { parallel: 1, maxQueue: 0 })).status).toBe(503);
    expect(statusOf(new CacheExhaustedError(3, 1, 1000)).status).toBe(503);
    expect(statusOf(new UnknownRouteError("GET", "/x")).status).toBe(404);
    expect(statusOf(new UnknownRouteError("GET", "/v1/completions", "POST")).status).toBe(405);
    const body = errorBody(new ContextWindowSizeExceededError(10, 0, 8));
    expect(body.error).toMatchObject({ type: "invalid_request_error", code: "CONTEXT_WINDOW_SIZE_EXCEEDED", name: "ContextWindowSizeExceededError", details: { contextWindowSize: 8 } });
    expect(errorBody(new InvalidSettingError("x", { setting: "topP", value: 0 })).error.param).toBe("top_p");
    // An untyped error is a bug: its message (paths, internals) stays on the server.
    expect(errorBody(new TypeError("secret /home/x")).error).toMatchObject({ message: "internal error", type: "server_error", code: "INTERNAL" });
  });

  it("modelIdOf names a model by its file", () => {
    expect(modelIdOf("../shared/models/stories260K.gguf")).toBe("stories260K");
    expect(modelIdOf("hf:owner/repo/Model-Q4_K_M.gguf@main")).toBe("Model-Q4_K_M");
    expect(modelIdOf("https://x.test/a/b.gguf?download=1")).toBe("b");
  });
});

const have = requireShared("models/stories260K.gguf");

describe.skipIf(!have)("under a budget", () => {
  let loaded: LoadedModel;
  let http: Server | null = null;
  let api: OpenAiServer | null = null;
  beforeAll(async () => {
    loaded = await loadModel(sharedPath("models/stories260K.gguf"));
  });
  afterEach(async () => {
    await api?.close();
    http?.closeAllConnections();
    await new Promise<void>((ok) => (http === null ? ok() : http.close(() => ok())));
    http = null;
    api = null;
  });

  async function start(opts: OpenAiServerOptions): Promise<{ url: string; health: () => Promise<ServerHealth> }> {
    api = new OpenAiServer(loaded, opts);
    http = createServer(api.handle);
    await new Promise<void>((ok) => http!.listen(0, "127.0.0.1", () => ok()));
    const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}/`;
    return { url, health: async () => (await (await fetch(`${url}health`)).json()) as ServerHealth };
  }

  const post = async (url: string, body: unknown, signal?: AbortSignal) => {
    const r = await fetch(`${url}v1/chat/completions`, { method: "POST", body: JSON.stringify(body), ...(signal ? { signal } : {}) });
    return { status: r.status, json: (await r.json()) as { usage: { prompt_tokens: number; prompt_tokens_details: { cached_tokens: number } }; error?: { code: string } } };
  };

  /** Bytes of a pool of about `pages` pages for a 128-token window (read off an unbounded pool). */
  function budgetFor(pages: number): number {
    const probe = new OpenAiServer(loaded, { cache: { contextWindowSize: 128 } });
    const st = probe.cache.stats();
    return Math.floor((st.bytesReserved / st.pagesTotal) * (pages + 0.5));
  }

  it("clears idle conversations, least recently used first, to make room for a request", async () => {
    const s = await start({ parallel: 3, cache: { contextWindowSize: 128, budgetBytes: budgetFor(12) } });
    const total = (await s.health()).pages.total;
    expect(total).toBeGreaterThanOrEqual(10);
    expect(total).toBeLessThan(24); // less than the 3 x 8 pages three windows would take
    const conv = (content: string) => [{ role: "user", content }];
    const a = conv("Once upon a time, there was a little girl named Lily who loved to play outside in the sun.");
    const b = conv("Tom and his dog Max went to the park to play with a big red ball every day.");
    const ra = await post(s.url, { messages: a, max_tokens: 24, temperature: 0, ignore_eos: true });
    await post(s.url, { messages: b, max_tokens: 24, temperature: 0, ignore_eos: true });
    const before = await s.health();
    expect(before.pages.free).toBeLessThan(8);
    // Needs a window's worth of pages: both idle conversations go (A first: least recently used).
    const c = await post(s.url, { messages: conv("Sam"), max_tokens: 120, temperature: 0, ignore_eos: true });
    expect(c.status).toBe(200);
    const after = await s.health();
    expect(after.slots.busy).toBe(0);
    // A's conversation was cleared: continuing it prefills it whole.
    const again = await post(s.url, { messages: [...a, { role: "assistant", content: "x" }, { role: "user", content: "More." }], max_tokens: 4, temperature: 0 });
    expect(again.status).toBe(200);
    expect(again.json.usage.prompt_tokens_details.cached_tokens).toBeLessThan(ra.json.usage.prompt_tokens);
    api!.cache.checkInvariants();
  });

  it("a request whose pages running requests hold waits in the queue, then runs, or gets 503 when the wait is over", async () => {
    const s = await start({ parallel: 2, queueTimeoutMs: 1000, cache: { slidingWindowSize: 128, attentionSinkSize: 4, budgetBytes: budgetFor(12) } });
    const hog = new AbortController();
    const long = post(s.url, { messages: [{ role: "user", content: "Once" }], max_tokens: 60000, ignore_eos: true, stream: true }, hog.signal).catch(() => null);
    await waitFor(async () => (await s.health()).pages.used >= 8);
    const ask = { messages: [{ role: "user", content: "Lily" }], max_tokens: 120, temperature: 0 };
    const late = await post(s.url, ask);
    expect(late.status).toBe(503);
    expect(late.json.error!.code).toBe("SERVER_BUSY");
    const waiting = post(s.url, ask);
    await waitFor(async () => (await s.health()).queue.waiting === 1);
    const h = await s.health();
    expect(h.slots.idle).toBe(1); // a slot is free: the pages are not
    hog.abort();
    await long;
    const r = await waiting;
    expect(r.status).toBe(200);
    const end = await s.health();
    expect(end.requests).toMatchObject({ aborted: 1, rejected: 1, completed: 1 });
    api!.cache.checkInvariants();
  });
});

async function waitFor(cond: () => Promise<boolean>, ms = 5000): Promise<void> {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > ms) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 5));
  }
}
