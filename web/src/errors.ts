// How a page shows a failure: the typed error's class name, its message and its code, as text.

import { KvboundError } from "../../src/errors.js";
import { el, replaceChildren } from "./dom.js";

export interface ShownError {
  readonly name: string;
  readonly message: string;
  readonly code: string | undefined;
}

export function describeError(err: unknown): ShownError {
  if (err instanceof KvboundError) return { name: err.name, message: err.message, code: err.code };
  if (err instanceof Error) return { name: err.name, message: err.message, code: undefined };
  return { name: "Error", message: String(err), code: undefined };
}

/** Shows `err` in `box` (role=alert, so screen readers announce it); `null` clears the box. */
export function showError(box: HTMLElement, err: unknown): void {
  if (err === null) {
    box.hidden = true;
    replaceChildren(box);
    return;
  }
  const e = describeError(err);
  box.hidden = false;
  replaceChildren(
    box,
    el("strong", { className: "error-name" }, e.name),
    ": ",
    el("span", { className: "error-message" }, e.message),
    e.code === undefined ? null : el("span", { className: "error-code" }, ` (${e.code})`),
  );
}
