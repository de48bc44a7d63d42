// The llama.cpp device rule: which layers -ngl / --tensor-split put on which GPU, and each
// device's weights, KV cache and compute buffer; and what llama.cpp's --fit chooses when -ngl is
// not given. It mirrors (without copying):
//   src/llama-model.cpp `load_tensors`: split points = cumulative --tensor-split (default: each
//     device's free memory) normalized to 1; `i_gpu_start = max(n_layer + 1 - n_gpu_layers, 0)`
//     (before PR 18148: `max(n_layer - n_gpu_layers, 0)`), `act_gpu_layers = min(n_gpu_layers,
//     n_layer + 1)`; slot il (0..n_layer, slot n_layer being the output layer) is on the CPU when
//     `il < i_gpu_start || il - i_gpu_start >= act_gpu_layers`, else on device
//     `upper_bound(splits, float(il - i_gpu_start) / act_gpu_layers)`; the input layer is always on
//     the CPU ("there is very little benefit to offloading the input layer").
//   src/llama-kv-cache.cpp: each layer's K and V tensors live in `model.dev_layer(il)`'s buffer when
//     offload (offload_kqv, -nkvo turns it off), else in the CPU buffer; the recurrent state
//     likewise (src/llama-memory-recurrent.cpp).
//   common/fit.cpp (src/llama.cpp before) `llama_params_fit_impl`: keep --fit-target (1024 MiB) free
//     on every device; when the defaults do not, and -ngl / --tensor-split were not given, fill the
//     devices back to front with whole layers ("the last device has the output layer"), giving
//     -ngl = the sum and --tensor-split = the layers per device.
// Compute buffers come from ggml-alloc's reservation of the graph, which a planner cannot replay:
// they are estimates (see computeBuffers), and the notes say so.

import { InvalidSettingError } from "../errors.js";
import type { ModelSpec } from "../spec/model-spec.js";
import { llamaCppOffloadRules, LLAMA_CPP_FIT_BUILD, LLAMA_CPP_OUTPUT_FIRST_BUILD, type LlamaCppOffloadRules } from "./llama-cpp-builds.js";
import { llamaCppLayerWeights, type LayerWeights } from "./llama-cpp-tensors.js";
import { formatBytes } from "./parse.js";
import type { DevicePlan, EngineKvResult, PlanSettings } from "./types.js";

/** LLAMA_MAX_DEVICES (include/llama.h): llama.cpp takes at most 16 devices. */
export const MAX_GPUS = 16;
/** common.h `fit_params_target`: 1024 MiB kept free per device by --fit. */
export const DEFAULT_FIT_TARGET_BYTES = 1024 * 1024 * 1024;
/** ggml-cuda.cu `ggml_backend_cuda_device_offload_op`: batches of at least 32 tokens run the
 *  matmuls of weights left in host memory on the GPU (copying the weight in). */
const OFFLOAD_MIN_BATCH = 32;

export interface OffloadPlan {
  readonly devices: readonly DevicePlan[];
  /** Effective -ngl (0..n_layer + 1). */
  readonly nGpuLayers: number;
  /** --tensor-split that realizes the placement: slots (layers, the output layer counted) per GPU;
   *  null with one GPU. */
  readonly tensorSplit: readonly number[] | null;
  /** -ngl (and --tensor-split) were chosen the way llama.cpp's --fit chooses them. */
  readonly fitted: boolean;
  readonly notes: readonly string[];
}

/** Cumulative --tensor-split fractions in float, as load_tensors computes them (split_sum is a float). */
export function llamaCppSplitPoints(split: readonly number[]): number[] {
  const points: number[] = [];
  let sum = 0;
  for (let i = 0; i < split.length; i++) {
    sum = Math.fround(sum + Math.fround(split[i]!));
    points.push(sum);
  }
  for (let i = 0; i < points.length; i++) points[i] = Math.fround(points[i]! / sum);
  return points;
}

/**
 * The device of every slot 0..nLayer (slot nLayer = the output layer): -1 for the CPU, else the
 * GPU index, by load_tensors' `get_layer_buft_list` (see the file comment).
 */
export function llamaCppSlotDevices(nLayer: number, nGpuLayers: number, splitPoints: readonly number[], outputFirst: boolean): number[] {
  const nGpus = splitPoints.length;
  const iGpuStart = Math.max((outputFirst ? nLayer + 1 : nLayer) - nGpuLayers, 0);
  const act = nGpus === 0 ? 0 : Math.min(nGpuLayers, nLayer + 1);
  const out: number[] = [];
  for (let il = 0; il <= nLayer; il++) {
    if (il < iGpuStart || il - iGpuStart >= act) {
      out.push(-1);
      continue;
    }
    const x = Math.fround((il - iGpuStart) / act);
    let gpu = 0; // std::upper_bound: the first split point greater than x
    while (gpu < nGpus && !(splitPoints[gpu]! > x)) gpu++;
    out.push(Math.min(gpu, nGpus - 1));
  }
  return out;
}

interface Inputs {
  readonly spec: ModelSpec;
  readonly weights: LayerWeights;
  readonly layerKv: readonly number[];
  readonly gpus: readonly number[];
  readonly ramBytes: number | null;
  readonly kvOffload: boolean;
  readonly reserve: number;
  readonly ubatch: number;
  readonly flashAttn: boolean;
  readonly seqs: number;
  /** Cells of the full (or MLA) cache and of the SWA cache (0 when absent). */
  readonly fullCells: number;
  readonly swaCells: number;
  /** The single-device compute estimate (planMemory's), used for a CPU that runs everything. */
  readonly cpuOnlyCompute: number;
}

function positiveBytes(setting: string, v: number): number {
  if (!(Number.isFinite(v) && v > 0)) throw new InvalidSettingError(`${setting} ${v} is not a positive number of bytes`, { setting, value: v });
  return v;
}

/**
 * Places `spec` on the devices of `settings.gpus` (plus the CPU) as llama.cpp does, with the KV
 * bytes of `kv` (llamaCppKv's result) per layer. Returns null without `gpus`.
 */
export function llamaCppOffload(spec: ModelSpec, kv: EngineKvResult, settings: PlanSettings, cpuOnlyCompute: number | null): OffloadPlan | null {
  if (settings.gpus === undefined) return null;
  const gpus = settings.gpus;
  if (!Array.isArray(gpus) || gpus.length === 0 || gpus.length > MAX_GPUS) {
    throw new InvalidSettingError(`gpus must list 1 to ${MAX_GPUS} device sizes (llama.cpp's LLAMA_MAX_DEVICES), got ${String(gpus)}`, { setting: "gpus", value: gpus });
  }
  for (const g of gpus) positiveBytes("gpu", g);
  const ramBytes = settings.ramBytes === undefined ? null : positiveBytes("ram", settings.ramBytes);
  const reserve = settings.fitTargetBytes ?? DEFAULT_FIT_TARGET_BYTES;
  if (!(Number.isFinite(reserve) && reserve >= 0)) {
    throw new InvalidSettingError(`fit target ${reserve} is not a byte count >= 0`, { setting: "fitTarget", value: reserve });
  }
  const weights = llamaCppLayerWeights(spec);
  if (weights === null) {
    throw new InvalidSettingError(
      `${spec.name} has no weight bytes, so its layers cannot be placed on devices; pass its GGUF file or a registry id`,
      { setting: "gpus", value: gpus },
    );
  }
  const nLayer = spec.layers.length;
  const nSlots = nLayer + 1;
  const build = settings.llamaCppBuild;
  const rules = llamaCppOffloadRules(build);

  let split = resolveSplit(settings.tensorSplit, gpus);
  const splitGiven = settings.tensorSplit !== undefined && settings.tensorSplit.some((x) => x > 0);
  const caches = kv.kv.caches;
  const full = caches.find((c) => c.kind === "full" || c.kind === "mla");
  const swa = caches.find((c) => c.kind === "swa");
  const s = kv.settings;
  const inputs: Inputs = {
    spec,
    weights,
    layerKv: kv.layerKvBytes ?? new Array<number>(nLayer).fill(0),
    gpus,
    ramBytes,
    kvOffload: settings.kvOffload !== false,
    reserve,
    ubatch: typeof s.ubatch === "number" ? s.ubatch : 512,
    flashAttn: s.flashAttn === true,
    seqs: typeof s.seqs === "number" ? s.seqs : 1,
    fullCells: full?.cells ?? 0,
    swaCells: swa?.cells ?? 0,
    cpuOnlyCompute: cpuOnlyCompute ?? 0,
  };

  const notes: string[] = [];
  let ngl: number;
  let fitted = false;
  if (settings.nGpuLayers !== undefined) {
    if (!Number.isInteger(settings.nGpuLayers) || settings.nGpuLayers < 0) {
      throw new InvalidSettingError(`ngl ${settings.nGpuLayers} is invalid: use an integer >= 0 (${nSlots} = every layer)`, { setting: "ngl", value: settings.nGpuLayers });
    }
    ngl = Math.min(settings.nGpuLayers, nSlots);
  } else if (rules.fit && !(splitGiven && gpus.length > 1)) {
    // --fit: nothing to change when the defaults (every layer, split by free memory) leave the
    // target free on every device; otherwise fill whole layers back to front.
    const all = place(inputs, llamaCppSlotDevices(nLayer, nSlots, llamaCppSplitPoints(split), rules.outputFirst));
    if (all.every((d) => d.kind === "cpu" || d.fits === true)) {
      ngl = nSlots;
      notes.push(`--fit: every layer fits with ${formatBytes(reserve)} left free per GPU (llama_params_fit: "no changes needed")`);
    } else {
      const counts = fillBackToFront(inputs, rules);
      ngl = counts.reduce((a, b) => a + b, 0);
      if (gpus.length > 1) split = counts;
      fitted = true;
      notes.push(
        `--fit (on by default${build === undefined ? "" : ` since b${LLAMA_CPP_FIT_BUILD}, estimated`}): -ngl ${ngl}${gpus.length > 1 ? ` --tensor-split ${counts.join(",")}` : ""} ` +
          `is the most whole layers that leave ${formatBytes(reserve)} free on each GPU, filled back to front (common/fit.cpp llama_params_fit_impl); pass --ngl to fix it`,
      );
    }
  } else {
    ngl = rules.defaultAllLayers ? nSlots : 0;
    notes.push(
      rules.defaultAllLayers
        ? `-ngl defaults to every layer (${nSlots})${splitGiven && gpus.length > 1 ? "; --fit leaves a given --tensor-split alone" : ""}`
        : `b${build} offloads nothing unless -ngl is given (the default of every layer came in b6325, PR 15434)`,
    );
  }

  const slots = llamaCppSlotDevices(nLayer, ngl, llamaCppSplitPoints(split), rules.outputFirst);
  const devices = place(inputs, slots);
  describePlacement(notes, slots, nLayer, ngl, rules, gpus.length, build);
  notes.push(weights.note);
  notes.push(
    "device compute buffers are ESTIMATES of ggml-alloc's graph reservation (llama_context graph_reserve / ggml_backend_sched): " +
      "per GPU the largest of its layers' attention (KQ scores without flash attention) and FFN activations, the logits where the output layer is, " +
      `and on GPU0 the copy of the largest host-memory weight its ${OFFLOAD_MIN_BATCH}+ token batches run (CUDA's offload_op); ` +
      "the CPU's is the graph inputs (token embeddings, KQ masks) plus the logits output buffer",
  );
  if (!inputs.kvOffload) notes.push("-nkvo: every layer's KV cache stays in host memory (offload_kqv false) and attention runs on the CPU");
  if (weights.input > 0) {
    notes.push(
      "with mmap (the default) llama.cpp's log prints the CPU side as \"CPU_Mapped model buffer size\": the file span from the first to the last " +
        "tensor kept in host memory, which also covers offloaded tensors between them; the CPU weights here count only the tensors that stay",
    );
  }
  // The split as layer counts per GPU: the same placement as the proportions that made it (the
  // count boundaries are the slots upper_bound put there), in a form a person can read.
  const counts = new Array<number>(gpus.length).fill(0);
  for (const d of slots) if (d >= 0) counts[d] = counts[d]! + 1;
  return { devices, nGpuLayers: ngl, tensorSplit: gpus.length > 1 ? counts : null, fitted, notes };
}

function resolveSplit(given: readonly number[] | undefined, gpus: readonly number[]): number[] {
  if (given === undefined) return [...gpus];
  if (!Array.isArray(given) || given.length > gpus.length || given.some((x) => !(Number.isFinite(x) && x >= 0))) {
    throw new InvalidSettingError(
      `tensor split ${String(given)} is invalid: give at most one proportion >= 0 per GPU (${gpus.length})`,
      { setting: "tensorSplit", value: given },
    );
  }
  // llama.cpp leaves missing entries 0; all zero means "by free memory".
  const split = gpus.map((_, i) => given[i] ?? 0);
  return split.some((x) => x > 0) ? split : [...gpus];
}

/** --fit's step 3 for a dense model: from the last GPU to the first, the most whole slots that
 *  leave the target free on that GPU, given the slots already on the GPUs after it. */
function fillBackToFront(inputs: Inputs, rules: LlamaCppOffloadRules): number[] {
  const nd = inputs.gpus.length;
  const nSlots = inputs.spec.layers.length + 1;
  const counts = new Array<number>(nd).fill(0);
  for (let id = nd - 1; id >= 0; id--) {
    let unassigned = nSlots;
    for (let jd = id + 1; jd < nd; jd++) unassigned -= counts[jd]!;
    let chosen = 0;
    for (let c = unassigned; c >= 1; c--) {
      counts[id] = c;
      const devices = place(inputs, slotsFor(inputs, counts, rules));
      if (devices[id]!.fits === true) {
        chosen = c;
        break;
      }
    }
    counts[id] = chosen;
  }
  return counts;
}

function slotsFor(inputs: Inputs, counts: readonly number[], rules: LlamaCppOffloadRules): number[] {
  const ngl = counts.reduce((a, b) => a + b, 0);
  const split = counts.some((c) => c > 0) ? counts : inputs.gpus;
  return llamaCppSlotDevices(inputs.spec.layers.length, ngl, llamaCppSplitPoints(split), rules.outputFirst);
}

/** Every device's bytes for a slot assignment (GPUs in order, then the CPU). */
function place(inputs: Inputs, slots: readonly number[]): DevicePlan[] {
  const { spec, weights: w, gpus } = inputs;
  const nLayer = spec.layers.length;
  const nd = gpus.length;
  const layersOf: number[][] = [];
  for (let d = 0; d <= nd; d++) layersOf.push([]);
  for (let il = 0; il < nLayer; il++) {
    const d = slots[il]!;
    layersOf[d < 0 ? nd : d]!.push(il);
  }
  const outputDev = slots[nLayer]!;
  const compute = computeBuffers(inputs, slots, layersOf, outputDev);
  const devices: DevicePlan[] = [];
  for (let d = 0; d <= nd; d++) {
    const isCpu = d === nd;
    const layers = layersOf[d]!;
    const holdsOutput = isCpu ? outputDev < 0 : outputDev === d;
    let weights = 0;
    let kv = 0;
    for (const il of layers) {
      weights += w.layers[il]!;
      if (inputs.kvOffload) kv += inputs.layerKv[il] ?? 0;
    }
    if (layers.length > 0) weights += w.shared;
    if (holdsOutput) weights += w.output + (isCpu ? 0 : w.tiedBytes);
    if (isCpu) {
      weights += w.input;
      if (!inputs.kvOffload) for (let il = 0; il < nLayer; il++) kv += inputs.layerKv[il] ?? 0;
    }
    const c = isCpu ? compute.cpu : compute.gpu[d]!;
    const total = weights + kv + c;
    const budget = isCpu ? inputs.ramBytes : gpus[d]!;
    const reserve = isCpu ? 0 : inputs.reserve;
    devices.push({
      name: isCpu ? "CPU" : `GPU${d}`,
      kind: isCpu ? "cpu" : "gpu",
      layers,
      output: holdsOutput,
      input: isCpu,
      weights,
      kv,
      compute: c,
      total,
      budget,
      reserve,
      fits: budget === null ? null : total + reserve <= budget,
    });
  }
  return devices;
}

/**
 * ESTIMATED compute buffers, in f32 activations for one ubatch of t tokens (llama.cpp reserves the
 * graph for n_ubatch tokens with every token an output):
 * - a GPU with layers: max(attention, FFN). Attention keeps ~4 hidden-size tensors, the KQ mask copy
 *   (f16 with flash attention) and, without flash attention, the KQ scores t x n_kv x n_head;
 *   FFN keeps gate and up (t x n_ff each, x experts used) and 2 hidden-size tensors.
 * - the GPU with the output layer: the logits t x n_vocab next to a hidden state.
 * - GPU0 runs the matmuls of weights left in host memory for t >= 32 (ggml_backend_sched's
 *   op offload): the largest such weight is copied into its buffer next to that part's activations.
 * - the CPU: the graph inputs (token embeddings t x n_embd gathered on the CPU, one f32 KQ mask
 *   n_kv x t per cache, positions) and llama.cpp's logits output buffer (n_vocab x 4 B per
 *   sequence, llama_context::output_reserve); with no GPU, the single-device estimate.
 * Checked against two published logs: Llama-3.1-8B Q4_K_M, n_ctx 8192, no flash attention, all
 * layers on CUDA0: 560.00 MiB; Mistral-7B Q4_K_M, -ngl 20 -c 768 -ub 256 -fa, output on the CPU:
 * 137.79 MiB (the output weight's copy + logits + a hidden state).
 */
function computeBuffers(inputs: Inputs, slots: readonly number[], layersOf: readonly number[][], outputDev: number): { gpu: number[]; cpu: number } {
  const { spec, weights: w } = inputs;
  const nd = inputs.gpus.length;
  const t = inputs.ubatch;
  const e = spec.nEmbd;
  const vocab = spec.nVocab ?? 0;
  const nFfActive = (spec.nFf ?? 0) * (spec.experts ? spec.experts.used : 1);
  const nHead = spec.nHead;
  const fa = inputs.flashAttn;

  // The cells a layer's attention spans (a shared-KV layer reads its source's cache, same kind).
  const cellsOf = (il: number): number => {
    const l = spec.layers[il]!;
    if (l.kind !== "attention") return 0;
    return l.swa && inputs.swaCells > 0 ? inputs.swaCells : inputs.fullCells;
  };
  const attnPart = (nKv: number, kvHere: boolean): number =>
    kvHere ? (fa ? 4 * t * 4 * e + 2 * nKv * t : 4 * t * (4 * e + nKv * (nHead + 1))) : 4 * t * 4 * e;
  const ffnPart = 4 * t * (2 * nFfActive + 2 * e);
  const outputPart = 4 * t * (e + vocab);

  const gpu: number[] = [];
  for (let d = 0; d < nd; d++) {
    let peak = 0;
    const layers = layersOf[d]!;
    if (layers.length > 0) {
      let nKv = 0;
      for (const il of layers) nKv = Math.max(nKv, cellsOf(il));
      peak = Math.max(peak, attnPart(nKv, inputs.kvOffload), ffnPart);
    }
    if (outputDev === d) peak = Math.max(peak, outputPart);
    if (d === 0 && t >= OFFLOAD_MIN_BATCH) {
      if (outputDev < 0) peak = Math.max(peak, w.outputMatrix + outputPart);
      const cpuLayers = layersOf[nd]!;
      if (cpuLayers.length > 0) {
        let biggest = 0;
        for (const il of cpuLayers) biggest = Math.max(biggest, w.layerMatrix[il]!);
        // The scheduler moves ops whose weights sit in host memory; a CPU layer's KV cache is not a
        // weight, so its attention scores are not what lands here: its matmuls and FFN are.
        peak = Math.max(peak, biggest + ffnPart, biggest + 4 * t * 4 * e);
      }
    }
    gpu.push(peak);
  }

  const outputBuffer = 4 * vocab * Math.max(1, inputs.seqs);
  let cpu: number;
  if (nd === 0 || slots.every((s) => s < 0) && t < OFFLOAD_MIN_BATCH) {
    cpu = inputs.cpuOnlyCompute;
  } else {
    let masks = 0;
    if (inputs.fullCells > 0) masks += 4 * inputs.fullCells * t;
    if (inputs.swaCells > 0) masks += 4 * inputs.swaCells * t;
    cpu = 4 * t * e + masks + 4 * t;
    if (!inputs.kvOffload) {
      // Attention reads the host-memory cache: its scores are computed here.
      cpu += fa ? 4 * t * 4 * e : 4 * t * inputs.fullCells * nHead;
    }
    if (t < OFFLOAD_MIN_BATCH && layersOf[nd]!.length > 0) cpu += Math.max(attnPart(inputs.fullCells, true), ffnPart);
  }
  return { gpu, cpu: cpu + outputBuffer };
}

/** Layer indices as runs: [0,1,2,5] -> "0-2, 5" (sep ", "), as the plan notes and tables print them. */
export function layerRanges(xs: readonly number[], sep = ", "): string {
  const out: string[] = [];
  let i = 0;
  while (i < xs.length) {
    let j = i;
    while (j + 1 < xs.length && xs[j + 1] === xs[j]! + 1) j++;
    out.push(i === j ? `${xs[i]}` : `${xs[i]}-${xs[j]}`);
    i = j + 1;
  }
  return out.join(sep);
}

function describePlacement(notes: string[], slots: readonly number[], nLayer: number, ngl: number, rules: LlamaCppOffloadRules, nGpus: number, build: number | undefined): void {
  const byDev = new Map<number, number[]>();
  for (let il = 0; il < nLayer; il++) {
    const d = slots[il]!;
    if (!byDev.has(d)) byDev.set(d, []);
    byDev.get(d)!.push(il);
  }
  const parts: string[] = [];
  for (let d = 0; d < nGpus; d++) {
    const ls = byDev.get(d);
    if (ls !== undefined) parts.push(`layers ${layerRanges(ls)} on GPU${d}`);
  }
  const cpu = byDev.get(-1);
  const outputDev = slots[nLayer]!;
  const offloaded = slots.filter((s) => s >= 0).length;
  notes.push(
    `offloaded ${offloaded}/${nLayer + 1} layers to GPU (llama.cpp counts the output layer as one): ` +
      (parts.length > 0 ? `${parts.join(", ")}; ` : "") +
      `output layer on ${outputDev < 0 ? "the CPU" : `GPU${outputDev}`}; ` +
      `${cpu !== undefined ? `layers ${layerRanges(cpu)} and ` : ""}the token embeddings on the CPU (llama-model.cpp load_tensors keeps the input layer there)`,
  );
  notes.push(
    rules.outputFirst
      ? `-ngl ${ngl}: i_gpu_start = max(n_layer + 1 - ngl, 0) = ${Math.max(nLayer + 1 - ngl, 0)}, so the output layer goes first (PR 18148)`
      : `-ngl ${ngl} at b${build}: i_gpu_start = max(n_layer - ngl, 0) = ${Math.max(nLayer - ngl, 0)}; the output layer is offloaded only with -ngl > ${nLayer} (before PR 18148, about b${LLAMA_CPP_OUTPUT_FIRST_BUILD})`,
  );
}
