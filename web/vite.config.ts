// Vite build of the browser pages (web/*.html). Everything is bundled (no CDN): the page works
// offline from `kvbound serve`. Pages are listed in PAGES so the live chat page can be added as
// one more entry. Run from the repo root: `vite web` (dev) / `vite build web` (dist/web).

import { fileURLToPath } from "node:url";

import { defineConfig, type Plugin } from "vite";

const webRoot = fileURLToPath(new URL(".", import.meta.url));

/** One entry per HTML page; the live page (web/live.html) joins this list. */
export const PAGES: Readonly<Record<string, string>> = {
  planner: fileURLToPath(new URL("./index.html", import.meta.url)),
  live: fileURLToPath(new URL("./live.html", import.meta.url)),
};

/** The headers `kvbound serve` sends too: cross-origin isolation, so SharedArrayBuffer works. */
export const ISOLATION_HEADERS = {
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Embedder-Policy": "require-corp",
};

/**
 * src/gguf/header.ts imports its Node file reader lazily, only for local paths. A page never reads
 * a local path, so the reader (and node:fs) is replaced by a module that says so, rather than
 * bundled as a dead chunk that imports Node built-ins.
 */
function noNodeFileReader(): Plugin {
  const id = "\0kvbound-no-fs-reader";
  return {
    name: "kvbound-no-fs-reader",
    enforce: "pre",
    resolveId(source, importer) {
      // src/gguf/header.ts and src/engine/load-model.ts both import it lazily.
      if (importer !== undefined && /[\\/]src[\\/](gguf|engine)[\\/]/.test(importer) && /(^|\/)readers\/fs(\.js|\.ts)?$/.test(source)) return id;
      return null;
    },
    load(loaded) {
      if (loaded !== id) return null;
      return (
        'import { UnknownModelError } from "' +
        fileURLToPath(new URL("../src/errors.ts", import.meta.url)).replace(/\\/g, "/") +
        '";\n' +
        "export function fileSource(ref) {\n" +
        "  throw new UnknownModelError(`a browser page cannot open the local path ${String(ref)}; pick the file with the file input instead`, { model: String(ref) });\n" +
        "}\n"
      );
    },
  };
}

/**
 * src/model/model-ref.ts imports its hf: downloader (node:fs, node:os, node:crypto) lazily, only
 * for `hf:` references. The live page's worker loads http(s) URLs and Files only, so the downloader
 * is replaced by a module that says so.
 */
function noNodeDownloader(): Plugin {
  const id = "\0kvbound-no-hf-downloader";
  return {
    name: "kvbound-no-hf-downloader",
    enforce: "pre",
    resolveId(source, importer) {
      if (importer !== undefined && /[\\/]src[\\/]model[\\/]/.test(importer) && /(^|\/)download-fs(\.js|\.ts)?$/.test(source)) return id;
      return null;
    },
    load(loaded) {
      if (loaded !== id) return null;
      return (
        'import { ModelRefError } from "' +
        fileURLToPath(new URL("../src/errors.ts", import.meta.url)).replace(/\\/g, "/") +
        '";\n' +
        "export function downloadHfFile(ref) {\n" +
        "  throw new ModelRefError(`a browser page cannot download hf: references into a local cache; give the file's https URL instead`, { ref: String(ref?.file ?? ref) });\n" +
        "}\n"
      );
    },
  };
}

export default defineConfig({
  root: webRoot,
  base: "./",
  plugins: [noNodeFileReader(), noNodeDownloader()],
  // The live page's engine worker: an ES module (it uses import()), with class names kept too (the
  // worker serializes typed errors by err.name).
  worker: { format: "es", plugins: () => [noNodeFileReader(), noNodeDownloader()], rolldownOptions: { output: { keepNames: true } } },
  build: {
    // Typed errors are shown by class name (err.name = new.target.name): keep class names.
    // (`input` lives here too: with both rolldownOptions and the deprecated rollupOptions set, only
    // the first is read and the other pages were silently left out of the build.)
    rolldownOptions: { input: { ...PAGES }, output: { keepNames: true } },
    outDir: fileURLToPath(new URL("../dist/web", import.meta.url)),
    emptyOutDir: true,
    target: "es2022",
    sourcemap: true,
  },
  server: { headers: ISOLATION_HEADERS, fs: { allow: [fileURLToPath(new URL("..", import.meta.url))] } },
  preview: { headers: ISOLATION_HEADERS },
});
