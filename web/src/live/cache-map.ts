// The picture of the page pool: one cell per page, split into one stripe per slot, each stripe
// coloured by the role of the token in it (roles.ts). A canvas, because a 4096-token window is
// 256 pages x 16 slots = 4096 stripes redrawn 20 times a second; the role counts beside it are
// text (the accessible reading of the same picture).

import { el, replaceChildren } from "../dom.js";
import { countRoles, ROLE, ROLE_LABELS, ROLE_NAMES, type RoleName } from "./roles.js";

export const ROLE_COLORS: Readonly<Record<RoleName, string>> = {
  sink: "#7c3aed",
  window: "#2563eb",
  heavy: "#d97706",
  shared: "#059669",
  free: "#e5e7eb",
};
const COLOR_BY_CODE: readonly string[] = (() => {
  const out: string[] = [];
  for (const name of ROLE_NAMES) out[ROLE[name]] = ROLE_COLORS[name];
  return out;
})();

/** Cell geometry in CSS pixels; cells shrink (down to MIN) to keep the picture under MAX_HEIGHT. */
const CELL_WIDTH = 34;
const CELL_HEIGHT = 22;
const MIN_CELL_WIDTH = 6;
const GAP = 3;
const MAX_HEIGHT = 360;

export class CacheMapView {
  private roles: Uint8Array = new Uint8Array(0);
  private pageSize = 16;
  private readonly ctx: CanvasRenderingContext2D;
  private readonly resize: ResizeObserver;

  constructor(
    private readonly canvas: HTMLCanvasElement,
    private readonly legend: HTMLElement,
  ) {
    const ctx = canvas.getContext("2d");
    if (ctx === null) throw new Error("the cache map needs a 2D canvas");
    this.ctx = ctx;
    this.resize = new ResizeObserver(() => this.draw());
    this.resize.observe(canvas.parentElement ?? canvas);
    this.renderLegend(null);
  }

  update(roles: Uint8Array, pageSize: number): void {
    this.roles = roles;
    this.pageSize = pageSize;
    this.draw();
    this.renderLegend(roles);
  }

  private draw(): void {
    const nPages = this.pageSize > 0 ? Math.floor(this.roles.length / this.pageSize) : 0;
    const width = Math.max(200, Math.floor((this.canvas.parentElement ?? this.canvas).clientWidth));
    let cellW = CELL_WIDTH;
    let cellH = CELL_HEIGHT;
    let perRow = Math.max(1, Math.floor((width + GAP) / (cellW + GAP)));
    while (cellW > MIN_CELL_WIDTH && Math.ceil(nPages / perRow) * (cellH + GAP) > MAX_HEIGHT) {
      cellW = Math.max(MIN_CELL_WIDTH, cellW - 2);
      cellH = Math.max(MIN_CELL_WIDTH, Math.round(cellW * 0.65));
      perRow = Math.max(1, Math.floor((width + GAP) / (cellW + GAP)));
    }
    const rows = Math.max(1, Math.ceil(nPages / perRow));
    const height = rows * (cellH + GAP);
    const dpr = globalThis.devicePixelRatio || 1;
    this.canvas.width = Math.round(width * dpr);
    this.canvas.height = Math.round(height * dpr);
    this.canvas.style.width = `${width}px`;
    this.canvas.style.height = `${height}px`;
    const c = this.ctx;
    c.setTransform(dpr, 0, 0, dpr, 0, 0);
    c.clearRect(0, 0, width, height);
    const stripe = cellW / this.pageSize;
    for (let p = 0; p < nPages; p++) {
      const x0 = (p % perRow) * (cellW + GAP);
      const y0 = Math.floor(p / perRow) * (cellH + GAP);
      let used = false;
      for (let s = 0; s < this.pageSize; s++) {
        const code = this.roles[p * this.pageSize + s]!;
        if (code !== ROLE.free) used = true;
        c.fillStyle = COLOR_BY_CODE[code] ?? ROLE_COLORS.free;
        c.fillRect(x0 + s * stripe, y0, Math.ceil(stripe), cellH);
      }
      c.strokeStyle = used ? "#111827" : "#9ca3af";
      c.lineWidth = 1;
      c.strokeRect(x0 + 0.5, y0 + 0.5, cellW - 1, cellH - 1);
    }
    this.canvas.setAttribute("data-pages", String(nPages));
  }

  private renderLegend(roles: Uint8Array | null): void {
    const counts = roles === null ? null : countRoles(roles);
    const list = el("ul", { className: "role-legend" });
    for (const name of ROLE_NAMES) {
      const swatch = el("span", { className: "swatch", attrs: { "aria-hidden": "true", style: `background:${ROLE_COLORS[name]}` } });
      const count = el("span", { id: `role-${name}`, className: "role-count", attrs: { "data-slots": String(counts?.[name] ?? 0) } }, counts === null ? "-" : String(counts[name]));
      list.appendChild(el("li", {}, swatch, `${ROLE_LABELS[name]}: `, count, " slots"));
    }
    replaceChildren(this.legend, list);
  }
}
