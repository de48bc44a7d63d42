// Renders a MemoryPlan into the page: the breakdown table, the bar against the budget, the notes,
// the export snippets and a GGUF's facts. Text only (dom.ts): model strings never become HTML.

import { formatBytes } from "../../../src/plan/parse.js";
import type { KvCachePlan, MemoryPlan } from "../../../src/plan/types.js";
import { planVerdict } from "../../../src/plan/verdict.js";
import { el, replaceChildren } from "../dom.js";
import { describeError } from "../errors.js";
import type { GgufFacts } from "./model-source.js";

function cacheBytes(c: KvCachePlan): number {
  return c.kBytes + c.vBytes + (c.rBytes ?? 0) + (c.sBytes ?? 0);
}

function cacheDetail(c: KvCachePlan): string {
  if (c.kind === "recurrent") return `${c.cells} state slots x ${c.layers} layers`;
  const streams = c.streams === 1 ? "" : ` x ${c.streams} streams`;
  return `${c.cells} cells x ${c.layers} layers${streams}; K ${c.typeK} ${formatBytes(c.kBytes)} + V ${c.typeV} ${formatBytes(c.vBytes)}`;
}

function row(label: string, bytes: number | null, detail: string, opts: { id?: string; className?: string } = {}): HTMLTableRowElement {
  const tr = el("tr", opts.className === undefined ? {} : { className: opts.className });
  tr.appendChild(el("th", { attrs: { scope: "row" } }, label));
  const cell = el("td", { className: "num" }, bytes === null ? "unknown" : formatBytes(bytes));
  if (opts.id !== undefined) cell.id = opts.id;
  if (bytes !== null) cell.dataset.bytes = String(bytes);
  tr.appendChild(cell);
  tr.appendChild(el("td", { className: "detail" }, detail));
  return tr;
}

/** The breakdown table: weights, each KV cache, the KV total, compute, total. */
export function renderBreakdown(table: HTMLTableElement, plan: MemoryPlan): void {
  const head = el("thead", {}, el("tr", {}, el("th", { attrs: { scope: "col" } }, "part"), el("th", { attrs: { scope: "col" } }, "bytes"), el("th", { attrs: { scope: "col" } }, "detail")));
  const body = el("tbody");
  body.appendChild(row("weights", plan.weights?.bytes ?? null, plan.weights === null ? "no weight bytes or parameter count" : `${plan.weights.quant} (${plan.weights.source})`));
  plan.kv.caches.forEach((c, i) => {
    body.appendChild(row(`KV cache: ${c.kind}`, cacheBytes(c), cacheDetail(c), { id: `kv-cache-${i}`, className: "kv-cache" }));
  });
  body.appendChild(row("KV total", plan.kv.totalBytes, `K ${formatBytes(plan.kv.kBytes)} + V ${formatBytes(plan.kv.vBytes)}`, { id: "kv-total", className: "subtotal" }));
  body.appendChild(row("compute", plan.compute?.bytes ?? null, plan.compute === null ? "unknown (n_vocab or n_ff missing)" : "estimate", { id: "compute-total" }));
  body.appendChild(row("total", plan.totalBytes, `${plan.engine}`, { id: "plan-total", className: "total" }));
  replaceChildren(table, el("caption", {}, `${plan.engine} memory for ${String(plan.model["name"] ?? "model")}`), head, body);
}

/** The verdict line the page shows: the CLI's (`kvbound plan --budget`), fix included. */
export function verdictText(plan: MemoryPlan, budgetBytes: number, suggest: () => string | null): { fits: boolean; text: string } {
  const v = planVerdict(plan, budgetBytes);
  if (v.fits) return { fits: true, text: v.line };
  const fix = suggest();
  return { fits: false, text: v.line + (fix !== null ? `; try ${fix}` : "") };
}

/** A stacked bar (weights, KV, compute) with the budget marked; the verdict (src/plan/verdict.ts,
 *  the one the CLI prints) beside it, with the CLI's fix when it does not fit. */
export function renderBudgetBar(host: HTMLElement, plan: MemoryPlan, budgetBytes: number, suggest: () => string | null = () => null): void {
  const weights = plan.weights?.bytes ?? 0;
  const kv = plan.kv.totalBytes;
  const compute = plan.compute?.bytes ?? 0;
  const scale = Math.max(plan.totalBytes, budgetBytes);
  const pct = (b: number): string => `${((100 * b) / scale).toFixed(3)}%`;
  const bar = el("div", { className: "bar", attrs: { role: "img", "aria-label": `total ${formatBytes(plan.totalBytes)} of a ${formatBytes(budgetBytes)} budget` } });
  const parts: Array<[string, number]> = [
    ["weights", weights],
    ["kv", kv],
    ["compute", compute],
  ];
  for (const [name, bytes] of parts) {
    const seg = el("div", { className: `seg seg-${name}`, attrs: { title: `${name} ${formatBytes(bytes)}` } });
    seg.style.width = pct(bytes);
    bar.appendChild(seg);
  }
  const line = el("div", { className: "budget-line", attrs: { title: `budget ${formatBytes(budgetBytes)}` } });
  line.style.left = pct(budgetBytes);
  bar.appendChild(line);
  const { fits, text: verdict } = verdictText(plan, budgetBytes, suggest);
  const legend = el(
    "ul",
    { className: "bar-legend" },
    el("li", {}, el("span", { className: "swatch seg-weights" }), "weights"),
    el("li", {}, el("span", { className: "swatch seg-kv" }), "KV cache"),
    el("li", {}, el("span", { className: "swatch seg-compute" }), "compute"),
    el("li", {}, el("span", { className: "swatch budget" }), "budget"),
  );
  replaceChildren(host, bar, legend, el("p", { id: "verdict", className: fits ? "verdict ok" : "verdict over" }, verdict));
}

export function renderNotes(list: HTMLElement, notes: readonly string[]): void {
  replaceChildren(list, ...notes.map((n) => el("li", {}, n)));
}

export interface ExportSnippet {
  readonly id: string;
  readonly title: string;
  /** The snippet, or the error that stopped it. */
  readonly text: string | null;
  readonly error: unknown;
}

async function copyText(text: string, code: HTMLElement): Promise<void> {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // Clipboard API refused (permissions, insecure origin): select the text and use the old command.
    const range = document.createRange();
    range.selectNodeContents(code);
    const sel = window.getSelection();
    sel?.removeAllRanges();
    sel?.addRange(range);
    if (!document.execCommand("copy")) throw new Error("copy refused by the browser; select the text and copy it");
  }
}

export function renderExports(host: HTMLElement, snippets: readonly ExportSnippet[]): void {
  const blocks: HTMLElement[] = [];
  for (const s of snippets) {
    const code = el("code", { id: `export-${s.id}` });
    const status = el("span", { className: "copy-status", attrs: { role: "status" } });
    const button = el("button", { className: "copy", attrs: { type: "button", "aria-label": `Copy ${s.title}` } }, "Copy");
    if (s.text === null) {
      const e = describeError(s.error);
      code.textContent = `${e.name}: ${e.message}`;
      code.classList.add("export-error");
      button.disabled = true;
    } else {
      code.textContent = s.text;
      const text = s.text;
      button.addEventListener("click", () => {
        copyText(text, code).then(
          () => (status.textContent = "copied"),
          (err: unknown) => (status.textContent = describeError(err).message),
        );
      });
    }
    blocks.push(el("div", { className: "export" }, el("div", { className: "export-head" }, el("h3", {}, s.title), button, status), el("pre", {}, code)));
  }
  replaceChildren(host, ...blocks);
}

/** What the GGUF header said, as text: name, architecture, chat template start, first tokens. */
export function renderGgufFacts(host: HTMLElement, facts: GgufFacts | null): void {
  if (facts === null) {
    host.hidden = true;
    replaceChildren(host);
    return;
  }
  host.hidden = false;
  const dl = el("dl");
  const add = (term: string, value: Node | string, id?: string): void => {
    const dd = el("dd", id === undefined ? {} : { id }, value);
    dl.append(el("dt", {}, term), dd);
  };
  add("file", `${facts.fileName}${facts.fileBytes === undefined ? "" : ` (${formatBytes(facts.fileBytes)}, header read in this page, not uploaded)`}`);
  add("general.name", facts.name ?? "(none)", "gguf-name");
  add("architecture", facts.architecture ?? "(none)");
  add("tensors", String(facts.tensorCount));
  add("chat template", facts.chatTemplate === undefined ? "(none)" : el("pre", {}, facts.chatTemplate), "gguf-template");
  add("tokens", facts.tokenCount === 0 ? "(none)" : `${facts.tokenCount} tokens; first: ${facts.tokens.map((t) => JSON.stringify(t)).join(" ")}`, "gguf-tokens");
  replaceChildren(host, el("h2", {}, "GGUF header"), dl);
}
