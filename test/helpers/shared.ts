// Paths into ../shared (read-only data beside the repo). A test that needs one of these files must
// fail, not skip, when CI is set and the file is missing: `requireShared` decides.

import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const SHARED = new URL("../../../shared/", import.meta.url);

export function sharedPath(rel: string): string {
  return fileURLToPath(new URL(rel, SHARED));
}

/** True when the file exists; when it does not: throws under CI, returns false otherwise (skip). */
export function requireShared(rel: string): boolean {
  const p = sharedPath(rel);
  if (existsSync(p)) return true;
  if (process.env.CI) throw new Error(`CI: required shared file ../shared/${rel} is missing`);
  return false;
}
