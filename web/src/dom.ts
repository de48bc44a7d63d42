// The only way pages put content on screen: elements built with createElement and text set with
// textContent. Nothing here takes HTML, so a model file's strings (names, chat templates, tokens)
// can never become markup.

export type Child = Node | string | null | undefined | false;

export interface ElOptions {
  readonly className?: string;
  readonly id?: string;
  /** Attributes set with setAttribute (never an `on*` handler: those go through addEventListener). */
  readonly attrs?: Readonly<Record<string, string>>;
}

/** `el("td", { className: "num" }, "64.00 MiB")`: strings become text nodes. */
export function el<K extends keyof HTMLElementTagNameMap>(tag: K, opts: ElOptions = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (opts.className !== undefined) node.className = opts.className;
  if (opts.id !== undefined) node.id = opts.id;
  if (opts.attrs !== undefined) {
    for (const [name, value] of Object.entries(opts.attrs)) {
      if (/^on/i.test(name)) throw new Error(`el(): refusing event-handler attribute ${name}`);
      node.setAttribute(name, value);
    }
  }
  append(node, children);
  return node;
}

export function append(parent: Node, children: readonly Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    parent.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
  }
}

/** Replaces all children of `parent`. */
export function replaceChildren(parent: Element, ...children: Child[]): void {
  parent.replaceChildren();
  append(parent, children);
}

/** The element with `id`, typed; a missing element is a bug in the page's HTML. */
export function byId<T extends HTMLElement>(id: string, type: new () => T): T {
  const node = document.getElementById(id);
  if (!(node instanceof type)) throw new Error(`page is missing #${id} (${type.name})`);
  return node;
}
