/**
 * What interrupted runs leave in a sink (artifacts without a manifest, temporary files, open
 * uploads), found from a listing: {@link findOrphans} lists, and a retention run that has just
 * listed the same prefix for its manifests hands that listing in instead of listing twice.
 */
import type { z } from "zod";
import { wrapError } from "./errors.js";
import { MANIFEST_SUFFIX } from "./manifest.js";
import { durationSchema, lazySchema, parseDuration, parseOptions, signalSchema } from "./options.js";
import type { Agrees, Assert } from "./type-checks.js";
import type { Leftover, ObjectInfo, Sink } from "./types.js";

const orphanOptionsSchema = lazySchema((z) =>
  z
    .object({
      /**
       * Only artifacts without a manifest older than this (by the sink's last-modified time) are
       * reported; handed to the sink's `leftovers` as `olderThanMs`, which applies it only to what
       * it cannot tell alive or dead by itself.
       */
      olderThan: durationSchema,
      /** The reference time. @default new Date() */
      now: z.date().optional(),
      /** Only keys under this prefix (e.g. `"app-db/"`). @default "" */
      prefix: z.string().default(""),
      signal: signalSchema.optional(),
    })
    .strict(),
);
/** Options of {@link findOrphans}. */
export interface FindOrphansOptions {
  /**
   * Only artifacts without a manifest older than this (by the sink's last-modified time) are
   * reported; handed to the sink's `leftovers` as `olderThanMs`, which applies it only to what
   * it cannot tell alive or dead by itself.
   */
  olderThan: string;
  /** The reference time. @default new Date() */
  now?: Date;
  /** Only keys under this prefix (e.g. `"app-db/"`). @default "" */
  prefix?: string;
  /** Aborts the operation; it then rejects with code `ABORTED`. */
  signal?: AbortSignal;
}
type _FindOrphansOptionsAgrees = Assert<Agrees<FindOrphansOptions, z.input<typeof orphanOptionsSchema>>>;

/** What {@link findOrphans} found. */
export interface OrphanReport {
  /** Backup artifacts with no manifest beside them (an interrupted delete or backup). */
  artifacts: ObjectInfo[];
  /**
   * What interrupted writes left that the sink's `list` does not show, as its `leftovers` reports
   * them (a filesystem sink's temporary files whose writer is gone, an S3 sink's abandoned
   * multipart uploads); empty for a sink without `leftovers`.
   */
  temporary: Leftover[];
  /** Manifests whose artifact is missing: should never happen; reported, not deleted. */
  danglingManifests: string[];
}

/** The last path segment of a stowage artifact key starts with a backup id (see `newBackupId`). */
const ARTIFACT_NAME = /(^|\/)\d{8}T\d{9}Z-[0-9a-f]{8}[^/]*$/;

/**
 * Lists what interrupted runs leave in a sink: artifacts whose manifest is missing, only when
 * older than `olderThan` — a younger artifact may be a backup whose manifest is being written —;
 * what the sink's `leftovers` reports under `prefix` (for sinks that have it: temporary files
 * whose writer is gone, abandoned multipart uploads; the sink decides what is abandoned, by
 * liveness where it can tell and by `olderThan` where it cannot); and manifests whose artifact is
 * missing. Only objects named like stowage artifacts
 * (`…/<backup id>.<ext>`) count, so other files that share the sink are never called orphans.
 *
 * @throws {CONFIG_INVALID} for bad options. {SINK_READ_FAILED} when listing fails. {ABORTED}.
 * @example const { artifacts, temporary } = await findOrphans(sink, { olderThan: "1h" });
 */
export async function findOrphans(sink: Sink, options: FindOrphansOptions): Promise<OrphanReport> {
  const o = parseOptions(orphanOptionsSchema, options, "findOrphans");
  return orphansIn(sink, { ...o, now: o.now ?? new Date() });
}

/**
 * {@link findOrphans} with parsed options; `listed` is the sink's listing under `prefix` when the
 * caller has one (without it the sink is listed here).
 * @internal
 */
export async function orphansIn(
  sink: Sink,
  o: { olderThan: string; now: Date; prefix: string; signal?: AbortSignal | undefined },
  listed?: Iterable<ObjectInfo>,
): Promise<OrphanReport> {
  const { signal, prefix, now } = o;
  const olderThanMs = parseDuration(o.olderThan, "olderThan");
  const cutoff = now.getTime() - olderThanMs;
  const report: OrphanReport = { artifacts: [], temporary: [], danglingManifests: [] };
  const objects = new Map<string, ObjectInfo>();
  const manifests = new Set<string>();
  const listOptions = signal ? { signal } : {};
  const sort = (info: ObjectInfo) => {
    if (info.key.endsWith(MANIFEST_SUFFIX)) manifests.add(info.key);
    else objects.set(info.key, info);
  };
  try {
    if (listed) for (const info of listed) sort(info);
    else for await (const info of sink.list(prefix, listOptions)) sort(info);
    for (const [key, info] of objects) {
      // The manifest first: nearly every artifact has one, and a lookup is cheaper than the pattern.
      if (
        !manifests.has(key + MANIFEST_SUFFIX) &&
        ARTIFACT_NAME.test(key) &&
        info.lastModified.getTime() < cutoff
      ) {
        report.artifacts.push(info);
      }
    }
    for (const key of manifests) {
      if (!objects.has(key.slice(0, -MANIFEST_SUFFIX.length))) report.danglingManifests.push(key);
    }
    if (sink.leftovers) {
      for await (const leftover of sink.leftovers(prefix, { ...listOptions, olderThanMs, now })) {
        report.temporary.push(leftover);
      }
    }
  } catch (error) {
    throw wrapError(
      error,
      "SINK_READ_FAILED",
      `findOrphans: listing ${sink.kind} sink under "${prefix}"`,
      { prefix },
      signal,
    );
  }
  report.danglingManifests.sort();
  return report;
}
