// Cache bytes against emitted tokens, with the pool's reserved bytes as the budget line: a bounded
// cache climbs to its window and then runs flat under the line. Axes and legend are uPlot's.

import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

import { formatBytes } from "../../../src/plan/parse.js";

const HEIGHT = 240;
const KIB = 1024;

export class BytesChart {
  private plot: uPlot | null = null;
  private x: number[] = [];
  private bytes: number[] = [];
  private budget: number[] = [];
  private budgetKiB = 0;
  private readonly resize: ResizeObserver;

  constructor(private readonly host: HTMLElement) {
    this.resize = new ResizeObserver(() => this.plot?.setSize({ width: this.width(), height: HEIGHT }));
    this.resize.observe(host);
  }

  private width(): number {
    return Math.max(240, Math.floor(this.host.clientWidth));
  }

  /** Starts a new run against `budgetBytes` (the pool's reserved bytes). */
  reset(budgetBytes: number): void {
    this.x = [];
    this.bytes = [];
    this.budget = [];
    this.budgetKiB = budgetBytes / KIB;
    this.plot?.destroy();
    const bytesValue = (_u: uPlot, v: number | null): string => (v === null ? "-" : formatBytes(v * KIB));
    const opts: uPlot.Options = {
      width: this.width(),
      height: HEIGHT,
      scales: { x: { time: false }, y: { range: (_u, _min, max) => [0, Math.max(max, this.budgetKiB) * 1.1] } },
      axes: [{ label: "tokens generated" }, { label: "KV cache (KiB)", size: 64 }],
      series: [
        { label: "token" },
        { label: "cache bytes in use", stroke: "#2563eb", width: 2, fill: "rgba(37,99,235,0.12)", value: bytesValue },
        { label: "budget (reserved pool)", stroke: "#dc2626", width: 1.5, dash: [8, 6], value: bytesValue },
      ],
      legend: { live: true },
    };
    this.plot = new uPlot(opts, [[], [], []], this.host);
  }

  append(index: Int32Array, bytes: Float64Array): void {
    for (let i = 0; i < index.length; i++) {
      this.x.push(index[i]! + 1);
      this.bytes.push(bytes[i]! / KIB);
      this.budget.push(this.budgetKiB);
    }
    this.plot?.setData([this.x, this.bytes, this.budget]);
  }
}
