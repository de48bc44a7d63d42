// Resolves a policy configuration to its implementation (one file per policy).

import type { CachePolicy } from "../config.js";
import { contextPolicy } from "./context.js";
import { fifoPolicy } from "./fifo.js";
import { h2oPolicy } from "./h2o.js";
import { prefixRecentPolicy } from "./prefix-recent.js";
import { slidingPolicy } from "./sliding.js";
import { tovaPolicy } from "./tova.js";
import type { EvictionPolicy } from "./types.js";

export type { EvictionPolicy, EvictionView } from "./types.js";

export function createPolicy(config: CachePolicy): EvictionPolicy {
  switch (config.kind) {
    case "context":
      return contextPolicy(config);
    case "sliding":
      return slidingPolicy(config);
    case "fifo":
      return fifoPolicy(config);
    case "prefix-recent":
      return prefixRecentPolicy(config);
    case "h2o":
      return h2oPolicy(config);
    case "tova":
      return tovaPolicy(config);
    default:
      return config satisfies never;
  }
}
