// The live page: the form, the worker, and the pictures. The engine runs in worker.ts; this file
// only turns controls into requests and the worker's batches into text, numbers, the page map and
// the bytes chart. Model text reaches the screen through textContent only (dom.ts).

import "../styles.css";
import "./live.css";

import type { CachePolicyKind } from "../../../src/cache/config.js";
import type { CodecKind } from "../../../src/cache/codecs/types.js";
import { errorFromJSON, InvalidSettingError } from "../../../src/errors.js";
import { formatBytes } from "../../../src/plan/parse.js";
import { byId, el } from "../dom.js";
import { showError } from "../errors.js";
import { renderNav } from "../nav.js";
import { BytesChart } from "./bytes-chart.js";
import { CacheMapView } from "./cache-map.js";
import { cacheFromForm, POLICY_FIELDS, policyFields, type PolicyField } from "./policy-form.js";
import type { FromWorker, GenerateRequest, ModelInput, ToWorker } from "./protocol.js";

/** A row in the samples table every this many tokens (the chart's data, readable as text). */
const SAMPLE_EVERY = 50;
/** Largest max-tokens the form accepts: the chart keeps one point per token. */
const MAX_TOKENS_LIMIT = 100_000;
/**
 * `live.html?threads=N`: the matmuls' threads (bench/web-decode.ts compares 1 and 2); absent or not
 * a positive whole number, the engine's default (the cores, at most 4).
 */
const THREADS_PARAM = ((): number | undefined => {
  const raw = new URLSearchParams(location.search).get("threads");
  const n = raw === null ? NaN : Number(raw);
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
})();

/**
 * `live.html?backend=webgpu`: the forward pass on WebGPU (the worker's navigator.gpu; f32 pages are
 * selected, the codec the GPU runs). Without the parameter the page runs on the CPU and, when this
 * browser has a WebGPU adapter, links to the WebGPU form of itself.
 */
const BACKEND_PARAM = ((): "webgpu" | undefined => (new URLSearchParams(location.search).get("backend") === "webgpu" ? "webgpu" : undefined))();

const modelFile = byId("model-file", HTMLInputElement);
const modelUrl = byId("model-url", HTMLInputElement);
const loadUrl = byId("load-url", HTMLButtonElement);
const loadProgress = byId("load-progress", HTMLProgressElement);
const loadStatus = byId("load-status", HTMLElement);
const policySelect = byId("policy", HTMLSelectElement);
const policyNote = byId("policy-note", HTMLElement);
const windowInput = byId("window", HTMLInputElement);
/** Each policy-specific field: its input and the wrapper shown only for the policies that read it. */
const policyInputs: Readonly<Record<PolicyField, { readonly input: HTMLInputElement; readonly wrap: HTMLElement }>> = {
  sinks: { input: byId("sinks", HTMLInputElement), wrap: byId("field-sinks", HTMLElement) },
  prefix: { input: byId("prefix", HTMLInputElement), wrap: byId("field-prefix", HTMLElement) },
  h2oRecent: { input: byId("h2o-recent", HTMLInputElement), wrap: byId("field-h2oRecent", HTMLElement) },
  h2oHeavy: { input: byId("h2o-heavy", HTMLInputElement), wrap: byId("field-h2oHeavy", HTMLElement) },
  h2oWindow: { input: byId("h2o-window", HTMLInputElement), wrap: byId("field-h2oWindow", HTMLElement) },
};
const codecSelect = byId("codec", HTMLSelectElement);
const promptInput = byId("prompt", HTMLTextAreaElement);
const maxTokensInput = byId("max-tokens", HTMLInputElement);
const temperatureInput = byId("temperature", HTMLInputElement);
const ignoreEos = byId("ignore-eos", HTMLInputElement);
const generateButton = byId("generate", HTMLButtonElement);
const stopButton = byId("stop", HTMLButtonElement);
const errorBox = byId("error", HTMLElement);
const factsBox = byId("model-facts", HTMLElement);
const output = byId("output", HTMLElement);
const runStatus = byId("run-status", HTMLElement);
const statTokens = byId("stat-tokens", HTMLElement);
const statTps = byId("stat-tps", HTMLElement);
const statBytes = byId("stat-bytes", HTMLElement);
const statPeak = byId("stat-peak", HTMLElement);
const statReserved = byId("stat-reserved", HTMLElement);
const statHeld = byId("stat-held", HTMLElement);
const statEvictions = byId("stat-evictions", HTMLElement);
const statFinish = byId("stat-finish", HTMLElement);
const samplesBody = byId("samples", HTMLTableElement).tBodies[0]!;
const cacheMap = new CacheMapView(byId("cache-map", HTMLCanvasElement), byId("role-legend", HTMLElement));
const chart = new BytesChart(byId("bytes-chart", HTMLElement));

const worker = new Worker(new URL("./worker.ts", import.meta.url), { type: "module", name: "kvbound-engine" });
let modelReady = false;
let generating = false;
let pageSize = 16;
/** Most cache bytes seen in this run: a bounded cache stops raising it once its window is full. */
let peakBytes = 0;
/** The prompt of the running generation, shown (as text) before its continuation. */
let lastPrompt = "";

function send(msg: ToWorker): void {
  worker.postMessage(msg);
}

function setText(node: HTMLElement, text: string): void {
  node.textContent = text;
}

const POLICY_NOTES: Readonly<Record<CachePolicyKind, string>> = {
  context: "Holds every token up to the window, then stops (finish: length).",
  sliding: "StreamingLLM: keeps the sinks plus the most recent tokens; positions re-assigned.",
  fifo: "Drops the oldest tokens; no sinks.",
  "prefix-recent": "Keeps the first tokens (the pinned prefix, e.g. a system prompt) plus the most recent ones.",
  h2o: "H2O: sinks, the newest tokens, and the heavy hitters by accumulated attention (recent and heavy split evenly unless set). A score window sums the attention of the last N tokens only, so old heavy hitters age out.",
  tova: "TOVA: sinks, then evicts the token with the least attention from the newest query.",
};

function updatePolicyNote(): void {
  const kind = policySelect.value as CachePolicyKind;
  setText(policyNote, POLICY_NOTES[kind] ?? "");
  // Only the selected policy's knobs are shown (and enabled); the others keep what was typed.
  const used = policyFields(kind);
  for (const f of POLICY_FIELDS) {
    const on = used.includes(f);
    policyInputs[f].wrap.hidden = !on;
    policyInputs[f].input.disabled = !on;
  }
}

function intField(input: HTMLInputElement, setting: string, min: number, max: number): number {
  const raw = input.value.trim();
  const n = raw === "" ? NaN : Number(raw);
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new InvalidSettingError(`${setting} ${JSON.stringify(input.value)} is invalid: use a whole number in ${min}..${max}`, { setting, value: input.value });
  }
  return n;
}

/** The form as a request. Number syntax is checked here; window/sink/policy rules in the worker (resolveCacheConfig). */
export function readRequest(): GenerateRequest {
  const cache = cacheFromForm({
    kind: policySelect.value as CachePolicyKind,
    codec: codecSelect.value as CodecKind,
    window: windowInput.value,
    fields: {
      sinks: policyInputs.sinks.input.value,
      prefix: policyInputs.prefix.input.value,
      h2oRecent: policyInputs.h2oRecent.input.value,
      h2oHeavy: policyInputs.h2oHeavy.input.value,
      h2oWindow: policyInputs.h2oWindow.input.value,
    },
  });
  const maxTokens = intField(maxTokensInput, "max tokens", 1, MAX_TOKENS_LIMIT);
  const t = Number(temperatureInput.value.trim());
  if (temperatureInput.value.trim() === "" || !Number.isFinite(t)) {
    throw new InvalidSettingError(`temperature ${JSON.stringify(temperatureInput.value)} is not a number; 0 = greedy, 0.8 = llama.cpp's default`, {
      setting: "temperature",
      value: temperatureInput.value,
    });
  }
  return { prompt: promptInput.value, cache, maxTokens, temperature: t, ignoreEos: ignoreEos.checked };
}

function refreshButtons(): void {
  generateButton.disabled = !modelReady || generating;
  stopButton.disabled = !generating;
}

function resetRun(): void {
  output.replaceChildren();
  samplesBody.replaceChildren();
  setText(statTokens, "0");
  statTokens.dataset.tokens = "0";
  setText(statTps, "-");
  statTps.dataset.tps = "0";
  setText(statEvictions, "0");
  statEvictions.dataset.evictions = "0";
  setText(statFinish, "running");
  peakBytes = 0;
  setText(statPeak, "-");
  statPeak.dataset.bytes = "0";
  statFinish.dataset.finish = "";
}

function startGenerate(): void {
  showError(errorBox, null);
  let request: GenerateRequest;
  try {
    request = readRequest();
  } catch (err) {
    showError(errorBox, err);
    return;
  }
  resetRun();
  lastPrompt = request.prompt;
  generating = true;
  refreshButtons();
  setText(runStatus, "Generating…");
  send({ type: "generate", request });
}

function load(input: ModelInput): void {
  showError(errorBox, null);
  modelReady = false;
  refreshButtons();
  factsBox.hidden = true;
  loadProgress.value = 0;
  setText(loadStatus, input.kind === "url" ? `Loading ${input.url}…` : `Reading ${input.file.name}…`);
  send({ type: "load", input, ...(THREADS_PARAM !== undefined ? { threads: THREADS_PARAM } : {}), ...(BACKEND_PARAM !== undefined ? { backend: BACKEND_PARAM } : {}) });
}

function showSamples(index: Int32Array, bytes: Float64Array, held: Int32Array, evicted: Float64Array): void {
  for (let i = 0; i < index.length; i++) {
    const token = index[i]! + 1;
    if (token % SAMPLE_EVERY !== 0 && token !== 1) continue;
    const row = el(
      "tr",
      { attrs: { "data-token": String(token), "data-bytes": String(bytes[i]!) } },
      el("td", { className: "num" }, String(token)),
      el("td", { className: "num" }, formatBytes(bytes[i]!)),
      el("td", { className: "num" }, String(held[i]!)),
      el("td", { className: "num" }, String(evicted[i]!)),
    );
    samplesBody.appendChild(row);
  }
}

function onMessage(msg: FromWorker): void {
  switch (msg.type) {
    case "progress": {
      const total = msg.totalBytes;
      loadProgress.value = total === undefined || total === 0 ? 0 : msg.doneBytes / total;
      setText(loadStatus, `Read ${formatBytes(msg.doneBytes)}${total === undefined ? "" : ` of ${formatBytes(total)}`}`);
      return;
    }
    case "facts": {
      const f = msg.facts;
      factsBox.hidden = false;
      setText(byId("model-name", HTMLElement), f.name ?? "(none)");
      setText(byId("model-arch", HTMLElement), f.architecture ?? "(none)");
      setText(byId("model-file-facts", HTMLElement), `${f.source}, ${formatBytes(f.fileBytes)}, ${f.tensorCount} tensors`);
      setText(byId("model-template", HTMLElement), f.chatTemplate ?? "(none)");
      setText(byId("model-tokens", HTMLElement), f.tokenCount === 0 ? "(none)" : `${f.tokenCount} tokens; first: ${f.tokens.map((t) => JSON.stringify(t)).join(" ")}`);
      return;
    }
    case "loaded":
      loadProgress.value = 1;
      modelReady = true;
      setText(
        loadStatus,
        `Loaded: ${msg.nLayer} layers, vocabulary ${msg.nVocab}, trained context ${msg.nCtxTrain}; ` +
          (msg.backend === "webgpu"
            ? `WebGPU${msg.adapter !== "" ? ` (${msg.adapter})` : ""}.`
            : `${msg.threads} thread${msg.threads === 1 ? "" : "s"}${msg.threadsNote !== null ? ` (${msg.threadsNote})` : ""}.`),
      );
      document.documentElement.dataset.threads = String(msg.threads);
      document.documentElement.dataset.backend = msg.backend;
      document.documentElement.dataset.model = "loaded";
      refreshButtons();
      return;
    case "started": {
      const c = msg.cache;
      pageSize = c.pageSize;
      chart.reset(c.bytesReserved);
      cacheMap.update(new Uint8Array(c.pagesTotal * c.pageSize), c.pageSize);
      setText(statReserved, `${formatBytes(c.bytesReserved)} (${c.pagesTotal} pages of ${c.pageSize} tokens, ${formatBytes(c.bytesPerPage)} each, ${c.codec})`);
      statReserved.dataset.bytes = String(c.bytesReserved);
      output.replaceChildren(el("span", { className: "prompt-echo" }, lastPrompt));
      setText(runStatus, `Generating: ${c.policy}, window ${c.windowTokens}, ${c.pinned} pinned; prompt ${msg.promptTokens} tokens…`);
      return;
    }
    case "tokens": {
      if (msg.text !== "") output.appendChild(document.createTextNode(msg.text));
      const s = msg.samples;
      const n = s.index.length;
      if (n > 0) {
        const last = n - 1;
        const tokens = s.index[last]! + 1;
        setText(statTokens, String(tokens));
        statTokens.dataset.tokens = String(tokens);
        setText(statBytes, formatBytes(s.bytes[last]!));
        statBytes.dataset.bytes = String(s.bytes[last]!);
        setText(statHeld, String(s.held[last]!));
        setText(statEvictions, String(s.evicted[last]!));
        statEvictions.dataset.evictions = String(s.evicted[last]!);
        for (let i = 0; i < n; i++) peakBytes = Math.max(peakBytes, s.bytes[i]!);
        setText(statPeak, formatBytes(peakBytes));
        statPeak.dataset.bytes = String(peakBytes);
        chart.append(s.index, s.bytes);
        showSamples(s.index, s.bytes, s.held, s.evicted);
      }
      if (msg.tokensPerSecond > 0) setText(statTps, `${msg.tokensPerSecond.toFixed(1)} tokens/s`);
      cacheMap.update(msg.map.roles, pageSize);
      return;
    }
    case "done": {
      generating = false;
      refreshButtons();
      cacheMap.update(msg.map.roles, pageSize);
      const why = msg.finishReason + (msg.lengthCause === undefined ? "" : ` (${msg.lengthCause})`);
      setText(statFinish, why);
      statFinish.dataset.finish = msg.finishReason;
      setText(statTps, `${msg.decodeTokensPerSecond.toFixed(1)} tokens/s`);
      statTps.dataset.tps = String(msg.decodeTokensPerSecond);
      statTps.dataset.decodeMs = String(msg.decodeMs);
      statTps.dataset.tokens = String(msg.tokens);
      setText(runStatus, `Done: ${msg.tokens} tokens, finish ${why}; prefill ${msg.promptTokens} tokens in ${msg.prefillMs.toFixed(0)} ms.`);
      return;
    }
    case "error": {
      const err = errorFromJSON(msg.error);
      showError(errorBox, err);
      if (msg.during === "load") {
        setText(loadStatus, "Loading failed.");
        modelReady = false;
      } else {
        setText(runStatus, "");
        setText(statFinish, "error");
      }
      generating = false;
      refreshButtons();
      return;
    }
    default:
      msg satisfies never;
  }
}

worker.onmessage = (ev: MessageEvent<FromWorker>) => onMessage(ev.data);
worker.onerror = (ev: ErrorEvent) => {
  showError(errorBox, new Error(`the engine worker failed: ${ev.message}`));
  generating = false;
  refreshButtons();
};

modelFile.addEventListener("change", () => {
  const file = modelFile.files?.[0];
  if (file !== undefined) load({ kind: "file", file });
});
loadUrl.addEventListener("click", () => {
  if (modelUrl.value.trim() === "") {
    showError(errorBox, new InvalidSettingError("the model URL is empty; type one (e.g. models/stories260K.gguf) or pick a file", { setting: "url", value: "" }));
    return;
  }
  // Relative to this page (the worker's own URL is under assets/).
  let url: string;
  try {
    url = new URL(modelUrl.value.trim(), document.baseURI).href;
  } catch {
    showError(errorBox, new InvalidSettingError(`model URL ${JSON.stringify(modelUrl.value)} is not a URL; give an http(s) URL or pick a file`, { setting: "url", value: modelUrl.value }));
    return;
  }
  load({ kind: "url", url });
});
modelUrl.addEventListener("keydown", (ev) => {
  if (ev.key === "Enter") {
    ev.preventDefault();
    loadUrl.click();
  }
});
generateButton.addEventListener("click", startGenerate);
stopButton.addEventListener("click", () => {
  send({ type: "stop" });
  setText(runStatus, "Stopping…");
});
policySelect.addEventListener("change", updatePolicyNote);
byId("live-form", HTMLFormElement).addEventListener("submit", (ev) => ev.preventDefault());

/** The backend line: WebGPU asked for (f32 pages selected), or a link to it when an adapter is here. */
function showBackend(): void {
  const note = byId("backend-note", HTMLElement);
  if (BACKEND_PARAM === "webgpu") {
    codecSelect.value = "f32";
    note.hidden = false;
    setText(note, "Backend: WebGPU (f32 pages selected; what the GPU does not run, H2O/TOVA for one, is refused with a typed error).");
    return;
  }
  const gpu = (navigator as Navigator & { gpu?: { requestAdapter(): Promise<unknown> } }).gpu;
  if (gpu === undefined) return;
  gpu.requestAdapter().then(
    (adapter) => {
      if (adapter === null) return;
      const params = new URLSearchParams(location.search);
      params.set("backend", "webgpu");
      note.hidden = false;
      note.replaceChildren("This browser has a WebGPU adapter: ", el("a", { attrs: { href: `?${params.toString()}`, id: "backend-webgpu" } }, "run the model on WebGPU"), ".");
      document.documentElement.dataset.webgpu = "available";
    },
    () => undefined,
  );
}

renderNav("live");
updatePolicyNote();
refreshButtons();
showBackend();
document.documentElement.dataset.ready = "true";
