#!/usr/bin/env -S MALLOC_ARENA_MAX=2 node --max-semi-space-size=1
// The `kvbound` command line: wires commander to the commands in ./commands and turns every
// failure into one line on stderr and an exit code: 1 for a typed kvbound error (bad model, bad
// setting), 2 for a usage error (unknown flag or command). `main` runs in-process for tests.
//
// The shebang sizes the JS runtime for an engine whose memory lives in ArrayBuffers and wasm:
// V8's young generation stays at 1 MiB semi-spaces (by default it grows to 16 MiB ones, up to
// ~14 MiB more RSS on a SmolLM2-135M bench for garbage that needs none; `kvbound tokenize` of an
// 800 KB text was faster pinned, 10.2 s vs 12.3 s), and glibc keeps 2 malloc arenas instead of one
// per thread that ever allocated (V8's compiler threads each leave theirs at its high-water mark:
// ~3 MiB). Measured with bench/load-rss.ts, which runs its child with these same settings.

import { realpathSync } from "node:fs";
import { pathToFileURL } from "node:url";

import { Command, CommanderError } from "commander";

import { KvboundError } from "../errors.js";
import { fitCommand, type FitFlags } from "./commands/fit.js";
import { planCommand, type PlanFlags } from "./commands/plan.js";
import { registerBench } from "./commands/bench.js";
import { registerChat } from "./commands/chat.js";
import { registerEval } from "./commands/eval.js";
import { registerPpl } from "./commands/ppl.js";
import { registerRun } from "./commands/run.js";
import { listCommand, rankCommand, type RankFlags } from "./commands/rank.js";
import { registerServe } from "./commands/serve.js";
import { registerTokenize } from "./commands/tokenize.js";
import { addSettingOptions } from "./options.js";

/** Where the CLI writes, and what it may reach: tests pass collectors and a local fetch. */
export interface CliIo {
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
  /** fetch used for http(s) model URLs (default: the global fetch). */
  readonly fetch?: typeof fetch;
}

export const EXIT_OK = 0;
export const EXIT_ERROR = 1;
export const EXIT_USAGE = 2;

const VERSION = "0.1.0";

function buildProgram(io: CliIo, setExit: (code: number) => void): Command {
  const program = new Command("kvbound")
    .description("exact KV-cache, weights and compute memory for local LLM inference, per engine")
    .version(VERSION)
    .exitOverride()
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr })
    .showHelpAfterError("(run kvbound --help for usage)");

  const plan = program
    .command("plan")
    .description(
      "memory plan for one model (GGUF file or URL, GGUF metadata .json, HF config.json, or registry id); " +
        "without a model: the built-in models on this machine's memory",
    )
    .argument("[model]", "path, URL or registry id (kvbound rank lists ids)");
  addSettingOptions(plan)
    .option("--budget <bytes>", "memory to fit in: 8GiB, 24GB, 16G (vLLM: the GPU's memory)")
    .option("--json", "print the MemoryPlan JSON object only")
    .option("--export <target>", "print the settings for llama.cpp, vllm, webllm, node-llama-cpp, ollama or mlx")
    .action(async (model: string | undefined, flags: PlanFlags) => {
      setExit(await planCommand(model, flags, io));
    });

  const fit = program
    .command("fit")
    .description("largest context that fits per KV type and with a sliding window; with --ctx, the cheapest settings")
    .argument("<model>", "path, URL or registry id");
  addSettingOptions(fit)
    .option("--budget <bytes>", "memory to fit in: 8GiB, 24GB, 16G (required unless --gpu gives the devices)")
    .option("--json", "print JSON only")
    .action(async (model: string, flags: FitFlags) => {
      setExit(await fitCommand(model, flags, io));
    });

  const rank = program
    .command("rank")
    .description("registry models that fit a budget at a context, best first; the others demoted with the reason");
  addSettingOptions(rank, { withCtx: false })
    .requiredOption("--budget <bytes>", "memory to fit in: 8GiB, 24GB, 16G")
    .option("--ctx <tokens>", "context length to hold", "32k")
    .option("--json", "print JSON only")
    .action(async (flags: RankFlags) => {
      setExit(await rankCommand(flags, io));
    });

  program
    .command("list")
    .description("the built-in registry: model ids, sizes and quantizations")
    .option("--json", "print JSON only")
    .action((flags: { json?: boolean }) => {
      setExit(listCommand(flags, io));
    });

  registerPpl(program, io, setExit);
  registerRun(program, io, setExit);
  registerChat(program, io, setExit);
  registerBench(program, io, setExit);
  registerEval(program, io, setExit);
  registerTokenize(program, io, setExit);

  registerServe(program, io, setExit);

  return program;
}

/** One line a user can act on: `error: <ErrorName>: <message>`. */
export function formatError(err: unknown): string {
  if (err instanceof Error) return `error: ${err.name}: ${err.message}\n`;
  return `error: ${String(err)}\n`;
}

/**
 * Runs the CLI on `argv` (the arguments after the program name) and resolves to the exit code.
 * Never throws and never calls process.exit: the caller decides.
 */
export async function main(argv: readonly string[], io: CliIo = processIo()): Promise<number> {
  let exitCode = EXIT_OK;
  const program = buildProgram(io, (code) => {
    exitCode = code;
  });
  if (argv.length === 0) {
    io.stdout(program.helpInformation());
    return EXIT_USAGE;
  }
  try {
    await program.parseAsync([...argv], { from: "user" });
    return exitCode;
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help / --version end through exitOverride too, with exit code 0; commander has already
      // written its own message for usage errors.
      if (err.exitCode === 0) return EXIT_OK;
      return EXIT_USAGE;
    }
    io.stderr(formatError(err));
    if (err instanceof KvboundError) return EXIT_ERROR;
    // Not a typed error: a bug in kvbound or the platform; keep the stack for the report.
    if (err instanceof Error && err.stack && process.env.KVBOUND_DEBUG) io.stderr(`${err.stack}\n`);
    return EXIT_ERROR;
  }
}

function processIo(): CliIo {
  return {
    stdout: (text) => void process.stdout.write(text),
    stderr: (text) => void process.stderr.write(text),
  };
}

// Run only when executed (bin, `tsx src/cli/main.ts`), not when a test imports `main`. npm's bin
// is a symlink, so compare real paths.
function isEntryPoint(): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return pathToFileURL(realpathSync(script)).href === import.meta.url;
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  // `kvbound plan | head`: a reader that closes the pipe early is not an error.
  process.stdout.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(process.exitCode ?? 0);
    throw err;
  });
  const code = await main(process.argv.slice(2));
  // Let stdout drain (a pipe to `head`/`jq`) before exiting with the code.
  process.exitCode = code;
}
