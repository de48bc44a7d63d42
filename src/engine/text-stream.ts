// Documents -> one token stream for perplexity: a text holds documents separated by lines that are
// exactly `<|endoftext|>` (the TinyStories convention); each trimmed, non-empty document becomes
// BOS + its tokens, and the documents are concatenated. Browser-safe: the CLI reads the file.

import { InvalidSettingError, ModelConfigError } from "../errors.js";
import type { Tokenizer } from "../model/tokenizer/index.js";

/** The separator line between documents (TinyStories' and GPT-2's end-of-text marker). */
export const DOCUMENT_SEPARATOR = "<|endoftext|>";

/**
 * Largest stream: 2^26 tokens (64M). A perplexity run feeds every token through the model, so a
 * longer stream is a mistake (hours of compute) rather than a workload; it also keeps Int32 math safe.
 */
export const MAX_STREAM_TOKENS = 2 ** 26;

export interface TextStreamOptions {
  /** Documents to drop from the start (e.g. a cut-off first story). Default 0. */
  readonly skipDocs?: number;
  /** Stop once the stream holds this many tokens (the stream is cut there). Default: all. */
  readonly maxTokens?: number;
}

/**
 * The documents of `text`: split on lines that are exactly the separator (a trailing `\r` is
 * tolerated), each trimmed; empty ones dropped.
 */
export function splitDocuments(text: string): string[] {
  const docs: string[] = [];
  const lines = text.split("\n");
  let current: string[] = [];
  const flush = (): void => {
    const doc = current.join("\n").trim();
    if (doc.length > 0) docs.push(doc);
    current = [];
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const bare = line.endsWith("\r") ? line.slice(0, -1) : line;
    if (bare === DOCUMENT_SEPARATOR) flush();
    else current.push(line);
  }
  flush();
  return docs;
}

/**
 * The token stream of `text`: for each document (after `skipDocs`), BOS + its ids, encoded as plain
 * text (a `<|endoftext|>` or `<s>` inside a document is not a control token). Cut at `maxTokens`.
 */
export function encodeTextStream(tokenizer: Tokenizer, text: string, opts: TextStreamOptions = {}): number[] {
  const skipDocs = checkCount("skipDocs", opts.skipDocs ?? 0, Number.MAX_SAFE_INTEGER);
  const maxTokens = checkCount("maxTokens", opts.maxTokens ?? MAX_STREAM_TOKENS, MAX_STREAM_TOKENS);
  const bos = tokenizer.vocab.bosId;
  if (bos < 0) {
    throw new ModelConfigError(
      "the model's vocabulary has no BOS token, which the text stream puts before each document; use a model with tokenizer.ggml.bos_token_id",
      { field: "tokenizer.ggml.bos_token_id" },
    );
  }
  const docs = splitDocuments(text);
  const ids: number[] = [];
  for (let d = skipDocs; d < docs.length && ids.length < maxTokens; d++) {
    ids.push(bos);
    const doc = tokenizer.encode(docs[d]!, { parseSpecial: false });
    for (let i = 0; i < doc.length && ids.length < maxTokens; i++) ids.push(doc[i]!);
  }
  if (ids.length > maxTokens) ids.length = maxTokens;
  return ids;
}

function checkCount(field: string, value: number, max: number): number {
  if (!Number.isSafeInteger(value) || value < 0 || value > max) {
    throw new InvalidSettingError(`${field} ${value} is invalid: use an integer in 0..${max}`, { setting: field, value });
  }
  return value;
}
