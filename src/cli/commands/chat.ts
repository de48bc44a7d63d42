// `kvbound chat --model M`: a REPL. Each stdin line is a user turn; the reply streams to stdout and
// a memory line (cache bytes, tokens held, evictions) follows on stderr. The GGUF's chat template
// is used when it has one, else plain continuation. Earlier turns stay in the cache, so a turn
// prefills only its new tokens. `/reset` starts over, `/exit` (or end of input) quits.

import { createInterface } from "node:readline";

import type { Command } from "commander";

import type { DoneEvent } from "../../engine/generate.js";
import { KvboundError } from "../../errors.js";
import type { ChatMessage } from "../../model/chat-template.js";
import { parseCount } from "../../plan/parse.js";
import { addCacheFlags, type RawCacheFlags } from "../cache-flags.js";
import type { CliIo } from "../main.js";
import { addSamplingFlags, loadModelForCli, memoryLine, samplerFromFlags, sessionFromFlags, tokensPerSecond, type SamplingFlags } from "./run.js";

export interface ChatFlags extends RawCacheFlags, SamplingFlags {
  model: string;
  maxTokens?: string;
  system?: string;
}

/** Default reply length: a few sentences; a turn never runs unbounded. */
export const DEFAULT_CHAT_MAX_TOKENS = 128;

/** Runs the REPL over `lines` (stdin by default) until they end or `/exit`. */
export async function chatCommand(flags: ChatFlags, io: CliIo, lines?: AsyncIterable<string>): Promise<number> {
  const sampling = samplerFromFlags(flags);
  const maxTokens = flags.maxTokens === undefined ? DEFAULT_CHAT_MAX_TOKENS : parseCount(flags.maxTokens, "max-tokens");
  const loaded = await loadModelForCli(flags.model, io, flags);
  const session = sessionFromFlags(loaded, flags);
  const tty = process.stdin.isTTY === true && lines === undefined;
  const mode = loaded.settings.chatTemplate !== undefined ? "chat template" : "plain continuation (the model has no chat template)";
  io.stderr(`kvbound chat: ${loaded.source}, ${mode}; window ${session.config.windowTokens} tokens (${session.config.policy.kind}, ${session.config.codec}). /reset starts over, /exit quits.\n`);
  const system: ChatMessage[] = flags.system !== undefined ? [{ role: "system", content: flags.system }] : [];
  let messages: ChatMessage[] = [...system];
  const input = lines ?? createInterface({ input: process.stdin, terminal: false });
  if (tty) io.stdout("> ");
  for await (const raw of input) {
    const line = raw.replace(/\r$/, "");
    if (line.trim() === "/exit" || line.trim() === "/quit") break;
    if (line.trim() === "/reset") {
      messages = [...system];
      session.reset();
      io.stderr(`[reset; ${memoryLine(session.stats())}]\n`);
    } else if (line.trim() !== "") {
      const turn: ChatMessage[] = [...messages, { role: "user", content: line }];
      let done: DoneEvent | undefined;
      try {
        for await (const ev of session.chat(turn, { ...sampling, maxTokens })) {
          if (ev.type === "token") io.stdout(ev.text);
          else {
            done = ev;
            io.stdout(ev.remainder + "\n");
          }
        }
      } catch (err) {
        // A turn that cannot run (the conversation outgrew the context window) is reported and the
        // REPL goes on; other errors end it.
        if (!(err instanceof KvboundError)) throw err;
        io.stderr(`error: ${err.name}: ${err.message}\n`);
        io.stderr("(the turn was dropped; /reset to start over, or run with --sliding-window N --sinks 4)\n");
      }
      if (done !== undefined) {
        messages = [...turn, { role: "assistant", content: done.text }];
        io.stderr(
          `[${memoryLine(done.stats)}; reused ${done.reusedTokens}, prefilled ${done.prefilledTokens} tokens; ` +
            `${tokensPerSecond(done.ids.length, done.decodeMs).toFixed(1)} tok/s; finish ${done.finishReason}]\n`,
        );
      }
    }
    if (tty) io.stdout("> ");
  }
  return 0;
}

export function registerChat(program: Command, io: CliIo, setExit: (code: number) => void): void {
  const cmd = program
    .command("chat")
    .description("chat with a model on stdin/stdout; the cache keeps earlier turns so each turn prefills only its new text")
    .requiredOption("--model <ref>", "a GGUF path, an http(s) URL or hf:owner/repo/file.gguf")
    .option("--max-tokens <n>", `tokens per reply at most (default ${DEFAULT_CHAT_MAX_TOKENS})`)
    .option("--system <text>", "a system message to open the conversation with");
  addSamplingFlags(cmd);
  addCacheFlags(cmd).action(async (flags: ChatFlags) => {
    setExit(await chatCommand(flags, io));
  });
}
