/**
 * Applying one object (server-side apply, optionally as a server dry run) and waiting for
 * restored CRDs to be Established; the result of each object.
 */

import { readFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { parse as parseYaml } from "yaml";
import { throwIfAborted, wrapError } from "../../core/errors.js";
import {
  enc,
  groupVersionPath,
  type Json,
  KubeApiError,
  type KubeClient,
  type KubeObject,
  splitApiVersion,
} from "./client.js";
import { typeName } from "./discovery.js";
import { prepareForRestore } from "./objects.js";
import type { SpooledEntry } from "./restore-archive.js";

/**
 * What happened to one object. `unverified` happens only in a dry run: the object needs a
 * Namespace or CRD that this restore would create first, so the server cannot check it yet.
 */
export type KubernetesRestoreStatus = "created" | "configured" | "unchanged" | "failed" | "unverified";

/** One object of a Kubernetes restore: what it is, where it went, and how the server took it. */
export interface KubernetesRestoreResult {
  /** The archive entry the object came from (absent for a Namespace stowage added). */
  entry?: string;
  /** The object's `apiVersion`, e.g. `apps/v1`. */
  apiVersion: string;
  /** The object's `kind`, e.g. `Deployment`. */
  kind: string;
  /** `resource` or `resource.group`. */
  type: string;
  /** The namespace it was applied to (after mapping); absent for cluster-scoped objects. */
  namespace?: string;
  /** The object's `metadata.name`. */
  name: string;
  /** What happened to it (see {@link KubernetesRestoreStatus}). */
  status: KubernetesRestoreStatus;
  /** For failures: the server's reason ("Conflict", "Forbidden", "Invalid"…) or stowage's. */
  reason?: string;
  /** For failures: the server's message, or stowage's (e.g. for an object over the size limit). */
  message?: string;
  /** For failures the server reported: its HTTP status (409, 403, 422…). */
  httpStatus?: number;
}

/** The restore options applying an object uses. */
export interface ApplyOptions {
  namespaceMapping: Record<string, string>;
  maxObjectBytes: number;
  fieldManager: string;
  force: boolean;
  dryRun: boolean;
}

/** What a dry run would have created so far: objects that need them cannot be checked yet. */
export interface DryRunCreated {
  namespaces: Set<string>;
  /** `resource.group` of the CRDs. */
  types: Set<string>;
}

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

/** Deep equality of JSON values (key order aside). */
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

/** Waits until each CRD is Established, or the deadline passes. */
export async function waitForCrds(
  client: KubeClient,
  names: string[],
  timeoutMs: number,
  signal?: AbortSignal,
) {
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

/** Applies one spooled entry and says what happened; only a broken connection or abort throws. */
export async function applyEntry(
  client: KubeClient,
  e: SpooledEntry,
  opts: ApplyOptions,
  dryCreated: DryRunCreated,
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
