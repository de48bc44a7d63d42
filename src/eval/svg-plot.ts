// A small line-plot writer: series of (x, y) points -> a standalone SVG string with axes, "nice"
// ticks, axis labels, a title and a legend. Used to draw docs/plots from measured data, so the
// pictures in docs/RESULTS.md are produced by code from the numbers in its tables.

import { InvalidSettingError } from "../errors.js";

export interface PlotSeries {
  readonly label: string;
  /** [x, y] pairs in x order; a non-finite y breaks the line there. */
  readonly points: readonly (readonly [number, number])[];
  /** CSS colour; default from the palette by index. */
  readonly color?: string;
  /** Draw dashed. */
  readonly dashed?: boolean;
  /** Mark each point with a dot (sparse data). */
  readonly markers?: boolean;
}

export interface LinePlotOptions {
  readonly title: string;
  readonly xLabel: string;
  readonly yLabel: string;
  readonly series: readonly PlotSeries[];
  readonly width?: number;
  readonly height?: number;
  /** Logarithmic y axis (every y must be > 0). */
  readonly logY?: boolean;
  /** Logarithmic x axis (every x must be > 0). */
  readonly logX?: boolean;
  /** Fixed y range; default: the data's (log: decades around it). */
  readonly yMin?: number;
  readonly yMax?: number;
}

/** Most points a plot accepts: a static file for a web page, not a data dump. */
export const MAX_PLOT_POINTS = 200_000;

/** Colour-blind-safe palette (Okabe and Ito 2008) plus greys for more series. */
export const PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442", "#999999", "#882255"];

const MARGIN = { left: 70, right: 20, top: 36, bottom: 48 };
const LEGEND_ROW = 16;

/**
 * Tick values covering [lo, hi] at a step of 1, 2 or 5 times a power of ten, about `target` of them.
 * (Heckbert's "nice numbers" from Graphics Gems, 1990.)
 */
export function niceTicks(lo: number, hi: number, target = 6): number[] {
  if (!Number.isFinite(lo) || !Number.isFinite(hi) || hi < lo) return [];
  if (hi === lo) return [lo];
  const raw = (hi - lo) / Math.max(1, target);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  const step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
  const ticks: number[] = [];
  const first = Math.ceil(lo / step - 1e-9) * step;
  for (let v = first; v <= hi + step * 1e-9; v += step) ticks.push(Math.abs(v) < step * 1e-9 ? 0 : Number(v.toPrecision(12)));
  return ticks;
}

/** A compact tick label: 65536 -> 65.5k, 0.25 -> 0.25, 3e6 -> 3M. */
export function formatTick(v: number): string {
  const a = Math.abs(v);
  if (a >= 1e6) return `${trim(v / 1e6)}M`;
  if (a >= 1e4) return `${trim(v / 1e3)}k`;
  return trim(v);
}

function trim(v: number): string {
  return String(Number(v.toPrecision(4)));
}

function escapeXml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

/** The SVG document for `opts`. Throws InvalidSettingError for an empty plot, bad sizes or log of y <= 0. */
export function linePlot(opts: LinePlotOptions): string {
  const width = opts.width ?? 760;
  const height = opts.height ?? 420;
  if (!(width >= 200 && width <= 4000 && height >= 150 && height <= 4000)) {
    throw new InvalidSettingError(`plot size ${width}x${height} is invalid: use 200..4000 by 150..4000`, { setting: "size", value: `${width}x${height}` });
  }
  let xMin = Infinity, xMax = -Infinity, yMin = Infinity, yMax = -Infinity, n = 0;
  for (const s of opts.series) {
    for (const [x, y] of s.points) {
      n++;
      if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
      if ((opts.logY && y <= 0) || (opts.logX && x <= 0)) {
        throw new InvalidSettingError(`series "${s.label}" has the point (${x}, ${y}) on a log axis; log axes need values > 0`, {
          setting: opts.logY && y <= 0 ? "logY" : "logX",
          value: opts.logY && y <= 0 ? y : x,
        });
      }
      if (x < xMin) xMin = x;
      if (x > xMax) xMax = x;
      if (y < yMin) yMin = y;
      if (y > yMax) yMax = y;
    }
  }
  if (n > MAX_PLOT_POINTS) {
    throw new InvalidSettingError(`${n} points is more than a plot takes (${MAX_PLOT_POINTS}); thin the data`, { setting: "points", value: n });
  }
  if (xMin > xMax) throw new InvalidSettingError(`plot "${opts.title}" has no finite point`, { setting: "series", value: opts.series.length });
  if (opts.yMin !== undefined) yMin = opts.yMin;
  if (opts.yMax !== undefined) yMax = opts.yMax;
  if (xMax === xMin) xMax = opts.logX ? xMin * 10 : xMin + 1;
  if (yMax === yMin) yMax = opts.logY ? yMin * 10 : yMin + 1;

  const ya = axis(yMin, yMax, opts.logY === true);
  const xa = axis(xMin, xMax, opts.logX === true);
  const yTicks = ya.ticks;
  const xTicks = xa.ticks;

  const legendRows = opts.series.length;
  const plotTop = MARGIN.top;
  const plotLeft = MARGIN.left;
  const plotW = width - MARGIN.left - MARGIN.right;
  const plotH = height - MARGIN.top - MARGIN.bottom;
  const sx = (x: number): number => plotLeft + ((xa.f(x) - xa.lo) / (xa.hi - xa.lo)) * plotW;
  const sy = (y: number): number => plotTop + plotH - ((ya.f(y) - ya.lo) / (ya.hi - ya.lo)) * plotH;
  const fmt = (v: number): string => v.toFixed(1);

  const out: string[] = [];
  const totalH = height + legendRows * LEGEND_ROW + 8;
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${totalH}" viewBox="0 0 ${width} ${totalH}" font-family="sans-serif" font-size="11">`);
  out.push(`<rect width="${width}" height="${totalH}" fill="#ffffff"/>`);
  out.push(`<text x="${width / 2}" y="20" text-anchor="middle" font-size="14">${escapeXml(opts.title)}</text>`);
  // Grid and ticks.
  for (const t of yTicks) {
    const y = sy(t);
    if (y < plotTop - 0.5 || y > plotTop + plotH + 0.5) continue;
    out.push(`<line x1="${plotLeft}" y1="${fmt(y)}" x2="${plotLeft + plotW}" y2="${fmt(y)}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${plotLeft - 6}" y="${fmt(y + 4)}" text-anchor="end">${formatTick(t)}</text>`);
  }
  for (const t of xTicks) {
    const x = sx(t);
    if (x < plotLeft - 0.5 || x > plotLeft + plotW + 0.5) continue;
    out.push(`<line x1="${fmt(x)}" y1="${plotTop}" x2="${fmt(x)}" y2="${plotTop + plotH}" stroke="#f0f0f0"/>`);
    out.push(`<text x="${fmt(x)}" y="${plotTop + plotH + 16}" text-anchor="middle">${formatTick(t)}</text>`);
  }
  out.push(`<rect x="${plotLeft}" y="${plotTop}" width="${plotW}" height="${plotH}" fill="none" stroke="#333333"/>`);
  out.push(`<text x="${plotLeft + plotW / 2}" y="${plotTop + plotH + 36}" text-anchor="middle">${escapeXml(opts.xLabel)}</text>`);
  out.push(
    `<text x="16" y="${plotTop + plotH / 2}" text-anchor="middle" transform="rotate(-90 16 ${plotTop + plotH / 2})">${escapeXml(opts.yLabel)}</text>`,
  );
  // Lines, clipped to the plot area.
  out.push(`<clipPath id="plot-area"><rect x="${plotLeft}" y="${plotTop}" width="${plotW}" height="${plotH}"/></clipPath>`);
  out.push(`<g clip-path="url(#plot-area)" fill="none" stroke-width="1.6">`);
  for (let i = 0; i < opts.series.length; i++) {
    const s = opts.series[i]!;
    const color = s.color ?? PALETTE[i % PALETTE.length]!;
    const dash = s.dashed ? ` stroke-dasharray="5 3"` : "";
    let d = "";
    let pen = false;
    for (const [x, y] of s.points) {
      if (!Number.isFinite(x) || !Number.isFinite(y)) {
        pen = false;
        continue;
      }
      d += `${pen ? "L" : "M"}${fmt(sx(x))} ${fmt(sy(y))} `;
      pen = true;
    }
    out.push(`<path d="${d.trim()}" stroke="${color}"${dash}><title>${escapeXml(s.label)}</title></path>`);
    if (s.markers) {
      for (const [x, y] of s.points) {
        if (Number.isFinite(x) && Number.isFinite(y)) out.push(`<circle cx="${fmt(sx(x))}" cy="${fmt(sy(y))}" r="2.5" fill="${color}" stroke="none"/>`);
      }
    }
  }
  out.push(`</g>`);
  // Legend below the plot, one row per series.
  for (let i = 0; i < opts.series.length; i++) {
    const s = opts.series[i]!;
    const color = s.color ?? PALETTE[i % PALETTE.length]!;
    const y = height + i * LEGEND_ROW + 4;
    const dash = s.dashed ? ` stroke-dasharray="5 3"` : "";
    out.push(`<line x1="${plotLeft}" y1="${y}" x2="${plotLeft + 24}" y2="${y}" stroke="${color}" stroke-width="2"${dash}/>`);
    out.push(`<text x="${plotLeft + 30}" y="${y + 4}">${escapeXml(s.label)}</text>`);
  }
  out.push(`</svg>`);
  return `${out.join("\n")}\n`;
}

interface Axis {
  /** Data value -> axis value (log10 on a log axis). */
  readonly f: (v: number) => number;
  /** Axis-value range drawn. */
  readonly lo: number;
  readonly hi: number;
  /** Tick values, in data units. */
  readonly ticks: number[];
}

/** A linear axis spans nice ticks around the data; a log axis whole decades, with 2x and 5x ticks when few. */
function axis(min: number, max: number, log: boolean): Axis {
  if (log) {
    const lo = Math.floor(Math.log10(min) + 1e-9);
    let hi = Math.ceil(Math.log10(max) - 1e-9);
    if (hi === lo) hi = lo + 1;
    const ticks: number[] = [];
    const mult = hi - lo <= 2 ? [1, 2, 5] : [1];
    for (let e = lo; e <= hi; e++) for (const m of mult) if (Math.log10(m) + e <= hi + 1e-9) ticks.push(Number((m * 10 ** e).toPrecision(12)));
    return { f: Math.log10, lo, hi, ticks };
  }
  const ticks = niceTicks(min, max);
  const lo = Math.min(min, ticks[0] ?? min);
  const hi = Math.max(max, ticks[ticks.length - 1] ?? max);
  return { f: (v) => v, lo, hi: hi === lo ? lo + 1 : hi, ticks };
}
