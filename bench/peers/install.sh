#!/usr/bin/env bash
# Installs the benchmark peers from package-lock.json: node-llama-cpp with ONLY its prebuilt
# x64 Linux CPU binary (@node-llama-cpp/linux-x64). No GPU variants (--omit=optional), and no
# install scripts: node-llama-cpp's postinstall may download or build llama.cpp, which the
# benchmark never wants (bench/peers/llama-cpp.ts also loads with build: "never").
# These peers are never dependencies of kvbound itself.
set -euo pipefail
cd "$(dirname "$0")"
export NODE_LLAMA_CPP_SKIP_DOWNLOAD=true
# `npm install` (which follows package-lock.json; versions are pinned exactly in package.json)
# rather than `npm ci`: a registry mirror without the other platforms' @node-llama-cpp/* packages
# (404) cannot produce a lock listing them, and `npm ci` refuses a lock without them.
npm install --omit=optional --ignore-scripts --no-audit --no-fund
# llama.cpp's Vulkan build for bench/webgpu.ts (an optionalDependency: --omit=optional above skips
# it with node-llama-cpp's CUDA variants). Best effort: without network to it, or with
# KVBOUND_PEERS_NO_VULKAN=1, only the CPU peer is installed and bench/webgpu.ts says so.
if [ -z "${KVBOUND_PEERS_NO_VULKAN:-}" ]; then
  vk="@node-llama-cpp/linux-x64-vulkan@$(node -p 'require("./package.json").optionalDependencies["@node-llama-cpp/linux-x64-vulkan"]')"
  tmp="$(mktemp -d)"
  if (cd "$tmp" && npm pack --silent "$vk" >/dev/null 2>&1); then
    mkdir -p node_modules/@node-llama-cpp/linux-x64-vulkan
    tar -xzf "$tmp"/*.tgz -C node_modules/@node-llama-cpp/linux-x64-vulkan --strip-components=1
    echo "installed $vk (the Vulkan peer of bench/webgpu.ts)"
  else
    echo "note: $vk unavailable (no network to it?): bench/webgpu.ts runs without llama.cpp's GPU build" >&2
  fi
  rm -rf "$tmp"
fi
# Prove the prebuilt binary loads (CPU only, no build, no download) before any benchmark needs it.
node check.mjs
