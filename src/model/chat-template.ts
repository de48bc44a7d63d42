// Renders a model's chat template (`tokenizer.chat_template`, Jinja) into the prompt text, with
// @huggingface/jinja, the engine transformers.js uses for the same job. Browser-safe.

import { Template } from "@huggingface/jinja";
import { ChatTemplateError } from "../errors.js";
import type { TextSpan } from "./tokenizer/index.js";

export interface ChatMessage {
  readonly role: "system" | "user" | "assistant" | (string & {});
  readonly content: string;
}

export interface ChatTemplateOptions {
  /** Append the header that opens the assistant's turn (transformers' add_generation_prompt). */
  readonly addGenerationPrompt?: boolean;
  /** Text of the BOS / EOS tokens (templates such as llama-3's print `bos_token` themselves). */
  readonly bosToken?: string;
  readonly eosToken?: string;
  /** Further variables some templates read (tools, date_string...). */
  readonly extra?: Readonly<Record<string, unknown>>;
}

// Parsing is the slow half; a session renders the same template every turn.
const parsed = new Map<string, Template>();
const PARSED_CACHE_ENTRIES = 8;

/**
 * The prompt text for `messages`. Throws ChatTemplateError when the template does not parse or
 * fails while rendering (including the template's own `raise_exception`, e.g. "roles must
 * alternate").
 */
export function renderChatTemplate(template: string, messages: readonly ChatMessage[], opts: ChatTemplateOptions = {}): string {
  let t = parsed.get(template);
  if (t === undefined) {
    try {
      t = new Template(template);
    } catch (err) {
      throw new ChatTemplateError(
        `the chat template does not parse: ${message(err)}; fix tokenizer.chat_template or pass a template of your own`,
        { phase: "parse", cause: message(err) },
      );
    }
    if (parsed.size >= PARSED_CACHE_ENTRIES) parsed.delete(parsed.keys().next().value!);
    parsed.set(template, t);
  }
  try {
    return t.render({
      ...opts.extra,
      messages,
      add_generation_prompt: opts.addGenerationPrompt ?? false,
      bos_token: opts.bosToken ?? "",
      eos_token: opts.eosToken ?? "",
    });
  } catch (err) {
    throw new ChatTemplateError(
      `the chat template failed while rendering ${messages.length} message(s): ${message(err)}; check the roles and order of the messages, or the template`,
      { phase: "render", cause: message(err) },
    );
  }
}

// Private-use characters no tokenizer is asked to see: they mark where message i's content goes.
const MARK_OPEN = "\uE000";
const MARK_CLOSE = "\uE001";
const MARKS = /\uE000(\d+)\uE001/;

/**
 * The prompt for `messages` as spans: the template's own markup (parseSpecial true: its
 * `<|im_start|>` are control tokens) and each message's content (parseSpecial false: a user who
 * types `<|im_end|>` gets those characters as text). The template is rendered a second time with
 * a marker in place of each content to find where contents land; when it transforms content (trims
 * it, splits out `</think>`...) the markers cannot be matched, and then the whole text is markup,
 * which is safe only while no content holds a control token's text (`hasSpecial`): otherwise a
 * ChatTemplateError, never a forged turn.
 */
export function renderChatSpans(
  template: string,
  messages: readonly ChatMessage[],
  opts: ChatTemplateOptions,
  hasSpecial: (text: string) => boolean,
): TextSpan[] {
  const text = renderChatTemplate(template, messages, opts);
  const spans = markedSpans(template, messages, opts, text);
  if (spans !== null) return spans;
  const unsafe = messages.findIndex((m) => hasSpecial(m.content));
  if (unsafe >= 0) {
    throw new ChatTemplateError(
      `message ${unsafe} (${messages[unsafe]!.role}) holds a control token's text and this chat template rewrites message content, ` +
        "so kvbound cannot keep that text from becoming control tokens; remove the special-token text from the message",
      { phase: "content", message: unsafe },
    );
  }
  return [{ text, parseSpecial: true }];
}

/** Spans of `text` from a render with markers for contents, or null when that render differs from `text`. */
function markedSpans(template: string, messages: readonly ChatMessage[], opts: ChatTemplateOptions, text: string): TextSpan[] | null {
  let marked: string;
  try {
    marked = renderChatTemplate(template, messages.map((m, i) => ({ ...m, content: `${MARK_OPEN}${i}${MARK_CLOSE}` })), opts);
  } catch {
    return null;
  }
  const parts = marked.split(MARKS); // markup, index, markup, index, ..., markup
  const spans: TextSpan[] = [];
  let rebuilt = "";
  for (let i = 0; i < parts.length; i++) {
    const part = i % 2 === 0 ? parts[i]! : (messages[Number(parts[i])]?.content ?? "");
    rebuilt += part;
    if (part.length > 0) spans.push({ text: part, parseSpecial: i % 2 === 0 });
  }
  return rebuilt === text ? spans : null;
}

/** The spans after the first `chars` characters of their text. */
export function dropChars(spans: readonly TextSpan[], chars: number): TextSpan[] {
  const out: TextSpan[] = [];
  let skip = chars;
  for (const s of spans) {
    if (skip >= s.text.length) {
      skip -= s.text.length;
      continue;
    }
    out.push(skip > 0 ? { text: s.text.slice(skip), parseSpecial: s.parseSpecial } : s);
    skip = 0;
  }
  return out;
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
