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

import { createReadStream, createWriteStream } from "node:fs";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable, Transform, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import { setTimeout as sleep } from "node:timers/promises";
import tar from "tar-stream";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { StowageError, throwIfAborted, wrapError } from "../core/errors.js";
import { parseOptions, signalSchema } from "../core/options.js";
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
  splitApiVersion,
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
  ARCHIVE_PATH,
  archivePath,
  isControllerOwned,
  objectToYaml,
  prepareForRestore,
  restoreRank,
  sanitizeObject,
} from "./kubernetes/objects.js";

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

// ---------------------------------------------------------------------------------------------
// restoreKubernetes

export const restoreKubernetesOptionsSchema = z
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
    /** Only these types (see {@link matchesResourceType}); Namespaces the objects need are kept. */
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
  .strict();
export type RestoreKubernetesOptions = z.input<typeof restoreKubernetesOptionsSchema>;

/**
 * What happened to one object. `unverified` happens only in a dry run: the object needs a
 * Namespace or CRD that this restore would create first, so the server cannot check it yet.
 */
export type KubernetesRestoreStatus = "created" | "configured" | "unchanged" | "failed" | "unverified";

export interface KubernetesRestoreResult {
  /** The archive entry the object came from (absent for a Namespace stowage added). */
  entry?: string;
  apiVersion: string;
  kind: string;
  /** `resource` or `resource.group`. */
  type: string;
  /** The namespace it was applied to (after mapping); absent for cluster-scoped objects. */
  namespace?: string;
  name: string;
  status: KubernetesRestoreStatus;
  /** For failures: the server's reason ("Conflict", "Forbidden", "Invalid"…) or stowage's. */
  reason?: string;
  message?: string;
  httpStatus?: number;
}

export interface KubernetesRestoreReport {
  dryRun: boolean;
  results: KubernetesRestoreResult[];
  counts: Record<KubernetesRestoreStatus, number>;
  /** The archive's index.json, when it had one. */
  index?: Json;
}

interface SpooledEntry {
  entry: string;
  file?: string;
  namespace?: string;
  group: string;
  resource: string;
  name: string;
  rank: number;
  seq: number;
  /** A Namespace stowage adds because objects need it and the archive has none. */
  synthetic?: boolean;
  tooLarge?: boolean;
}

/** Counts bytes and fails past a limit (the archive's header sizes are not trusted). */
class SizeLimit extends Transform {
  private seen = 0;
  constructor(private readonly limit: number) {
    super();
  }
  override _transform(chunk: Buffer, _e: BufferEncoding, callback: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.limit) callback(new Error(`entry larger than ${this.limit} bytes`));
    else callback(null, chunk);
  }
}

const EMPTY_COUNTS = (): Record<KubernetesRestoreStatus, number> => ({
  created: 0,
  configured: 0,
  unchanged: 0,
  failed: 0,
  unverified: 0,
});

/** What two versions of an object hold, without what the server stamps on every write. */
function comparable(object: Json): Json {
  const out = structuredClone(object);
  const meta = out.metadata as Json | undefined;
  if (meta) {
    delete meta.managedFields;
    delete meta.resourceVersion;
  }
  return out;
}

function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) && Array.isArray(b))
    return a.length === b.length && a.every((x, i) => sameJson(x, b[i]));
  if (
    typeof a === "object" &&
    a !== null &&
    typeof b === "object" &&
    b !== null &&
    !Array.isArray(a) &&
    !Array.isArray(b)
  ) {
    const ka = Object.keys(a);
    const bo = b as Json;
    return (
      ka.length === Object.keys(bo).length && ka.every((k) => k in bo && sameJson((a as Json)[k], bo[k]))
    );
  }
  return false;
}

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
  try {
    client = new KubeClient(opts.kubeConfig);
    throwIfAborted(signal, "restoreKubernetes");
  } catch (error) {
    stream.destroy();
    throw error;
  }
  const report: KubernetesRestoreReport = { dryRun: opts.dryRun, results: [], counts: EMPTY_COUNTS() };
  const includeCluster = opts.includeClusterResources ?? opts.namespaces === undefined;
  const spool = await mkdtemp(join(tmpdir(), "stowage-k8s-restore-"));
  try {
    // 1. Spool the archive: one file per object, an index in memory.
    const entries: SpooledEntry[] = [];
    const extract = tar.extract();
    const feeding = pipeline(stream, extract, signal ? { signal } : {});
    feeding.catch(() => undefined);
    let seq = 0;
    try {
      for await (const entry of extract) {
        throwIfAborted(signal, "restoreKubernetes");
        const name = entry.header.name;
        const match = ARCHIVE_PATH.exec(name);
        if (name === "index.json" && entry.header.type === "file") {
          const text = await readStreamText(entry, 16 << 20);
          try {
            report.index = JSON.parse(text) as Json;
          } catch {
            // A damaged index is not fatal: the objects carry everything a restore needs.
          }
          continue;
        }
        if (!match || entry.header.type !== "file") {
          entry.resume();
          continue;
        }
        const [, namespace, groupPart, resource, objectName] = match as unknown as [
          string,
          string | undefined,
          string,
          string,
          string,
        ];
        const group = groupPart === "core" ? "" : groupPart;
        const spooled: SpooledEntry = {
          entry: name,
          ...(namespace !== undefined ? { namespace: decodeURIComponent(namespace) } : {}),
          group,
          resource: decodeURIComponent(resource),
          name: decodeURIComponent(objectName),
          rank: restoreRank({ group, resource }),
          seq: seq++,
        };
        if ((entry.header.size ?? 0) > opts.maxObjectBytes) {
          spooled.tooLarge = true;
          entry.resume();
        } else {
          spooled.file = join(spool, `${spooled.seq}.yaml`);
          await pipeline(entry, new SizeLimit(opts.maxObjectBytes), createWriteStream(spooled.file));
        }
        entries.push(spooled);
      }
      await feeding;
    } catch (error) {
      throw wrapError(error, "RESTORE_FAILED", "restoreKubernetes: reading the archive failed", {}, signal);
    }

    // 2. Choose and order.
    // Kinds and short names come from the index (when there is one), so that "Deployment" or
    // "svc" match as they do on backup; without it, resource names still do.
    const aliases = new Map<string, { kind: string; singularName?: string; shortNames?: string[] }>();
    const indexed = (report.index as { resources?: unknown } | undefined)?.resources;
    for (const r of Array.isArray(indexed) ? (indexed as Array<Record<string, unknown>>) : []) {
      if (typeof r.type !== "string" || typeof r.kind !== "string") continue;
      aliases.set(r.type, {
        kind: r.kind,
        ...(typeof r.singularName === "string" ? { singularName: r.singularName } : {}),
        ...(Array.isArray(r.shortNames)
          ? { shortNames: r.shortNames.filter((n): n is string => typeof n === "string") }
          : {}),
      });
    }
    const typeOf = (e: SpooledEntry) => ({
      group: e.group,
      resource: e.resource,
      kind: "",
      ...aliases.get(typeName(e)),
    });
    const named = (list: string[] | undefined, e: SpooledEntry) =>
      list?.some((p) => matchesResourceType(typeOf(e), p)) ?? false;
    const isNamespace = (e: SpooledEntry) =>
      e.group === "" && e.resource === "namespaces" && e.namespace === undefined;
    const isCrd = (e: SpooledEntry) =>
      e.group === "apiextensions.k8s.io" && e.resource === "customresourcedefinitions";
    const inScope = (ns: string) => !opts.namespaces || opts.namespaces.includes(ns);
    const chosen = entries.filter((e) => {
      if (named(opts.excludeResources, e)) return false;
      if (e.namespace !== undefined)
        return inScope(e.namespace) && (!opts.includeResources || named(opts.includeResources, e));
      if (isNamespace(e)) return inScope(e.name);
      if (opts.includeResources && !named(opts.includeResources, e)) return false;
      return isCrd(e) || includeCluster;
    });
    // Namespaces the chosen objects need but the archive lacks (or includeResources left out).
    const nsNeeded = new Set(chosen.flatMap((e) => (e.namespace !== undefined ? [e.namespace] : [])));
    for (const e of chosen) if (isNamespace(e)) nsNeeded.delete(e.name);
    for (const e of entries) {
      if (isNamespace(e) && nsNeeded.has(e.name) && !named(opts.excludeResources, e)) {
        chosen.push(e);
        nsNeeded.delete(e.name);
      }
    }
    for (const ns of nsNeeded) {
      chosen.push({
        entry: "",
        group: "",
        resource: "namespaces",
        name: ns,
        rank: 1,
        seq: -1,
        synthetic: true,
      });
    }
    chosen.sort((a, b) => a.rank - b.rank || a.seq - b.seq);

    // 3. Apply, rank by rank.
    const dryCreated = { namespaces: new Set<string>(), types: new Set<string>() };
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
    return report;
  } finally {
    await rm(spool, { recursive: true, force: true });
  }
}

async function readStreamText(stream: AsyncIterable<unknown>, limit: number): Promise<string> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new Error(`entry larger than ${limit} bytes`);
    parts.push(chunk as Buffer);
  }
  return Buffer.concat(parts).toString("utf8");
}

async function waitForCrds(client: KubeClient, names: string[], timeoutMs: number, signal?: AbortSignal) {
  const deadline = Date.now() + timeoutMs;
  for (const name of names) {
    while (true) {
      throwIfAborted(signal, "restoreKubernetes");
      try {
        const { body } = await client.json<{
          status?: { conditions?: Array<{ type: string; status: string }> };
        }>("GET", `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${enc(name)}`, { signal });
        if (body.status?.conditions?.some((c) => c.type === "Established" && c.status === "True")) break;
      } catch (error) {
        if (!(error instanceof KubeApiError))
          throw wrapError(error, "RESTORE_FAILED", "restoreKubernetes", {}, signal);
      }
      // Past the deadline the objects are tried anyway; they fail with the server's own reason.
      if (Date.now() >= deadline) break;
      await sleep(200, undefined, signal ? { signal } : {}).catch((error: unknown) => {
        throw wrapError(error, "ABORTED", "restoreKubernetes", {}, signal);
      });
    }
  }
}

async function applyEntry(
  client: KubeClient,
  e: SpooledEntry,
  opts: z.output<typeof restoreKubernetesOptionsSchema>,
  dryCreated: { namespaces: Set<string>; types: Set<string> },
  signal: AbortSignal | undefined,
): Promise<KubernetesRestoreResult> {
  const type = typeName(e);
  const mappedNs =
    e.namespace === undefined ? undefined : (opts.namespaceMapping[e.namespace] ?? e.namespace);
  const base = {
    ...(e.entry ? { entry: e.entry } : {}),
    type,
    ...(mappedNs !== undefined ? { namespace: mappedNs } : {}),
  };
  const fail = (
    reason: string,
    message: string,
    apiVersion = "",
    kind = "",
    name = e.name,
    httpStatus?: number,
  ) => ({
    ...base,
    apiVersion,
    kind,
    name,
    status: "failed" as const,
    reason,
    message,
    ...(httpStatus !== undefined ? { httpStatus } : {}),
  });

  let object: KubeObject;
  if (e.synthetic) {
    object = { apiVersion: "v1", kind: "Namespace", metadata: { name: e.name } };
  } else if (e.tooLarge || !e.file) {
    return fail("TooLarge", `the archive entry exceeds maxObjectBytes (${opts.maxObjectBytes})`);
  } else {
    try {
      const parsed = parseYaml(await readFile(e.file, "utf8"), { version: "1.1" }) as unknown;
      const o = parsed as KubeObject;
      if (
        typeof o !== "object" ||
        o === null ||
        typeof o.apiVersion !== "string" ||
        typeof o.kind !== "string" ||
        typeof o.metadata?.name !== "string"
      ) {
        return fail(
          "InvalidEntry",
          "the document is not a Kubernetes object (apiVersion, kind, metadata.name)",
        );
      }
      object = o;
    } catch (error) {
      return fail("InvalidEntry", `the document is not YAML: ${(error as Error).message}`);
    }
  }
  const { group, version } = splitApiVersion(object.apiVersion!);
  if (group !== e.group || object.metadata.name !== e.name) {
    return fail(
      "InvalidEntry",
      "the document does not match its archive path",
      object.apiVersion,
      object.kind,
    );
  }
  const prepared = prepareForRestore(object, opts.namespaceMapping) as KubeObject;
  const name = prepared.metadata.name;
  if (mappedNs !== undefined) prepared.metadata.namespace = mappedNs;
  const path = `${groupVersionPath(group, version)}${mappedNs !== undefined ? `/namespaces/${enc(mappedNs)}` : ""}/${enc(e.resource)}/${enc(name)}`;
  const result = { ...base, apiVersion: object.apiVersion!, kind: object.kind!, name };

  let before: KubeObject | undefined;
  try {
    before = (await client.json<KubeObject>("GET", path, { signal })).body;
  } catch (error) {
    if (!(error instanceof KubeApiError))
      throw wrapError(error, "RESTORE_FAILED", `restoreKubernetes: ${path}`, {}, signal);
    if (error.httpStatus !== 404) {
      return fail(error.reason, error.message, result.apiVersion, result.kind, name, error.httpStatus);
    }
  }
  try {
    const { status, body } = await client.json<KubeObject>("PATCH", path, {
      query: {
        fieldManager: opts.fieldManager,
        force: opts.force || undefined,
        dryRun: opts.dryRun ? "All" : undefined,
      },
      body: JSON.stringify(prepared),
      contentType: "application/apply-patch+yaml",
      signal,
    });
    let outcome: KubernetesRestoreStatus;
    if (status === 201 || before === undefined) outcome = "created";
    else if (opts.dryRun)
      outcome = sameJson(comparable(before), comparable(body)) ? "unchanged" : "configured";
    else
      outcome =
        before.metadata.resourceVersion === body.metadata?.resourceVersion ? "unchanged" : "configured";
    if (opts.dryRun && outcome === "created") {
      if (e.resource === "namespaces" && e.group === "") dryCreated.namespaces.add(name);
      if (e.resource === "customresourcedefinitions" && e.group === "apiextensions.k8s.io") {
        const spec = prepared.spec as { group?: string; names?: { plural?: string } } | undefined;
        if (spec?.group && spec.names?.plural) dryCreated.types.add(`${spec.names.plural}.${spec.group}`);
      }
    }
    return { ...result, status: outcome };
  } catch (error) {
    // Not an answer from the server (it is gone, or the signal fired): the restore cannot go on.
    if (!(error instanceof KubeApiError)) {
      throw wrapError(error, "RESTORE_FAILED", `restoreKubernetes: applying ${path}`, {}, signal);
    }
    if (
      opts.dryRun &&
      error.httpStatus === 404 &&
      ((mappedNs !== undefined && dryCreated.namespaces.has(mappedNs)) || dryCreated.types.has(type))
    ) {
      return {
        ...result,
        status: "unverified",
        reason: "DependsOnDryRun",
        message: "needs a Namespace or CRD that this dry run would create first",
      };
    }
    return fail(error.reason, error.message, result.apiVersion, result.kind, name, error.httpStatus);
  }
}

// ---------------------------------------------------------------------------------------------
// kubernetesLogsSource

export const kubernetesLogsSourceOptionsSchema = z
  .object({
    kubeConfig: kubeConfigSchema,
    /** The namespace whose pods' logs are exported. */
    namespace: z.string().min(1),
    /** Only pods matching this label selector. @default every pod */
    labelSelector: z.string().min(1).optional(),
    /** Only log lines from the last N seconds. @default the whole log the kubelet keeps */
    sinceSeconds: z.number().int().positive().optional(),
    /** Only these container names (init containers included). @default every container */
    containers: z.array(z.string().min(1)).min(1).optional(),
    /** Prefix each line with its RFC 3339 time (the kubelet's `timestamps`). @default false */
    timestamps: z.boolean().default(false),
    /** Cap per container log (the kubelet's `limitBytes`). @default no cap */
    limitBytes: z.number().int().positive().optional(),
    /** Fail when a container's log cannot be read, instead of listing it in the details. @default false */
    strict: z.boolean().default(false),
    /** Logs can hold secrets; set this to make `backup()` require encryption. @default false */
    sensitive: z.boolean().default(false),
    /** Where each log is staged (tar needs sizes up front). @default the OS temp folder */
    spoolDirectory: z.string().min(1).optional(),
    /** Logical name for the manifest. @default the namespace */
    name: z.string().min(1).optional(),
  })
  .strict();
export type KubernetesLogsSourceOptions = z.input<typeof kubernetesLogsSourceOptionsSchema>;

/**
 * Pod logs through the Kubernetes API, as a tar: `<pod>/<container>.log` for each container of
 * each pod in `namespace` (matching `labelSelector`), then an `index.json` (bytes per log and the
 * logs that could not be read, e.g. a container still waiting to start). Each log is streamed to a
 * temporary file first, because a tar entry needs its size up front: memory holds one buffer,
 * disk one log at a time.
 *
 * @throws {CONFIG_INVALID} on bad options (each named).
 * @throws {SOURCE_FAILED} (through `backup()`) when pods cannot be listed, or with `strict` when
 *   a log cannot be read.
 * @example
 * await backup({ job: "shop-logs", sink, transforms: [gzip()],
 *   source: kubernetesLogsSource({ kubeConfig: kc, namespace: "shop", sinceSeconds: 86_400 }) });
 */
export function kubernetesLogsSource(options: KubernetesLogsSourceOptions): Source {
  const opts = parseOptions(kubernetesLogsSourceOptionsSchema, options, "kubernetesLogsSource");
  const client = new KubeClient(opts.kubeConfig);
  return {
    kind: "kubernetes-logs",
    name: opts.name ?? opts.namespace,
    sensitive: opts.sensitive,
    async open({ signal }: SourceContext): Promise<SourceOutput> {
      const logs: Array<{ pod: string; container: string; entry: string; bytes: number }> = [];
      const failed: Array<{
        pod: string;
        container: string;
        httpStatus: number;
        reason: string;
        message: string;
      }> = [];
      let pods = 0;
      const pack = tar.pack();
      const spool = await mkdtemp(join(opts.spoolDirectory ?? tmpdir(), "stowage-k8s-logs-"));
      const produce = async () => {
        try {
          const podsPath = `/api/v1/namespaces/${enc(opts.namespace)}/pods`;
          let token: string | undefined;
          do {
            throwIfAborted(signal, "kubernetes logs source");
            let page: { items?: KubeObject[]; metadata?: { continue?: string } };
            try {
              ({ body: page } = await client.json("GET", podsPath, {
                query: { limit: 100, continue: token, labelSelector: opts.labelSelector },
                signal,
              }));
            } catch (error) {
              throw sourceError(error, `kubernetes logs source: listing pods in ${opts.namespace}`, signal);
            }
            for (const pod of page.items ?? []) {
              pods++;
              const spec = pod.spec as {
                initContainers?: Array<{ name: string }>;
                containers?: Array<{ name: string }>;
              };
              const names = [...(spec?.initContainers ?? []), ...(spec?.containers ?? [])]
                .map((c) => c.name)
                .filter((c) => !opts.containers || opts.containers.includes(c));
              for (const container of names) {
                await exportLog(pod.metadata.name, container);
              }
            }
            token = page.metadata?.continue || undefined;
          } while (token);
          const index = {
            format: "stowage-kubernetes-logs/1",
            namespace: opts.namespace,
            ...(opts.labelSelector ? { labelSelector: opts.labelSelector } : {}),
            ...(opts.sinceSeconds ? { sinceSeconds: opts.sinceSeconds } : {}),
            pods,
            logs,
            failed,
          };
          const data = Buffer.from(`${JSON.stringify(index, null, 2)}\n`, "utf8");
          await pipeline(
            Readable.from([data]),
            pack.entry({ name: "index.json", size: data.length, mode: 0o644 }),
          );
        } finally {
          await rm(spool, { recursive: true, force: true });
        }
      };
      const exportLog = async (pod: string, container: string) => {
        throwIfAborted(signal, "kubernetes logs source");
        const file = join(spool, `${logs.length + failed.length}.log`);
        const path = `/api/v1/namespaces/${enc(opts.namespace)}/pods/${enc(pod)}/log`;
        try {
          const response = await client.stream(path, {
            query: {
              container,
              sinceSeconds: opts.sinceSeconds,
              timestamps: opts.timestamps || undefined,
              limitBytes: opts.limitBytes,
            },
            signal,
          });
          await pipeline(response, createWriteStream(file), signal ? { signal } : {});
        } catch (error) {
          if (error instanceof KubeApiError && error.httpStatus !== 401 && !opts.strict) {
            failed.push({
              pod,
              container,
              httpStatus: error.httpStatus,
              reason: error.reason,
              message: error.message,
            });
            return;
          }
          throw sourceError(error, `kubernetes logs source: reading the log of ${pod}/${container}`, signal);
        }
        const { size, mtime } = await stat(file);
        const entry = `${pod}/${container}.log`;
        await pipeline(
          createReadStream(file, { highWaterMark: 1 << 20 }),
          pack.entry({ name: entry, size, mtime, mode: 0o644 }),
        );
        await rm(file, { force: true });
        logs.push({ pod, container, entry, bytes: size });
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
            namespace: opts.namespace,
            ...(opts.labelSelector ? { labelSelector: opts.labelSelector } : {}),
            ...(opts.sinceSeconds ? { sinceSeconds: opts.sinceSeconds } : {}),
            pods,
            logs: logs.length,
            bytes: logs.reduce((n, l) => n + l.bytes, 0),
            failed,
          };
        },
      };
    },
  };
}
