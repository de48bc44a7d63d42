// Holds DESIGN.md's folder boundaries ("Boundaries") over every import in the repository, tests
// included, and prints each violation as `file -> import (rule)`.
//
// What it reads: in src/, web/src/, bench/ and test/ (not node_modules), every import and
// export-from declaration (type-only ones too: a type import still ties one folder to another),
// every `import("...")` call and `import("...")` type with a string literal. A relative specifier
// is resolved to its file, and so to its folder under src/ (src/cache/..., src/model/...). An
// `import(variable)` cannot be resolved and is not checked (bench/peers loads its peers that way).
//
// Who obeys which rule:
// - src/X/** obeys X's rule, its *.test.ts files included: a unit test beside the code is held to
//   the code's boundary (no test crosses the cache/model/engine boundaries). A test that needs a
//   forbidden folder belongs in test/.
// - A helper under test/ that a src/X file imports is held to X's rule over everything it reaches
//   through test/ helpers: test/ has no rule of its own, so a unit test must not launder a
//   forbidden import through it.
// - test/** files themselves are exempt from the folder rules: they are the tests "that need more
//   than one module" (DESIGN's layout), integration tests by nature. bench/ is exempt too: it
//   measures the whole. Both are still scanned, so web cannot reach Node-only code through them.
// - web/src/** imports nothing Node-only: no Node built-in, no Node-only package, no src/cli, no
//   src/gguf/readers/fs.ts, no src/node.ts, and nothing that reaches one of those through any chain
//   of imports (static, type-only and dynamic), except the lazy imports that web/vite.config.ts
//   replaces with a browser stub (LAZY_NODE_ONLY).
// - A ruled folder does not import the public entries (src/index.ts, src/node.ts): they re-export
//   every folder, so importing them would cross every boundary at once.

import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { isBuiltin } from "node:module";
import { posix } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { describe, expect, it } from "vitest";

const REPO = fileURLToPath(new URL("..", import.meta.url));

/** The folders under src/ each ruled folder may not import (DESIGN.md, "Boundaries"). */
const FOLDER_RULES: Readonly<Record<string, readonly string[]>> = {
  // Shapes come in as numbers: the cache knows no ModelSpec and no forward pass.
  cache: ["model", "engine", "spec", "cli", "entry"],
  // Planning runs nothing, and the planner page must not bundle the forward pass.
  plan: ["model", "engine", "entry"],
  model: ["engine", "cli", "entry"],
  engine: ["cli", "entry"],
  gguf: ["spec", "entry"],
};

/**
 * Exact `file -> import` strings that break a rule today, in files whose owners are changing them
 * now. The test passes with these present and fails once one of them is gone (delete the entry
 * then), so the list cannot go stale. Add nothing here for a file you own: fix the import.
 */
const KNOWN_VIOLATIONS: readonly string[] = [];

/**
 * Lazy (dynamic) Node-only imports the browser build replaces with a stub that throws a typed error
 * (web/vite.config.ts: noNodeFileReader, noNodeDownloader). Only these may lie on a web page's
 * import chain; each must still occur as a dynamic import.
 */
const LAZY_NODE_ONLY: readonly string[] = [
  "src/gguf/header.ts -> ./readers/fs.js",
  "src/engine/load-model.ts -> ../gguf/readers/fs.js",
  "src/model/model-ref.ts -> ./download-fs.js",
];

/** Packages that run only in Node (a page reaching one would not bundle or would fail at run time). */
const NODE_ONLY_PACKAGES: readonly string[] = ["commander", "vite", "vitest", "playwright-core", "tsx", "assemblyscript"];

const SCANNED_ROOTS = ["src", "web/src", "bench", "test"];
const SOURCE_FILE = /\.(ts|mts|mjs)$/;
const PARSED_FILE = /\.(ts|mts|mjs|js)$/;

type ImportKind = "static" | "type" | "dynamic";
interface Import {
  /** The specifier as written. */
  readonly spec: string;
  readonly kind: ImportKind;
  /** Repo-relative path of the file it resolves to; null for a package or a Node built-in. */
  readonly target: string | null;
  /** A relative specifier that names no file. */
  readonly unresolved: boolean;
}

function listFiles(dir: string, out: string[]): void {
  const abs = posix.join(REPO, dir);
  if (!existsSync(abs)) return;
  for (const name of readdirSync(abs).sort()) {
    if (name === "node_modules" || name.startsWith(".")) continue;
    const rel = posix.join(dir, name);
    if (statSync(posix.join(REPO, rel)).isDirectory()) listFiles(rel, out);
    else if (SOURCE_FILE.test(name)) out.push(rel);
  }
}

function isFile(rel: string): boolean {
  const abs = posix.join(REPO, rel);
  return existsSync(abs) && statSync(abs).isFile();
}

/** The repo-relative file a relative specifier names (`.js` -> `.ts` as NodeNext resolves it). */
function resolveRelative(from: string, spec: string): string | null {
  const base = posix.join(posix.dirname(from), spec.replace(/[?#].*$/, ""));
  const candidates = /\.js$/.test(base)
    ? [base.replace(/\.js$/, ".ts"), base]
    : /\.mjs$/.test(base)
      ? [base.replace(/\.mjs$/, ".mts"), base]
      : [base, `${base}.ts`, `${base}/index.ts`];
  for (const c of candidates) if (isFile(c)) return c;
  return null;
}

function typeOnlyImport(node: ts.ImportDeclaration): boolean {
  const clause = node.importClause;
  if (clause === undefined) return false; // `import "x"` runs x
  if (clause.isTypeOnly) return true;
  if (clause.name !== undefined) return false;
  const named = clause.namedBindings;
  return named !== undefined && ts.isNamedImports(named) && named.elements.length > 0 && named.elements.every((e) => e.isTypeOnly);
}

function typeOnlyExport(node: ts.ExportDeclaration): boolean {
  if (node.isTypeOnly) return true;
  const clause = node.exportClause;
  return clause !== undefined && ts.isNamedExports(clause) && clause.elements.length > 0 && clause.elements.every((e) => e.isTypeOnly);
}

const importCache = new Map<string, readonly Import[]>();

function importsOf(file: string): readonly Import[] {
  const cached = importCache.get(file);
  if (cached !== undefined) return cached;
  const out: Import[] = [];
  importCache.set(file, out);
  if (!PARSED_FILE.test(file)) return out; // a .css or .json file imports nothing we check
  const text = readFileSync(posix.join(REPO, file), "utf8");
  const kind = /\.(ts|mts)$/.test(file) ? ts.ScriptKind.TS : ts.ScriptKind.JS;
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true, kind);
  const add = (spec: string, importKind: ImportKind): void => {
    const relative = spec.startsWith("./") || spec.startsWith("../");
    const target = relative ? resolveRelative(file, spec) : null;
    out.push({ spec, kind: importKind, target, unresolved: relative && target === null });
  };
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node) && ts.isStringLiteral(node.moduleSpecifier)) {
      add(node.moduleSpecifier.text, typeOnlyImport(node) ? "type" : "static");
    } else if (ts.isExportDeclaration(node) && node.moduleSpecifier !== undefined && ts.isStringLiteral(node.moduleSpecifier)) {
      add(node.moduleSpecifier.text, typeOnlyExport(node) ? "type" : "static");
    } else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference)) {
      const expr = node.moduleReference.expression;
      if (ts.isStringLiteral(expr)) add(expr.text, node.isTypeOnly ? "type" : "static");
    } else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) {
      const arg = node.arguments[0];
      if (arg !== undefined && ts.isStringLiteralLike(arg)) add(arg.text, "dynamic");
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument) && ts.isStringLiteral(node.argument.literal)) {
      add(node.argument.literal.text, "type");
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return out;
}

/** The folder a repo-relative file belongs to: cache, model, ... for src/X/**, else its root. */
function folderOf(file: string): string {
  const parts = file.split("/");
  if (parts[0] === "src") {
    if (parts.length > 2) return parts[1]!;
    return file === "src/index.ts" || file === "src/node.ts" ? "entry" : "src";
  }
  return parts[0]!;
}

function isTestHelper(file: string): boolean {
  return folderOf(file) === "test" && !/\.test\.ts$/.test(file);
}

function packageName(spec: string): string {
  const parts = spec.split("/");
  return spec.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0]!;
}

/** Why an import is Node-only by itself, or null. */
function nodeOnlyTarget(imp: Import): string | null {
  if (imp.target === null) {
    if (imp.spec.startsWith("node:") || isBuiltin(imp.spec)) return `Node built-in ${imp.spec}`;
    if (!imp.spec.startsWith(".") && NODE_ONLY_PACKAGES.includes(packageName(imp.spec))) return `Node-only package ${imp.spec}`;
    return null;
  }
  if (imp.target.startsWith("src/cli/")) return imp.target;
  if (imp.target === "src/gguf/readers/fs.ts" || imp.target === "src/node.ts") return imp.target;
  return null;
}

/** The first chain from `start` to something Node-only, as `a -> b -> node:fs`, or null. */
function nodeOnlyChain(start: string): string | null {
  const parent = new Map<string, { from: string; spec: string } | null>([[start, null]]);
  const queue = [start];
  const chainTo = (file: string, last: string): string => {
    const steps = [last];
    for (let at: string | undefined = file; at !== undefined; ) {
      const p = parent.get(at);
      steps.push(at);
      at = p?.from;
    }
    return steps.reverse().join(" -> ");
  };
  while (queue.length > 0) {
    const file = queue.shift()!;
    for (const imp of importsOf(file)) {
      if (imp.kind === "dynamic" && LAZY_NODE_ONLY.includes(`${file} -> ${imp.spec}`)) continue;
      const why = nodeOnlyTarget(imp);
      if (why !== null) return chainTo(file, imp.target ?? imp.spec);
      if (imp.target !== null && !parent.has(imp.target)) {
        parent.set(imp.target, { from: file, spec: imp.spec });
        queue.push(imp.target);
      }
    }
  }
  return null;
}

/** The folder rule an import from `file` to `target` breaks, or null. */
function folderRule(ruledFolder: string, target: string): string | null {
  const forbidden = FOLDER_RULES[ruledFolder];
  const to = folderOf(target);
  if (forbidden === undefined || !forbidden.includes(to)) return null;
  return to === "entry" ? `${ruledFolder} imports no public entry (${target} re-exports every folder)` : `${ruledFolder} imports no ${to}`;
}

/** What a test helper reaches through other test helpers: [helper, import] pairs outside test/. */
function throughHelpers(helper: string): Array<{ helper: string; imp: Import }> {
  const out: Array<{ helper: string; imp: Import }> = [];
  const seen = new Set<string>([helper]);
  const stack = [helper];
  while (stack.length > 0) {
    const file = stack.pop()!;
    for (const imp of importsOf(file)) {
      if (imp.target === null) continue;
      if (isTestHelper(imp.target)) {
        if (!seen.has(imp.target)) {
          seen.add(imp.target);
          stack.push(imp.target);
        }
      } else out.push({ helper: file, imp });
    }
  }
  return out;
}

interface Violation {
  /** `file -> import`, the form KNOWN_VIOLATIONS lists. */
  readonly key: string;
  readonly rule: string;
}

function scan(): { files: string[]; violations: Violation[] } {
  const files: string[] = [];
  for (const root of SCANNED_ROOTS) listFiles(root, files);
  const violations: Violation[] = [];
  const seen = new Set<string>();
  const report = (file: string, spec: string, rule: string): void => {
    const v = { key: `${file} -> ${spec}`, rule };
    const id = `${v.key} (${v.rule})`;
    if (!seen.has(id)) {
      seen.add(id);
      violations.push(v);
    }
  };
  for (const file of files) {
    const folder = folderOf(file);
    const web = file.startsWith("web/src/");
    for (const imp of importsOf(file)) {
      if (imp.unresolved) {
        report(file, imp.spec, "unresolved: no such file");
        continue;
      }
      if (imp.target !== null && FOLDER_RULES[folder] !== undefined) {
        const rule = folderRule(folder, imp.target);
        if (rule !== null) report(file, imp.spec, rule);
        if (isTestHelper(imp.target)) {
          for (const { helper, imp: inner } of throughHelpers(imp.target)) {
            const innerRule = inner.target === null ? null : folderRule(folder, inner.target);
            if (innerRule !== null) report(file, imp.spec, `${innerRule}, through ${helper} -> ${inner.spec}`);
          }
        }
      }
      if (web) {
        const direct = nodeOnlyTarget(imp);
        if (direct !== null) report(file, imp.spec, `web imports nothing Node-only: ${direct}`);
        else if (imp.target !== null) {
          const chain = nodeOnlyChain(imp.target);
          if (chain !== null) report(file, imp.spec, `web imports nothing Node-only: reaches ${chain}`);
        }
      }
    }
  }
  return { files, violations };
}

describe("folder boundaries (DESIGN.md)", () => {
  const { files, violations } = scan();
  const lines = violations.map((v) => `${v.key} (${v.rule})`);
  if (lines.length > 0) console.log(`boundary violations (${lines.length}):\n${lines.join("\n")}`);

  it("the scan sees the repository, its tests and its dynamic imports", () => {
    expect(files.length).toBeGreaterThan(150);
    expect(files).toContain("test/boundaries.test.ts");
    expect(files.some((f) => f.startsWith("web/src/"))).toBe(true);
    expect(files.some((f) => f.includes("node_modules"))).toBe(false);
    expect(importsOf("src/gguf/header.ts")).toContainEqual({ spec: "./readers/fs.js", kind: "dynamic", target: "src/gguf/readers/fs.ts", unresolved: false });
  });

  it("the rules catch what they should", () => {
    expect(folderRule("cache", "src/model/llama.ts")).toBe("cache imports no model");
    expect(folderRule("cache", "src/spec/model-spec.ts")).toBe("cache imports no spec");
    expect(folderRule("plan", "src/engine/session.ts")).toBe("plan imports no engine");
    expect(folderRule("gguf", "src/index.ts")).not.toBeNull();
    expect(folderRule("plan", "src/cache/config.ts")).toBeNull();
    expect(folderRule("test", "src/engine/session.ts")).toBeNull();
    expect(nodeOnlyChain("src/node.ts")).not.toBeNull();
    expect(nodeOnlyChain("src/cli/main.ts")).not.toBeNull();
  });

  it("no import breaks a rule, beyond the known ones being fixed", () => {
    const unknown = violations.filter((v) => !KNOWN_VIOLATIONS.includes(v.key)).map((v) => `${v.key} (${v.rule})`);
    expect(unknown).toEqual([]);
  });

  it("every known violation still occurs (delete the entries that were fixed)", () => {
    const keys = new Set(violations.map((v) => v.key));
    expect(KNOWN_VIOLATIONS.filter((k) => !keys.has(k))).toEqual([]);
  });

  it("every lazy Node-only import a page may reach is still there, lazy, and stubbed by the web build", () => {
    const vite = readFileSync(posix.join(REPO, "web/vite.config.ts"), "utf8");
    for (const entry of LAZY_NODE_ONLY) {
      const [file, spec] = entry.split(" -> ") as [string, string];
      const imp = importsOf(file).find((i) => i.spec === spec);
      expect(imp, entry).toBeDefined();
      expect(imp!.kind, entry).toBe("dynamic");
      expect(vite, entry).toContain(posix.basename(imp!.target!, ".ts"));
    }
  });
});
