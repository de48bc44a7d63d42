// The library entry and the cache must run in a browser: no static import of a Node built-in may be
// reachable from src/index.ts (dynamic imports for local paths are allowed: they run only in Node).

import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), "../src");

function staticImports(file: string): string[] {
  const text = readFileSync(file, "utf8");
  const out: string[] = [];
  const re = /^\s*(?:import|export)\s[^;]*?from\s+"([^"]+)"/gms;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    if (/^\s*(?:import|export)\s+type\s/.test(m[0])) continue;
    out.push(m[1]!);
  }
  return out;
}

function reachable(entry: string): { files: Set<string>; nodeImports: string[] } {
  const files = new Set<string>();
  const nodeImports: string[] = [];
  const stack = [entry];
  while (stack.length > 0) {
    const f = stack.pop()!;
    if (files.has(f)) continue;
    files.add(f);
    for (const spec of staticImports(f)) {
      if (spec.startsWith("node:") || ["fs", "path", "os", "url", "http", "https", "crypto", "child_process"].includes(spec)) {
        nodeImports.push(`${f.slice(SRC.length + 1)} -> ${spec}`);
      } else if (spec.startsWith(".")) {
        stack.push(resolve(dirname(f), spec.replace(/\.js$/, ".ts")));
      }
    }
  }
  return { files, nodeImports };
}

describe("browser safety", () => {
  it("src/index.ts reaches no Node built-in through static imports", () => {
    const { files, nodeImports } = reachable(resolve(SRC, "index.ts"));
    expect(files.size).toBeGreaterThan(20);
    expect(nodeImports).toEqual([]);
  });

  it("the scan does see Node imports where they are (src/node.ts)", () => {
    expect(reachable(resolve(SRC, "node.ts")).nodeImports.length).toBeGreaterThan(0);
  });
});
