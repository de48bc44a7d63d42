// `kvbound tokenize` end to end. The acceptance test runs every string of llama.cpp's tokenizer test
// pairs (../shared/vocab, vocabularies "llama" and "gpt2", and Llama 3 rebuilt from llama-bpe/)
// through `tokenize --no-parse-special --json` and compares the ids with the ids Hugging Face gave
// (llama.cpp tests/test-tokenizer-0 checks the same files with add_special = false, parse_special = false).

import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { runCli as run } from "./helpers/cli.js";
import { requireShared, sharedPath } from "./helpers/shared.js";
import { LLAMA3_ENCODER, LLAMA3_MERGES, LLAMA3_PAIR, llama3VocabGguf, readVocabPair, VOCAB_PAIRS } from "./helpers/vocab.js";

const execFileAsync = promisify(execFile);
const REPO = fileURLToPath(new URL("..", import.meta.url));


interface TokenizeJson {
  ids: number[];
  pieces: string[];
  count: number;
}

async function tokenizeJson(...argv: string[]): Promise<TokenizeJson> {
  const r = await run("tokenize", ...argv, "--json");
  expect(r.err).toBe("");
  expect(r.code).toBe(0);
  const parsed = JSON.parse(r.out) as TokenizeJson;
  expect(Object.keys(parsed)).toEqual(["ids", "pieces", "count"]);
  expect(parsed.count).toBe(parsed.ids.length);
  expect(parsed.pieces).toHaveLength(parsed.ids.length);
  return parsed;
}

let dir = "";
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "kvbound-tokenize-"));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Each text in its own file: --file passes it byte for byte (leading dashes, newlines, "" included). */
function writeTexts(name: string, texts: readonly string[]): string[] {
  return texts.map((t, i) => {
    const path = join(dir, `${name}-${i}.txt`);
    writeFileSync(path, t);
    return path;
  });
}

/** Runs every string of a pair through the CLI and lists every string whose ids differ. */
async function checkPair(name: string, model: string, pairRel: string, addBos: boolean, bosId: number): Promise<void> {
  const pair = readVocabPair(pairRel);
  expect(pair.texts).toHaveLength(46);
  const files = writeTexts(name, pair.texts);
  const failures: string[] = [];
  for (let i = 0; i < files.length; i++) {
    const { ids } = await tokenizeJson("--model", model, "--file", files[i]!, "--no-parse-special");
    // The .out ids have no BOS; the CLI adds it where the model's add_bos says so, as llama-tokenize.
    const expected = addBos ? [bosId, ...pair.ids[i]!] : [...pair.ids[i]!];
    if (JSON.stringify(ids) !== JSON.stringify(expected)) failures.push(`#${i} ${JSON.stringify(pair.texts[i])}: got ${ids.join(" ")}, want ${expected.join(" ")}`);
  }
  expect(failures, `${name}: ${files.length - failures.length}/${files.length} strings match`).toEqual([]);
}

// BOS ids from the vocabulary table in ../shared/vocab/README.md.
const BOS: Readonly<Record<string, number>> = {
  "llama-spm": 1,
  "phi-3": 1,
  "deepseek-coder": 32013,
  "deepseek-llm": 100000,
};

describe("kvbound tokenize: llama.cpp's tokenizer test pairs, 46/46 strings each", () => {
  for (const v of VOCAB_PAIRS) {
    const have = requireShared(v.file) && requireShared(`${v.file}.inp`) && requireShared(`${v.file}.out`);
    it.skipIf(!have)(`${v.name}`, async () => {
      await checkPair(v.name, sharedPath(v.file), v.file, v.addBos, BOS[v.name] ?? -1);
    }, 60_000);
  }

  const haveLlama3 = requireShared(LLAMA3_ENCODER) && requireShared(LLAMA3_MERGES) && requireShared(`${LLAMA3_PAIR}.inp`) && requireShared(`${LLAMA3_PAIR}.out`);
  it.skipIf(!haveLlama3)("llama-bpe (Llama 3, built from encoder.json + vocab.bpe)", async () => {
    const path = join(dir, "llama3-vocab.gguf");
    writeFileSync(path, llama3VocabGguf());
    await checkPair("llama-bpe", path, LLAMA3_PAIR, true, 128_000);
    // Parsing specials (the default) makes <|eot_id|> one control token; --no-parse-special reads its text.
    expect((await tokenizeJson("--model", path, "--text", "Hi<|eot_id|>", "--no-bos")).ids).toEqual([13347, 128_009]);
    const literal = await tokenizeJson("--model", path, "--text", "Hi<|eot_id|>", "--no-bos", "--no-parse-special");
    expect(literal.ids).not.toContain(128_009);
    expect(literal.pieces.join("")).toBe("Hi<|eot_id|>");
  }, 120_000);
});

const GPT2 = "vocab/ggml-vocab-gpt-2.gguf";
const SPM = "vocab/ggml-vocab-llama-spm.gguf";
const haveGpt2 = requireShared(GPT2);
const haveSpm = requireShared(SPM);

describe("kvbound tokenize: output and flags", () => {
  it.skipIf(!haveSpm)("prints `%6d -> 'piece'` lines and the count, as llama-tokenize; BOS per add_bos_token", async () => {
    const r = await run("tokenize", "-m", sharedPath(SPM), "-p", "Hello world");
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    // llama-spm: add_bos_token true, BOS 1 printed as its text (token_to_piece with special = true).
    expect(r.out).toBe("     1 -> '<s>'\n 15043 -> ' Hello'\n  3186 -> ' world'\nTotal number of tokens: 3\n");
    expect((await run("tokenize", "-m", sharedPath(SPM), "--text", "Hello world", "--no-bos", "--ids")).out).toBe("[15043, 3186]\n");
  });

  it.skipIf(!haveSpm)("SentencePiece: <s> in the text is BOS unless --no-parse-special; a raw fragment after a special gets the dummy space", async () => {
    expect((await tokenizeJson("-m", sharedPath(SPM), "--text", "<s>Hello", "--no-bos")).ids).toEqual([1, 15043]);
    const literal = await tokenizeJson("-m", sharedPath(SPM), "--text", "<s>Hello", "--no-bos", "--no-parse-special");
    expect(literal.ids).not.toContain(1);
    expect(literal.pieces.join("")).toBe(" <s>Hello");
  });

  it.skipIf(!haveGpt2)("byte-level BPE: <|endoftext|> is one token, or text with --no-parse-special; pieces that split a character", async () => {
    // gpt-2: no add_bos_token and pre "gpt-2", so no BOS (llama.cpp's default for it).
    const special = await tokenizeJson("-m", sharedPath(GPT2), "--text", "a<|endoftext|>");
    expect(special).toEqual({ ids: [64, 50256], pieces: ["a", "<|endoftext|>"], count: 2 });
    const literal = await tokenizeJson("-m", sharedPath(GPT2), "--text", "a<|endoftext|>", "--no-parse-special");
    expect(literal.ids).not.toContain(50256);
    expect(literal.pieces.join("")).toBe("a<|endoftext|>");
    // "🦙" is 4 bytes that gpt-2 spells as byte tokens; no single piece is valid UTF-8.
    const human = await run("tokenize", "-m", sharedPath(GPT2), "--text", "🦙");
    expect(human.out).toMatch(/^ +\d+ -> '<f0 9f>' \(UTF-8 decode failure\)\n/);
    expect(human.out).toMatch(/Total number of tokens: \d+\n$/);
    const json = await tokenizeJson("-m", sharedPath(GPT2), "--text", "🦙");
    expect(json.pieces.every((p) => /^\uFFFD+$/.test(p))).toBe(true);
  });

  it.skipIf(!haveGpt2)("refuses a missing text, two texts, --ids with --json, and a missing file, with typed errors (exit 1)", async () => {
    const none = await run("tokenize", "-m", sharedPath(GPT2));
    expect(none.code).toBe(1);
    expect(none.err).toMatch(/^error: InvalidSettingError: tokenize needs a text/);
    const two = await run("tokenize", "-m", sharedPath(GPT2), "--text", "a", "--file", "b.txt");
    expect(two.code).toBe(1);
    expect(two.err).toMatch(/InvalidSettingError: pass only one of --text, --prompt and --file/);
    expect((await run("tokenize", "-m", sharedPath(GPT2), "--text", "a", "--ids", "--json")).err).toMatch(/InvalidSettingError: pass one of --ids and --json/);
    const missing = await run("tokenize", "-m", sharedPath(GPT2), "--file", join(dir, "nope.txt"));
    expect(missing.code).toBe(1);
    expect(missing.err).toMatch(/InvalidSettingError: --file .*nope\.txt does not exist/);
  });

  it("refuses a missing model, an unsupported vocabulary and an unknown flag as the other commands do", async () => {
    const noModel = await run("tokenize", "-m", join(dir, "none.gguf"), "--text", "a");
    expect(noModel.code).toBe(1);
    expect(noModel.err).toMatch(/^error: UnknownModelError: /);
    if (requireShared("vocab/ggml-vocab-bert-bge.gguf")) {
      const bert = await run("tokenize", "-m", sharedPath("vocab/ggml-vocab-bert-bge.gguf"), "--text", "a");
      expect(bert.code).toBe(1);
      expect(bert.err).toMatch(/^error: UnsupportedTokenizerError: tokenizer\.ggml\.model "bert"/);
    }
    const usage = await run("tokenize", "-m", "x.gguf", "--text", "a", "--bogus");
    expect(usage.code).toBe(2);
    const noFlag = await run("tokenize", "--text", "a");
    expect(noFlag.code).toBe(2);
  });

  it("reads the header of a full model without building it (stories260K)", async () => {
    if (!requireShared("models/stories260K.gguf")) return;
    const r = await tokenizeJson("--model", sharedPath("models/stories260K.gguf"), "--text", "Once upon a time");
    expect(r.ids[0]).toBe(1);
    expect(r.pieces.slice(1).join("")).toBe(" Once upon a time");
  });

  it.skipIf(!haveGpt2)("runs as a child process (`tsx src/cli/main.ts tokenize`)", async () => {
    const { stdout } = await execFileAsync("npx", ["tsx", "src/cli/main.ts", "tokenize", "--model", sharedPath(GPT2), "--text", "Hello world", "--json"], {
      cwd: REPO,
      timeout: 30_000,
    });
    expect(JSON.parse(stdout)).toEqual({ ids: [15496, 995], pieces: ["Hello", " world"], count: 2 });
  }, 40_000);
});
