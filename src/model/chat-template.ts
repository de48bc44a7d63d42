// Renders a model's chat template (`tokenizer.chat_template`, Jinja) into the prompt text, with
// @huggingface/jinja, the engine transformers.js uses for the same job. Browser-safe.

import { Template } from "@huggingface/jinja";
import { ChatTemplateError } from "../errors.js";

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

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
