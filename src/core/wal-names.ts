/**
 * PostgreSQL's WAL file names and LSNs, and where stowage keeps each file in a sink. Pure: no I/O.
 *
 * A segment is named `TTTTTTTTXXXXXXXXYYYYYYYY` (timeline, then the segment number split in two
 * 32-bit hex halves, the low half counting segments within one 4 GiB "xlogid"). Beside segments
 * the archive holds `TTTTTTTT.history` (a timeline's ancestry), `<segment>.XXXXXXXX.backup` (a base
 * backup's label) and `<segment>.partial` (the last, unfinished segment of an old timeline).
 */
import { StowageError } from "./errors.js";

/** PostgreSQL's default WAL segment size (initdb's `--wal-segsize`, 16 MiB). */
export const DEFAULT_WAL_SEGMENT_SIZE = 16 * 1024 * 1024;

/** The part of a job's keys that holds its WAL: `<job>/wal/<timeline>/<name><ext>`. */
export const WAL_FOLDER = "wal";
/** The record beside each archived WAL file (a manifest-shaped JSON); never `.manifest.json`. */
export const WAL_RECORD_SUFFIX = ".wal.json";

/**
 * What a WAL file is, by its name: a `segment` (one WAL segment, 16 MiB by default), a timeline's `.history`, a base
 * backup's `.backup` label, or the `.partial` last segment of a timeline a promotion ended.
 */
export type WalFileKind = "segment" | "history" | "backup" | "partial";

/** A WAL file name and what it says: kind, timeline, segment number. */
export interface WalFileName {
  /** The file name as PostgreSQL gives it, e.g. `000000010000000000000003`. */
  name: string;
  /** What the file is. */
  kind: WalFileKind;
  /** The timeline, as a number. */
  timeline: number;
  /** The segment number (for segments, `.backup` and `.partial` files). */
  segment?: number;
}

const NAME =
  /^(?:([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})(?:\.([0-9A-F]{8})\.backup|(\.partial))?|([0-9A-F]{8})\.history)$/;

/**
 * Parses a WAL file name, or returns undefined for any other name.
 * @param segmentSize the cluster's WAL segment size: it decides how many segments one xlogid holds.
 */
export function parseWalName(name: string, segmentSize = DEFAULT_WAL_SEGMENT_SIZE): WalFileName | undefined {
  const m = NAME.exec(name);
  if (!m) return undefined;
  if (m[6]) return { name, kind: "history", timeline: Number.parseInt(m[6], 16) };
  const timeline = Number.parseInt(m[1]!, 16);
  const segment = Number.parseInt(m[2]!, 16) * segmentsPerXlogId(segmentSize) + Number.parseInt(m[3]!, 16);
  const kind: WalFileKind = m[4] ? "backup" : m[5] ? "partial" : "segment";
  return { name, kind, timeline, segment };
}

/**
 * The parsed name, or CONFIG_INVALID naming `option`: a name that is not a WAL file's could
 * otherwise write or read outside the job's WAL folder.
 * @throws {CONFIG_INVALID}
 */
export function walNameOrThrow(name: string, option: string, where: string): WalFileName {
  const parsed = parseWalName(name);
  if (!parsed) {
    throw new StowageError("CONFIG_INVALID", `${where}: ${JSON.stringify(name)} is not a WAL file name`, {
      details: {
        issues: [{ path: option, problem: "not a WAL segment, .history, .backup or .partial name" }],
      },
    });
  }
  return parsed;
}

const segmentsPerXlogId = (segmentSize: number) => 0x1_0000_0000 / segmentSize;
const hex8 = (n: number) => n.toString(16).toUpperCase().padStart(8, "0");

/** A segment's file name from its timeline and number. */
export function segmentName(
  timeline: number,
  segment: number,
  segmentSize = DEFAULT_WAL_SEGMENT_SIZE,
): string {
  const per = segmentsPerXlogId(segmentSize);
  return `${hex8(timeline)}${hex8(Math.floor(segment / per))}${hex8(segment % per)}`;
}

/** Parses an LSN as PostgreSQL prints it (`16/B374D848`). @throws {CONFIG_INVALID} */
export function parseLsn(text: string, option = "lsn"): bigint {
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(text.trim());
  if (!m) {
    throw new StowageError("CONFIG_INVALID", `${JSON.stringify(text)} is not an LSN (like 0/3000060)`, {
      details: { issues: [{ path: option, problem: "not an LSN of the form X/Y in hex" }] },
    });
  }
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

/** An LSN as PostgreSQL prints it. */
export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffff_ffffn).toString(16).toUpperCase()}`;
}

/** The number of the segment that holds `lsn`. */
export function segmentOfLsn(lsn: bigint, segmentSize = DEFAULT_WAL_SEGMENT_SIZE): number {
  return Number(lsn / BigInt(segmentSize));
}

/** `<job>/wal/<timeline>/`: where one timeline's files are kept. */
export function walTimelinePrefix(job: string, timeline: number): string {
  return `${job}/${WAL_FOLDER}/${hex8(timeline)}/`;
}

/** The key of the record that describes an archived WAL file: fixed by its name alone. */
export function walRecordKey(job: string, file: WalFileName): string {
  return `${walTimelinePrefix(job, file.timeline)}${file.name}${WAL_RECORD_SUFFIX}`;
}

/** One archived WAL file as a listing of the sink shows it (its record's key and time). */
export interface ArchivedWal extends WalFileName {
  /** The key of its record (`….wal.json`). */
  recordKey: string;
  /** When the record was written: when the file was archived. */
  archivedAt: Date;
  /** Every key that belongs to the file (its artifact and its record). */
  keys: string[];
}

/**
 * Groups a listing of `<job>/wal/` into archived WAL files. A file counts only once its record is
 * there (the record is written last); an artifact without one is a push that did not finish, and
 * is returned in `orphans`.
 */
export function groupWalListing(
  job: string,
  listing: ReadonlyArray<{ key: string; lastModified: Date }>,
  segmentSize = DEFAULT_WAL_SEGMENT_SIZE,
): { files: ArchivedWal[]; orphans: string[] } {
  const base = `${job}/${WAL_FOLDER}/`;
  const byName = new Map<string, { keys: string[]; record?: { key: string; at: Date } }>();
  const orphans: string[] = [];
  for (const { key, lastModified } of listing) {
    if (!key.startsWith(base)) continue;
    const leaf = key.slice(key.lastIndexOf("/") + 1);
    const name = walNameOf(leaf, segmentSize);
    if (!name) continue;
    const entry = byName.get(name) ?? { keys: [] };
    entry.keys.push(key);
    if (leaf === `${name}${WAL_RECORD_SUFFIX}`) entry.record = { key, at: lastModified };
    byName.set(name, entry);
  }
  const files: ArchivedWal[] = [];
  for (const [name, entry] of byName) {
    const parsed = parseWalName(name, segmentSize)!;
    if (!entry.record) {
      orphans.push(...entry.keys);
      continue;
    }
    files.push({ ...parsed, recordKey: entry.record.key, archivedAt: entry.record.at, keys: entry.keys });
  }
  files.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { files, orphans };
}

/** The WAL name a stored key's last part starts with (`<name>`, `<name>.gz.enc`, `<name>.wal.json`). */
function walNameOf(leaf: string, segmentSize: number): string | undefined {
  for (const length of [40, 32, 24, 16]) {
    const head = leaf.slice(0, length);
    if ((leaf.length === length || leaf[length] === ".") && parseWalName(head, segmentSize)) return head;
  }
  return undefined;
}
