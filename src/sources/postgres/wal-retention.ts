/**
 * `applyWalRetention`: deletes the archived WAL no retained base backup needs, as
 * `planWalRetention` decides (the step `applyRetention` runs by itself, on its own).
 */
import type { z } from "zod";
import { JOB_NAME_PATTERN } from "../../core/keys.js";
import type { Manifest } from "../../core/manifest.js";
import { lazySchema, parseOptions, signalSchema, sinkSchema } from "../../core/options.js";
import type { Agrees, Assert } from "../../core/type-checks.js";
import type { Sink } from "../../core/types.js";
import { pruneWal } from "../../core/wal-prune.js";
import type { WalRetentionPlan } from "../../policies/wal.js";

export { listArchivedWal } from "../../core/wal-prune.js";

/** The zod schema of {@link ApplyWalRetentionOptions}, which parses the options at the boundary. */
export const applyWalRetentionOptionsSchema = lazySchema((z) =>
  z
    .object({
      sink: sinkSchema,
      job: z.string().regex(JOB_NAME_PATTERN, "lowercase letters, digits, '.', '_' and '-', at most 128"),
      /** The base backups retention keeps, e.g. `planRetention(...).keep.map((d) => d.manifest)`. */
      kept: z.array(z.custom<Manifest>((v) => typeof v === "object" && v !== null)),
      /** Only plan: delete nothing. @default false */
      dryRun: z.boolean().default(false),
      signal: signalSchema.optional(),
    })
    .strict(),
);
/** What {@link applyWalRetention} takes: the archive's sink and job, the base backups kept, dry run. */
export interface ApplyWalRetentionOptions {
  /** The sink that holds the WAL archive. */
  sink: Sink;
  /** The job whose prefix holds the WAL: `<job>/wal/<timeline>/` (lowercase letters, digits, '.', '_' and '-', at most 128). */
  job: string;
  /** The base backups retention keeps, e.g. `planRetention(...).keep.map((d) => d.manifest)`. */
  kept: Manifest[];
  /** Only plan: delete nothing. @default false */
  dryRun?: boolean;
  /** Aborts the operation between deletions; it then rejects with code `ABORTED`. */
  signal?: AbortSignal;
}
type _ApplyWalRetentionOptionsAgrees = Assert<
  Agrees<ApplyWalRetentionOptions, z.input<typeof applyWalRetentionOptionsSchema>>
>;

/**
 * Deletes the WAL files `planWalRetention` drops, given the base backups that stay: each file's
 * record first (without it the file no longer counts as archived), then its artifact.
 * `applyRetention` does this by itself for every job whose kept backups include a base backup;
 * this is the same step alone, for a caller that decides what stays some other way.
 * @returns the plan that was applied.
 * @throws {SINK_READ_FAILED} {SINK_DELETE_FAILED} (the first failed deletion; the rest went on) {ABORTED}
 */
export async function applyWalRetention(options: ApplyWalRetentionOptions): Promise<WalRetentionPlan> {
  const opts = parseOptions(applyWalRetentionOptionsSchema, options, "applyWalRetention");
  const { plan, failed } = await pruneWal({ ...opts, batchSize: 1000, signal: opts.signal });
  if (failed[0]) throw failed[0].error;
  return plan;
}
