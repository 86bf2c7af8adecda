/**
 * The archive a `kubernetesSource` writes and its `index.json`: entries packed as they come, a
 * tally per type, skipped types recorded (or failing the run, with `strict`), and paged lists.
 */

import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type tar from "tar-stream";
import { StowageError, throwIfAborted } from "../../core/errors.js";
import {
  apiVersionOf,
  enc,
  groupVersionPath,
  type Json,
  KubeApiError,
  type KubeClient,
  type KubeObject,
  sourceError,
} from "./client.js";
import { type KubernetesResourceType, typeName } from "./discovery.js";
import { archivePath, isControllerOwned, objectToYaml, sanitizeObject } from "./objects.js";

/** A type that was not exported, and why (in the manifest details and `index.json`). */
export interface KubernetesSkippedType {
  /** The resource type, `resource.group` (e.g. "deployments.apps"). */
  type: string;
  /** The namespace it was skipped in, for a namespaced type. */
  namespace?: string;
  /** Why: the credentials may not list it, or the server failed to describe or list it. */
  reason: "forbidden" | "discovery-failed" | "list-failed";
  /** The server's HTTP status. */
  httpStatus: number;
  /** The server's message. */
  message: string;
}

/** The archive's `index.json`. */
export interface KubernetesArchiveIndex {
  /** The archive format's name and version. */
  format: "stowage-kubernetes/1";
  /** What wrote the archive. */
  generator: {
    /** Always "stowage". */
    name: "stowage";
    /** The library's version. */
    version: string;
  };
  /** The API server exported. */
  server: {
    /** Its URL. */
    url: string;
    /** Its `/version` answer, when readable. */
    version?: Json;
  };
  /** The namespaces exported, or "all". */
  namespaces: string[] | "all";
  /** The label selector objects were listed with. */
  labelSelector?: string;
  /** Whether Secrets were exported. */
  includeSecrets: boolean;
  /** Whether objects owned by another (a ReplicaSet's Pods…) were exported. */
  includeOwned: boolean;
  /** Objects in the archive. */
  objects: number;
  /** Per exported type: group, version, kind, namespaced and how many objects. */
  resources: Array<{
    /** `resource.group`. */
    type: string;
    /** The API group ("" for the core group). */
    group: string;
    /** The API version listed. */
    version: string;
    /** The plural resource name. */
    resource: string;
    /** The kind. */
    kind: string;
    /** The singular name, when the server gives one. */
    singularName?: string;
    /** The short names, when the server gives them. */
    shortNames?: string[];
    /** Whether the type is namespaced. */
    namespaced: boolean;
    /** Objects exported. */
    count: number;
    /** Objects left out because another object owns them. */
    ownedSkipped: number;
  }>;
  /** Types that could not be exported, and why. */
  skipped: KubernetesSkippedType[];
}

/** One run of the source: where it writes, what it has written so far, and the options that shape it. */
export interface ExportRun {
  client: KubeClient;
  signal: AbortSignal | undefined;
  pack: tar.Pack;
  /** The time of every entry: when the run began. */
  mtime: Date;
  index: KubernetesArchiveIndex;
  /** Fail on a type that cannot be listed instead of recording it as skipped. */
  strict: boolean;
  /** Export objects a controller owns. */
  includeOwned: boolean;
  /** Objects per list request. */
  pageSize: number;
}

/** Packs one entry. */
export async function addEntry(run: ExportRun, name: string, text: string): Promise<void> {
  const data = Buffer.from(text, "utf8");
  await pipeline(
    Readable.from([data]),
    run.pack.entry({ name, size: data.length, mtime: run.mtime, mode: 0o644 }),
  );
}

/** The index row of a type, added on first use. */
function tally(index: KubernetesArchiveIndex, t: KubernetesResourceType) {
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
}

/**
 * Records a type that is not exported.
 *
 * @throws {SOURCE_FAILED} instead, with `strict`.
 */
export function skip(run: ExportRun, entry: KubernetesSkippedType, error: KubeApiError): void {
  if (run.strict) {
    throw new StowageError(
      "SOURCE_FAILED",
      `kubernetes source: ${entry.type}${entry.namespace ? ` in ${entry.namespace}` : ""}: ${error.httpStatus} ${error.reason}: ${error.message}`,
      { cause: error, details: { ...entry } },
    );
  }
  run.index.skipped.push(entry);
}

/** Writes one object, or counts it as owned and passes it over. */
export async function exportObject(
  run: ExportRun,
  t: KubernetesResourceType,
  raw: KubeObject,
): Promise<void> {
  const row = tally(run.index, t);
  if (!run.includeOwned && isControllerOwned(raw)) {
    row.ownedSkipped++;
    return;
  }
  const object = sanitizeObject({ apiVersion: apiVersionOf(t.group, t.version), kind: t.kind, ...raw });
  const ns = t.namespaced ? raw.metadata.namespace : undefined;
  await addEntry(run, archivePath(t, raw.metadata.name, ns), objectToYaml(object));
  row.count++;
  run.index.objects++;
}

/** Pages of a list; a 403 is recorded (or fails, with strict) and ends the list. */
export async function listAll(
  run: ExportRun,
  t: KubernetesResourceType,
  namespace: string | undefined,
  visit: (items: KubeObject[]) => Promise<void>,
  labelSelector: string | undefined,
): Promise<void> {
  const { client, signal } = run;
  const path = `${groupVersionPath(t.group, t.version)}${namespace ? `/namespaces/${enc(namespace)}` : ""}/${t.resource}`;
  let token: string | undefined;
  do {
    throwIfAborted(signal, "kubernetes source");
    let page: { items?: KubeObject[]; metadata?: { continue?: string } };
    try {
      ({ body: page } = await client.json("GET", path, {
        query: { limit: run.pageSize, continue: token, labelSelector },
        signal,
      }));
    } catch (error) {
      if (error instanceof KubeApiError && error.httpStatus === 403) {
        skip(
          run,
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
}

/** Lists every object of a type (in one namespace, or cluster-wide) and exports each. */
export function exportAll(
  run: ExportRun,
  t: KubernetesResourceType,
  namespace: string | undefined,
  selector: string | undefined,
): Promise<void> {
  return listAll(
    run,
    t,
    namespace,
    async (items) => {
      for (const item of items) {
        throwIfAborted(run.signal, "kubernetes source");
        await exportObject(run, t, item);
      }
    },
    selector,
  );
}
