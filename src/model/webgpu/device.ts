// Finds a WebGPU device: the browser's `navigator.gpu`, or in Node the `webgpu` package (Dawn),
// an optional dependency loaded only when asked for. No adapter is a typed error that says how to
// get one (on a machine without a GPU: SwiftShader, the Vulkan driver Chromium ships).
/// <reference types="@webgpu/types" />

import { WebGpuDeviceError, WebGpuUnavailableError } from "../../errors.js";

/** A device and the limits the kernels size their buffers and dispatches by. */
export interface GpuContext {
  readonly device: GPUDevice;
  readonly adapter: GPUAdapter;
  /**
   * The GPU object the adapter came from: held for the device's lifetime, since Dawn's Node
   * instance stops delivering callbacks (mapAsync never resolves) once its GPU object is collected.
   */
  readonly gpu: GPU;
  /** Largest storage buffer one binding may see (matrices are split by rows to fit it). */
  readonly maxBindingBytes: number;
  /** Largest dispatch per dimension (large grids are folded into two dimensions). */
  readonly maxWorkgroupsPerDim: number;
  /** Whether the adapter has shader-f16 (requested when present; the kernels run without it). */
  readonly shaderF16: boolean;
  /** Adapter description for logs ("swiftshader", a vendor's name, or ""). */
  readonly description: string;
  /**
   * Every GPUBuffer the device has created, counted as it is created and destroyed (live and
   * peak bytes): what the memory plan's webgpu backend (src/plan/webgpu.ts) predicts. Absent on a
   * context built by hand.
   */
  readonly memory?: GpuMemoryCounter;
  /**
   * Errors nothing else caught (the device's uncapturederror event, a lost device), kept for the
   * kernels to throw from their next allocation or step (kernels.ts check): an uncaptured error
   * crashed Node under Dawn. Absent on a context built by hand.
   */
  readonly errors?: GpuErrorLog;
}

/** A GPUError's kind, by its class name (the classes are globals only where a GPU object installed them). */
export function gpuErrorKind(e: GPUError): "validation" | "out-of-memory" | "internal" {
  const name = e.constructor?.name ?? "";
  return name === "GPUOutOfMemoryError" ? "out-of-memory" : name === "GPUValidationError" ? "validation" : "internal";
}

/** The first GPU error no error scope caught since the last take(), or null. */
export interface GpuErrorLog {
  take(): WebGpuDeviceError | null;
}

/**
 * Listens for `device`'s uncaptured errors and its loss (unless destroyed on purpose) and keeps
 * the first one until taken: preventDefault stops the runtime's own handling (Dawn under Node
 * ended the process on one).
 */
export function watchGpuErrors(device: GPUDevice): GpuErrorLog {
  let first: WebGpuDeviceError | null = null;
  device.addEventListener("uncapturederror", (ev: Event) => {
    ev.preventDefault();
    const e = (ev as GPUUncapturedErrorEvent).error;
    first ??= new WebGpuDeviceError(gpuErrorKind(e), "running WebGPU work outside an error scope", e.message);
  });
  void device.lost.then((info) => {
    if (info.reason !== "destroyed") first ??= new WebGpuDeviceError("lost", "using the device", info.message || "the device was lost");
  });
  return {
    take() {
      const e = first;
      first = null;
      return e;
    },
  };
}

/** Live and peak bytes of the GPUBuffers one device created (sizes as requested). */
export interface GpuMemoryCounter {
  /** Bytes of buffers created and not yet destroyed. */
  readonly liveBytes: number;
  /** The most liveBytes has been since creation or the last resetPeak. */
  readonly peakBytes: number;
  /** Buffers created and not yet destroyed. */
  readonly liveBuffers: number;
  /** Per label ("" for none): live bytes, for finding what a plan missed. */
  byLabel(): Map<string, number>;
  /** Restarts the peak at the live bytes. */
  resetPeak(): void;
}

/**
 * Counts every buffer `device` creates from now on: wraps its createBuffer (and each new buffer's
 * destroy, counted once) on the instance. A buffer dropped without destroy stays counted, as the
 * GPU may hold it until it is collected.
 */
export function trackGpuMemory(device: GPUDevice): GpuMemoryCounter {
  // Weak: the counter never keeps a dropped buffer alive.
  const live = new WeakMap<GPUBuffer, { size: number; label: string }>();
  const labels = new Map<string, number>();
  let liveBytes = 0;
  let peakBytes = 0;
  let liveBuffers = 0;
  const create = device.createBuffer.bind(device);
  device.createBuffer = (desc: GPUBufferDescriptor): GPUBuffer => {
    const b = create(desc);
    const e = { size: Number(desc.size), label: desc.label ?? "" };
    live.set(b, e);
    liveBuffers++;
    liveBytes += e.size;
    labels.set(e.label, (labels.get(e.label) ?? 0) + e.size);
    if (liveBytes > peakBytes) peakBytes = liveBytes;
    const destroy = b.destroy.bind(b);
    b.destroy = (): undefined => {
      if (live.delete(b)) {
        liveBuffers--;
        liveBytes -= e.size;
        labels.set(e.label, labels.get(e.label)! - e.size);
      }
      return destroy();
    };
    return b;
  };
  return {
    get liveBytes() {
      return liveBytes;
    },
    get peakBytes() {
      return peakBytes;
    },
    get liveBuffers() {
      return liveBuffers;
    },
    byLabel() {
      return new Map([...labels].filter(([, n]) => n > 0));
    },
    resetPeak() {
      peakBytes = liveBytes;
    },
  };
}

export interface GpuDeviceOptions {
  /** A GPU object to use instead of finding one (tests, embedding pages). */
  readonly gpu?: GPU;
  readonly powerPreference?: GPUPowerPreference;
}

// Where Debian's Chromium keeps SwiftShader's Vulkan driver and the Vulkan loader beside it.
const SWIFTSHADER_ICD = "/usr/lib/chromium/vk_swiftshader_icd.json";
const NODE_FIX =
  `on Linux without a GPU install chromium and start node with VK_ICD_FILENAMES=${SWIFTSHADER_ICD} ` +
  "LD_LIBRARY_PATH=/usr/lib/chromium (Dawn needs libvulkan.so.1, which Chromium ships), or use --backend cpu";

/** The GPU entry point of this runtime, or the reason there is none. */
async function findGpu(): Promise<GPU | string> {
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  if (nav?.gpu !== undefined) return nav.gpu;
  const isNode = typeof process !== "undefined" && process.versions?.node !== undefined;
  if (!isNode) return "this browser has no navigator.gpu (WebGPU needs a secure context and a browser that ships it)";
  // A variable specifier: bundlers leave it alone and the browser never reaches it.
  const pkg = "webgpu";
  let mod: { create(flags: string[]): GPU; globals: Record<string, unknown> };
  try {
    mod = (await import(/* @vite-ignore */ pkg)) as typeof mod;
  } catch (err) {
    return `the optional package "webgpu" (Dawn for Node) could not be loaded (${(err as Error).message.split("\n")[0]}); run npm install webgpu`;
  }
  // Dawn's constructors (GPUBufferUsage, GPUMapMode, ...) as the browser has them on globalThis.
  for (const [name, value] of Object.entries(mod.globals)) {
    if (!(name in globalThis)) (globalThis as Record<string, unknown>)[name] = value;
  }
  return mod.create([]);
}

/** Requests an adapter and a device with the adapter's largest buffer limits. */
export async function requestGpu(options: GpuDeviceOptions = {}): Promise<GpuContext> {
  const gpu = options.gpu ?? (await findGpu());
  if (typeof gpu === "string") throw new WebGpuUnavailableError(gpu, "use --backend cpu");
  const adapter = await gpu.requestAdapter(options.powerPreference ? { powerPreference: options.powerPreference } : {});
  if (adapter === null) {
    const isNode = typeof process !== "undefined" && process.versions?.node !== undefined;
    throw new WebGpuUnavailableError("no WebGPU adapter was found", isNode ? NODE_FIX : "enable WebGPU in the browser, or use the CPU backend");
  }
  const shaderF16 = adapter.features.has("shader-f16");
  const l = adapter.limits;
  const device = await adapter.requestDevice({
    requiredFeatures: shaderF16 ? ["shader-f16"] : [],
    requiredLimits: {
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxBufferSize: l.maxBufferSize,
      maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
      maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
    },
  });
  const info = adapter.info as GPUAdapterInfo | undefined;
  const memory = trackGpuMemory(device);
  const errors = watchGpuErrors(device);
  return {
    device,
    memory,
    errors,
    adapter,
    gpu,
    maxBindingBytes: Math.min(device.limits.maxStorageBufferBindingSize, device.limits.maxBufferSize),
    maxWorkgroupsPerDim: device.limits.maxComputeWorkgroupsPerDimension,
    shaderF16,
    description: info?.description || info?.vendor || "",
  };
}

/**
 * Whether tests can have an adapter here: resolves the context, or null (the caller skips) when
 * none appears; under CI (where Chromium's SwiftShader is installed) a missing adapter throws.
 */
export async function gpuForTests(): Promise<GpuContext | null> {
  try {
    return await requestGpu();
  } catch (err) {
    if (typeof process !== "undefined" && process.env.CI) throw err;
    return null;
  }
}
