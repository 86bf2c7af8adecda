/**
 * `pgBaseBackupSource`: a physical base backup of a whole cluster, streamed from `pg_basebackup`
 * as one tar, for point-in-time recovery with the WAL that `archiveWal` keeps.
 */
import type { z } from "zod";
import { type ChildExit, ChildStdout, lastLines, OutputTail, spawnChild } from "../../core/child-process.js";
import { StowageError, throwIfAborted } from "../../core/errors.js";
import { lazySchema, parseOptions } from "../../core/options.js";
import type { Agrees, Assert } from "../../core/type-checks.js";
import type { Source, SourceContext, SourceOutput } from "../../core/types.js";
import { formatLsn, parseLsn, segmentName, segmentOfLsn } from "../../core/wal-names.js";
import { archiverStatus } from "./archiver-status.js";
import {
  coded,
  describeTarget,
  type PgConnection,
  pgConnectionSchema,
  redactor,
  resolveConnection,
  toolEnvironment,
} from "./connection.js";

/** The manifest `source.kind` of a base backup; `restorePostgresToPoint` picks these. */
export const BASE_BACKUP_SOURCE_KIND = "postgres-basebackup";

/** The zod schema of {@link PgBaseBackupSourceOptions}, which parses the options at the boundary. */
export const pgBaseBackupSourceOptionsSchema = lazySchema((z) =>
  z
    .object({
      /** Where to connect (a user with the REPLICATION attribute). The password goes by environment only. */
      connection: pgConnectionSchema,
      /** The pg_basebackup binary; it must be of the server's major version. @default "pg_basebackup" */
      pgBaseBackupPath: z.string().min(1).default("pg_basebackup"),
      /** `fast` checkpoints at once; `spread` spreads its I/O, and the backup starts later. @default "fast" */
      checkpoint: z.enum(["fast", "spread"]).default("fast"),
      /** The cluster's WAL segment size (initdb's `--wal-segsize`). @default 16 MiB */
      walSegmentSize: z
        .number()
        .int()
        .refine(
          (n) => n >= 1 << 20 && n <= 1 << 30 && (n & (n - 1)) === 0,
          "a power of two from 1 MiB to 1 GiB",
        )
        .default(16 * 1024 * 1024),
      /** How long to wait for the server to answer. @default 10000 */
      connectTimeoutMs: z.number().int().positive().default(10_000),
      /** Logical name for the manifest. @default "cluster" */
      name: z.string().min(1).default("cluster"),
    })
    .strict(),
);
/** Options of {@link pgBaseBackupSource}. */
export interface PgBaseBackupSourceOptions {
  /** Where to connect (a user with the REPLICATION attribute). The password goes by environment only. */
  connection: PgConnection;
  /** The pg_basebackup binary; it must be of the server's major version. @default "pg_basebackup" */
  pgBaseBackupPath?: string;
  /** `fast` checkpoints at once; `spread` spreads its I/O, and the backup starts later. @default "fast" */
  checkpoint?: "fast" | "spread";
  /** The cluster's WAL segment size (initdb's `--wal-segsize`), a power of two from 1 MiB to 1 GiB. @default 16 MiB */
  walSegmentSize?: number;
  /** How long to wait for the server to answer. @default 10000 */
  connectTimeoutMs?: number;
  /** Logical name for the manifest. @default "cluster" */
  name?: string;
}
type _PgBaseBackupSourceOptionsAgrees = Assert<
  Agrees<PgBaseBackupSourceOptions, z.input<typeof pgBaseBackupSourceOptionsSchema>>
>;

/** Facts a base backup records in its manifest (`source.details`). */
export interface PgBaseBackupDetails extends Record<string, unknown> {
  /** The LSN the backup starts from: replay begins here (with `startSegment`). */
  startLsn: string;
  /** The LSN replay must reach for the restored cluster to be consistent. */
  stopLsn: string;
  /** The timeline the backup was taken on; recovery follows it (and later ones). */
  timeline: number;
  /** The WAL file holding `startLsn`: retention keeps the WAL from this one on. */
  startSegment: string;
  /** The WAL file holding `stopLsn`. */
  stopSegment: string;
  /** The label pg_basebackup wrote into `backup_label`. */
  label: string;
  /** The cluster's WAL segment size in bytes, as the option gave it. */
  walSegmentSize: number;
  /** The server's host as connected to (never the password). */
  host: string;
  /** The server's port. */
  port: number;
}

/**
 * With `-X none` pg_basebackup prints neither LSN; the backup manifest it puts last in the tar
 * (`backup_manifest`) has both, and the timeline, in its WAL-Ranges near its own end.
 */
const WAL_RANGE =
  /"Timeline":\s*(\d+),\s*"Start-LSN":\s*"([0-9A-F]+\/[0-9A-F]+)",\s*"End-LSN":\s*"([0-9A-F]+\/[0-9A-F]+)"/i;
/** How much of the stream's end is kept to find the manifest's WAL range. */
const TAIL_BYTES = 256 * 1024;

/**
 * Streams `pg_basebackup -D - -Ft -X none`: the cluster's data directory as one tar on stdout,
 * without WAL, which comes from the archive (`archiveWal`) at restore. The server must archive
 * WAL (`archive_mode = on`, an `archive_command` running `stowage wal-push`): pg_basebackup waits
 * until the WAL the backup needs is archived, so a finished backup is restorable. Start and stop
 * LSN, timeline and label go into the manifest. A cluster with tablespaces other than the default
 * ones cannot be written to stdout and fails.
 *
 * @default pgBaseBackupPath "pg_basebackup", checkpoint "fast", name "cluster"
 * @throws {CONFIG_INVALID} bad options, each named, when called.
 * @throws {SOURCE_FAILED} pg_basebackup is missing, cannot connect or log in, or fails.
 * @example
 * await backup({
 *   job: "app-db", source: pgBaseBackupSource({ connection: { host, user: "replicator" } }),
 *   transforms: [gzip(), aes256gcm({ key })], sink,
 * });
 */
export function pgBaseBackupSource(options: PgBaseBackupSourceOptions): Source {
  const opts = parseOptions(pgBaseBackupSourceOptionsSchema, options, "pgBaseBackupSource");
  const conn = resolveConnection(opts.connection);
  const redact = redactor(conn);
  const where = `pgBaseBackupSource(${conn.host}:${conn.port})`;

  return {
    kind: BASE_BACKUP_SOURCE_KIND,
    name: opts.name,
    archiverStatus: ({ signal } = {}) => archiverStatus(conn, opts.connectTimeoutMs, signal),
    async open({ signal, startedAt, job }: SourceContext): Promise<SourceOutput> {
      throwIfAborted(signal, where);
      const label = `stowage ${job ?? opts.name} ${startedAt.toISOString()}`;
      // -c fast|spread, -l label; the connection as for every libpq tool; no secret in argv.
      const args = [
        "-D",
        "-",
        "-F",
        "t",
        "-X",
        "none",
        "-c",
        opts.checkpoint,
        "-l",
        label,
        "--no-password",
        "--host",
        conn.host,
        "--port",
        String(conn.port),
        "--username",
        conn.user,
      ];
      const env = toolEnvironment(conn, opts.connectTimeoutMs);
      const { child, exit } = await spawnChild(opts.pgBaseBackupPath, args, {
        env,
        stdio: ["ignore", "pipe", "pipe"],
      });
      const stderr = new OutputTail(65536);
      child.stderr!.on("data", (chunk: Buffer) => stderr.push(chunk));
      // The end of the stream, where the backup manifest's WAL range is.
      let tail: Buffer[] = [];
      let tailBytes = 0;
      const keepTail = (chunk: Buffer) => {
        tail.push(chunk);
        tailBytes += chunk.length;
        while (tail.length > 1 && tailBytes - tail[0]!.length >= TAIL_BYTES)
          tailBytes -= tail.shift()!.length;
      };
      let range: RegExpExecArray | null = null;
      const walRange = () => {
        range ??= WAL_RANGE.exec(Buffer.concat(tail).toString("latin1"));
        tail = [];
        return range;
      };
      const target = describeTarget(conn);
      const judge = (result: ChildExit): Error | undefined => {
        const tail = redact(stderr.toString());
        if (!result.error && result.code === 0 && !result.signal && walRange()) return undefined;
        const missing = result.error?.code === "ENOENT";
        const how = missing
          ? `not found at "${opts.pgBaseBackupPath}" (install postgresql-client or set pgBaseBackupPath)`
          : result.error
            ? `could not run: ${result.error.message}`
            : result.signal
              ? `was killed by ${result.signal}`
              : result.code !== 0
                ? `exited with code ${result.code}`
                : "wrote no backup manifest with the backup's WAL range";
        return coded(
          "SOURCE_FAILED",
          `${where}: pg_basebackup ${how}${tail ? `: ${lastLines(tail)}` : ""}`,
          redact,
          {
            ...target,
            exitCode: result.code,
            signal: result.signal,
            stderr: tail,
          },
        );
      };
      const stream = new ChildStdout("pg_basebackup", child, exit, judge);
      // Attached in the same tick as the stream's own listener, so it sees every chunk too.
      child.stdout!.on("data", keepTail);
      const onAbort = () => stream.destroy(new StowageError("ABORTED", `${where}: aborted`));
      signal.addEventListener("abort", onAbort, { once: true });
      stream.once("close", () => signal.removeEventListener("abort", onAbort));
      if (signal.aborted) onAbort();
      return {
        stream,
        contentType: "application/x-tar",
        extension: ".tar",
        details: async () => {
          await stream.done;
          const [, tli, from, to] = walRange()!;
          const startLsn = parseLsn(from!);
          const stopLsn = parseLsn(to!);
          const timeline = Number(tli);
          const size = opts.walSegmentSize;
          const details: PgBaseBackupDetails = {
            startLsn: formatLsn(startLsn),
            stopLsn: formatLsn(stopLsn),
            timeline,
            startSegment: segmentName(timeline, segmentOfLsn(startLsn, size), size),
            stopSegment: segmentName(timeline, segmentOfLsn(stopLsn, size), size),
            label,
            walSegmentSize: size,
            host: conn.host,
            port: conn.port,
          };
          return details;
        },
      };
    },
  };
}
