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
# Prove the prebuilt binary loads (CPU only, no build, no download) before any benchmark needs it.
node check.mjs
