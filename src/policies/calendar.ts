import { StowageError } from "../core/errors.js";

/**
 * Calendar arithmetic in an IANA time zone, without a date library: `Intl.DateTimeFormat` gives
 * the wall-clock fields of an instant in the zone (Node ships the full ICU time-zone database),
 * the rest is integer arithmetic. Pure: the same instant and zone always give the same answer.
 */

/** The wall-clock fields of one instant in one zone, plus the zone's UTC offset at that instant. */
export interface LocalTime {
  /** The calendar year (proleptic Gregorian; 0 is 1 BC). */
  year: number;
  /** 1-12 */
  month: number;
  /** 1-31 */
  day: number;
  /** 0-23 */
  hour: number;
  /** 0-59 */
  minute: number;
  /** Minutes east of UTC at this instant (Berlin in summer: 120, New York in winter: -300). */
  offsetMinutes: number;
}

const formatters = new Map<string, Intl.DateTimeFormat>();
const canonical = new Map<string, string>();
const WALL_CLOCK = /^(\d{1,2})\/(\d{1,2})\/(\d{1,6}) (AD|BC), (\d{2}):(\d{2}):(\d{2})$/;

function formatterFor(timeZone: string): Intl.DateTimeFormat {
  let formatter = formatters.get(timeZone);
  if (!formatter) {
    formatter = new Intl.DateTimeFormat("en-US", {
      timeZone,
      hourCycle: "h23",
      era: "short",
      year: "numeric",
      month: "numeric",
      day: "numeric",
      hour: "numeric",
      minute: "numeric",
      second: "numeric",
    });
    formatters.set(timeZone, formatter);
  }
  return formatter;
}

/**
 * Checks that a time zone is a valid IANA name (or "UTC") and returns its canonical spelling.
 * @throws {CONFIG_INVALID} naming `option` for an unknown zone.
 * @example assertTimeZone("europe/berlin") // "Europe/Berlin"
 */
export function assertTimeZone(timeZone: string, option = "timeZone"): string {
  const known = canonical.get(timeZone);
  if (known) return known;
  try {
    const name = formatterFor(timeZone).resolvedOptions().timeZone;
    canonical.set(timeZone, name);
    return name;
  } catch (error) {
    throw new StowageError("CONFIG_INVALID", `${option}: "${timeZone}" is not an IANA time zone`, {
      cause: error,
      details: { issues: [{ path: option, problem: "unknown time zone" }] },
    });
  }
}

/** The wall-clock time of `epochMs` in `timeZone` (an IANA name, default UTC). */
export function localTime(epochMs: number, timeZone = "UTC"): LocalTime {
  if (timeZone === "UTC") {
    const d = new Date(epochMs);
    return {
      year: d.getUTCFullYear(),
      month: d.getUTCMonth() + 1,
      day: d.getUTCDate(),
      hour: d.getUTCHours(),
      minute: d.getUTCMinutes(),
      offsetMinutes: 0,
    };
  }
  const formatter = formatterFor(timeZone);
  // format() is several times faster than formatToParts(); its en-US shape is parsed when it
  // matches ("11/21/2025 AD, 11:13:19") and formatToParts() is the fallback if an ICU differs.
  const match = WALL_CLOCK.exec(formatter.format(epochMs));
  const fields: Record<string, string | undefined> = {};
  if (match) {
    const [, month, day, year, era, hour, minute, second] = match;
    Object.assign(fields, { month, day, year, era, hour, minute, second });
  } else {
    for (const part of formatter.formatToParts(epochMs)) fields[part.type] = part.value;
  }
  const yearOfEra = Number(fields.year);
  const year = fields.era === "BC" || fields.era === "B" ? 1 - yearOfEra : yearOfEra;
  const month = Number(fields.month);
  const day = Number(fields.day);
  const hour = Number(fields.hour);
  const minute = Number(fields.minute);
  const second = Number(fields.second);
  // The offset is the wall clock read as if it were UTC, minus the instant (whole seconds).
  const wallAsUtc = Date.UTC(year, month - 1, day, hour, minute, second);
  const offsetMinutes = Math.round((wallAsUtc - Math.floor(epochMs / 1000) * 1000) / 60_000);
  return { year, month, day, hour, minute, offsetMinutes };
}

/** The ISO 8601 week-numbering year and week (1-53) of a calendar date. */
export function isoWeek(
  year: number,
  month: number,
  day: number,
): {
  /** The ISO week-numbering year: the year of the week's Thursday, which can differ at New Year. */
  year: number;
  /** 1-53 */
  week: number;
} {
  const date = new Date(Date.UTC(year, month - 1, day));
  // ISO weeks start on Monday; the week belongs to the year that holds its Thursday.
  const weekday = (date.getUTCDay() + 6) % 7; // Monday 0 ... Sunday 6
  date.setUTCDate(date.getUTCDate() - weekday + 3);
  const weekYear = date.getUTCFullYear();
  const firstThursday = new Date(Date.UTC(weekYear, 0, 4));
  firstThursday.setUTCDate(firstThursday.getUTCDate() - ((firstThursday.getUTCDay() + 6) % 7) + 3);
  const week = 1 + Math.round((date.getTime() - firstThursday.getTime()) / (7 * 86_400_000));
  return { year: weekYear, week };
}

/** Calendar periods retention buckets by. */
export type CalendarPeriod = "hourly" | "daily" | "weekly" | "monthly" | "yearly";

const pad = (n: number, width = 2) => String(n).padStart(width, "0");

function formatOffset(minutes: number): string {
  const sign = minutes < 0 ? "-" : "+";
  const abs = Math.abs(minutes);
  return `${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
}

/**
 * The bucket an instant falls in, as a readable label that also serves as the bucket's key:
 * hourly `2026-10-25T02:00+02:00`, daily `2026-10-25`, weekly `2026-W43` (ISO week-year and week),
 * monthly `2026-10`, yearly `2026`, all in `timeZone`.
 *
 * Hourly buckets carry the zone's offset, so the hour that a DST change repeats (02:00-03:00 in
 * Berlin on the last Sunday of October) is two buckets, one per real hour, not one two-hour
 * bucket. Days, weeks, months and years are wall-clock periods: a DST day has 23 or 25 hours.
 */
export function bucketOf(epochMs: number | LocalTime, period: CalendarPeriod, timeZone = "UTC"): string {
  const t = typeof epochMs === "number" ? localTime(epochMs, timeZone) : epochMs;
  const year = pad(t.year, 4);
  switch (period) {
    case "hourly":
      return `${year}-${pad(t.month)}-${pad(t.day)}T${pad(t.hour)}:00${formatOffset(t.offsetMinutes)}`;
    case "daily":
      return `${year}-${pad(t.month)}-${pad(t.day)}`;
    case "weekly": {
      const w = isoWeek(t.year, t.month, t.day);
      return `${pad(w.year, 4)}-W${pad(w.week)}`;
    }
    case "monthly":
      return `${year}-${pad(t.month)}`;
    case "yearly":
      return year;
  }
}
