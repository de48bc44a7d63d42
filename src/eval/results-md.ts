// Writes one `## ` section of docs/RESULTS.md in place: other writers own other sections of the
// same file, so a section is replaced from its heading up to the next `## ` heading (or the end)
// and everything else is kept byte for byte; a missing section is appended.

/** The file's text with the section titled `heading` (e.g. "## Long streams") set to `body`. */
export function replaceSection(file: string, heading: string, body: string): string {
  const block = `${heading}\n\n${body.trim()}\n`;
  const lines = file.split("\n");
  let start = -1;
  for (let i = 0; i < lines.length; i++) {
    if (lines[i]!.trimEnd() === heading) {
      start = i;
      break;
    }
  }
  if (start < 0) {
    const base = file.length === 0 ? "# Results\n" : file;
    return `${base.replace(/\n*$/, "\n")}\n${block}`;
  }
  let end = lines.length;
  for (let i = start + 1; i < lines.length; i++) {
    if (/^## /.test(lines[i]!)) {
      end = i;
      break;
    }
  }
  const before = lines.slice(0, start).join("\n");
  const after = lines.slice(end).join("\n");
  return `${before}${before.length > 0 ? "\n" : ""}${block}${after.length > 0 ? `\n${after}` : ""}`;
}
