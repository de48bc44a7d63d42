// `kvbound tokenize --model M (--text S | --file F)`: the token ids and pieces of a text, as
// llama.cpp's llama-tokenize (tools/tokenize/tokenize.cpp) prints them, or with --json one object
// `{ ids, pieces, count }`. Only the GGUF's header is read: a vocab-only file is enough, and the
// weights of a full one are never touched.

import { stat, readFile } from "node:fs/promises";

import type { Command } from "commander";

import { InvalidSettingError } from "../../errors.js";
import { readGgufHeader } from "../../gguf/header.js";
import { resolveModelRef } from "../../model/model-ref.js";
import { createTokenizer, tokenizerSettings, tokenPiece, type Tokenizer, type TokenizerSettings } from "../../model/tokenizer/index.js";
import type { CliIo } from "../main.js";

export interface TokenizeFlags {
  model: string;
  text?: string;
  /** llama-tokenize's name for --text. */
  prompt?: string;
  file?: string;
  /** false with --no-parse-special. */
  parseSpecial: boolean;
  /** false with --no-bos. */
  bos: boolean;
  ids?: boolean;
  json?: boolean;
}

export interface TokenizeOutput {
  readonly ids: number[];
  /** Each token's text; bytes that are not valid UTF-8 on their own (half a character) become U+FFFD. */
  readonly pieces: string[];
  readonly count: number;
}

/**
 * Largest --file read: 64 MiB. The text is tokenized in one piece in memory and the output is
 * several times its size; a larger file is more likely a wrong path (a model) than a prompt.
 */
export const MAX_TOKENIZE_FILE_BYTES = 64 * 1024 * 1024;

/** What tokenize needs of a model: its tokenizer and BOS/EOS settings. */
export interface Vocabulary {
  readonly tokenizer: Tokenizer;
  readonly settings: TokenizerSettings;
}

// The last local vocabulary, kept while its file is unchanged: `main` run in-process over many texts
// (tests, scripts) would otherwise re-parse a multi-megabyte header and rebuild the merge table per text.
let lastVocabulary: { readonly key: string; readonly vocabulary: Vocabulary } | undefined;

/** Tokenizer and BOS/EOS settings from a GGUF's metadata; reads the header only. */
export async function loadVocabulary(ref: string, io: CliIo): Promise<Vocabulary> {
  const resolved = await resolveModelRef(ref, io.fetch ? { fetch: io.fetch } : {});
  let key: string | undefined;
  if (resolved.kind === "file") {
    // A missing file is left to readGgufHeader, which names it in an UnknownModelError.
    const info = await stat(resolved.path).catch(() => undefined);
    if (info !== undefined) key = `${resolved.path}\0${info.size}\0${info.mtimeMs}`;
    if (key !== undefined && lastVocabulary?.key === key) return lastVocabulary.vocabulary;
  }
  const source = resolved.kind === "file" ? resolved.path : resolved.url;
  const header = await readGgufHeader(source, io.fetch ? { fetch: io.fetch } : {});
  const vocabulary = { tokenizer: createTokenizer(header.metadata), settings: tokenizerSettings(header.metadata) };
  if (key !== undefined) lastVocabulary = { key, vocabulary };
  return vocabulary;
}

async function readText(flags: TokenizeFlags): Promise<string> {
  const given = [flags.text !== undefined, flags.prompt !== undefined, flags.file !== undefined].filter(Boolean).length;
  if (given !== 1) {
    throw new InvalidSettingError(
      given === 0 ? "tokenize needs a text: pass --text TEXT (or -p) or --file PATH" : "pass only one of --text, --prompt and --file",
      { setting: "text", value: given },
    );
  }
  if (flags.file === undefined) return (flags.text ?? flags.prompt)!;
  const path = flags.file;
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch {
    throw new InvalidSettingError(`--file ${path} does not exist or cannot be read; give a text file`, { setting: "file", value: path });
  }
  if (size > MAX_TOKENIZE_FILE_BYTES) {
    throw new InvalidSettingError(`--file ${path} is ${size} bytes, more than tokenize reads (${MAX_TOKENIZE_FILE_BYTES}); cut it into parts`, {
      setting: "file",
      value: path,
    });
  }
  // ignoreBOM keeps a leading U+FEFF as text: llama-tokenize reads the file's bytes as they are.
  return new TextDecoder("utf-8", { ignoreBOM: true }).decode(await readFile(path));
}

/** Ids as llama-tokenize makes them: BOS (and EOS) only when the model adds them and --no-bos is absent. */
export function tokenizeText(vocabulary: Vocabulary, text: string, opts: { parseSpecial: boolean; bos: boolean }): number[] {
  const { tokenizer, settings } = vocabulary;
  const ids = tokenizer.encode(text, { parseSpecial: opts.parseSpecial });
  // llama-tokenize passes add_special = add_bos && !no_bos, and llama.cpp appends EOS only under
  // add_special too: a model that adds EOS but not BOS gets neither.
  if (settings.addBos && opts.bos) {
    ids.unshift(settings.bosId);
    if (settings.addEos) ids.push(settings.eosId);
  }
  return ids;
}

const fatalUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const lossyUtf8 = new TextDecoder("utf-8", { ignoreBOM: true });

/** One line of llama-tokenize's output: `%6d -> '%s'`, and for a piece that is not UTF-8 its bytes in hex. */
function pieceLine(id: number, bytes: Uint8Array): string {
  const head = `${String(id).padStart(6)} -> '`;
  try {
    return `${head}${fatalUtf8.decode(bytes)}'\n`;
  } catch {
    // llama-tokenize's own fallback where the console needs valid UTF-8 (its Windows path).
    const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" ");
    return `${head}<${hex}>' (UTF-8 decode failure)\n`;
  }
}

export async function tokenizeCommand(flags: TokenizeFlags, io: CliIo): Promise<number> {
  if (flags.ids && flags.json) throw new InvalidSettingError("pass one of --ids and --json", { setting: "json", value: true });
  const text = await readText(flags);
  const vocabulary = await loadVocabulary(flags.model, io);
  const ids = tokenizeText(vocabulary, text, flags);
  if (flags.ids) {
    io.stdout(`[${ids.join(", ")}]\n`);
    return 0;
  }
  if (flags.json) {
    const pieces = ids.map((id) => lossyUtf8.decode(tokenPiece(vocabulary.tokenizer, id)));
    const out: TokenizeOutput = { ids, pieces, count: ids.length };
    io.stdout(JSON.stringify(out) + "\n");
    return 0;
  }
  let s = "";
  for (const id of ids) s += pieceLine(id, tokenPiece(vocabulary.tokenizer, id));
  io.stdout(`${s}Total number of tokens: ${ids.length}\n`);
  return 0;
}

export function registerTokenize(program: Command, io: CliIo, setExit: (code: number) => void): void {
  program
    .command("tokenize")
    .description("token ids and pieces of a text, as llama.cpp's llama-tokenize prints them; reads the GGUF's header only (vocab-only files work)")
    .requiredOption("-m, --model <ref>", "a GGUF path, an http(s) URL or hf:owner/repo/file.gguf (full or vocab-only)")
    .option("--text <text>", "the text to tokenize")
    .option("-p, --prompt <text>", "the same as --text (llama-tokenize's name)")
    .option("-f, --file <path>", "read the text from a file (UTF-8, as is)")
    .option("--no-parse-special", "read special-token text such as <|endoftext|> as plain text (llama.cpp parse_special = false)")
    .option("--no-bos", "do not add BOS even where the model's add_bos_token asks for it")
    .option("--ids", "print only the ids, as [1, 2, 3]")
    .option("--json", "print { ids, pieces, count } only")
    .action(async (flags: TokenizeFlags) => {
      setExit(await tokenizeCommand(flags, io));
    });
}
