// stories260K with a chat template, for tests of conversations: the template marks turns with the
// vocabulary's own control tokens <s> and </s> (</s> is its end of generation), so a turn ends as
// a chat model's does and client text that spells them can be checked to stay text.

import { readFileSync, writeFileSync } from "node:fs";

import { withExtraMetadata } from "../../bench/lib/synthetic-vocab.js";
import type { LoadedModel } from "../../src/engine/load-model.js";
import { gv } from "../fixtures/gguf-writer.js";
import { sharedPath } from "./shared.js";

export const STORIES_GGUF = "models/stories260K.gguf";

export const STORIES_CHAT_TEMPLATE =
  "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}{% if add_generation_prompt %}<s>assistant\n{% endif %}";

/** `loaded` (stories260K) with the chat template in its settings, as if the GGUF carried it. */
export function withChatTemplate(loaded: LoadedModel): LoadedModel {
  return { ...loaded, settings: { ...loaded.settings, chatTemplate: STORIES_CHAT_TEMPLATE } };
}

/** Writes stories260K with `tokenizer.chat_template` set to `path` (for the CLI and the server). */
export async function writeChatModel(path: string): Promise<string> {
  const gguf = new Uint8Array(readFileSync(sharedPath(STORIES_GGUF)));
  writeFileSync(path, await withExtraMetadata(gguf, [["tokenizer.chat_template", gv.str(STORIES_CHAT_TEMPLATE)]]));
  return path;
}
