/**
 * `applyWalRetention`: deletes the archived WAL no retained base backup needs, as
 * `planWalRetention` decides.
 */
import type { z } from "zod";
import { wrapError } from "../../core/errors.js";
import { JOB_NAME_PATTERN } from "../../core/keys.js";
import type { Manifest } from "../../core/manifest.js";
import { lazySchema, parseOptions, signalSchema, sinkSchema } from "../../core/options.js";
import type { Sink } from "../../core/types.js";
import { planWalRetention, type WalRetentionPlan } from "../../policies/wal.js";
import { type ArchivedWal, groupWalListing, WAL_FOLDER } from "./wal-names.js";

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
export type ApplyWalRetentionOptions = z.input<typeof applyWalRetentionOptionsSchema>;

/** Every archived WAL file of a job (one listing of `<job>/wal/`). @throws {SINK_READ_FAILED} */
export async function listArchivedWal(sink: Sink, job: string, signal?: AbortSignal): Promise<ArchivedWal[]> {
  const listed: Array<{ key: string; lastModified: Date }> = [];
  const prefix = `${job}/${WAL_FOLDER}/`;
  try {
    for await (const info of sink.list(prefix, signal ? { signal } : {})) listed.push(info);
  } catch (error) {
    throw wrapError(error, "SINK_READ_FAILED", `listing the WAL of ${job}`, { prefix }, signal);
  }
  return groupWalListing(job, listed).files;
}

/**
 * Deletes the WAL files `planWalRetention` drops: each file's record first (without it the file
 * no longer counts as archived), then its artifact. Call it after base backups were pruned.
 * @returns the plan that was applied.
 * @throws {SINK_READ_FAILED} {SINK_DELETE_FAILED} {ABORTED}
 */
export async function applyWalRetention(options: ApplyWalRetentionOptions): Promise<WalRetentionPlan> {
  const opts = parseOptions(applyWalRetentionOptionsSchema, options, "applyWalRetention");
  const { sink, job, signal } = opts;
  const wal = await listArchivedWal(sink, job, signal);
  const plan = planWalRetention(opts.kept, wal);
  if (opts.dryRun || plan.drop.length === 0) return plan;
  const records = plan.drop.map((d) => (d.file as ArchivedWal).recordKey);
  const rest = plan.drop.flatMap((d) => d.file.keys.filter((k) => !records.includes(k)));
  for (const keys of [records, rest]) {
    try {
      await sink.delete(keys, signal ? { signal } : {});
    } catch (error) {
      throw wrapError(error, "SINK_DELETE_FAILED", `deleting old WAL of ${job}`, { job }, signal);
    }
  }
  return plan;
}
