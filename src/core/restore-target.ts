import type { Readable } from "node:stream";
import type { Manifest } from "./manifest.js";
import { lazySchema } from "./options.js";

/** What a {@link RestoreTarget}'s `restore` is given beside the plain bytes. */
export interface RestoreTargetContext {
  /** The backup being restored (its content type, job, sizes). */
  manifest: Manifest;
  /** The restore's signal: a target stops writing and rejects with ABORTED when it fires. */
  signal: AbortSignal;
  /**
   * Registers an undo the caller runs once the restored copy is no longer needed — a restore
   * drill drops its scratch database or folder with it, whatever happened. A target registers it
   * *before* it creates the thing, so a restore that fails half way is undone too. Absent when
   * the restore is meant to stay (`stowage restore --extract`).
   */
  onCleanup?: (cleanup: () => Promise<void>) => void;
}

/** What a {@link RestoreTarget} reports once the plain bytes are in place. */
export interface RestoreTargetResult {
  /** Plain bytes taken in. */
  bytes: number;
  /** JSON-safe facts for reports: the database and format, file counts, a dry run's counts. */
  details: Record<string, unknown>;
  /**
   * What a check may look at, by name: `directory`, `file`, `database`, `rows`, `kubernetes`…
   * (not necessarily JSON-safe; a drill spreads it into its check's context).
   */
  facts?: Record<string, unknown>;
}

/**
 * Where a restore puts a backup's plain bytes: a folder, a database, a cluster, a service. The
 * core and the jobs restore through this contract and import no adapter; each adapter that can
 * take its backups back exports a factory of one (`postgresRestoreTarget`, `kubernetesRestoreTarget`,
 * `httpRestoreTarget`; `directoryRestoreTarget` and `streamRestoreTarget` are the core's own).
 *
 * A target must consume or destroy `plain` in every outcome, so the sink's read is released.
 */
export interface RestoreTarget {
  /** A short name for reports and audit entries: "postgres", "directory"… */
  readonly kind: string;
  /**
   * Whether this target can take the backup, decided from its manifest before anything is read:
   * `true`, or the reason it cannot ("not a pg_dump backup (text/csv)").
   */
  accepts(manifest: Manifest): true | string;
  /**
   * Puts the plain bytes in place.
   * @throws {RESTORE_FAILED} when the target refuses or fails; the stream's own StowageError
   *   (INTEGRITY_MISMATCH…) passes through.
   * @throws {ABORTED} when `signal` fires.
   */
  restore(plain: Readable, context: RestoreTargetContext): Promise<RestoreTargetResult>;
}

/** A zod check for a {@link RestoreTarget}, by shape, so users' own targets pass. */
export const restoreTargetSchema = lazySchema((z) =>
  z.custom<RestoreTarget>(
    (v) =>
      typeof v === "object" &&
      v !== null &&
      typeof (v as RestoreTarget).kind === "string" &&
      typeof (v as RestoreTarget).accepts === "function" &&
      typeof (v as RestoreTarget).restore === "function",
    "expected a RestoreTarget (kind, accepts() and restore())",
  ),
);
