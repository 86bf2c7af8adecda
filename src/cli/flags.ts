/**
 * Every flag of the CLI, described once: the parser (`node:util` parseArgs) and the help are both
 * generated from these specs, so they cannot disagree. A command lists the flags it takes in the
 * command table (commands.ts).
 */
import { parseDuration } from "../core/options.js";
import type { StowageConfig } from "../jobs/config.js";
import { type Io, UsageError } from "./output.js";
import { DEFAULT_PROGRESS_INTERVAL, type Progress, progress } from "./progress.js";

export interface FlagSpec {
  name: string;
  type: "string" | "boolean";
  short?: string;
  /** Repeatable: the values come as a list. */
  multiple?: boolean;
  /** The value's placeholder in the help, e.g. "<file>". */
  value?: string;
  description: string;
  default?: boolean | string;
  /** Parsed but not listed in the help (the positive twin of a `--no-…` flag). */
  hidden?: boolean;
}

/** The parsed flags; a command reads only those it lists. */
export interface Flags {
  config?: string;
  job?: string[];
  json?: boolean;
  prometheus?: boolean;
  progress?: boolean;
  "no-progress"?: boolean;
  "progress-interval"?: string;
  prune?: boolean;
  "no-prune"?: boolean;
  "dry-run"?: boolean;
  all?: boolean;
  /** verify: every link of an incremental's chain too. */
  chain?: boolean;
  at?: string;
  from?: string;
  out?: string;
  /** keygen: an Ed25519 signing key pair instead of an encryption key pair. */
  signing?: boolean;
  extract?: string;
  report?: string;
  force?: boolean;
  concurrency?: string;
  /** wal-push: segments to archive ahead of the one asked for. */
  ahead?: string;
  help?: boolean;
  version?: boolean;
  /** The arguments after the command's name, for a command that takes some (wal-push, wal-fetch). */
  positionals?: string[];
}

const spec = <const T extends FlagSpec>(s: T) => s;

export const FLAGS = {
  config: spec({
    name: "config",
    type: "string",
    short: "c",
    value: "<file>",
    description: "the config module (default: ./stowage.config.{ts,mts,mjs,js})",
  }),
  job: spec({
    name: "job",
    type: "string",
    short: "j",
    multiple: true,
    value: "<name>",
    description: "only this job (repeatable)",
  }),
  jobOne: spec({
    name: "job",
    type: "string",
    short: "j",
    multiple: true,
    value: "<name>",
    description: "the job (exactly one)",
  }),
  json: spec({ name: "json", type: "boolean", default: false, description: "machine-readable output" }),
  progress: spec({
    name: "progress",
    type: "boolean",
    default: true,
    hidden: true,
    description: "show progress",
  }),
  noProgress: spec({
    name: "no-progress",
    type: "boolean",
    default: false,
    description: "no progress (a bar on a terminal, else a line every --progress-interval)",
  }),
  progressInterval: spec({
    name: "progress-interval",
    type: "string",
    value: "<duration>",
    default: DEFAULT_PROGRESS_INTERVAL,
    description: "off a terminal, one progress line this often, e.g. 30s, 5m, 500ms",
  }),
  from: spec({
    name: "from",
    type: "string",
    value: "<copy>",
    description: "use this copy's sink instead of the primary",
  }),
  help: spec({ name: "help", type: "boolean", short: "h", default: false, description: "this help" }),
  version: spec({ name: "version", type: "boolean", short: "v", default: false, description: "the version" }),
} as const;

/** What parseArgs takes for `specs`. */
export function parseOptions(specs: readonly FlagSpec[]) {
  const options: Record<
    string,
    { type: "string" | "boolean"; short?: string; multiple?: boolean; default?: boolean | string }
  > = {};
  for (const s of specs) {
    options[s.name] = {
      type: s.type,
      ...(s.short ? { short: s.short } : {}),
      ...(s.multiple ? { multiple: true } : {}),
      ...(s.default !== undefined && s.type === "boolean" ? { default: s.default } : {}),
    };
  }
  return options;
}

/** The progress reporter the flags ask for. @throws {CONFIG_INVALID} a bad --progress-interval */
export function progressFor(flags: Flags, io: Io, config?: StowageConfig): Progress {
  const interval = flags["progress-interval"] ?? DEFAULT_PROGRESS_INTERVAL;
  let intervalMs: number;
  try {
    intervalMs = parseDuration(interval, "--progress-interval");
  } catch {
    throw new UsageError(`--progress-interval: "${interval}" is not a duration such as 30s or 500ms`);
  }
  return progress(io, {
    enabled: flags.progress !== false && !flags["no-progress"],
    intervalMs,
    ...(config?.logger ? { logger: config.logger } : {}),
  });
}

/** The positive integer of a string flag, at most `max`. */
export function positiveInteger(
  value: string | undefined,
  flag: string,
  max = Number.MAX_SAFE_INTEGER,
): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > max) {
    throw new UsageError(
      `--${flag} must be a positive integer${max < Number.MAX_SAFE_INTEGER ? ` of at most ${max}` : ""}`,
    );
  }
  return n;
}
