// The facts a benchmark table must carry to be comparable: CPU, cores, Node, date, command.

import os from "node:os";

export interface MachineInfo {
  readonly cpu: string;
  readonly cores: number;
  readonly memoryGiB: number;
  readonly platform: string;
  readonly node: string;
  readonly date: string;
  readonly command: string;
}

export function machineInfo(): MachineInfo {
  const cpus = os.cpus();
  return {
    cpu: cpus[0]?.model.trim() ?? "unknown",
    cores: cpus.length,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    platform: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    date: new Date().toISOString(),
    command: commandLine(),
  };
}

/** The command as a reader would type it (`npx tsx bench/model.ts --quick`), relative to the cwd. */
export function commandLine(): string {
  const script = process.argv[1] ?? "";
  const rel = script.startsWith(process.cwd() + "/") ? script.slice(process.cwd().length + 1) : script;
  return ["npx tsx", rel, ...process.argv.slice(2)].join(" ");
}

export function machineLines(m: MachineInfo, extra: readonly string[] = []): string {
  return [
    `- command: \`${m.command}\``,
    `- date: ${m.date}`,
    `- machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, ${m.platform}`,
    `- node: ${m.node}`,
    ...extra.map((e) => `- ${e}`),
  ].join("\n");
}
