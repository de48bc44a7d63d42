// Compiles kvbound's AssemblyScript kernels into TypeScript modules that embed the .wasm bytes as
// base64, so that the kernels load in Node and in browsers without fetching a file:
//   src/model/wasm/kernels.as     -> src/model/wasm/kernels-wasm.ts     (matmuls, over an imported
//                                    memory: the model's arena, shared with the matmul pool's workers)
//                                    and kernels-relaxed-wasm.ts (the same with relaxed SIMD on)
//   src/cache/wasm/attention.as   -> src/cache/wasm/attention-wasm.ts   (attention over the cache's
//                                    pages; it imports its sibling .as files, one per codec)
//   src/model/wasm/elementwise.as -> src/model/wasm/elementwise-wasm.ts (SwiGLU, RMSNorm, residual
//                                    adds over the matmul module's memory)
// All three import their memory declared shared (SHARED_MEMORY): one module serves a
// SharedArrayBuffer-backed memory (the model's arena, a cache's pages) whose rows worker threads
// split, and, with the declaration flipped at load (embedded.ts compileEmbedded "unshared"), a plain
// one where SharedArrayBuffer is missing or one thread runs.
// It lives in src/wasm/ (beside embedded.ts, which decodes what it embeds) because it builds both the
// model's and the cache's modules, and the cache may not import the model.
// Run: node src/wasm/build.mjs           (writes them all)
//      node src/wasm/build.mjs --check   (exit 1 when a generated file is out of date)

import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import asc from "assemblyscript/asc";

/**
 * The model modules' memory: imported as env.memory (the model's WasmArena creates it at its final
 * size), declared shared with the wasm32 maximum (65536 pages: the declaration bounds what may be
 * imported, the arena's own maximum is its size), and exported back as `memory` as before.
 */
const SHARED_MEMORY = ["--importMemory", "--sharedMemory", "--maximumMemory", "65536", "--enable", "threads"];

/** The modules: entry source, generated file, exported constant. */
export const MODULES = {
  kernels: {
    source: fileURLToPath(new URL("../model/wasm/kernels.as", import.meta.url)),
    target: fileURLToPath(new URL("../model/wasm/kernels-wasm.ts", import.meta.url)),
    constant: "KERNELS_WASM_BASE64",
    what: "The WebAssembly SIMD matmul kernels' bytes",
    flags: SHARED_MEMORY,
  },
  // The same source with relaxed SIMD on (ASC_FEATURE_RELAXED_SIMD): matvecQ4K's dots take int8
  // activations whole. Runtimes without the feature refuse it, and wasm-kernels.ts loads the one above.
  kernelsRelaxed: {
    source: fileURLToPath(new URL("../model/wasm/kernels.as", import.meta.url)),
    target: fileURLToPath(new URL("../model/wasm/kernels-relaxed-wasm.ts", import.meta.url)),
    constant: "KERNELS_RELAXED_WASM_BASE64",
    what: "The WebAssembly relaxed-SIMD matmul kernels' bytes",
    flags: [...SHARED_MEMORY, "--enable", "relaxed-simd"],
  },
  attention: {
    source: fileURLToPath(new URL("../cache/wasm/attention.as", import.meta.url)),
    target: fileURLToPath(new URL("../cache/wasm/attention-wasm.ts", import.meta.url)),
    constant: "ATTENTION_WASM_BASE64",
    what: "The WebAssembly SIMD attention kernels' bytes",
    // Over the cache's memory, imported: shared when the model's matmul pool splits attention too.
    flags: SHARED_MEMORY,
  },
  elementwise: {
    source: fileURLToPath(new URL("../model/wasm/elementwise.as", import.meta.url)),
    target: fileURLToPath(new URL("../model/wasm/elementwise-wasm.ts", import.meta.url)),
    constant: "ELEMENTWISE_WASM_BASE64",
    what: "The WebAssembly SIMD elementwise kernels' bytes",
    // No memory of its own: it runs over the model's arena memory, imported as env.memory.
    flags: SHARED_MEMORY,
  },
};

// --runtime stub: no GC or allocator (the JS side owns memory); SIMD on; no traps for bounds the
// JS side already checked.
const FLAGS = ["entry.ts", "--outFile", "out.wasm", "--runtime", "stub", "-O3", "--noAssert", "--enable", "simd"];

/**
 * Compiles one module; returns the wasm bytes. `sourceText` replaces the entry file's text (tests);
 * sibling files are read from the entry's folder (`import ... from "./f32"` reads f32.as).
 */
export async function compileKernels(name = "kernels", sourceText) {
  const mod = MODULES[name];
  if (!mod) throw new Error(`unknown module ${name}`);
  const dir = new URL("./", `file://${mod.source}`);
  let wasm = null;
  let stderr = "";
  const { error } = await asc.main([...FLAGS, ...(mod.flags ?? [])], {
    readFile: (file) => {
      if (file === "entry.ts") return sourceText ?? readFileSync(mod.source, "utf8");
      const m = /^([\w-]+)\.ts$/.exec(file);
      if (m === null) return null;
      try {
        return readFileSync(new URL(`${m[1]}.as`, dir), "utf8");
      } catch {
        return null;
      }
    },
    writeFile: (file, contents) => {
      if (file.endsWith(".wasm")) wasm = contents;
    },
    listFiles: () => [],
    stderr: { write: (s) => { stderr += s; return true; } },
    stdout: { write: () => true },
  });
  if (error || wasm === null) throw new Error(`asc failed for ${name}: ${error?.message ?? "no output"}\n${stderr}`);
  return wasm;
}

/** The generated module's text for the given wasm bytes. */
export function generatedModule(wasm, name = "kernels") {
  const mod = MODULES[name];
  const b64 = Buffer.from(wasm).toString("base64");
  const lines = [];
  for (let i = 0; i < b64.length; i += 100) lines.push(`  "${b64.slice(i, i + 100)}"`);
  const src = mod.source.slice(mod.source.lastIndexOf("/") + 1);
  return (
    `// GENERATED by src/wasm/build.mjs from ${src}: do not edit (npm run build:wasm).\n` +
    `// ${mod.what}, base64, so they load without fetching a file.\n\n` +
    `export const ${mod.constant} =\n${lines.join(" +\n")};\n`
  );
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const check = process.argv.includes("--check");
  let stale = false;
  for (const name of Object.keys(MODULES)) {
    const text = generatedModule(await compileKernels(name), name);
    const target = MODULES[name].target;
    if (check) {
      let current = "";
      try {
        current = readFileSync(target, "utf8");
      } catch {}
      if (current !== text) {
        console.error(`${target} is out of date: run npm run build:wasm`);
        stale = true;
      }
    } else {
      writeFileSync(target, text);
      console.log(`wrote ${target} (${text.length} chars)`);
    }
  }
  if (stale) process.exit(1);
  if (check) console.log("generated kernels are up to date");
}
