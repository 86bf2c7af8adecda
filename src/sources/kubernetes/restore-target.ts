import type { z } from "zod";
import { formatOf } from "../../core/content-types.js";
import { StowageError } from "../../core/errors.js";
import { lazySchema, parseOptions } from "../../core/options.js";
import type { RestoreTarget } from "../../core/restore-target.js";
import type { Agrees, Assert } from "../../core/type-checks.js";
import { type KubeConfigLike, kubeConfigSchema } from "./kube-config.js";
import { restoreKubernetes } from "./restore.js";

/** The zod schema of {@link KubernetesRestoreTargetOptions}, which parses the options at the boundary. */
export const kubernetesRestoreTargetOptionsSchema = lazySchema((z) =>
  z
    .object({
      kubeConfig: kubeConfigSchema,
      /** Only these namespaces (as named in the backup). */
      namespaces: z.array(z.string().min(1)).min(1).optional(),
      /** Check the objects as if restored into other namespaces: `{ shop: "shop-drill" }`. */
      namespaceMapping: z.record(z.string().min(1), z.string().min(1)).optional(),
    })
    .strict(),
);
/** What {@link kubernetesRestoreTarget} takes: the KubeConfig, and which namespaces to check where. */
export interface KubernetesRestoreTargetOptions {
  /** A ready KubeConfig (`@kubernetes/client-node`). */
  kubeConfig: KubeConfigLike;
  /** Only these namespaces (as named in the backup), at least one. @default every namespace */
  namespaces?: string[];
  /** Check the objects as if restored into other namespaces: `{ shop: "shop-drill" }`. @default each object in its own namespace */
  namespaceMapping?: Record<string, string>;
}
type _KubernetesRestoreTargetOptionsAgrees = Assert<
  Agrees<KubernetesRestoreTargetOptions, z.input<typeof kubernetesRestoreTargetOptionsSchema>>
>;

/**
 * A cluster as a {@link RestoreTarget}, for restore drills: a server-side dry run (`dryRun=All`)
 * of {@link restoreKubernetes}, so every object is checked by the API server and nothing is
 * stored. An object the server refuses fails the restore. Fact for a check: `kubernetes` (the
 * dry run's report).
 *
 * @throws {CONFIG_INVALID} for bad options.
 * @example
 * restoreDrill({ job: cluster, target: kubernetesRestoreTarget({ kubeConfig }) });
 */
export function kubernetesRestoreTarget(options: KubernetesRestoreTargetOptions): RestoreTarget {
  const opts = parseOptions(kubernetesRestoreTargetOptionsSchema, options, "kubernetesRestoreTarget");
  return {
    kind: "kubernetes",
    accepts: (manifest) =>
      formatOf(manifest.content.contentType) === "tar" ||
      `not a Kubernetes export (${manifest.content.contentType})`,
    async restore(plain, { manifest, signal }) {
      const result = await restoreKubernetes({
        stream: plain,
        kubeConfig: opts.kubeConfig,
        dryRun: true,
        ...(opts.namespaces ? { namespaces: opts.namespaces } : {}),
        ...(opts.namespaceMapping ? { namespaceMapping: opts.namespaceMapping } : {}),
        signal,
      });
      if (result.counts.failed > 0) {
        const first = result.results.find((r) => r.status === "failed");
        const which = first
          ? `, first ${first.kind} ${first.namespace ? `${first.namespace}/` : ""}${first.name}: ${first.reason ?? ""}`
          : "";
        throw new StowageError(
          "RESTORE_FAILED",
          `kubernetesRestoreTarget: the server refused ${result.counts.failed} object(s) in the dry run${which}`,
          { details: { counts: result.counts } },
        );
      }
      return {
        bytes: manifest.content.bytes, // restore() errors the stream unless every byte matched
        details: { dryRun: true, counts: result.counts },
        facts: { kubernetes: result },
      };
    },
  };
}
