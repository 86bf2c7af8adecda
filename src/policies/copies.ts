import { StowageError } from "../core/errors.js";
import { assertTimeZone, bucketOf, type CalendarPeriod } from "./calendar.js";

/** How often a periodic copy takes a backup: the first one of each such period. */
export const COPY_PERIODS = ["hourly", "daily", "weekly", "monthly", "yearly"] as const;
/** One of {@link COPY_PERIODS}: a copy's `every`. Periods are read in the job's time zone. */
export type CopyPeriod = (typeof COPY_PERIODS)[number];

/** What {@link copyDue} decided. */
export interface CopyDue {
  /** True when the sink holds no backup of the job from the backup's period: copy it. */
  due: boolean;
  /** The period the backup falls in, as `bucketOf` names it: `"monthly 2026-11"`. */
  period: string;
  /** When not due: the start time (ISO) of the held backup that already stands for the period. */
  heldBy?: string;
}

const toMs = (t: Date | string | number): number =>
  t instanceof Date ? t.getTime() : typeof t === "number" ? t : Date.parse(t);

/**
 * Whether a backup should be copied to a sink that keeps one backup per calendar period (an
 * archive that takes "monthly copies"): it is due when none of the backups the sink already holds
 * started in the same period, in `timeZone`. So the first backup of a month reaches the archive,
 * and if its copy fails the next backup of that month is due instead. Pure: no I/O, no clock.
 *
 * @throws {CONFIG_INVALID} for an unknown period, time zone or an unreadable `startedAt`.
 * @example
 * copyDue("2026-11-01T00:05:00Z", ["2026-10-01T00:05:00Z"], { every: "monthly" })
 * // { due: true, period: "monthly 2026-11" }
 */
export function copyDue(
  startedAt: Date | string | number,
  held: ReadonlyArray<Date | string | number>,
  options: { every: CopyPeriod; timeZone?: string },
): CopyDue {
  const every = options.every as CalendarPeriod;
  if (!(COPY_PERIODS as readonly string[]).includes(every)) {
    throw new StowageError("CONFIG_INVALID", `copyDue: every must be one of ${COPY_PERIODS.join(", ")}`, {
      details: { issues: [{ path: "every", problem: "unknown period" }] },
    });
  }
  const timeZone = assertTimeZone(options.timeZone ?? "UTC");
  const at = toMs(startedAt);
  if (Number.isNaN(at)) {
    throw new StowageError("CONFIG_INVALID", "copyDue: startedAt is not a time", {
      details: { issues: [{ path: "startedAt", problem: "not a time" }] },
    });
  }
  const bucket = bucketOf(at, every, timeZone);
  const period = `${every} ${bucket}`;
  for (const h of held) {
    const ms = toMs(h);
    // An unreadable time cannot stand for any period: copying once more is the safe side.
    if (Number.isNaN(ms)) continue;
    if (bucketOf(ms, every, timeZone) === bucket) {
      return { due: false, period, heldBy: new Date(ms).toISOString() };
    }
  }
  return { due: true, period };
}

/** `20261122T034924123Z-9f86d081`: the start time stowage puts at the head of every artifact name. */
const ID_TIME = /(?:^|\/)(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(\d{3})Z-[0-9a-f]{8}[^/]*$/;

/**
 * The start time a stowage artifact key carries in its backup id (`<job>/…/<id><ext>`), in epoch
 * milliseconds; undefined for a key not named that way. Lets a sink's listing answer "which
 * periods does it hold?" without reading a manifest.
 * @example startOfBackupKey("db/2026/11/22/20261122T034924123Z-9f86d081.sql.gz") // 1795319364123
 */
export function startOfBackupKey(key: string): number | undefined {
  const m = ID_TIME.exec(key);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s, ms] = m.map(Number) as number[];
  const t = Date.UTC(y!, mo! - 1, d!, h!, mi!, s!, ms!);
  return Number.isNaN(t) ? undefined : t;
}
