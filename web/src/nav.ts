// The navigation shared by every page. A new page (the live bounded-memory chat, web/live.html)
// adds one entry to PAGES and one input to web/vite.config.ts.

import { el, replaceChildren } from "./dom.js";

export type PageId = "planner" | "live";

interface PageLink {
  readonly id: PageId;
  readonly href: string;
  readonly title: string;
}

export const PAGES: readonly PageLink[] = [
  { id: "planner", href: "./index.html", title: "Planner" },
  { id: "live", href: "./live.html", title: "Live" },
];

/** Fills the page's <nav id="site-nav"> with links, marking the current page. */
export function renderNav(current: PageId): void {
  const nav = document.getElementById("site-nav");
  if (nav === null) return;
  const list = el("ul");
  for (const page of PAGES) {
    const link = el("a", { attrs: { href: page.href } }, page.title);
    if (page.id === current) link.setAttribute("aria-current", "page");
    list.appendChild(el("li", {}, link));
  }
  replaceChildren(nav, el("span", { className: "brand" }, "kvbound"), list);
}
