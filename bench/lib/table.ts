// Plain-text tables for benchmark output: GitHub-flavoured Markdown, so the lead can paste the
// printed table into docs/ unchanged.

export type Cell = string | number;

export interface Column {
  readonly title: string;
  readonly align?: "left" | "right";
}

function cellText(c: Cell): string {
  return typeof c === "number" ? String(c) : c;
}

export function markdownTable(columns: readonly Column[], rows: readonly (readonly Cell[])[]): string {
  const widths: number[] = [];
  for (let i = 0; i < columns.length; i++) {
    let w = Math.max(3, columns[i]!.title.length);
    for (const r of rows) w = Math.max(w, cellText(r[i] ?? "").length);
    widths.push(w);
  }
  const pad = (s: string, i: number) => (columns[i]!.align === "right" ? s.padStart(widths[i]!) : s.padEnd(widths[i]!));
  const line = (cells: readonly string[]) => `| ${cells.map((s, i) => pad(s, i)).join(" | ")} |`;
  const rule = `|${widths.map((w, i) => (columns[i]!.align === "right" ? `${"-".repeat(w + 1)}:` : `:${"-".repeat(w + 1)}`)).join("|")}|`;
  const out = [line(columns.map((c) => c.title)), rule];
  for (const r of rows) out.push(line(columns.map((_, i) => cellText(r[i] ?? ""))));
  return out.join("\n");
}

/** A number with `digits` significant figures, or "n/a" for a missing/non-finite value. */
export function fmt(x: number | null | undefined, digits = 3): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return "n/a";
  if (Math.abs(x) >= 10 ** digits) return x.toFixed(0);
  return x.toPrecision(digits);
}
