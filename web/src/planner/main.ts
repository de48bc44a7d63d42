// The planner page: wires the form to planMemory, the breakdown, the chart and the exports.
// Everything runs in the page; a picked GGUF's header is read from the File (never uploaded).

import "../styles.css";

import { suggestFix } from "../../../src/plan/advice.js";
import { exportPlan, type ExportTarget } from "../../../src/plan/export.js";
import { planMemory, type PlanRequest } from "../../../src/plan/plan.js";
import { ENGINES, type EngineName } from "../../../src/plan/types.js";
import { listRegistry } from "../../../src/spec/registry.js";
import type { ModelSpec } from "../../../src/spec/model-spec.js";
import { byId, el, replaceChildren } from "../dom.js";
import { showError } from "../errors.js";
import { renderNav } from "../nav.js";
import { MemoryChart } from "./chart.js";
import { buildCurves } from "./curves.js";
import { configModel, ggufModel, registryModel, type LoadedModel } from "./model-source.js";
import { renderBreakdown, renderBudgetBar, renderExports, renderGgufFacts, renderNotes, type ExportSnippet } from "./render.js";
import { kvTypeChoice, resolveForm, typeSettings, windowSettings, type FormValues, type ResolvedForm } from "./settings.js";

const DEFAULT_MODEL = "llama-3.2-1b";
/** Budget typed in when the browser does not tell its memory. */
const FALLBACK_BUDGET = "8GiB";

const form = byId("planner-form", HTMLFormElement);
const sourceRadios = Array.from(form.querySelectorAll<HTMLInputElement>('input[name="source"]'));
const registrySelect = byId("registry-model", HTMLSelectElement);
const quantSelect = byId("quant", HTMLSelectElement);
const configText = byId("config-json", HTMLTextAreaElement);
const useConfig = byId("use-config", HTMLButtonElement);
const ggufInput = byId("gguf-file", HTMLInputElement);
const dropZone = byId("drop-zone", HTMLElement);
const engineSelect = byId("engine", HTMLSelectElement);
const ctxInput = byId("ctx", HTMLInputElement);
const seqsInput = byId("seqs", HTMLInputElement);
const typeKSelect = byId("type-k", HTMLSelectElement);
const typeVSelect = byId("type-v", HTMLSelectElement);
const typeNote = byId("type-note", HTMLElement);
const flashAttn = byId("flash-attn", HTMLInputElement);
const windowInput = byId("window", HTMLInputElement);
const sinksInput = byId("sinks", HTMLInputElement);
const windowNote = byId("window-note", HTMLElement);
const budgetInput = byId("budget", HTMLInputElement);
const budgetNote = byId("budget-note", HTMLElement);
const errorBox = byId("error", HTMLElement);
const modelSummary = byId("model-summary", HTMLElement);
const ggufFacts = byId("gguf-facts", HTMLElement);
const breakdown = byId("breakdown", HTMLTableElement);
const budgetBar = byId("budget-bar", HTMLElement);
const notes = byId("notes", HTMLElement);
const exportsHost = byId("exports", HTMLElement);
const chart = new MemoryChart(byId("chart", HTMLElement));

type SourceKind = "registry" | "config" | "gguf";

let model: LoadedModel | null = null;
/** Bumped per model load: a slow GGUF read that finishes after a newer choice is dropped. */
let loadSeq = 0;
let ggufFile: File | null = null;

function fillOptions(select: HTMLSelectElement, values: readonly string[], keep: string, labels?: ReadonlyMap<string, string>): void {
  replaceChildren(select, ...values.map((v) => el("option", { attrs: { value: v } }, labels?.get(v) ?? v)));
  select.value = values.includes(keep) ? keep : (values[0] ?? "");
}

function sourceKind(): SourceKind {
  const checked = sourceRadios.find((r) => r.checked)?.value;
  return checked === "config" || checked === "gguf" ? checked : "registry";
}

function showPanels(): void {
  const kind = sourceKind();
  for (const k of ["registry", "config", "gguf"] as const) byId(`panel-${k}`, HTMLElement).hidden = k !== kind;
}

function fillQuants(): void {
  const entry = listRegistry().find((e) => e.id === registrySelect.value);
  const quants = entry === undefined ? [] : Object.keys(entry.weights);
  fillOptions(quantSelect, quants, entry?.defaultQuant ?? "");
}

/** K/V selects, flash attention and window fields follow the engine. */
function syncEngineControls(): void {
  const engine = engineSelect.value as EngineName;
  const choice = kvTypeChoice(engine);
  const keepK = typeKSelect.value;
  const keepV = typeVSelect.value;
  fillOptions(typeKSelect, choice.types, choice.types.includes(keepK) ? keepK : choice.defaultType);
  fillOptions(typeVSelect, choice.types, choice.types.includes(keepV) ? keepV : choice.defaultType);
  typeVSelect.disabled = !choice.separateV;
  if (!choice.separateV) typeVSelect.value = typeKSelect.value;
  flashAttn.disabled = engine !== "llama.cpp";
  typeNote.textContent = choice.separateV ? choice.note : `${choice.note} (V follows K)`;
  windowInput.disabled = !choice.windows;
  sinksInput.disabled = !choice.windows;
  windowNote.textContent = choice.windows
    ? "sliding_window_size and attention_sink_size; empty = full context window"
    : `${engine} has no sliding-window setting; the chart shows kvbound's window for comparison`;
}

function formValues(): FormValues {
  return {
    engine: engineSelect.value as EngineName,
    ctx: ctxInput.value,
    seqs: seqsInput.value,
    typeK: typeKSelect.value,
    typeV: typeVSelect.disabled ? typeKSelect.value : typeVSelect.value,
    flashAttn: flashAttn.checked,
    window: windowInput.value,
    sinks: sinksInput.value,
    budget: budgetInput.value,
  };
}

function snippet(id: string, title: string, spec: ModelSpec, request: PlanRequest, target: ExportTarget): ExportSnippet {
  try {
    return { id, title, text: exportPlan(planMemory(spec, request), target), error: null };
  } catch (err) {
    return { id, title, text: null, error: err };
  }
}

/** The three engines' settings for the same context (and the form's types where they apply). */
function exportSnippets(spec: ModelSpec, f: ResolvedForm, typeK: string, typeV: string, fa: boolean): ExportSnippet[] {
  const llama: PlanRequest = { engine: "llama.cpp", ctx: f.ctx, seqs: f.seqs, ...(f.engine === "llama.cpp" ? typeSettings("llama.cpp", typeK, typeV, fa) : {}) };
  const webllm: PlanRequest = { engine: "webllm", ...windowSettings("webllm", f.ctx, f.window, f.sinks) };
  const vllm: PlanRequest = { engine: "vllm", ctx: f.ctx, seqs: f.seqs, ...(f.engine === "vllm" ? typeSettings("vllm", typeK, typeK, fa) : {}) };
  return [
    snippet("llama-cpp", "llama.cpp flags", spec, llama, "llama.cpp"),
    snippet("webllm", "WebLLM overrides", spec, webllm, "webllm"),
    snippet("vllm", "vLLM args", spec, vllm, "vllm"),
  ];
}

function clearResults(): void {
  replaceChildren(breakdown);
  replaceChildren(budgetBar);
  replaceChildren(notes);
}

function recompute(): void {
  if (model === null) return;
  const spec = model.spec;
  replaceChildren(
    modelSummary,
    el("span", { className: "model-name", id: "model-name" }, spec.name),
    ` (${spec.arch}, ${spec.nLayer} layers, trained context ${spec.nCtxTrain ?? "unknown"}; ${spec.source})`,
  );
  let resolved: ResolvedForm;
  try {
    resolved = resolveForm(formValues());
    const r = resolved;
    // The budget goes into the plan as the CLI's --budget does: vLLM builds its KV pool from it,
    // and the verdict is its one-request rule.
    const request = { ...r.request, budgetBytes: r.budgetBytes };
    const plan = planMemory(spec, request);
    renderBreakdown(breakdown, plan);
    renderBudgetBar(budgetBar, plan, r.budgetBytes, () => suggestFix(spec, request, r.ctx));
    renderNotes(notes, plan.notes);
    showError(errorBox, null);
  } catch (err) {
    clearResults();
    showError(errorBox, err);
    return;
  }
  const v = formValues();
  renderExports(exportsHost, exportSnippets(spec, resolved, v.typeK, v.typeV, v.flashAttn));
  chart.update(buildCurves(spec, resolved), resolved.budgetBytes);
}

async function loadModel(): Promise<void> {
  const seq = ++loadSeq;
  const kind = sourceKind();
  try {
    let loaded: LoadedModel;
    if (kind === "registry") loaded = registryModel(registrySelect.value, quantSelect.value || undefined);
    else if (kind === "config") loaded = configModel(configText.value);
    else {
      if (ggufFile === null) {
        model = null;
        renderGgufFacts(ggufFacts, null);
        clearResults();
        showError(errorBox, null);
        replaceChildren(modelSummary, "pick or drop a .gguf file: only its header is read, in this page");
        return;
      }
      replaceChildren(modelSummary, `reading the header of ${ggufFile.name}...`);
      loaded = await ggufModel(ggufFile);
    }
    if (seq !== loadSeq) return;
    model = loaded;
    renderGgufFacts(ggufFacts, loaded.facts);
    recompute();
  } catch (err) {
    if (seq !== loadSeq) return;
    model = null;
    renderGgufFacts(ggufFacts, null);
    clearResults();
    replaceChildren(modelSummary);
    showError(errorBox, err);
  }
}

function setBudgetDefault(): void {
  // navigator.deviceMemory: Chromium only, secure contexts only, rounded to a power of two and
  // capped by the browser (8 or 32 GiB depending on the version); the user can type the real figure.
  const dm = (navigator as Navigator & { deviceMemory?: number }).deviceMemory;
  if (typeof dm === "number" && Number.isFinite(dm) && dm > 0) {
    budgetInput.value = `${dm}GiB`;
    budgetNote.textContent = `from navigator.deviceMemory (${dm} GiB, rounded and capped by the browser); type your own`;
  } else {
    budgetInput.value = FALLBACK_BUDGET;
    budgetNote.textContent = "this browser does not tell its memory; type the memory you can give the model";
  }
}

function init(): void {
  renderNav("planner");
  const entries = listRegistry();
  const labels = new Map<string, string>();
  for (const e of entries) labels.set(e.id, `${e.id} (${e.name})`);
  fillOptions(registrySelect, entries.map((e) => e.id), DEFAULT_MODEL, labels);
  fillQuants();
  fillOptions(engineSelect, ENGINES, "llama.cpp");
  syncEngineControls();
  setBudgetDefault();
  showPanels();

  for (const r of sourceRadios) {
    r.addEventListener("change", () => {
      showPanels();
      void loadModel();
    });
  }
  registrySelect.addEventListener("change", () => {
    fillQuants();
    void loadModel();
  });
  quantSelect.addEventListener("change", () => void loadModel());
  useConfig.addEventListener("click", () => void loadModel());
  ggufInput.addEventListener("change", () => {
    ggufFile = ggufInput.files?.[0] ?? null;
    void loadModel();
  });
  dropZone.addEventListener("dragover", (ev) => {
    ev.preventDefault();
    dropZone.classList.add("dragging");
  });
  dropZone.addEventListener("dragleave", () => dropZone.classList.remove("dragging"));
  dropZone.addEventListener("drop", (ev) => {
    ev.preventDefault();
    dropZone.classList.remove("dragging");
    const file = ev.dataTransfer?.files[0];
    if (file === undefined) return;
    ggufFile = file;
    void loadModel();
  });
  engineSelect.addEventListener("change", () => {
    syncEngineControls();
    recompute();
  });
  typeKSelect.addEventListener("change", () => {
    if (typeVSelect.disabled) typeVSelect.value = typeKSelect.value;
    recompute();
  });
  for (const input of [ctxInput, seqsInput, typeVSelect, flashAttn, windowInput, sinksInput, budgetInput]) {
    input.addEventListener("input", recompute);
    input.addEventListener("change", recompute);
  }
  form.addEventListener("submit", (ev) => ev.preventDefault());
  // data-ready tells tests (and scripts) the first plan is on screen.
  void loadModel().then(() => {
    document.documentElement.dataset.ready = "true";
  });
}

init();
