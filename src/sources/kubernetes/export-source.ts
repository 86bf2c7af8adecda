/**
 * `kubernetesSource`: resources as a tar of YAML documents in restore order, with an `index.json`.
 */

import tar from "tar-stream";
import type { z } from "zod";
import { StowageError } from "../../core/errors.js";
import { lazySchema, parseOptions } from "../../core/options.js";
import { guardedPack, packedTar } from "../../core/pack-tar.js";
import type { Agrees, Assert } from "../../core/type-checks.js";
import type { Source, SourceContext, SourceOutput } from "../../core/types.js";
import { VERSION } from "../../core/version.js";
import { enc, groupVersionPath, KubeApiError, KubeClient, type KubeObject, sourceError } from "./client.js";
import {
  type DiscoveryResult,
  discover,
  type KubernetesResourceType,
  resourceListSchema,
  typeName,
} from "./discovery.js";
import {
  addEntry,
  type ExportRun,
  exportAll,
  exportObject,
  type KubernetesArchiveIndex,
  listAll,
  skip,
} from "./export-archive.js";
import { planExport } from "./export-plan.js";
import type { KubeConfigLike } from "./kube-config.js";
import { kubeConfigSchema } from "./kube-config.js";

/** The zod schema of {@link KubernetesSourceOptions}, which parses the options at the boundary. */
export const kubernetesSourceOptionsSchema = lazySchema((z) =>
  z
    .object({
      /** A ready KubeConfig (`@kubernetes/client-node`). */
      kubeConfig: kubeConfigSchema,
      /** The namespaces to back up, or "all". */
      namespaces: z.union([
        z.literal("all"),
        z.array(z.string().min(1)).min(1, "name at least one namespace"),
      ]),
      /**
       * Only these types, each named by plural, singular, kind or short name, case-insensitive,
       * optionally with its group (`deployments`, `Deployment`, `deploy`, `deployments.apps`); also
       * brings back a default-excluded type.
       * @default every listable type
       */
      includeResources: resourceListSchema.optional(),
      /** Leave these types out. @default none (besides events, nodes and other derived types) */
      excludeResources: resourceListSchema.optional(),
      /** A label selector applied to every list (not to the Namespace and CRD objects). */
      labelSelector: z.string().min(1).optional(),
      /**
       * Also export cluster-scoped types (ClusterRoles, StorageClasses, all CRDs…). Without it, only
       * the Namespaces backed up and the CRDs of custom resources found are exported.
       * @default true when namespaces is "all", else false
       */
      includeClusterResources: z.boolean().optional(),
      /** Export Secrets; the source is then sensitive and `backup()` requires encryption. @default false */
      includeSecrets: z.boolean().default(false),
      /** Export objects a controller owns (Pods of a ReplicaSet, ReplicaSets of a Deployment). @default false */
      includeOwned: z.boolean().default(false),
      /** Objects per list request; memory holds about one page. @default 250 */
      pageSize: z.number().int().min(1).max(10_000).default(250),
      /** Fail on a type the credentials may not list (403) instead of recording and skipping it. @default false */
      strict: z.boolean().default(false),
      /** Logical name for the manifest. @default the cluster's server URL */
      name: z.string().min(1).optional(),
    })
    .strict(),
);
/** What {@link kubernetesSource} takes: the KubeConfig, and which namespaces and resource types to export. */
export interface KubernetesSourceOptions {
  /** A ready KubeConfig (`@kubernetes/client-node`). */
  kubeConfig: KubeConfigLike;
  /** The namespaces to back up, or "all". */
  namespaces: string[] | "all";
  /**
   * Only these types, each named by plural, singular, kind or short name, case-insensitive,
   * optionally with its group (`deployments`, `Deployment`, `deploy`, `deployments.apps`); also
   * brings back a default-excluded type.
   * @default every listable type
   */
  includeResources?: string[];
  /** Leave these types out. @default none (besides events, nodes and other derived types) */
  excludeResources?: string[];
  /** A label selector applied to every list (not to the Namespace and CRD objects). */
  labelSelector?: string;
  /**
   * Also export cluster-scoped types (ClusterRoles, StorageClasses, all CRDs…). Without it, only
   * the Namespaces backed up and the CRDs of custom resources found are exported.
   * @default true when namespaces is "all", else false
   */
  includeClusterResources?: boolean;
  /** Export Secrets; the source is then sensitive and `backup()` requires encryption. @default false */
  includeSecrets?: boolean;
  /** Export objects a controller owns (Pods of a ReplicaSet, ReplicaSets of a Deployment). @default false */
  includeOwned?: boolean;
  /** Objects per list request; memory holds about one page. @default 250 */
  pageSize?: number;
  /** Fail on a type the credentials may not list (403) instead of recording and skipping it. @default false */
  strict?: boolean;
  /** Logical name for the manifest. @default the cluster's server URL */
  name?: string;
}
type _KubernetesSourceOptionsAgrees = Assert<
  Agrees<KubernetesSourceOptions, z.input<typeof kubernetesSourceOptionsSchema>>
>;

/**
 * Kubernetes resources as a tar: one YAML document per object at
 * `namespaces/<ns>/<group>/<resource>/<name>.yaml` (the core group is "core"; cluster-scoped
 * objects under `cluster/<group>/<resource>/<name>.yaml`), then an `index.json` (counts per type,
 * the server version, skipped and forbidden types).
 *
 * - Discovers every listable type (preferred versions) and lists each in pages of `pageSize`,
 *   writing objects as pages arrive: memory holds about one page, never the cluster.
 * - Entries come in restore order (CRDs, Namespaces, ServiceAccounts, RBAC, ConfigMaps, Secrets,
 *   storage, Services, workloads, the rest), so the archive reads like the restore will go.
 * - Each object is stripped of what a restore must not carry (`status`, server-set metadata, the last-applied annotation).
 *   Objects a controller owns are skipped unless `includeOwned`; events, nodes and metrics are
 *   skipped unless named in `includeResources`. Secrets only with `includeSecrets`, and such a
 *   source is `sensitive`: `backup()` then refuses to run without encryption (`CONFIG_INVALID`)
 *   unless `allowUnencrypted` is set.
 * - A type the credentials may not list (403), or a group whose discovery fails, is recorded in
 *   the details and `index.json` and skipped — or, with `strict`, fails the backup.
 * - A named namespace that does not exist fails the backup (`SOURCE_FAILED`).
 *
 * @throws {CONFIG_INVALID} on bad options (each named), or a KubeConfig without a current cluster.
 * @throws {SOURCE_FAILED} (through `backup()`) when the server cannot be reached, refuses the
 *   credentials (401), or answers an error other than a skippable 403.
 * @example
 * const kc = new KubeConfig(); kc.loadFromDefault();
 * await backup({
 *   job: "shop-k8s", sink, transforms: [gzip(), aes256gcm({ key })],
 *   source: kubernetesSource({ kubeConfig: kc, namespaces: ["shop"], includeSecrets: true }),
 * });
 */
export function kubernetesSource(options: KubernetesSourceOptions): Source {
  const opts = parseOptions(kubernetesSourceOptionsSchema, options, "kubernetesSource");
  const client = new KubeClient(opts.kubeConfig);
  return {
    kind: "kubernetes",
    name: opts.name ?? client.server,
    sensitive: opts.includeSecrets,
    async open({ signal }: SourceContext): Promise<SourceOutput> {
      const run: ExportRun = {
        client,
        signal,
        pack: guardedPack(tar),
        mtime: new Date(),
        index: {
          format: "stowage-kubernetes/1",
          generator: { name: "stowage", version: VERSION },
          server: { url: client.server },
          namespaces: opts.namespaces,
          ...(opts.labelSelector ? { labelSelector: opts.labelSelector } : {}),
          includeSecrets: opts.includeSecrets,
          includeOwned: opts.includeOwned,
          objects: 0,
          resources: [],
          skipped: [],
        },
        strict: opts.strict,
        includeOwned: opts.includeOwned,
        pageSize: opts.pageSize,
      };
      const produced = writeArchive(run, opts);
      const stream = packedTar(run.pack, produced);
      return {
        stream,
        contentType: "application/x-tar",
        details: async () => {
          await produced;
          return archiveDetails(run.index, opts, client.server);
        },
      };
    },
  };
}

type Options = z.output<typeof kubernetesSourceOptionsSchema>;

/** The manifest details of a finished run. */
function archiveDetails(index: KubernetesArchiveIndex, opts: Options, server: string) {
  return {
    server,
    serverVersion: (index.server.version?.gitVersion as string | undefined) ?? null,
    namespaces: opts.namespaces,
    ...(opts.labelSelector ? { labelSelector: opts.labelSelector } : {}),
    objects: index.objects,
    resources: Object.fromEntries(index.resources.filter((r) => r.count > 0).map((r) => [r.type, r.count])),
    ownedSkipped: index.resources.reduce((n, r) => n + r.ownedSkipped, 0),
    secretsIncluded: opts.includeSecrets,
    skipped: index.skipped,
    forbidden: index.skipped.filter((s) => s.reason === "forbidden").map((s) => s.type),
  };
}

/**
 * The whole archive: the server version, discovery, then CRDs, the Namespace objects and every
 * other type in restore order, and last index.json.
 */
async function writeArchive(run: ExportRun, opts: Options): Promise<void> {
  await readServerVersion(run);
  const discovery = await discoverTypes(run);
  const includeCluster = opts.includeClusterResources ?? opts.namespaces === "all";
  const plan = planExport(discovery.types, {
    includeResources: opts.includeResources,
    excludeResources: opts.excludeResources,
    includeSecrets: opts.includeSecrets,
    includeCluster,
  });
  const scopes: Array<string | undefined> = opts.namespaces === "all" ? [undefined] : opts.namespaces;

  // CRDs first. With cluster resources, all of them; else those of custom resources found.
  if (plan.crdType) {
    if (plan.allCrds) await exportAll(run, plan.crdType, undefined, undefined);
    else await exportCrdsInUse(run, plan.crdType, plan.namespaced, scopes, opts.labelSelector);
  }
  // Then the Namespace objects of what is backed up.
  if (plan.namespaceType) {
    if (opts.namespaces === "all") await exportAll(run, plan.namespaceType, undefined, undefined);
    else await exportNamespaces(run, plan.namespaceType, opts.namespaces);
  }
  // Everything else, in restore order: cluster-scoped types of a rank before namespaced ones.
  for (const t of plan.ordered) {
    for (const ns of t.namespaced ? scopes : [undefined]) {
      await exportAll(run, t, ns, opts.labelSelector);
    }
  }
  await addEntry(run, "index.json", `${JSON.stringify(run.index, null, 2)}\n`);
}

/** Notes the server's version in the index; only a dead server or refused credentials fail. */
async function readServerVersion(run: ExportRun): Promise<void> {
  const { client, signal } = run;
  try {
    run.index.server.version = (await client.json("GET", "/version", { signal })).body;
  } catch (error) {
    // Some gateways hide /version; the backup does not depend on it. A dead server does.
    if (!(error instanceof KubeApiError))
      throw sourceError(error, "kubernetes source: contacting the API server", signal);
    if (error.httpStatus === 401)
      throw sourceError(error, "kubernetes source: the server refused the credentials");
  }
}

/** Every type the server serves; a group whose discovery failed is recorded as skipped. */
async function discoverTypes(run: ExportRun): Promise<DiscoveryResult> {
  let discovery: DiscoveryResult;
  try {
    discovery = await discover(run.client, run.signal);
  } catch (error) {
    throw sourceError(error, "kubernetes source: discovery", run.signal);
  }
  for (const f of discovery.failed) {
    skip(
      run,
      {
        type: f.groupVersion,
        reason: "discovery-failed",
        httpStatus: f.httpStatus,
        message: f.message,
      },
      new KubeApiError(f.httpStatus, f.reason, f.message, f.groupVersion, undefined),
    );
  }
  return discovery;
}

/** Without cluster resources: the CRDs of the custom resource types that have objects in scope. */
async function exportCrdsInUse(
  run: ExportRun,
  crdType: KubernetesResourceType,
  namespaced: KubernetesResourceType[],
  scopes: Array<string | undefined>,
  labelSelector: string | undefined,
): Promise<void> {
  const { client, signal } = run;
  const names = new Map<string, string>(); // "widgets.example.com" -> CRD name
  await listAll(
    run,
    crdType,
    undefined,
    async (items) => {
      for (const item of items) {
        const spec = item.spec as { group?: string; names?: { plural?: string } } | undefined;
        if (spec?.group && spec.names?.plural)
          names.set(`${spec.names.plural}.${spec.group}`, item.metadata.name);
      }
    },
    undefined,
  );
  for (const t of namespaced) {
    const crdName = names.get(typeName(t));
    if (!crdName) continue;
    if (!(await hasObjects(run, t, scopes, labelSelector))) continue;
    try {
      const { body } = await client.json<KubeObject>(
        "GET",
        `${groupVersionPath(crdType.group, crdType.version)}/${crdType.resource}/${enc(crdName)}`,
        { signal },
      );
      await exportObject(run, crdType, body);
    } catch (error) {
      if (error instanceof KubeApiError && error.httpStatus === 403) {
        skip(
          run,
          { type: typeName(crdType), reason: "forbidden", httpStatus: 403, message: error.message },
          error,
        );
      } else throw sourceError(error, `kubernetes source: reading CRD ${crdName}`, signal);
    }
  }
}

/** Whether a type has at least one object in one of the scopes (a forbidden list counts as none). */
async function hasObjects(
  run: ExportRun,
  t: KubernetesResourceType,
  scopes: Array<string | undefined>,
  labelSelector: string | undefined,
): Promise<boolean> {
  const { client, signal } = run;
  for (const ns of scopes) {
    const path = `${groupVersionPath(t.group, t.version)}${ns ? `/namespaces/${enc(ns)}` : ""}/${t.resource}`;
    try {
      const { body } = await client.json<{ items?: unknown[] }>("GET", path, {
        query: { limit: 1, labelSelector },
        signal,
      });
      if ((body.items?.length ?? 0) > 0) return true;
    } catch (error) {
      if (!(error instanceof KubeApiError && error.httpStatus === 403)) {
        throw sourceError(error, `kubernetes source: listing ${typeName(t)}`, signal);
      }
    }
  }
  return false;
}

/**
 * The Namespace objects of the namespaces named.
 *
 * @throws {SOURCE_FAILED} when one does not exist.
 */
async function exportNamespaces(run: ExportRun, nsType: KubernetesResourceType, namespaces: string[]) {
  const { client, signal } = run;
  for (const ns of namespaces) {
    try {
      const { body } = await client.json<KubeObject>(
        "GET",
        `${groupVersionPath(nsType.group, nsType.version)}/namespaces/${enc(ns)}`,
        { signal },
      );
      await exportObject(run, nsType, body);
    } catch (error) {
      if (error instanceof KubeApiError && error.httpStatus === 403) {
        skip(
          run,
          { type: "namespaces", namespace: ns, reason: "forbidden", httpStatus: 403, message: error.message },
          error,
        );
      } else if (error instanceof KubeApiError && error.httpStatus === 404) {
        throw new StowageError("SOURCE_FAILED", `kubernetes source: namespace ${ns} does not exist`, {
          cause: error,
          details: { namespace: ns, httpStatus: 404 },
        });
      } else throw sourceError(error, `kubernetes source: reading namespace ${ns}`, signal);
    }
  }
}
