/**
 * `restoreKubernetes`: applies a `kubernetesSource` archive to a cluster in restore order.
 */

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import type { z } from "zod";
import { StowageError, throwIfAborted } from "../../core/errors.js";
import { lazySchema, parseOptions, signalSchema } from "../../core/options.js";
import type { Agrees, Assert } from "../../core/type-checks.js";
import { type Json, KubeClient } from "./client.js";
import { resourceListSchema } from "./discovery.js";
import type { KubeConfigLike } from "./kube-config.js";
import { kubeConfigSchema } from "./kube-config.js";
import {
  applyEntry,
  type DryRunCreated,
  type KubernetesRestoreResult,
  type KubernetesRestoreStatus,
  waitForCrds,
} from "./restore-apply.js";
import { chooseEntries, isCrd, type SpooledEntry, spoolArchive } from "./restore-archive.js";

/** The zod schema of {@link RestoreKubernetesOptions}, which parses the options at the boundary. */
export const restoreKubernetesOptionsSchema = lazySchema((z) =>
  z
    .object({
      /** The plain tar (e.g. `await restore({ sink, manifest, keys })`). */
      stream: z.custom<Readable>(
        (v) =>
          typeof v === "object" && v !== null && typeof (v as Readable)[Symbol.asyncIterator] === "function",
        "expected a readable stream",
      ),
      kubeConfig: kubeConfigSchema,
      /** Only objects of these namespaces (as named in the backup). @default every namespace */
      namespaces: z.array(z.string().min(1)).min(1).optional(),
      /** Restore namespace A into B: `{ shop: "shop-copy" }`. Subjects of RoleBindings follow. @default {} */
      namespaceMapping: z.record(z.string().min(1), z.string().min(1)).default({}),
      /**
       * Only these types, named as for `kubernetesSource` (plural, singular, kind or short name,
       * optionally with its group); Namespaces the objects need are kept.
       */
      includeResources: resourceListSchema.optional(),
      excludeResources: resourceListSchema.optional(),
      /**
       * Apply cluster-scoped objects other than CRDs and Namespaces (ClusterRoles…).
       * @default true when `namespaces` is not given
       */
      includeClusterResources: z.boolean().optional(),
      /** Server-side dry run (`dryRun=All`): the server checks every object and stores nothing. @default false */
      dryRun: z.boolean().default(false),
      /** Stop at the first failed object (throws `RESTORE_FAILED`). @default false */
      strict: z.boolean().default(false),
      /** Take fields another manager owns (`force=true`) instead of reporting a conflict. @default false */
      force: z.boolean().default(false),
      /** The server-side apply field manager. @default "stowage" */
      fieldManager: z.string().min(1).max(128).default("stowage"),
      /** How long to wait for a restored CRD to be Established before its objects. @default 30000 */
      crdTimeoutMs: z.number().int().min(0).default(30_000),
      /** Largest YAML document accepted from the archive. @default 16 MiB */
      maxObjectBytes: z
        .number()
        .int()
        .positive()
        .default(16 << 20),
      signal: signalSchema.optional(),
    })
    .strict(),
);
/**
 * What {@link restoreKubernetes} takes: the tar, the cluster, which objects to apply into which
 * namespaces, and how (dry run, strict, force, field manager).
 */
export interface RestoreKubernetesOptions {
  /** The plain tar (e.g. `await restore({ sink, manifest, keys })`). */
  stream: Readable;
  /** A ready KubeConfig (`@kubernetes/client-node`). */
  kubeConfig: KubeConfigLike;
  /** Only objects of these namespaces (as named in the backup). @default every namespace */
  namespaces?: string[];
  /** Restore namespace A into B: `{ shop: "shop-copy" }`. Subjects of RoleBindings follow. @default {} */
  namespaceMapping?: Record<string, string>;
  /**
   * Only these types, named as for `kubernetesSource` (plural, singular, kind or short name,
   * optionally with its group); Namespaces the objects need are kept.
   */
  includeResources?: string[];
  /** Leave these types out, named as for `includeResources`. */
  excludeResources?: string[];
  /**
   * Apply cluster-scoped objects other than CRDs and Namespaces (ClusterRoles…).
   * @default true when `namespaces` is not given
   */
  includeClusterResources?: boolean;
  /** Server-side dry run (`dryRun=All`): the server checks every object and stores nothing. @default false */
  dryRun?: boolean;
  /** Stop at the first failed object (throws `RESTORE_FAILED`). @default false */
  strict?: boolean;
  /** Take fields another manager owns (`force=true`) instead of reporting a conflict. @default false */
  force?: boolean;
  /** The server-side apply field manager. @default "stowage" */
  fieldManager?: string;
  /** How long to wait for a restored CRD to be Established before its objects. @default 30000 */
  crdTimeoutMs?: number;
  /** Largest YAML document accepted from the archive. @default 16 MiB */
  maxObjectBytes?: number;
  /** Aborts the operation; it then rejects with code `ABORTED`. */
  signal?: AbortSignal;
}
type _RestoreKubernetesOptionsAgrees = Assert<
  Agrees<RestoreKubernetesOptions, z.input<typeof restoreKubernetesOptionsSchema>>
>;

/** What `restoreKubernetes` did, object by object. */
export interface KubernetesRestoreReport {
  /** Whether this was a server-side dry run: then nothing was stored. */
  dryRun: boolean;
  /** One per object, in the order applied (CRDs, then Namespaces, … workloads, the rest). */
  results: KubernetesRestoreResult[];
  /** How many results have each status; every status is present, 0 when none. */
  counts: Record<KubernetesRestoreStatus, number>;
  /** The archive's index.json, when it had one. */
  index?: Json;
}

const EMPTY_COUNTS = (): Record<KubernetesRestoreStatus, number> => ({
  created: 0,
  configured: 0,
  unchanged: 0,
  failed: 0,
  unverified: 0,
});

/**
 * Applies a `kubernetesSource` archive to a cluster in dependency order — CRDs (waiting until
 * they are Established), Namespaces, ServiceAccounts, Roles, RoleBindings, ConfigMaps, Secrets,
 * PVCs, Services, workloads, then the rest — with server-side apply under the field manager
 * "stowage" (optionally as a server dry run). Each object gets a result: `created`,
 * `configured`, `unchanged`, `failed` (with the server's reason), or in a dry run `unverified`.
 * One object's failure does not stop the rest unless `strict`.
 *
 * The archive is spooled to a temporary folder first (objects may arrive in any order), so memory
 * holds an index of names, not the objects; the folder is removed at the end. Objects are
 * applied one at a time.
 *
 * @throws {CONFIG_INVALID} on bad options (each named).
 * @throws {RESTORE_FAILED} when the archive is unreadable, or with `strict` on the first failed
 *   object (`details.result`, `details.results`).
 * @throws {ABORTED} when `signal` fires.
 * @example
 * const report = await restoreKubernetes({
 *   stream: await restore({ sink, manifest, keys: [{ key }] }), kubeConfig: kc,
 *   namespaceMapping: { shop: "shop-staging" }, dryRun: true,
 * });
 * if (report.counts.failed > 0) console.error(report.results.filter((r) => r.status === "failed"));
 */
export async function restoreKubernetes(options: RestoreKubernetesOptions): Promise<KubernetesRestoreReport> {
  const opts = parseOptions(restoreKubernetesOptionsSchema, options, "restoreKubernetes");
  const { signal, stream } = opts;
  let client: KubeClient;
  let spool: string;
  try {
    client = new KubeClient(opts.kubeConfig);
    throwIfAborted(signal, "restoreKubernetes");
    spool = await mkdtemp(join(tmpdir(), "stowage-k8s-restore-"));
  } catch (error) {
    stream.destroy(); // the caller's restore stream holds a sink read open until it is released
    throw error;
  }
  const report: KubernetesRestoreReport = { dryRun: opts.dryRun, results: [], counts: EMPTY_COUNTS() };
  try {
    // 1. Spool the archive: one file per object, an index in memory.
    const archive = await spoolArchive(stream, spool, opts.maxObjectBytes, signal);
    if (archive.index !== undefined) report.index = archive.index;
    // 2. Choose and order.
    const chosen = chooseEntries(archive.entries, archive.index, {
      namespaces: opts.namespaces,
      includeResources: opts.includeResources,
      excludeResources: opts.excludeResources,
      includeCluster: opts.includeClusterResources ?? opts.namespaces === undefined,
    });
    // 3. Apply, rank by rank.
    await applyInOrder(client, chosen, opts, report);
    return report;
  } finally {
    await rm(spool, { recursive: true, force: true });
  }
}

/**
 * Applies the chosen entries one at a time into `report`. Before the first object of a new rank,
 * waits for the CRDs restored so far to be Established, so that their custom resources apply.
 *
 * @throws {RESTORE_FAILED} with `strict`, on the first failed object.
 */
async function applyInOrder(
  client: KubeClient,
  chosen: SpooledEntry[],
  opts: z.output<typeof restoreKubernetesOptionsSchema>,
  report: KubernetesRestoreReport,
): Promise<void> {
  const { signal } = opts;
  const dryCreated: DryRunCreated = { namespaces: new Set<string>(), types: new Set<string>() };
  const crdsToWait: string[] = [];
  let currentRank = -1;
  for (const e of chosen) {
    throwIfAborted(signal, "restoreKubernetes");
    if (e.rank !== currentRank) {
      if (crdsToWait.length > 0) await waitForCrds(client, crdsToWait.splice(0), opts.crdTimeoutMs, signal);
      currentRank = e.rank;
    }
    const result = await applyEntry(client, e, opts, dryCreated, signal);
    report.results.push(result);
    report.counts[result.status]++;
    if (isCrd(e) && !opts.dryRun && (result.status === "created" || result.status === "configured")) {
      crdsToWait.push(result.name);
    }
    if (result.status === "failed" && opts.strict) {
      throw new StowageError(
        "RESTORE_FAILED",
        `restoreKubernetes: ${result.type} ${result.namespace ? `${result.namespace}/` : ""}${result.name}: ${result.reason}: ${result.message ?? ""}`,
        { details: { result, results: report.results } },
      );
    }
  }
}
