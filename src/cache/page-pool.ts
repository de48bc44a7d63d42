// The page pool: a fixed number of page ids, sized once (from a byte budget or from the windows),
// with reference counts for copy-on-write forks and a free stack. `allocate` returns null when the
// pool is exhausted; the cache's boundary turns that into CacheExhaustedError.
//
// `planPoolLayout` is the one sizing rule: the cache allocates what it says, and the planner's
// `kvbound` engine rule (src/plan/kvbound.ts) reports what it says, so the two cannot drift.

import { BudgetTooSmallError, CacheConfigError } from "../errors.js";
import { pageStoreBytes, type PageStoreOptions } from "./codecs/index.js";
import type { PageShape } from "./codecs/types.js";
import type { CacheConfig, CacheModelShape } from "./config.js";
import { createPolicy } from "./policies/index.js";

export class PagePool {
  readonly nPages: number;
  private readonly refs: Int32Array; // [nPages] 0 = free
  private readonly freeStack: Int32Array; // [nPages]
  private nFree: number;

  constructor(nPages: number) {
    this.nPages = nPages;
    this.refs = new Int32Array(nPages);
    this.freeStack = new Int32Array(nPages);
    // Lowest ids on top so a fresh cache fills pages in order (easier to read in dumps).
    for (let i = 0; i < nPages; i++) this.freeStack[i] = nPages - 1 - i;
    this.nFree = nPages;
  }

  get freePages(): number {
    return this.nFree;
  }

  get usedPages(): number {
    return this.nPages - this.nFree;
  }

  /** A page with reference count 1, or null when none is free. */
  allocate(): number | null {
    if (this.nFree === 0) return null;
    const p = this.freeStack[--this.nFree]!;
    this.refs[p] = 1;
    return p;
  }

  retain(page: number): void {
    if (this.refs[page]! <= 0) throw new Error(`page ${page} retained while free`);
    this.refs[page] = this.refs[page]! + 1;
  }

  /** Drops one reference; true when the page went back to the free stack. */
  release(page: number): boolean {
    const r = this.refs[page]!;
    if (r <= 0) throw new Error(`page ${page} released while free (double free)`);
    this.refs[page] = r - 1;
    if (r > 1) return false;
    this.freeStack[this.nFree++] = page;
    return true;
  }

  refCount(page: number): number {
    return this.refs[page]!;
  }

  /** Ids on the free stack, for invariant checks. */
  freeList(): Int32Array {
    return this.freeStack.slice(0, this.nFree);
  }
}

/** How the pool is laid out for one model and config. */
export interface PoolLayout {
  readonly nPages: number;
  readonly pageSize: number;
  /** Pages one sequence's window can span under the policy (sizes the pool without a budget). */
  readonly pagesPerSequence: number;
  /** Bytes all K stores / all V stores reserve (pages plus codec side buffers). */
  readonly kBytes: number;
  readonly vBytes: number;
  readonly reservedBytes: number;
  /** Bytes one more page costs across all layers, K + V. */
  readonly bytesPerPage: number;
  readonly storeOptions: PageStoreOptions;
}

/** A named limit: pools beyond 2^24 pages (256M tokens at page size 16) are a config mistake. */
export const MAX_POOL_PAGES = 2 ** 24;

export function layerPageShape(nPages: number, pageSize: number, nHeadKv: number, headDim: number): PageShape {
  return { nPages, pageSize, nHeadKv, headDim };
}

function storesBytes(config: CacheConfig, model: CacheModelShape, nPages: number, options: PageStoreOptions): { k: number; v: number } {
  let k = 0;
  let v = 0;
  for (let l = 0; l < model.layers.length; l++) {
    const layer = model.layers[l]!;
    k += pageStoreBytes(config.codec, "k", layerPageShape(nPages, config.pageSize, layer.nHeadKv, layer.headDimK), options);
    v += pageStoreBytes(config.codec, "v", layerPageShape(nPages, config.pageSize, layer.nHeadKv, layer.headDimV), options);
  }
  return { k, v };
}

/** Checks a group's shape. A group may hold no layers (a model whose every layer has its own window
 *  keeps an empty main group: it still tracks the sequence's tokens and positions). */
export function validateModelShape(model: CacheModelShape): void {
  if (!Number.isSafeInteger(model.nHead) || model.nHead <= 0) {
    throw new CacheConfigError(`nHead ${model.nHead} is invalid: use a positive integer`, { field: "nHead", value: model.nHead });
  }
  for (let l = 0; l < model.layers.length; l++) {
    const layer = model.layers[l]!;
    for (const f of ["nHeadKv", "headDimK", "headDimV"] as const) {
      if (!Number.isSafeInteger(layer[f]) || layer[f] <= 0) {
        throw new CacheConfigError(`layer ${l} ${f} ${layer[f]} is invalid: use a positive integer`, { field: f, value: layer[f] });
      }
    }
    if (model.nHead % layer.nHeadKv !== 0) {
      throw new CacheConfigError(`layer ${l}: nHead ${model.nHead} is not a multiple of nHeadKv ${layer.nHeadKv} (GQA groups must be whole)`, {
        field: "nHeadKv",
        value: layer.nHeadKv,
      });
    }
  }
}

/**
 * The pool's size: with a budget, the most pages whose stores fit in it; without, maxSequences x
 * the pages one sequence's window can span. Store bytes are taken from the codecs' own
 * `pageStoreBytes` (affine in nPages: pages plus fixed side buffers), never re-derived here.
 */
export function planPoolLayout(config: CacheConfig, model: CacheModelShape): PoolLayout {
  validateModelShape(model);
  const storeOptions: PageStoreOptions = { openPages: config.maxSequences };
  const pagesPerSequence = createPolicy(config.policy).pagesPerSequence(config.pageSize);
  let nPages: number;
  if (config.budgetBytes === null) {
    nPages = config.maxSequences * pagesPerSequence;
  } else {
    const one = storesBytes(config, model, 1, storeOptions);
    const oneBytes = one.k + one.v;
    if (oneBytes > config.budgetBytes) throw new BudgetTooSmallError(config.budgetBytes, oneBytes);
    const two = storesBytes(config, model, 2, storeOptions);
    const perPage = two.k + two.v - oneBytes;
    const fixed = oneBytes - perPage;
    nPages = Math.max(1, Math.min(MAX_POOL_PAGES, Math.floor((config.budgetBytes - fixed) / perPage)));
    // Side buffers may not be exactly affine (int4 clamps its open pages to nPages): step down until it fits.
    while (nPages > 1) {
      const b = storesBytes(config, model, nPages, storeOptions);
      if (b.k + b.v <= config.budgetBytes) break;
      nPages--;
    }
    // An evicting window the pool cannot hold would stop when the pages run out, never evicting.
    if (config.policy.kind !== "context" && nPages < pagesPerSequence) {
      const need = storesBytes(config, model, pagesPerSequence, storeOptions);
      throw new BudgetTooSmallError(
        config.budgetBytes,
        need.k + need.v,
        `the ${pagesPerSequence} pages a ${config.windowTokens}-token ${config.policy.kind} window spans`,
      );
    }
  }
  if (nPages > MAX_POOL_PAGES) {
    throw new CacheConfigError(`the pool would need ${nPages} pages (> ${MAX_POOL_PAGES}); lower the window, maxSequences, or set budgetBytes`, {
      field: "maxSequences",
      value: config.maxSequences,
    });
  }
  const bytes = storesBytes(config, model, nPages, storeOptions);
  const next = storesBytes(config, model, nPages + 1, storeOptions);
  return {
    nPages,
    pageSize: config.pageSize,
    pagesPerSequence,
    kBytes: bytes.k,
    vBytes: bytes.v,
    reservedBytes: bytes.k + bytes.v,
    bytesPerPage: next.k + next.v - bytes.k - bytes.v,
    storeOptions,
  };
}
