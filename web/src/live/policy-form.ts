// The live page's cache controls as data: which fields each policy shows, and the form's strings
// turned into a CacheConfigInput. Only number syntax is checked here (InvalidSettingError naming the
// field); window / sink / split rules are resolveCacheConfig's, in the worker, as for every caller.

import type { CacheConfigInput, CachePolicy, CachePolicyInput, CachePolicyKind } from "../../../src/cache/config.js";
import type { CodecKind } from "../../../src/cache/codecs/types.js";
import { InvalidSettingError } from "../../../src/errors.js";

/** The policy-specific fields of the form (the window and codec apply to every policy). */
export type PolicyField = "sinks" | "prefix" | "h2oRecent" | "h2oHeavy" | "h2oWindow";
export const POLICY_FIELDS: readonly PolicyField[] = ["sinks", "prefix", "h2oRecent", "h2oHeavy", "h2oWindow"];

/** The fields each policy reads; the others are hidden and ignored. */
export function policyFields(kind: CachePolicyKind): readonly PolicyField[] {
  switch (kind) {
    case "context":
    case "fifo":
      return [];
    case "sliding":
    case "tova":
      return ["sinks"];
    case "prefix-recent":
      return ["prefix"];
    case "h2o":
      return ["sinks", "h2oRecent", "h2oHeavy", "h2oWindow"];
    default:
      return kind satisfies never;
  }
}

/** The form's strings, as typed. */
export interface CacheForm {
  readonly kind: CachePolicyKind;
  readonly codec: CodecKind;
  readonly window: string;
  readonly fields: Readonly<Record<PolicyField, string>>;
}

const FIELD_NAMES: Readonly<Record<PolicyField, string>> = {
  sinks: "sinks",
  prefix: "prefix",
  h2oRecent: "h2o recent",
  h2oHeavy: "h2o heavy",
  h2oWindow: "h2o score window",
};

/** An integer, or undefined for an optional field left blank. */
function int(raw: string, setting: string, optional: boolean): number | undefined {
  const s = raw.trim();
  if (s === "" && optional) return undefined;
  const n = s === "" ? NaN : Number(s);
  if (!Number.isSafeInteger(n)) {
    throw new InvalidSettingError(`${setting} ${JSON.stringify(raw)} is invalid: use a whole number${optional ? ", or leave it blank for the default" : ""}`, {
      setting,
      value: raw,
    });
  }
  return n;
}

/** The cache config the form asks for. */
export function cacheFromForm(form: CacheForm): CacheConfigInput {
  const { kind, codec } = form;
  const window = int(form.window, "window", false)!;
  const read = (f: PolicyField, optional: boolean): number | undefined => int(form.fields[f], FIELD_NAMES[f], optional);
  if (kind === "context") return { contextWindowSize: window, codec, policy: { kind } };
  let policy: CachePolicyInput;
  let sinks: number | undefined;
  switch (kind) {
    case "sliding":
    case "tova":
      sinks = read("sinks", false);
      policy = { kind };
      break;
    case "fifo":
      policy = { kind };
      break;
    case "prefix-recent":
      policy = { kind, prefix: read("prefix", false)! };
      break;
    case "h2o": {
      sinks = read("sinks", false);
      const recent = read("h2oRecent", true);
      const heavy = read("h2oHeavy", true);
      const scoreWindow = read("h2oWindow", true);
      policy = {
        kind,
        ...(recent !== undefined ? { recent } : {}),
        ...(heavy !== undefined ? { heavy } : {}),
        ...(scoreWindow !== undefined ? { scoreWindow } : {}),
      };
      break;
    }
    default:
      return kind satisfies never;
  }
  return { slidingWindowSize: window, ...(sinks !== undefined ? { attentionSinkSize: sinks } : {}), codec, policy };
}

/** The resolved policy with its split, as the run status shows it ("h2o (sinks 4, recent 30, heavy 30, scores over the last 16 tokens)"). */
export function describePolicy(p: CachePolicy): string {
  switch (p.kind) {
    case "context":
    case "fifo":
      return p.kind;
    case "sliding":
      return `sliding (sinks ${p.sinks}, recent ${p.recent})`;
    case "prefix-recent":
      return `prefix-recent (prefix ${p.prefix}, recent ${p.recent})`;
    case "h2o":
      return `h2o (sinks ${p.sinks}, recent ${p.recent}, heavy ${p.heavy}, scores over ${p.scoreWindow === null ? "every query" : `the last ${p.scoreWindow} tokens`})`;
    case "tova":
      return `tova (sinks ${p.sinks})`;
    default:
      return p satisfies never;
  }
}
