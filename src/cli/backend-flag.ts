// `--backend cpu|webgpu`, the flag the engine commands (run, chat, bench, serve, ppl) share: where
// the model's forward pass runs, validated before anything loads (a typo names the value); and the
// codec a backend's cache defaults to (f32 on WebGPU).

import type { Command } from "commander";

import type { CodecKind } from "../cache/codecs/types.js";
import { InvalidSettingError } from "../errors.js";
import { BACKENDS, type Backend } from "../model/async-forward.js";

export interface BackendFlags {
  backend?: string;
}

export function addBackendFlag(cmd: Command): Command {
  return cmd.option(
    "--backend <name>",
    `where the forward pass runs: ${BACKENDS.join(" or ")} (default cpu; webgpu: f32 cache pages unless --codec says, in Node the optional "webgpu" package and a Vulkan driver)`,
  );
}

/** The --backend value, or undefined for the default (cpu). */
export function backendFromFlags(f: BackendFlags): Backend | undefined {
  if (f.backend === undefined) return undefined;
  const b = f.backend.trim().toLowerCase();
  if (!(BACKENDS as readonly string[]).includes(b)) {
    throw new InvalidSettingError(`--backend ${JSON.stringify(f.backend)} is unknown; use one of ${BACKENDS.join(", ")}`, { setting: "backend", value: f.backend });
  }
  return b as Backend;
}

/** The codec a cache gets when --codec is not given: f32 on WebGPU, else the planner's default. */
export function backendDefaultCodec(backend: Backend | undefined): CodecKind | undefined {
  return backend === "webgpu" ? "f32" : undefined;
}
