// Parsing of the sizes and counts a user types: contexts ("32k", "128K", "32768") and byte
// budgets ("8GiB", "8GB", "1.5GiB", "512MiB"). Everything is validated here, at the boundary,
// into a plain integer; a bad value is an InvalidSettingError that names the setting and the fix.

import { InvalidSettingError } from "../errors.js";

/** Largest context kvbound accepts: 2^24 = 16,777,216 tokens. The longest published context
 *  windows are about 10M tokens (Llama 4 Scout); anything above this is a typo (1e12) that would
 *  only make the planners produce absurd figures. */
export const MAX_CONTEXT_TOKENS = 1 << 24;

/** Largest budget accepted: 2^50 bytes (1 PiB), far above any machine; it keeps every byte
 *  figure the planners derive below 2^53, where JavaScript numbers stop being exact integers. */
export const MAX_BUDGET_BYTES = 2 ** 50;

/** Largest count for other integer settings (sequences, ubatch, tensor parallel...). */
export const MAX_COUNT = 1 << 24;

// Token counts: k/K and m/M are binary (32k = 32768), the way context sizes are spoken of
// (llama.cpp's "-c 32k" users mean 32768, model cards say "128K" for 131072).
const COUNT_SUFFIX: Readonly<Record<string, number>> = { "": 1, k: 1024, m: 1024 * 1024 };

// Bytes: "GiB" binary, "GB" decimal (SI), a bare "G" binary (as `free -g`, docker and most GPU
// tools use it); "B" or nothing = bytes.
const BYTE_SUFFIX: Readonly<Record<string, number>> = {
  "": 1,
  b: 1,
  k: 1024,
  kib: 1024,
  kb: 1e3,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  mb: 1e6,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  gb: 1e9,
  t: 1024 ** 4,
  tib: 1024 ** 4,
  tb: 1e12,
};

// A decimal number (no exponent, no sign: negative sizes are errors, and "1e12" is refused so a
// typo cannot pass as a huge context) followed by an optional unit.
const NUMBER_UNIT = /^(\d+(?:\.\d+)?|\.\d+)\s*([a-z]*)$/i;

function invalid(setting: string, value: unknown, why: string): InvalidSettingError {
  return new InvalidSettingError(`${setting} ${JSON.stringify(value)} is invalid: ${why}`, { setting, value });
}

function splitNumber(setting: string, text: string, example: string): { value: number; unit: string } {
  const m = NUMBER_UNIT.exec(text.trim());
  if (!m) throw invalid(setting, text, `write a positive number with an optional unit, e.g. ${example}`);
  return { value: Number(m[1]), unit: (m[2] ?? "").toLowerCase() };
}

/**
 * A positive integer token count: 32768, "32768", "32k", "128K", "1M". Throws InvalidSettingError
 * for zero, negatives, fractions, NaN, exponents, unknown units and anything above `max`.
 */
export function parseCount(input: string | number, setting = "ctx", max = MAX_CONTEXT_TOKENS): number {
  let n: number;
  if (typeof input === "number") {
    n = input;
  } else {
    const { value, unit } = splitNumber(setting, input, "32768 or 32k");
    const mult = COUNT_SUFFIX[unit];
    if (mult === undefined) throw invalid(setting, input, `unknown unit "${unit}"; use k (x1024) or M (x1048576)`);
    n = value * mult;
  }
  if (!Number.isFinite(n)) throw invalid(setting, input, "not a finite number");
  if (!Number.isInteger(n)) throw invalid(setting, input, "must be a whole number of tokens");
  if (n <= 0) throw invalid(setting, input, "must be positive");
  if (n > max) throw invalid(setting, input, `must be at most ${max}`);
  return n;
}

/**
 * A positive byte count: 8589934592, "8GiB", "8GB" (8e9), "1.5GiB", "512MiB", "8G" (= GiB).
 * Fractional results are floored to whole bytes. Throws InvalidSettingError like parseCount.
 */
export function parseBytes(input: string | number, setting = "budget", max = MAX_BUDGET_BYTES): number {
  let n: number;
  if (typeof input === "number") {
    n = input;
    if (Number.isFinite(n) && !Number.isInteger(n)) throw invalid(setting, input, "must be a whole number of bytes");
  } else {
    const { value, unit } = splitNumber(setting, input, "8GiB, 8GB or 1.5GiB");
    const mult = BYTE_SUFFIX[unit];
    if (mult === undefined) throw invalid(setting, input, `unknown unit "${unit}"; use B, KiB, MiB, GiB, TiB (binary) or KB, MB, GB, TB (decimal)`);
    n = Math.floor(value * mult);
  }
  if (!Number.isFinite(n)) throw invalid(setting, input, "not a finite number");
  if (n <= 0) throw invalid(setting, input, "must be positive");
  if (n > max) throw invalid(setting, input, `must be at most ${max} bytes`);
  return n;
}

/** A fraction in (0, 1], e.g. vLLM's --gpu-memory-utilization. */
export function parseFraction(input: string | number, setting: string): number {
  const n = typeof input === "number" ? input : input.trim() === "" ? NaN : Number(input);
  if (!Number.isFinite(n) || n <= 0 || n > 1) throw invalid(setting, input, "must be a number in (0, 1]");
  return n;
}

/** Validates an optional integer setting already in number form (library callers). */
export function checkCount(value: number | undefined, setting: string, fallback: number, min = 1, max = MAX_COUNT): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < min || value > max) {
    throw invalid(setting, value, `must be an integer in [${min}, ${max}]`);
  }
  return value;
}

/** "8.00 GiB"-style rendering for notes and reasons (binary units, two decimals). */
export function formatBytes(bytes: number): string {
  const abs = Math.abs(bytes);
  if (abs >= 1024 ** 3) return `${(bytes / 1024 ** 3).toFixed(2)} GiB`;
  if (abs >= 1024 ** 2) return `${(bytes / 1024 ** 2).toFixed(2)} MiB`;
  if (abs >= 1024) return `${(bytes / 1024).toFixed(2)} KiB`;
  return `${bytes} B`;
}
