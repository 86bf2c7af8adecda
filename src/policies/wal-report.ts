/**
 * The WAL archive in validation and status: gaps as findings of their own (`wal-gap`), and the
 * archive's freshness (RPO) and the archiver's lag as the status report shows them. Pure: the
 * listing, the server's position and `now` are arguments; the CLI and jobs fetch them.
 */
import { findWalGaps, type WalFile, type WalGap, walArchiveStatus } from "./wal.js";

/**
 * What PostgreSQL's `pg_stat_archiver` says, with the server's current WAL file; from
 * `archiverStatus()` of a base-backup source (it connects to the server).
 */
export interface ArchiverStats {
  /** `pg_walfile_name(pg_current_wal_lsn())`: the segment the server is writing. */
  currentSegment?: string;
  /** `pg_stat_archiver.archived_count`: files archived since the statistics were reset. */
  archivedCount?: number;
  /** `pg_stat_archiver.last_archived_wal`: the newest file the archiver reported stored. */
  lastArchivedWal?: string | null;
  /** `pg_stat_archiver.last_archived_time`, as an ISO 8601 string. */
  lastArchivedAt?: string | null;
  /** Failed attempts since the statistics were reset. */
  failedCount?: number;
  /** `pg_stat_archiver.last_failed_wal`: the file of the last failed attempt. */
  lastFailedWal?: string | null;
  /** `pg_stat_archiver.last_failed_time`, as an ISO 8601 string. */
  lastFailedAt?: string | null;
}

/** A job's WAL archive, for `validateBackups` and `summarize` (`listArchivedWal` gives `files`). */
export interface WalInput {
  /** Every archived WAL file of the job (segments, history files, backup labels). */
  files: readonly WalFile[];
  /** The server's archiver, when it could be asked. */
  archiver?: ArchiverStats;
  /** The error code when the server could not be asked (the lag is then unknown, and said so). */
  archiverError?: string;
  /** The cluster's WAL segment size. @default 16 MiB */
  segmentSize?: number;
}

/** A gap in a timeline's WAL, as validation reports it: recovery cannot pass `firstMissing`. */
export interface WalGapFinding extends WalGap {
  /** The rule that found it. */
  rule: "wal-gap";
  /** A gap makes the backups that need it unrestorable past it: a validity problem. */
  kind: "validity";
  /** Always an error: recovery stops at the gap. */
  severity: "error";
  /** One sentence naming the timeline, the count and the first missing segment. */
  message: string;
  /** `wal.<timeline>` */
  field: string;
}

/** One finding (rule `wal-gap`) per hole in each timeline's sequence, naming its first missing segment. */
export function walGapFindings(wal: WalInput): WalGapFinding[] {
  return findWalGaps(wal.files, wal.segmentSize).map((gap) => ({
    ...gap,
    rule: "wal-gap",
    kind: "validity",
    severity: "error",
    message: `WAL of timeline ${gap.timeline} is missing ${gap.missing} segment${gap.missing === 1 ? "" : "s"} from ${gap.firstMissing} (after ${gap.after})`,
    field: `wal.${gap.timeline}`,
  }));
}

/** A job's WAL archive in the status report. */
export interface JobWalStatus {
  /** Archived WAL files (segments, history, backup labels). */
  files: number;
  /** The newest archived segment's name; null when none is archived. */
  newestSegment: string | null;
  /** When the newest segment was archived (ISO 8601); null when none is archived. */
  newestArchivedAt: string | null;
  /** The archive's RPO now: seconds since the newest segment was archived. */
  rpoSeconds: number | null;
  /**
   * Segments the server has written and the archive does not hold yet, counting the one being
   * written (0 or 1 is normal); null when the server could not be asked.
   */
  lagSegments: number | null;
  /** `pg_stat_archiver.failed_count`, when known. */
  failedCount: number | null;
  /** The archiver's last attempt failed (its last failure is newer than its last success). */
  failing: boolean | null;
  /** Holes in each timeline's sequence of segments. */
  gaps: WalGapFinding[];
}

/** The WAL part of a job's status, and the problems it shows (one sentence each). */
export function walJobStatus(
  wal: WalInput,
  now: Date,
): {
  /** What the archive holds and how far behind it is. */
  status: JobWalStatus;
  /** One sentence per problem (gaps, no WAL, lag, a failing archiver); empty when healthy. */
  problems: string[];
} {
  const a = wal.archiver;
  const s = walArchiveStatus(wal.files, {
    now,
    ...(a?.currentSegment ? { currentSegment: a.currentSegment } : {}),
    ...(wal.segmentSize ? { segmentSize: wal.segmentSize } : {}),
  });
  const gaps = walGapFindings(wal);
  const failing =
    a && a.failedCount !== undefined
      ? Boolean(
          a.lastFailedAt && (!a.lastArchivedAt || Date.parse(a.lastFailedAt) > Date.parse(a.lastArchivedAt)),
        )
      : null;
  const status: JobWalStatus = {
    files: wal.files.length,
    newestSegment: s.newestSegment ?? null,
    newestArchivedAt: s.newestArchivedAt ?? null,
    rpoSeconds: s.rpoMs === undefined ? null : s.rpoMs / 1000,
    lagSegments: s.lagSegments ?? null,
    failedCount: a?.failedCount ?? null,
    failing,
    gaps,
  };
  const problems = gaps.map((g) => g.message);
  if (status.newestSegment === null) problems.push("no WAL archived");
  // The segment being written always counts 1; two complete ones waiting is falling behind.
  if (status.lagSegments !== null && status.lagSegments >= 3) {
    problems.push(`the WAL archiver lags ${status.lagSegments - 1} segments behind the server`);
  }
  if (wal.archiverError) {
    problems.push(`the WAL archiver's lag is unknown: the server could not be asked (${wal.archiverError})`);
  }
  if (failing) problems.push(`the WAL archiver is failing (on ${a?.lastFailedWal ?? "a segment"})`);
  return { status, problems };
}
