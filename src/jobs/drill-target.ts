import { directoryRestoreTarget, streamRestoreTarget } from "../core/directory-target.js";
import type { RestoreTarget } from "../core/restore-target.js";

/**
 * Where a drill restores to: a {@link RestoreTarget}, which the drill's cleanup undoes whatever
 * happened (a scratch folder removed, a scratch database dropped). The adapters' targets come from
 * their subpaths (`postgresRestoreTarget` from `stowage/sources/postgres`, `kubernetesRestoreTarget`
 * — a server-side dry run — from `stowage/sources/kubernetes`, `httpRestoreTarget`). Two plain
 * forms remain, for the core's own targets:
 * - `{ kind: "directory", parent? }`: a temporary folder; a tar is extracted into it, anything else
 *   written as one file (`directoryRestoreTarget({ parent })`);
 * - `{ kind: "stream" }`: the plain bytes are read and checked against the manifest, and thrown
 *   away (`streamRestoreTarget()`).
 */
export type DrillTarget =
  | RestoreTarget
  | {
      /** Restore into a temporary folder, removed after the drill. */
      kind: "directory";
      /** Where the temporary folder is made. @default os.tmpdir() */
      parent?: string;
    }
  | {
      /** Read the plain bytes, check them against the manifest and throw them away. */
      kind: "stream";
    };

export const isPlainTarget = (v: unknown): v is { kind: string } =>
  typeof v === "object" && v !== null && typeof (v as { kind?: unknown }).kind === "string";

/** The plain forms as the core's targets; a RestoreTarget as it is. */
export function resolveTarget(target: DrillTarget): RestoreTarget {
  if ("restore" in target) return target;
  if (target.kind === "directory") {
    const { parent } = target as { parent?: string };
    return directoryRestoreTarget(parent === undefined ? {} : { parent });
  }
  return streamRestoreTarget();
}
