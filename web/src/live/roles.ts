// What each slot of the cache's page pool is doing, derived from the cache itself: the runs the
// attention reads (page, slot, retained index), the page reference counts, and the policy's
// split of the window (pinned sinks / prefix, recent window, score-kept heavy hitters).

import type { CachePolicy } from "../../../src/cache/config.js";
import type { KvRun } from "../../../src/cache/runs.js";

/** Role codes, one byte per slot. FREE = no live token (a free page, or a dead slot in a used one). */
export const ROLE = { free: 0, sink: 1, window: 2, heavy: 3, shared: 4 } as const;
export type RoleName = keyof typeof ROLE;
export const ROLE_NAMES: readonly RoleName[] = ["sink", "window", "heavy", "shared", "free"];
export const ROLE_LABELS: Readonly<Record<RoleName, string>> = {
  sink: "sink / pinned prefix",
  window: "recent window",
  heavy: "heavy hitter (kept by score)",
  shared: "shared page (forked)",
  free: "free slot",
};

/**
 * The role of the token at retained index `index` of a sequence holding `held` tokens.
 * - pinned tokens (sinks, prefix) are the first `pinned` retained tokens: policies never evict them;
 * - h2o keeps `recent` newest tokens; the others between sinks and recent were kept by score;
 * - tova keeps every non-pinned token by score (the newest one is the token just written);
 * - context / sliding / fifo / prefix-recent keep a contiguous recent window.
 */
export function tokenRole(policy: CachePolicy, index: number, held: number): number {
  switch (policy.kind) {
    case "context":
    case "fifo":
      return ROLE.window;
    case "sliding":
      return index < policy.sinks ? ROLE.sink : ROLE.window;
    case "prefix-recent":
      return index < policy.prefix ? ROLE.sink : ROLE.window;
    case "h2o":
      if (index < policy.sinks) return ROLE.sink;
      return index >= held - policy.recent ? ROLE.window : ROLE.heavy;
    case "tova":
      if (index < policy.sinks) return ROLE.sink;
      return index === held - 1 ? ROLE.window : ROLE.heavy;
    default:
      return policy satisfies never;
  }
}

/**
 * Fills `out` ([nPages][pageSize] role codes) from one sequence's runs. A page referenced by more
 * than one sequence (a fork) is marked shared whatever its tokens' roles.
 */
export function fillRoles(
  out: Uint8Array,
  pageSize: number,
  policy: CachePolicy,
  runs: readonly KvRun[],
  held: number,
  refCount: (page: number) => number,
): void {
  out.fill(ROLE.free);
  for (let r = 0; r < runs.length; r++) {
    const run = runs[r]!;
    const shared = refCount(run.page) > 1;
    const base = run.page * pageSize + run.slotStart;
    for (let t = 0; t < run.length; t++) out[base + t] = shared ? ROLE.shared : tokenRole(policy, run.index + t, held);
  }
}

/** Slots per role in `roles` (the text legend beside the picture). */
export function countRoles(roles: Uint8Array): Record<RoleName, number> {
  const counts: Record<RoleName, number> = { free: 0, sink: 0, window: 0, heavy: 0, shared: 0 };
  for (let i = 0; i < roles.length; i++) {
    const code = roles[i]!;
    if (code === ROLE.sink) counts.sink++;
    else if (code === ROLE.window) counts.window++;
    else if (code === ROLE.heavy) counts.heavy++;
    else if (code === ROLE.shared) counts.shared++;
    else counts.free++;
  }
  return counts;
}
