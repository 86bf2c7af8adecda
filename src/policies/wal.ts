/**
 * Pure policies over a PostgreSQL WAL archive (what `archiveWal` keeps under `<job>/wal/`):
 * which files retention may delete, where a timeline's sequence has gaps, and how fresh the
 * archive is. No I/O and no clock: listings, manifests and `now` are arguments.
 *
 * WAL names order as their positions do: `TTTTTTTTXXXXXXXXYYYYYYYY` holds the segment number as
 * two fixed-width hex halves, so the last 16 characters of a name compare like the numbers, and
 * only counting (gaps) needs the segment size.
 */
import type { Manifest } from "../core/manifest.js";

/** One archived WAL file, as a listing groups it (see `groupWalListing` in `stowage/sources/postgres`). */
export interface WalFile {
  /** `000000010000000000000003`, `00000002.history`, `….00000028.backup`, `….partial`. */
  name: string;
  /** Every key that belongs to the file (artifact and record). */
  keys: readonly string[];
  /** When it was archived. */
  archivedAt: Date;
}

/** The verdict on one WAL file. */
export interface WalDecision {
  /** Whether the file is kept or dropped. */
  action: "keep" | "drop";
  /** `"needed from <segment>"`, `"timeline history"`, `"no retained base backup"`, `"before <segment>"`. */
  reason: string;
  /** The file. */
  file: WalFile;
}

/** What `planWalRetention` decided, file by file. */
export interface WalRetentionPlan {
  /** The oldest segment a retained base backup needs, or undefined (then nothing is dropped). */
  keepFrom: string | undefined;
  /** The files kept. */
  keep: WalDecision[];
  /** The files dropped. */
  drop: WalDecision[];
}

const SEGMENT = /^([0-9A-F]{8})([0-9A-F]{16})(?:\.[0-9A-F]{8}\.backup|\.partial)?$/;

/** The position part of a segment-bound name (`XXXXXXXXYYYYYYYY`), undefined for `.history`. */
function position(name: string): string | undefined {
  return SEGMENT.exec(name)?.[2];
}

/** The start segment a base backup manifest records (`source.details.startSegment`). */
function startSegmentOf(m: Manifest): string | undefined {
  const start = m.source.details.startSegment;
  return typeof start === "string" && position(start) ? start : undefined;
}

/**
 * Decides which WAL files to keep, given the base backups retention keeps (e.g. the manifests of
 * `planRetention(...).keep`): every segment from the oldest retained base backup's start segment on
 * (on every timeline: a later timeline branches from an earlier one at a later point), and every
 * `.history` file (tiny, and recovery needs them to follow timelines). With no retained base
 * backup among `kept`, nothing is dropped: WAL alone restores nothing, but deleting it could
 * never be undone, and the next base backup may be running.
 *
 * @example
 * const plan = planRetention(manifests, policy, now);
 * const wal = planWalRetention(plan.keep.map((d) => d.manifest), files);
 */
export function planWalRetention(kept: readonly Manifest[], wal: readonly WalFile[]): WalRetentionPlan {
  const starts = kept.map(startSegmentOf).filter((s): s is string => s !== undefined);
  const keepFrom = starts.sort((a, b) => (position(a)! < position(b)! ? -1 : 1))[0];
  const plan: WalRetentionPlan = { keepFrom, keep: [], drop: [] };
  for (const file of wal) {
    const at = position(file.name);
    if (at === undefined) plan.keep.push({ action: "keep", reason: "timeline history", file });
    else if (keepFrom === undefined)
      plan.keep.push({ action: "keep", reason: "no retained base backup", file });
    else if (at >= position(keepFrom)!)
      plan.keep.push({ action: "keep", reason: `needed from ${keepFrom}`, file });
    else plan.drop.push({ action: "drop", reason: `before ${keepFrom}`, file });
  }
  return plan;
}

const hex8 = (n: number) => n.toString(16).toUpperCase().padStart(8, "0");

/** A hole in one timeline's sequence of segments. */
export interface WalGap {
  /** The timeline, as the 8 hex digits of segment names. */
  timeline: string;
  /** The last segment before the hole and the first after it. */
  after: string;
  /** The first segment after the hole. */
  before: string;
  /** The first segment that is missing: where recovery on this timeline stops. */
  firstMissing: string;
  /** How many segments are missing. */
  missing: number;
}

/**
 * The holes in each timeline's sequence of segments, from its first archived segment to its last
 * (a `.partial` counts as its segment). A hole means recovery cannot pass that point on that
 * timeline: an archive_command that reported success without storing, or a deletion.
 * @param segmentSize the cluster's WAL segment size. @default 16 MiB
 */
export function findWalGaps(wal: readonly WalFile[], segmentSize = 16 * 1024 * 1024): WalGap[] {
  const per = 0x1_0000_0000 / segmentSize;
  const byTimeline = new Map<string, Map<number, string>>();
  for (const { name } of wal) {
    const m = SEGMENT.exec(name);
    if (!m || name.endsWith(".backup")) continue;
    const n = Number.parseInt(m[2]!.slice(0, 8), 16) * per + Number.parseInt(m[2]!.slice(8), 16);
    const line = byTimeline.get(m[1]!) ?? new Map<number, string>();
    line.set(n, name.slice(0, 24));
    byTimeline.set(m[1]!, line);
  }
  const gaps: WalGap[] = [];
  for (const [timeline, line] of [...byTimeline].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const numbers = [...line.keys()].sort((a, b) => a - b);
    for (let i = 1; i < numbers.length; i++) {
      const missing = numbers[i]! - numbers[i - 1]! - 1;
      if (missing > 0) {
        const next = numbers[i - 1]! + 1;
        const firstMissing = `${timeline}${hex8(Math.floor(next / per))}${hex8(next % per)}`;
        gaps.push({
          timeline,
          after: line.get(numbers[i - 1]!)!,
          before: line.get(numbers[i]!)!,
          firstMissing,
          missing,
        });
      }
    }
  }
  return gaps;
}

/** The state of a WAL archive: its newest segment, its RPO, its lag and its holes. */
export interface WalArchiveStatus {
  /** The newest archived segment (highest timeline, then position), or undefined for an empty archive. */
  newestSegment: string | undefined;
  /** When the newest segment was archived (ISO 8601), or undefined. */
  newestArchivedAt: string | undefined;
  /** The archive's RPO right now: the age of the newest archived segment, in ms. */
  rpoMs: number | undefined;
  /**
   * The archiver's lag in segments: from the newest archived to the server's current one
   * (`pg_walfile_name(pg_current_wal_lsn())`), when given. 1 is normal: the current segment is
   * still being written.
   */
  lagSegments: number | undefined;
  /** The holes in the archive, which break replay past them. */
  gaps: WalGap[];
}

/**
 * How fresh and whole the WAL archive is: the RPO (age of the newest segment) and, given the
 * server's current segment, the archiver's lag; and the gaps of {@link findWalGaps}.
 */
export function walArchiveStatus(
  wal: readonly WalFile[],
  options: { now: Date; currentSegment?: string; segmentSize?: number },
): WalArchiveStatus {
  const segments = wal.filter((f) => SEGMENT.test(f.name) && !f.name.endsWith(".backup"));
  let newest: WalFile | undefined;
  for (const f of segments) if (!newest || f.name.slice(0, 24) > newest.name.slice(0, 24)) newest = f;
  const per = 0x1_0000_0000 / (options.segmentSize ?? 16 * 1024 * 1024);
  const number = (name: string) =>
    Number.parseInt(name.slice(8, 16), 16) * per + Number.parseInt(name.slice(16, 24), 16);
  const current = options.currentSegment;
  return {
    newestSegment: newest?.name.slice(0, 24),
    newestArchivedAt: newest?.archivedAt.toISOString(),
    rpoMs: newest ? Math.max(0, options.now.getTime() - newest.archivedAt.getTime()) : undefined,
    lagSegments:
      current && position(current) ? (newest ? number(current) - number(newest.name) : undefined) : undefined,
    gaps: findWalGaps(wal, options.segmentSize),
  };
}
