// How much CPU the rest of the machine took while a benchmark ran: on a shared machine a
// 2-thread figure means little if another process held a core meanwhile. Linux only (/proc);
// elsewhere the meter reads null.

import { readFileSync } from "node:fs";

/** Busy jiffies (USER_HZ, 100 per second) of the whole machine and of this process. */
function jiffies(): [machine: number, self: number] | null {
  try {
    const cpu = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal: busy = all but idle and iowait
    const busy = cpu[0]! + cpu[1]! + cpu[2]! + cpu[5]! + cpu[6]! + (cpu[7] ?? 0);
    // /proc/self/stat: fields after "(comm) "; utime and stime are the 12th and 13th of those
    const self = readFileSync("/proc/self/stat", "utf8").split(") ")[1]!.split(" ");
    return [busy, Number(self[11]) + Number(self[12])];
  } catch {
    return null;
  }
}

/** Starts a meter; calling it gives the cores other processes kept busy on average since (null off Linux). */
export function otherProcessesMeter(): () => number | null {
  const a = jiffies();
  const t0 = performance.now();
  return () => {
    const b = jiffies();
    if (a === null || b === null) return null;
    const seconds = (performance.now() - t0) / 1000;
    return Math.max(0, b[0] - a[0] - (b[1] - a[1])) / 100 / seconds;
  };
}
