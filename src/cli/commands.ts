/**
 * The command table: each command's name, summary, usage, flags and handler. Dispatch, the
 * parser's options and both helps (`stowage --help`, `stowage <command> --help`) are generated
 * from it, so the help cannot disagree with what the parser takes.
 */
import { parseArgs } from "node:util";
import { VERSION } from "../core/version.js";
import type { StowageConfig } from "../jobs/config.js";
import { loadConfig } from "./config.js";
import { FLAGS, type FlagSpec, type Flags, parseOptions } from "./flags.js";
import { EXIT, type Io, print, reportError, UsageError } from "./output.js";

export interface Command {
  name: string;
  /** One line for the global help. */
  summary: string;
  /** What follows `stowage <name>` in the usage line. */
  usage: string;
  flags: readonly FlagSpec[];
  /** How many arguments follow the command's name, handed over as `flags.positionals`. @default 0 */
  positionals?: number;
  /** Resolves to the exit code; `load` loads the config module (keygen needs none). */
  handler(flags: Flags, io: Io, load: () => Promise<StowageConfig>): Promise<number>;
}

/**
 * A handler whose module is imported only when its command runs, so that a command started often
 * (`wal-push` runs once per WAL segment) loads neither the others nor what they need.
 */
function lazy<K extends string>(
  load: () => Promise<Record<K, Command["handler"]>>,
  name: K,
): Command["handler"] {
  return async (flags, io, config) => (await load())[name](flags, io, config);
}

const progressFlags = [FLAGS.progress, FLAGS.noProgress, FLAGS.progressInterval];

export const COMMANDS: readonly Command[] = [
  {
    name: "run",
    summary: "run every job (or --job ...): backup, copies, retention, validation",
    usage: "[--job <name>]... [options]",
    flags: [
      FLAGS.config,
      FLAGS.job,
      FLAGS.json,
      ...progressFlags,
      { name: "prune", type: "boolean", default: true, hidden: true, description: "apply retention" },
      { name: "no-prune", type: "boolean", default: false, description: "skip retention" },
      {
        name: "concurrency",
        type: "string",
        value: "<n>",
        description: "jobs at once (default: the config's concurrency)",
      },
    ],
    handler: lazy(() => import("./run.js"), "runCommand"),
  },
  {
    name: "verify",
    summary: "re-read the latest backup of each job in each sink and check it (--all: every backup)",
    usage: "[--job <name>]... [--from <copy>] [--all] [--chain] [options]",
    flags: [
      FLAGS.config,
      FLAGS.job,
      FLAGS.json,
      FLAGS.from,
      { name: "all", type: "boolean", default: false, description: "every backup, not only the latest" },
      {
        name: "chain",
        type: "boolean",
        default: false,
        description: "also every backup an incremental depends on, up to its full",
      },
      ...progressFlags,
    ],
    handler: lazy(() => import("./verify.js"), "verifyCommand"),
  },
  {
    name: "status",
    summary: "the status report (--json, or --prometheus for the exposition text)",
    usage: "[--job <name>]... [--json | --prometheus]",
    flags: [
      FLAGS.config,
      FLAGS.job,
      FLAGS.json,
      { name: "prometheus", type: "boolean", default: false, description: "Prometheus exposition text" },
    ],
    handler: lazy(() => import("./status.js"), "statusCommand"),
  },
  {
    name: "restore",
    summary: "restore a job's latest backup (--at <time>) to --out <file|-> or --extract <dir>",
    usage: "--job <name> (--out <file|-> | --extract <dir>) [--at <time>] [--from <copy>] [options]",
    flags: [
      FLAGS.config,
      FLAGS.jobOne,
      FLAGS.json,
      {
        name: "out",
        type: "string",
        short: "o",
        value: "<file|->",
        description: "write the plain bytes to this file (- for stdout)",
      },
      {
        name: "extract",
        type: "string",
        value: "<dir>",
        description: "unpack a tar backup into this folder",
      },
      {
        name: "at",
        type: "string",
        value: "<time>",
        description: "the latest backup at or before this time",
      },
      FLAGS.from,
      {
        name: "force",
        type: "boolean",
        default: false,
        description: "replace an existing --out file (atomically, once the restore is whole)",
      },
      ...progressFlags,
    ],
    handler: lazy(() => import("./restore.js"), "restoreCommand"),
  },
  {
    name: "prune",
    summary: "apply retention now (--dry-run to only show what would go)",
    usage: "[--job <name>]... [--dry-run] [options]",
    flags: [
      FLAGS.config,
      FLAGS.job,
      FLAGS.json,
      { name: "dry-run", type: "boolean", default: false, description: "only show what would be deleted" },
    ],
    handler: lazy(() => import("./prune.js"), "pruneCommand"),
  },
  {
    name: "drill",
    summary: "restore drill of a job into its scratch target (--report <file> writes the JSON)",
    usage: "[--job <name>]... [--from <copy>] [--report <file>] [options]",
    flags: [
      FLAGS.config,
      FLAGS.job,
      FLAGS.json,
      FLAGS.from,
      { name: "report", type: "string", value: "<file>", description: "write the drill report (JSON) here" },
    ],
    handler: lazy(() => import("./drill.js"), "drillCommand"),
  },
  {
    name: "keygen",
    summary:
      "a new key pair for write-only backups, or with --signing a manifest signing key (--out <file> keeps the secret out of stdout)",
    usage: "[--signing] [--out <file>] [--json]",
    flags: [
      FLAGS.json,
      {
        name: "signing",
        type: "boolean",
        description: "an Ed25519 signing key (backup host) and its verify key (restore hosts)",
      },
      {
        name: "out",
        type: "string",
        short: "o",
        value: "<file>",
        description: "write the identity to this new file (mode 0600), never replacing one",
      },
    ],
    handler: lazy(() => import("./keygen.js"), "keygenCommand"),
  },
  // PostgreSQL point-in-time recovery: archive_command and restore_command.
  {
    name: "wal-push",
    summary: "archive_command: store one WAL file (%p) through the job's transforms",
    usage: "<path> --job <name> [--config <file>] [--ahead <n>]",
    positionals: 1,
    flags: [
      FLAGS.config,
      FLAGS.jobOne,
      {
        name: "ahead",
        type: "string",
        value: "<n>",
        description:
          "also archive up to n (at most 16) finished segments after this one, so PostgreSQL's next pushes find them archived",
      },
      FLAGS.json,
    ],
    handler: lazy(() => import("./wal.js"), "walPushCommand"),
  },
  {
    name: "wal-fetch",
    summary: "restore_command: fetch one WAL file (%f) to %p; exit 1: not archived, 126: failed",
    usage: "<name> <dest> --job <name> [--config <file>]",
    positionals: 2,
    flags: [FLAGS.config, FLAGS.jobOne, FLAGS.json],
    handler: lazy(() => import("./wal.js"), "walFetchCommand"),
  },
];

const GLOBAL = [FLAGS.help, FLAGS.version];

const EXIT_TEXT = `Exit codes: 0 all good, 1 some job failed, 2 bad command line or config.
With --json, a failure is printed as {"ok": false, "error": {"code", "message", ...}}.
`;

function flagLines(specs: readonly FlagSpec[]): string {
  const rows = specs
    .filter((s) => !s.hidden)
    .map((s) => {
      const head = `${s.short ? `-${s.short}, ` : "    "}--${s.name}${s.value ? ` ${s.value}` : ""}`;
      const fallback = s.type === "string" && s.default !== undefined ? ` (default: ${s.default})` : "";
      return [head, `${s.description}${fallback}`] as const;
    });
  const width = Math.max(...rows.map(([head]) => head.length)) + 2;
  return rows.map(([head, text]) => `  ${head.padEnd(width)}${text}`).join("\n");
}

/** `stowage --help`: every command and the flags they share. */
export function globalHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length)) + 2;
  return `stowage ${VERSION} — automated, verifiable backups

Usage: stowage <command> [options]
       stowage <command> --help   the command's own flags

Commands:
${COMMANDS.map((c) => `  ${c.name.padEnd(width)}${c.summary}`).join("\n")}

Options:
${flagLines([FLAGS.config, FLAGS.job, FLAGS.json, ...GLOBAL])}

${EXIT_TEXT}`;
}

/** `stowage <command> --help`: its usage and exactly the flags it takes. */
export function commandHelp(command: Command): string {
  return `stowage ${command.name} — ${command.summary}

Usage: stowage ${command.name} ${command.usage}

Options:
${flagLines([...command.flags, FLAGS.help])}

${EXIT_TEXT}`;
}

/** Every flag of every command, once by name: enough to find the command among the arguments. */
function allFlags(): FlagSpec[] {
  const byName = new Map<string, FlagSpec>();
  for (const spec of [...COMMANDS.flatMap((c) => c.flags), ...GLOBAL]) byName.set(spec.name, spec);
  return [...byName.values()];
}

function parse(argv: string[], specs: readonly FlagSpec[]) {
  try {
    const parsed = parseArgs({
      args: argv,
      options: parseOptions(specs),
      allowPositionals: true,
      strict: true,
    });
    return { flags: parsed.values as Flags, positionals: parsed.positionals };
  } catch (error) {
    const unknown = /^Unknown option '([^']+)'/.exec((error as Error).message)?.[1];
    if (unknown === undefined) throw new UsageError((error as Error).message);
    const near = closestFlag(unknown, specs);
    throw new UsageError(`unknown option ${unknown}${near ? ` (did you mean --${near}?)` : ""}`);
  }
}

/** The flag name nearest to a mistyped one (edit distance at most 2), for a usage error. */
function closestFlag(given: string, specs: readonly FlagSpec[]): string | undefined {
  const name = given.replace(/^-+/, "").split("=")[0]!;
  let best: { name: string; distance: number } | undefined;
  for (const spec of specs) {
    const distance = editDistance(name, spec.name);
    if (distance <= 2 && (!best || distance < best.distance)) best = { name: spec.name, distance };
  }
  return best?.name;
}

function editDistance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) {
      next[j] = Math.min(row[j]! + 1, next[j - 1]! + 1, row[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    row = next;
  }
  return row[b.length]!;
}

/**
 * Runs the CLI with the given arguments and streams; resolves to the exit code. Embeddable and
 * testable: it neither exits the process nor installs handlers (the bin does).
 */
export async function main(argv: string[], io: Io): Promise<number> {
  let flags: Flags;
  let name: string | undefined;
  try {
    // First with every command's flags, to find the command wherever it stands among them.
    const first = parse(argv, allFlags());
    flags = first.flags;
    [name] = first.positionals;
    const takes = COMMANDS.find((c) => c.name === name)?.positionals ?? 0;
    if (first.positionals.length > 1 + takes) {
      throw new UsageError(`unexpected argument ${first.positionals[1 + takes]}`);
    }
  } catch (error) {
    // A command named among the arguments gets its own help, which lists the flags it takes.
    const commandArg = argv.find((arg) => COMMANDS.some((c) => c.name === arg));
    const named = COMMANDS.find((c) => c.name === commandArg);
    const prefix = named ? `stowage ${named.name}` : "stowage";
    io.stderr.write(`${prefix}: ${(error as Error).message}\n\n${named ? commandHelp(named) : globalHelp()}`);
    return usageJson(argv, (error as Error).message, io);
  }
  if (flags.version) {
    print(io, VERSION);
    return EXIT.ok;
  }
  if (!name) {
    (flags.help ? io.stdout : io.stderr).write(globalHelp());
    return flags.help ? EXIT.ok : EXIT.badConfig;
  }
  const command = COMMANDS.find((c) => c.name === name);
  if (!command) {
    io.stderr.write(`stowage: unknown command ${name}\n\n${globalHelp()}`);
    return usageJson(argv, `unknown command ${name}`, io);
  }
  if (flags.help) {
    io.stdout.write(commandHelp(command));
    return EXIT.ok;
  }
  try {
    // Then with the command's own: a flag it does not take is a usage error, as its help says.
    const own = parse(argv, [...command.flags, ...GLOBAL]);
    flags = own.flags;
    if (command.positionals) flags.positionals = own.positionals.slice(1);
  } catch (error) {
    io.stderr.write(`stowage ${command.name}: ${(error as Error).message}\n\n${commandHelp(command)}`);
    return usageJson(argv, (error as Error).message, io);
  }
  const config = flags.config;
  try {
    return await command.handler(flags, io, () => loadConfig(config, io.cwd));
  } catch (error) {
    return await reportError(error, command.name, flags, io);
  }
}

/**
 * A command line that could not be parsed still honours `--json` (a script reads stdout): the same
 * `{ ok: false, error }` as every other failure, code USAGE. Exit 2.
 */
function usageJson(argv: readonly string[], message: string, io: Io): number {
  if (argv.includes("--json")) print(io, JSON.stringify({ ok: false, error: { code: "USAGE", message } }));
  return EXIT.badConfig;
}
