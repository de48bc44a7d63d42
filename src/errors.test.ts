import { describe, expect, it } from "vitest";
import { ContextWindowSizeExceededError, KvboundError, WindowSizeConfigurationError, errorFromJSON } from "./errors.js";

describe("errors", () => {
  it("carry a code, details and a message that names the fix", () => {
    const e = new ContextWindowSizeExceededError(5000, 1200, 4096);
    expect(e).toBeInstanceOf(KvboundError);
    expect(e.name).toBe("ContextWindowSizeExceededError");
    expect(e.code).toBe("CONTEXT_WINDOW_SIZE_EXCEEDED");
    expect(e.message).toContain("raise context_window_size");
    expect(e.details).toEqual({ promptTokens: 5000, cachedTokens: 1200, contextWindowSize: 4096 });
  });

  it("survive a trip through JSON as the same class", () => {
    const original = new WindowSizeConfigurationError(-1, -1);
    const back = errorFromJSON(JSON.parse(JSON.stringify(original)));
    expect(back).toBeInstanceOf(WindowSizeConfigurationError);
    expect(back.toJSON()).toEqual(original.toJSON());
  });

  it("rebuild unknown names as a plain KvboundError keeping name and code", () => {
    const back = errorFromJSON({ name: "FutureError", code: "FUTURE", message: "m", details: { a: 1 } });
    expect(back).toBeInstanceOf(KvboundError);
    expect(back.name).toBe("FutureError");
    expect(back.code).toBe("FUTURE");
  });
});
