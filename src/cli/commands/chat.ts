// `kvbound chat --model M`: a REPL as llama-cli and `ollama run` have it. On a terminal: line
// editing and history, "> " prompt, Ctrl-C stops a reply (twice at an empty prompt quits) and a
// live status line on the last row. On a pipe: one line per turn, no prompt, no escapes. Each reply
// streams to stdout; everything else goes to stderr. The session holds the conversation (each turn
// prefills only its new text) and nothing here grows with it. `/help` lists the commands.

import { readFile, writeFile } from "node:fs/promises";
import { createInterface, type Interface } from "node:readline";

import type { Command } from "commander";

import type { DoneEvent, TokenStats } from "../../engine/generate.js";
import { Session, type SessionOptions } from "../../engine/session.js";
import { InvalidSettingError, KvboundError, SessionFileError } from "../../errors.js";
import { parseCount } from "../../plan/parse.js";
import { addCacheFlags, type RawCacheFlags } from "../cache-flags.js";
import { addThreadsFlag, threadsFromFlags, type ThreadsFlags } from "../threads-flag.js";
import { addBackendFlag, backendDefaultCodec, backendFromFlags, type BackendFlags } from "../backend-flag.js";
import type { CliIo } from "../main.js";
import { runtimeCache } from "../runtime-cache.js";
import { addSamplingFlags, loadModelForCli, memoryLine, samplerFromFlags, tokensPerSecond, type SamplingFlags } from "./run.js";

export interface ChatFlags extends RawCacheFlags, SamplingFlags, ThreadsFlags, BackendFlags {
  model: string;
  maxTokens?: string;
  system?: string;
  keepSystem?: boolean;
  save?: string;
  resume?: string;
}

/** Default reply length: a few sentences; a turn never runs unbounded. */
export const DEFAULT_CHAT_MAX_TOKENS = 128;
/** Lines the terminal's up/down history keeps (readline's default is 30). */
export const CHAT_HISTORY_LINES = 500;
/** Keys typed while a reply streams, held for the prompt that follows; a paste beyond it is dropped. */
const MAX_HELD_KEYS = 4096;
/** How often the live status line is redrawn at most. */
const STATUS_INTERVAL_MS = 100;

export const CHAT_HELP = [
  "commands (a line that starts with // sends the rest, from its second slash, as text):",
  "  /help          this list",
  "  /reset         start a new conversation (drops what the cache holds)",
  "  /stats         cache bytes of the pool, tokens held, evicted, position",
  "  /save FILE     save the conversation (cache and all) to FILE; --resume FILE restores it",
  "  /exit, /quit   leave (so do Ctrl-D, end of input, and Ctrl-C twice at an empty prompt)",
  "Ctrl-C while a reply streams stops the reply; the conversation goes on.",
].join("\n");

/** What the REPL reads next: a line, the end of input, or Ctrl-C at an empty prompt. */
type ReplInput = { readonly kind: "line"; readonly text: string } | { readonly kind: "eof" } | { readonly kind: "interrupt" };

/** Where the lines come from: a terminal (line editing), a pipe, or a test's iterable. */
interface LineSource {
  next(): Promise<ReplInput>;
  /** While a reply streams: Ctrl-C calls `onInterrupt`. */
  beginReply(onInterrupt: () => void): void;
  endReply(): void;
  /** A SIGINT signal (not a key) while no reply streams. */
  signal(): void;
  close(): void;
}

/** Runs the REPL over `lines` (stdin by default) until they end or `/exit`. */
export async function chatCommand(flags: ChatFlags, io: CliIo, lines?: AsyncIterable<string>): Promise<number> {
  const { seed, ...sampling } = samplerFromFlags(flags);
  const threads = threadsFromFlags(flags);
  const backend = backendFromFlags(flags);
  const maxTokens = flags.maxTokens === undefined ? DEFAULT_CHAT_MAX_TOKENS : parseCount(flags.maxTokens, "max-tokens");
  checkKeepSystem(flags);
  const defaultCodec = backendDefaultCodec(backend);
  const { cacheInput, window } = await runtimeCache(flags.model, flags, io, defaultCodec !== undefined ? { defaultCodec } : {});
  const loaded = await loadModelForCli(flags.model, io, window, threads, backend);
  const sessionOpts: SessionOptions = {
    ...(flags.system !== undefined ? { system: flags.system } : {}),
    ...(flags.keepSystem === true ? { keepSystem: true } : {}),
  };
  // A resumed session must be given the cache flags it was saved with (restore names what differs).
  const session = flags.resume !== undefined ? Session.restore(loaded, await readSessionFile(flags.resume), cacheInput, sessionOpts) : new Session(loaded, cacheInput, sessionOpts);

  const mode = loaded.settings.chatTemplate !== undefined ? "chat template" : "plain continuation (the model has no chat template)";
  io.stderr(
    `kvbound chat: ${loaded.source}, ${mode}; window ${session.config.windowTokens} tokens (${session.config.policy.kind}, ${session.config.codec}). ` +
      `/help lists the commands, /exit quits.\n`,
  );
  if (flags.resume !== undefined) io.stderr(`[resumed ${flags.resume}; ${statsLine(session.stats())}]\n`);

  const onStdin = lines === undefined;
  const terminalOut = onStdin && process.stdin.isTTY === true ? (process.stdout.isTTY ? process.stdout : process.stderr.isTTY ? process.stderr : null) : null;
  const source: LineSource =
    lines !== undefined ? new IterableSource(lines) : terminalOut !== null ? new TerminalSource(process.stdin, terminalOut) : new PipeSource(process.stdin);
  // The status line is drawn on stderr's last row, which must be the terminal stdout streams to.
  const live = onStdin && process.stdout.isTTY === true && process.stderr.isTTY === true;

  let reply: AbortController | null = null;
  const onSigint = (): void => {
    if (reply !== null) reply.abort();
    else source.signal();
  };
  if (onStdin) process.on("SIGINT", onSigint);
  // A seed starts the PRNG afresh: given on the first turn and after /reset only, so a conversation
  // draws one stream of numbers as llama-cli's does. A resumed session goes on with its own.
  let seedNext = seed !== undefined && flags.resume === undefined;
  let armed = false;
  let code = 0;
  try {
    for (;;) {
      const input = await source.next();
      if (input.kind === "eof") break;
      if (input.kind === "interrupt") {
        if (armed) break;
        armed = true;
        io.stderr("(Ctrl-C again, Ctrl-D or /exit quits; Ctrl-C while a reply streams stops the reply)\n");
        continue;
      }
      armed = false;
      const line = input.text.replace(/\r$/, "");
      const trimmed = line.trim();
      if (trimmed.startsWith("/") && !trimmed.startsWith("//")) {
        const space = trimmed.search(/\s/);
        const name = space < 0 ? trimmed : trimmed.slice(0, space);
        const arg = space < 0 ? "" : trimmed.slice(space + 1).trim();
        if (name === "/exit" || name === "/quit") break;
        switch (name) {
          case "/help":
            io.stderr(CHAT_HELP + "\n");
            break;
          case "/reset":
            session.reset();
            seedNext = seed !== undefined;
            io.stderr(`[reset; ${memoryLine(session.stats())}]\n`);
            break;
          case "/stats":
            io.stderr(`[${statsLine(session.stats())}]\n`);
            break;
          case "/save":
            if (arg === "") io.stderr("usage: /save FILE\n");
            else {
              try {
                await writeFile(arg, await session.saveAsync());
                io.stderr(`[saved ${arg}]\n`);
              } catch (err) {
                io.stderr(errorLine(err));
              }
            }
            break;
          default:
            io.stderr(`unknown command ${name}: /help lists the commands; start the line with // to send it as text\n`);
        }
        continue;
      }
      // "//text" sends "/text".
      const content = trimmed.startsWith("//") ? line.replace("//", "/") : line;
      if (content.trim() === "") continue;

      const ac = new AbortController();
      reply = ac;
      source.beginReply(() => ac.abort());
      const status = live ? new LiveStatus(process.stderr) : null;
      let wrote = false;
      let done: DoneEvent | undefined;
      try {
        const opts = { ...sampling, ...(seedNext && seed !== undefined ? { seed } : {}), maxTokens, signal: ac.signal };
        let firstTokenAt = 0;
        for await (const ev of session.continueChat([{ role: "user", content }], opts)) {
          if (ev.type === "token") {
            io.stdout(ev.text);
            wrote ||= ev.text.length > 0;
            if (status !== null) {
              const t = performance.now();
              if (ev.index === 0) firstTokenAt = t;
              status.update(() => `${memoryLine(ev.stats)}; ${tokensPerSecond(ev.index, t - firstTokenAt).toFixed(1)} tok/s`);
            }
          } else {
            done = ev;
            io.stdout(ev.remainder + "\n");
          }
        }
      } catch (err) {
        // A turn that cannot run (the conversation outgrew the context window) is reported and the
        // REPL goes on; other errors end it. The user's text is never echoed to stdout.
        if (!(err instanceof KvboundError)) throw err;
        if (wrote) io.stdout("\n");
        status?.end();
        io.stderr(errorLine(err));
        io.stderr("(the turn was dropped; /reset to start over, or run with --sliding-window N --sinks 4)\n");
      } finally {
        status?.end();
        reply = null;
      }
      if (done !== undefined) {
        seedNext = false;
        io.stderr(
          `[${memoryLine(done.stats)}; reused ${done.reusedTokens}, prefilled ${done.prefilledTokens} tokens; ` +
            `${tokensPerSecond(done.ids.length, done.decodeMs).toFixed(1)} tok/s; finish ${done.finishReason}` +
            (done.finishReason === "abort" ? " (stopped; the conversation goes on)" : "") +
            "]\n",
        );
      }
      source.endReply();
    }
    if (flags.save !== undefined) {
      try {
        await writeFile(flags.save, await session.saveAsync());
        io.stderr(`[saved ${flags.save}]\n`);
      } catch (err) {
        io.stderr(errorLine(err));
        code = 1;
      }
    }
  } finally {
    if (onStdin) process.off("SIGINT", onSigint);
    // Closing the source lets go of stdin: the process exits as soon as the command returns.
    source.close();
  }
  return code;
}

/** --keep-system pins the system prompt as a prefix-recent policy's prefix: it needs both, and owns the policy. */
function checkKeepSystem(flags: ChatFlags): void {
  if (flags.keepSystem !== true) return;
  const refuse = (why: string, setting: string, value: unknown): never => {
    throw new InvalidSettingError(`--keep-system ${why}`, { setting, value });
  };
  if (flags.system === undefined) refuse("pins the system prompt in the cache: give one with --system TEXT", "system", undefined);
  if (flags.slidingWindow === undefined) {
    refuse("keeps the system prompt while a sliding window evicts older turns: add --sliding-window N (a context window never evicts)", "sliding-window", undefined);
  }
  for (const [flag, value] of [
    ["--policy", flags.policy],
    ["--prefix", flags.prefix],
    ["--sinks", flags.sinks],
  ] as const) {
    if (value !== undefined) {
      refuse(`makes the policy prefix-recent with the system prompt as its prefix: drop ${flag}`, flag.slice(2), value);
    }
  }
}

async function readSessionFile(file: string): Promise<Uint8Array> {
  try {
    return new Uint8Array(await readFile(file));
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new SessionFileError(`--resume ${file}: the file cannot be read (${why}); give a file that /save or --save wrote`, { field: "file", file });
  }
}

function statsLine(s: TokenStats): string {
  return `${memoryLine(s)}, position ${s.position}`;
}

function errorLine(err: unknown): string {
  return err instanceof Error ? `error: ${err.name}: ${err.message}\n` : `error: ${String(err)}\n`;
}

/** A test's lines (or any async iterable): no terminal, no signals. */
class IterableSource implements LineSource {
  private readonly it: AsyncIterator<string>;
  constructor(lines: AsyncIterable<string>) {
    this.it = lines[Symbol.asyncIterator]();
  }
  async next(): Promise<ReplInput> {
    const r = await this.it.next();
    return r.done === true ? { kind: "eof" } : { kind: "line", text: r.value };
  }
  beginReply(): void {}
  endReply(): void {}
  signal(): void {}
  close(): void {
    void this.it.return?.();
  }
}

/** Lines from a pipe or file: no prompt, no echo; a SIGINT between replies ends the input. */
class PipeSource implements LineSource {
  private readonly rl: Interface;
  private readonly it: AsyncIterator<string>;
  constructor(input: NodeJS.ReadableStream) {
    this.rl = createInterface({ input, terminal: false, crlfDelay: Infinity });
    this.it = this.rl[Symbol.asyncIterator]();
  }
  async next(): Promise<ReplInput> {
    const r = await this.it.next();
    return r.done === true ? { kind: "eof" } : { kind: "line", text: r.value };
  }
  beginReply(): void {}
  endReply(): void {}
  signal(): void {
    this.rl.close();
  }
  close(): void {
    this.rl.close();
    process.stdin.pause();
  }
}

type KeyListener = (s: string | undefined, key: { name?: string; ctrl?: boolean; sequence?: string } | undefined) => void;

/**
 * A terminal: readline with line editing, history and the "> " prompt. While a reply streams,
 * readline's key handler is set aside: Ctrl-C (a key in raw mode, not a signal) stops the reply,
 * other keys are held and replayed at the next prompt (type-ahead), so nothing is echoed into the
 * reply. Lines that arrive together (a paste) queue up.
 */
class TerminalSource implements LineSource {
  private readonly rl: Interface;
  private readonly queue: ReplInput[] = [];
  private waiter: ((x: ReplInput) => void) | null = null;
  private closed = false;
  private saved: KeyListener[] = [];
  private held: Parameters<KeyListener>[] = [];
  private onKey: KeyListener | null = null;

  constructor(
    private readonly input: NodeJS.ReadStream,
    output: NodeJS.WriteStream,
  ) {
    this.rl = createInterface({ input, output, terminal: true, prompt: "> ", historySize: CHAT_HISTORY_LINES, removeHistoryDuplicates: true });
    this.rl.on("line", (text) => this.push({ kind: "line", text }));
    this.rl.on("close", () => {
      this.closed = true;
      this.push({ kind: "eof" });
    });
    this.rl.on("SIGINT", () => {
      // With text on the line, Ctrl-C drops it (as a shell does); on an empty line it may quit.
      if (this.rl.line.length > 0) {
        this.rl.write(null, { ctrl: true, name: "e" });
        output.write("^C\n");
        this.rl.write(null, { ctrl: true, name: "u" });
      } else {
        output.write("^C\n");
        this.push({ kind: "interrupt" });
      }
    });
  }

  next(): Promise<ReplInput> {
    const queued = this.queue.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    if (this.closed) return Promise.resolve({ kind: "eof" });
    this.rl.prompt(true);
    return new Promise((resolve) => (this.waiter = resolve));
  }

  beginReply(onInterrupt: () => void): void {
    if (this.closed) return;
    this.saved = this.input.listeners("keypress") as KeyListener[];
    for (const l of this.saved) this.input.off("keypress", l);
    this.held = [];
    this.onKey = (s, key) => {
      if ((key?.ctrl === true && key.name === "c") || s === "\u0003") onInterrupt();
      else if (this.held.length < MAX_HELD_KEYS) this.held.push([s, key]);
    };
    this.input.on("keypress", this.onKey);
  }

  endReply(): void {
    if (this.onKey === null) return;
    this.input.off("keypress", this.onKey);
    this.onKey = null;
    for (const l of this.saved) this.input.on("keypress", l);
    const held = this.held;
    this.held = [];
    if (held.length === 0 || this.closed) return;
    this.rl.prompt(true);
    for (const args of held) for (const l of this.saved) l(...args);
  }

  signal(): void {
    this.push({ kind: "interrupt" });
  }

  close(): void {
    this.endReply();
    this.rl.close();
    this.input.pause();
  }

  private push(x: ReplInput): void {
    const w = this.waiter;
    if (w !== null) {
      this.waiter = null;
      w(x);
    } else this.queue.push(x);
  }
}

const ESC = "\u001b";

/**
 * The terminal's last row as a status line while a reply streams, the rows above it a scroll region
 * (apt's progress line does the same): the reply scrolls, the status stays, and the row is cleared
 * and the region reset when the reply ends.
 */
class LiveStatus {
  private rows = 0;
  private lastDraw = 0;
  private ended = false;
  private readonly restore = (): void => this.end();

  constructor(private readonly out: NodeJS.WriteStream) {
    const rows = out.rows ?? 0;
    if (rows < 3) return;
    this.rows = rows;
    // Move down a row and back so the cursor is not on the last row, which leaves the region.
    out.write(`\n${ESC}7${ESC}[1;${rows - 1}r${ESC}8${ESC}[1A`);
    process.once("exit", this.restore);
  }

  update(text: () => string): void {
    if (this.rows === 0 || this.ended) return;
    if ((this.out.rows ?? 0) !== this.rows) {
      // A resize moved the last row: give the region back and draw no more this reply.
      this.end();
      return;
    }
    const t = performance.now();
    if (t - this.lastDraw < STATUS_INTERVAL_MS) return;
    this.lastDraw = t;
    const width = Math.max(1, (this.out.columns ?? 80) - 1);
    this.out.write(`${ESC}7${ESC}[${this.rows};1H${ESC}[2K${text().slice(0, width)}${ESC}8`);
  }

  end(): void {
    if (this.ended) return;
    this.ended = true;
    process.off("exit", this.restore);
    if (this.rows === 0) return;
    this.out.write(`${ESC}7${ESC}[${this.rows};1H${ESC}[2K${ESC}[r${ESC}8`);
  }
}

export function registerChat(program: Command, io: CliIo, setExit: (code: number) => void): void {
  const cmd = program
    .command("chat")
    .description("chat with a model on stdin/stdout; the cache keeps earlier turns so each turn prefills only its new text")
    .requiredOption("--model <ref>", "a GGUF path, an http(s) URL or hf:owner/repo/file.gguf")
    .option("--max-tokens <n>", `tokens per reply at most (default ${DEFAULT_CHAT_MAX_TOKENS})`)
    .option("--system <text>", "a system message to open the conversation with")
    .option("--keep-system", "pin the system message in the cache while a --sliding-window evicts older turns (prefix-recent with the system message as prefix)")
    .option("--save <file>", "save the conversation to <file> on exit (resume it with --resume)")
    .option("--resume <file>", "restore a conversation saved with --save or /save, then go on");
  addSamplingFlags(cmd);
  addThreadsFlag(cmd);
  addBackendFlag(cmd);
  addCacheFlags(cmd, { runtimeBudget: true }).action(async (flags: ChatFlags) => {
    setExit(await chatCommand(flags, io));
  });
}
