// The uPlot chart of memory against context: one line per KV type, the sliding-window line, and
// the budget as a dashed line. Axes, ticks and legend are uPlot's.

import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

import type { Curves } from "./curves.js";

const GIB = 1024 ** 3;
const COLORS = ["#2563eb", "#16a34a", "#d97706", "#9333ea", "#0891b2"];
const BUDGET_COLOR = "#dc2626";
const HEIGHT = 300;

function tokens(n: number): string {
  if (n >= 1024 * 1024 && n % (1024 * 1024) === 0) return `${n / (1024 * 1024)}M`;
  if (n >= 1024 && n % 1024 === 0) return `${n / 1024}k`;
  return String(n);
}

export class MemoryChart {
  private plot: uPlot | null = null;
  private labels = "";
  private budgetGiB = 0;
  private readonly resize: ResizeObserver;

  constructor(private readonly host: HTMLElement) {
    this.resize = new ResizeObserver(() => {
      if (this.plot !== null) this.plot.setSize({ width: this.width(), height: HEIGHT });
    });
    this.resize.observe(host);
  }

  private width(): number {
    return Math.max(240, Math.floor(this.host.clientWidth));
  }

  update(curves: Curves, budgetBytes: number): void {
    this.budgetGiB = budgetBytes / GIB;
    const x = curves.contexts.slice();
    const data: uPlot.AlignedData = [
      x,
      ...curves.curves.map((c) => c.bytes.map((b) => (b === null ? null : b / GIB))),
      x.map(() => budgetBytes / GIB),
    ];
    const labels = curves.curves.map((c) => c.label).join("|");
    if (this.plot !== null && labels === this.labels) {
      this.plot.setData(data);
      return;
    }
    this.plot?.destroy();
    this.labels = labels;
    const series: uPlot.Series[] = [{ label: "context (tokens)", value: (_u, v) => (v === null ? "-" : tokens(v)) }];
    curves.curves.forEach((c, i) => {
      series.push({
        label: c.label,
        stroke: COLORS[i % COLORS.length],
        width: c.bounded ? 2.5 : 2,
        dash: c.bounded ? [2, 4] : undefined,
        value: (_u, v) => (v === null ? "-" : `${v.toFixed(2)} GiB`),
      });
    });
    series.push({ label: "budget", stroke: BUDGET_COLOR, width: 1.5, dash: [8, 6], value: (_u, v) => (v === null ? "-" : `${v.toFixed(2)} GiB`) });
    const opts: uPlot.Options = {
      width: this.width(),
      height: HEIGHT,
      scales: { x: { time: false, distr: 3, log: 2 }, y: { range: (_u, _min, max) => [0, Math.max(max, this.budgetGiB) * 1.08] } },
      axes: [
        { label: "context (tokens)", values: (_u, splits) => splits.map((v) => (v == null ? "" : tokens(v))) },
        { label: "memory (GiB)", size: 56, values: (_u, splits) => splits.map((v) => (v == null ? "" : v.toFixed(v < 10 ? 1 : 0))) },
      ],
      series,
      legend: { live: true },
    };
    this.plot = new uPlot(opts, data, this.host);
  }
}
