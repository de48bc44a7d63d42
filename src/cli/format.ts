// Text output of the CLI: byte figures in the units llama.cpp prints, and plain aligned tables.
// Pure string functions: commands decide what to show, this file only how.

const MIB = 1024 * 1024;

/** Bytes as MiB with two decimals, as llama.cpp's load log prints K/V sizes ("64.00"). */
export function mib(bytes: number): string {
  return (bytes / MIB).toFixed(2);
}

// One rendering of byte figures for notes (src/plan) and tables (here).
export { formatBytes } from "../plan/parse.js";

/** A token count the way users type it: 131072 -> "128k", 4096 -> "4k", 1000 -> "1000". */
export function formatTokens(n: number): string {
  if (n >= 1024 * 1024 && n % (1024 * 1024) === 0) return `${n / (1024 * 1024)}M`;
  if (n >= 1024 && n % 1024 === 0) return `${n / 1024}k`;
  return String(n);
}

/** A parameter count: 8030261248 -> "8.0B", 135000000 -> "135M", 671e9 -> "671B"; null -> "?". */
export function formatParams(n: number | null): string {
  if (n === null) return "?";
  // 999,885,952 (Gemma 3 1B) reads as 1.0B, not 1000M.
  if (n >= 0.9995e9) return `${(n / 1e9).toFixed(n >= 99.95e9 ? 0 : 1)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(0)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(0)}K`;
  return String(n);
}

/** An integer with thousands separators: 163840 -> "163,840". */
export function formatInt(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

/** Ratio as a whole percentage: 0.652 -> "65%". */
export function formatPercent(ratio: number): string {
  return `${Math.round(ratio * 100)}%`;
}

export type Align = "l" | "r";

/**
 * Aligns `rows` (the first is the header) into columns separated by two spaces, with a dashed
 * rule under the header. `align[i]` picks each column's side; numbers read best right-aligned.
 */
export function table(rows: readonly (readonly string[])[], align: readonly Align[] = []): string {
  const widths: number[] = [];
  for (const row of rows) {
    for (let i = 0; i < row.length; i++) widths[i] = Math.max(widths[i] ?? 0, row[i]!.length);
  }
  const lines: string[] = [];
  for (let r = 0; r < rows.length; r++) {
    const row = rows[r]!;
    const cells: string[] = [];
    for (let i = 0; i < row.length; i++) {
      const w = widths[i] ?? 0;
      cells.push((align[i] ?? "l") === "r" ? row[i]!.padStart(w) : row[i]!.padEnd(w));
    }
    lines.push(cells.join("  ").trimEnd());
    if (r === 0 && rows.length > 1) lines.push(widths.map((w) => "-".repeat(w)).join("  "));
  }
  return lines.join("\n");
}
