/**
 * Kubernetes: resource export (`kubernetesSource`), ordered restore (`restoreKubernetes`) and pod
 * logs (`kubernetesLogsSource`).
 *
 * The user passes a ready `KubeConfig` from `@kubernetes/client-node` (1.x or 2.x, an optional
 * peer). stowage uses it for what it is good at — the current cluster, TLS material, tokens,
 * exec/OIDC plugins and proxies, via `getCurrentCluster()` and `applyToHTTPSOptions()` — and
 * speaks the REST API itself over `node:http(s)`. Why not the generated typed clients: they
 * deserialize built-in kinds into model classes that drop fields the client version does not know
 * (a backup must keep every field), they buffer pod logs whole, and they do not page generic
 * lists. Nothing here imports the package at run time.
 */

import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import tar from "tar-stream";
import { z } from "zod";
import { StowageError, throwIfAborted } from "../core/errors.js";
import { parseOptions } from "../core/options.js";
import { packedTar } from "../core/pack-tar.js";
import type { Source, SourceContext, SourceOutput } from "../core/types.js";
import { VERSION } from "../core/version.js";
import {
  apiVersionOf,
  enc,
  groupVersionPath,
  type Json,
  KubeApiError,
  KubeClient,
  type KubeObject,
  sourceError,
} from "./kubernetes/client.js";
import {
  DEFAULT_EXCLUDED,
  type DiscoveryResult,
  discover,
  type KubernetesResourceType,
  matchesResourceType,
  resourceListSchema,
  typeName,
} from "./kubernetes/discovery.js";
import { type KubeConfigLike, kubeConfigSchema } from "./kubernetes/kube-config.js";
import {
  archivePath,
  isControllerOwned,
  objectToYaml,
  restoreRank,
  sanitizeObject,
} from "./kubernetes/objects.js";

export {
  type KubernetesLogsSourceOptions,
  kubernetesLogsSource,
  kubernetesLogsSourceOptionsSchema,
} from "./kubernetes/logs-source.js";
export {
  type KubernetesRestoreReport,
  type RestoreKubernetesOptions,
  restoreKubernetes,
  restoreKubernetesOptionsSchema,
} from "./kubernetes/restore.js";
export type { KubernetesRestoreResult, KubernetesRestoreStatus } from "./kubernetes/restore-apply.js";
export type { KubeConfigLike };

// ---------------------------------------------------------------------------------------------
// kubernetesSource

export const kubernetesSourceOptionsSchema = z
  .object({
    /** A ready KubeConfig (`@kubernetes/client-node`). */
    kubeConfig: kubeConfigSchema,
    /** The namespaces to back up, or "all". */
    namespaces: z.union([z.literal("all"), z.array(z.string().min(1)).min(1, "name at least one namespace")]),
    /** Only these types (see {@link matchesResourceType}); also brings back a default-excluded type. @default every listable type */
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
  .strict();
export type KubernetesSourceOptions = z.input<typeof kubernetesSourceOptionsSchema>;

/** A type that was not exported, and why (in the manifest details and `index.json`). */
export interface KubernetesSkippedType {
  type: string;
  namespace?: string;
  reason: "forbidden" | "discovery-failed" | "list-failed";
  httpStatus: number;
  message: string;
}

/** The archive's `index.json`. */
export interface KubernetesArchiveIndex {
  format: "stowage-kubernetes/1";
  generator: { name: "stowage"; version: string };
  server: { url: string; version?: Json };
  namespaces: string[] | "all";
  labelSelector?: string;
  includeSecrets: boolean;
  includeOwned: boolean;
  objects: number;
  /** Per exported type: group, version, kind, namespaced and how many objects. */
  resources: Array<{
    type: string;
    group: string;
    version: string;
    resource: string;
    kind: string;
    singularName?: string;
    shortNames?: string[];
    namespaced: boolean;
    count: number;
    ownedSkipped: number;
  }>;
  skipped: KubernetesSkippedType[];
}

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
 * - Each object is stripped of what a restore must not carry (see {@link sanitizeObject}).
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
  const includeCluster = opts.includeClusterResources ?? opts.namespaces === "all";
  return {
    kind: "kubernetes",
    name: opts.name ?? client.server,
    sensitive: opts.includeSecrets,
    async open({ signal }: SourceContext): Promise<SourceOutput> {
      const index: KubernetesArchiveIndex = {
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
      };
      const pack = tar.pack();
      const mtime = new Date();
      const addEntry = async (name: string, text: string) => {
        const data = Buffer.from(text, "utf8");
        await pipeline(Readable.from([data]), pack.entry({ name, size: data.length, mtime, mode: 0o644 }));
      };
      const tally = (t: KubernetesResourceType) => {
        let row = index.resources.find((r) => r.type === typeName(t));
        if (!row) {
          row = {
            type: typeName(t),
            group: t.group,
            version: t.version,
            resource: t.resource,
            kind: t.kind,
            ...(t.singularName ? { singularName: t.singularName } : {}),
            ...(t.shortNames ? { shortNames: t.shortNames } : {}),
            namespaced: t.namespaced,
            count: 0,
            ownedSkipped: 0,
          };
          index.resources.push(row);
        }
        return row;
      };
      const skip = (entry: KubernetesSkippedType, error: KubeApiError) => {
        if (opts.strict) {
          throw new StowageError(
            "SOURCE_FAILED",
            `kubernetes source: ${entry.type}${entry.namespace ? ` in ${entry.namespace}` : ""}: ${error.httpStatus} ${error.reason}: ${error.message}`,
            { cause: error, details: { ...entry } },
          );
        }
        index.skipped.push(entry);
      };
      /** Writes one object, or counts it as owned and passes it over. */
      const exportObject = async (t: KubernetesResourceType, raw: KubeObject): Promise<void> => {
        const row = tally(t);
        if (!opts.includeOwned && isControllerOwned(raw)) {
          row.ownedSkipped++;
          return;
        }
        const object = sanitizeObject({ apiVersion: apiVersionOf(t.group, t.version), kind: t.kind, ...raw });
        const ns = t.namespaced ? raw.metadata.namespace : undefined;
        await addEntry(archivePath(t, raw.metadata.name, ns), objectToYaml(object));
        row.count++;
        index.objects++;
      };
      /** Pages of a list; a 403 is recorded (or fails, with strict) and ends the list. */
      const listAll = async (
        t: KubernetesResourceType,
        namespace: string | undefined,
        visit: (items: KubeObject[]) => Promise<void>,
        labelSelector: string | undefined,
      ) => {
        const path = `${groupVersionPath(t.group, t.version)}${namespace ? `/namespaces/${enc(namespace)}` : ""}/${t.resource}`;
        let token: string | undefined;
        do {
          throwIfAborted(signal, "kubernetes source");
          let page: { items?: KubeObject[]; metadata?: { continue?: string } };
          try {
            ({ body: page } = await client.json("GET", path, {
              query: { limit: opts.pageSize, continue: token, labelSelector },
              signal,
            }));
          } catch (error) {
            if (error instanceof KubeApiError && error.httpStatus === 403) {
              skip(
                {
                  type: typeName(t),
                  ...(namespace ? { namespace } : {}),
                  reason: "forbidden",
                  httpStatus: 403,
                  message: error.message,
                },
                error,
              );
              return;
            }
            throw sourceError(
              error,
              `kubernetes source: listing ${typeName(t)}${namespace ? ` in ${namespace}` : ""}`,
              signal,
            );
          }
          await visit(page.items ?? []);
          token = page.metadata?.continue || undefined;
        } while (token);
      };
      /** Lists every object of a type (in one namespace, or cluster-wide) and exports each. */
      const exportAll = (
        t: KubernetesResourceType,
        namespace: string | undefined,
        selector: string | undefined,
      ) =>
        listAll(
          t,
          namespace,
          async (items) => {
            for (const item of items) {
              throwIfAborted(signal, "kubernetes source");
              await exportObject(t, item);
            }
          },
          selector,
        );

      const produce = async () => {
        try {
          index.server.version = (await client.json("GET", "/version", { signal })).body;
        } catch (error) {
          // Some gateways hide /version; the backup does not depend on it. A dead server does.
          if (!(error instanceof KubeApiError))
            throw sourceError(error, "kubernetes source: contacting the API server", signal);
          if (error.httpStatus === 401)
            throw sourceError(error, "kubernetes source: the server refused the credentials");
        }
        let discovery: DiscoveryResult;
        try {
          discovery = await discover(client, signal);
        } catch (error) {
          throw sourceError(error, "kubernetes source: discovery", signal);
        }
        for (const f of discovery.failed) {
          skip(
            {
              type: f.groupVersion,
              reason: "discovery-failed",
              httpStatus: f.httpStatus,
              message: f.message,
            },
            new KubeApiError(f.httpStatus, f.reason, f.message, f.groupVersion, undefined),
          );
        }
        const named = (list: string[] | undefined, t: KubernetesResourceType) =>
          list?.some((p) => matchesResourceType(t, p)) ?? false;
        const wanted = (t: KubernetesResourceType) => {
          if (!t.verbs.includes("list")) return false;
          if (named(opts.excludeResources, t)) return false;
          if (opts.includeResources && !named(opts.includeResources, t)) return false;
          if (!opts.includeResources && named(DEFAULT_EXCLUDED, t)) return false;
          if (t.group === "" && t.resource === "secrets" && !opts.includeSecrets) return false;
          return true;
        };
        const byName = (name: string) => discovery.types.find((t) => typeName(t) === name);
        const nsType = byName("namespaces");
        const crdType = byName("customresourcedefinitions.apiextensions.k8s.io");
        const types = discovery.types
          .filter(wanted)
          .filter((t) => t !== nsType && t !== crdType)
          .sort(
            (a, b) =>
              restoreRank(a) - restoreRank(b) ||
              (typeName(a) < typeName(b) ? -1 : typeName(a) > typeName(b) ? 1 : 0),
          );
        const namespaced = types.filter((t) => t.namespaced);
        const clusterScoped = includeCluster ? types.filter((t) => !t.namespaced) : [];
        const scopes: Array<string | undefined> = opts.namespaces === "all" ? [undefined] : opts.namespaces;
        const namespacesWanted = !!nsType && !named(opts.excludeResources, nsType);
        const crdsWanted = !!crdType && !named(opts.excludeResources, crdType);

        // CRDs first. With cluster resources, all of them; else those of custom resources found.
        if (crdType && crdsWanted) {
          if (includeCluster && (!opts.includeResources || named(opts.includeResources, crdType))) {
            await exportAll(crdType, undefined, undefined);
          } else {
            const names = new Map<string, string>(); // "widgets.example.com" -> CRD name
            await listAll(
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
              let found = false;
              for (const ns of scopes) {
                const path = `${groupVersionPath(t.group, t.version)}${ns ? `/namespaces/${enc(ns)}` : ""}/${t.resource}`;
                try {
                  const { body } = await client.json<{ items?: unknown[] }>("GET", path, {
                    query: { limit: 1, labelSelector: opts.labelSelector },
                    signal,
                  });
                  found = (body.items?.length ?? 0) > 0;
                } catch (error) {
                  if (!(error instanceof KubeApiError && error.httpStatus === 403)) {
                    throw sourceError(error, `kubernetes source: listing ${typeName(t)}`, signal);
                  }
                }
                if (found) break;
              }
              if (!found) continue;
              try {
                const { body } = await client.json<KubeObject>(
                  "GET",
                  `${groupVersionPath(crdType.group, crdType.version)}/${crdType.resource}/${enc(crdName)}`,
                  { signal },
                );
                await exportObject(crdType, body);
              } catch (error) {
                if (error instanceof KubeApiError && error.httpStatus === 403) {
                  skip(
                    { type: typeName(crdType), reason: "forbidden", httpStatus: 403, message: error.message },
                    error,
                  );
                } else throw sourceError(error, `kubernetes source: reading CRD ${crdName}`, signal);
              }
            }
          }
        }

        // Then the Namespace objects of what is backed up.
        if (nsType && namespacesWanted) {
          if (opts.namespaces === "all") {
            await exportAll(nsType, undefined, undefined);
          } else {
            for (const ns of opts.namespaces) {
              try {
                const { body } = await client.json<KubeObject>(
                  "GET",
                  `${groupVersionPath(nsType.group, nsType.version)}/namespaces/${enc(ns)}`,
                  { signal },
                );
                await exportObject(nsType, body);
              } catch (error) {
                if (error instanceof KubeApiError && error.httpStatus === 403) {
                  skip(
                    {
                      type: "namespaces",
                      namespace: ns,
                      reason: "forbidden",
                      httpStatus: 403,
                      message: error.message,
                    },
                    error,
                  );
                } else if (error instanceof KubeApiError && error.httpStatus === 404) {
                  throw new StowageError(
                    "SOURCE_FAILED",
                    `kubernetes source: namespace ${ns} does not exist`,
                    {
                      cause: error,
                      details: { namespace: ns, httpStatus: 404 },
                    },
                  );
                } else throw sourceError(error, `kubernetes source: reading namespace ${ns}`, signal);
              }
            }
          }
        }

        // Everything else, in restore order: cluster-scoped types of a rank before namespaced ones.
        const ordered = [...clusterScoped, ...namespaced].sort(
          (a, b) => restoreRank(a) - restoreRank(b) || Number(a.namespaced) - Number(b.namespaced),
        );
        for (const t of ordered) {
          for (const ns of t.namespaced ? scopes : [undefined]) {
            await exportAll(t, ns, opts.labelSelector);
          }
        }
        await addEntry("index.json", `${JSON.stringify(index, null, 2)}\n`);
      };
      const produced = produce();
      const stream = packedTar(pack, produced);
      return {
        stream,
        contentType: "application/x-tar",
        details: async () => {
          await produced;
          return {
            server: client.server,
            serverVersion: (index.server.version?.gitVersion as string | undefined) ?? null,
            namespaces: opts.namespaces,
            ...(opts.labelSelector ? { labelSelector: opts.labelSelector } : {}),
            objects: index.objects,
            resources: Object.fromEntries(
              index.resources.filter((r) => r.count > 0).map((r) => [r.type, r.count]),
            ),
            ownedSkipped: index.resources.reduce((n, r) => n + r.ownedSkipped, 0),
            secretsIncluded: opts.includeSecrets,
            skipped: index.skipped,
            forbidden: index.skipped.filter((s) => s.reason === "forbidden").map((s) => s.type),
          };
        },
      };
    },
  };
}
