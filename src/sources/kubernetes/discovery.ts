/**
 * Which resource types a server serves (discovery), and how users name them.
 */

import { lazySchema } from "../../core/options.js";
import { apiVersionOf, groupVersionPath, KubeApiError, type KubeClient } from "./client.js";

/** Resource names as users give them (see {@link matchesResourceType}). */
export const resourceListSchema = lazySchema((z) =>
  z.array(z.string().min(1, "resource names are not empty")),
);

/** One listable resource type, as discovery reports it. */
export interface KubernetesResourceType {
  /** "" for the core group. */
  group: string;
  version: string;
  /** Plural resource name, e.g. "deployments". */
  resource: string;
  kind: string;
  namespaced: boolean;
  verbs: string[];
  singularName?: string;
  shortNames?: string[];
}

interface ApiResource {
  name: string;
  singularName?: string;
  namespaced: boolean;
  kind: string;
  verbs?: string[];
  shortNames?: string[];
}

export interface DiscoveryResult {
  types: KubernetesResourceType[];
  /** Group versions whose discovery failed (e.g. an aggregated API that is down). */
  failed: Array<{ groupVersion: string; httpStatus: number; reason: string; message: string }>;
}

/**
 * Every resource type the server serves, at its group's preferred version; a type served only
 * by a non-preferred version is listed at that version (as `kubectl api-resources` does).
 */
export async function discover(
  client: KubeClient,
  signal: AbortSignal | undefined,
): Promise<DiscoveryResult> {
  const result: DiscoveryResult = { types: [], failed: [] };
  const addList = (group: string, version: string, resources: ApiResource[], seen: Set<string>) => {
    for (const r of resources) {
      if (r.name.includes("/") || seen.has(r.name)) continue; // subresources (pods/log) are not objects
      seen.add(r.name);
      result.types.push({
        group,
        version,
        resource: r.name,
        kind: r.kind,
        namespaced: r.namespaced,
        verbs: r.verbs ?? [],
        ...(r.singularName ? { singularName: r.singularName } : {}),
        ...(r.shortNames ? { shortNames: r.shortNames } : {}),
      });
    }
  };
  const fetchVersion = async (group: string, version: string, seen: Set<string>) => {
    try {
      const { body } = await client.json<{ resources?: ApiResource[] }>(
        "GET",
        groupVersionPath(group, version),
        {
          signal,
        },
      );
      addList(group, version, body.resources ?? [], seen);
    } catch (error) {
      if (!(error instanceof KubeApiError)) throw error;
      result.failed.push({
        groupVersion: apiVersionOf(group, version),
        httpStatus: error.httpStatus,
        reason: error.reason,
        message: error.message,
      });
    }
  };

  const core = await client.json<{ versions?: string[] }>("GET", "/api", { signal });
  const coreSeen = new Set<string>();
  for (const version of core.body.versions ?? ["v1"]) await fetchVersion("", version, coreSeen);

  const groups = await client.json<{
    groups?: Array<{
      name: string;
      versions: Array<{ version: string }>;
      preferredVersion?: { version: string };
    }>;
  }>("GET", "/apis", { signal });
  for (const g of groups.body.groups ?? []) {
    const preferred = g.preferredVersion?.version ?? g.versions[0]?.version;
    const ordered = [
      ...(preferred ? [preferred] : []),
      ...g.versions.map((v) => v.version).filter((v) => v !== preferred),
    ];
    const seen = new Set<string>();
    for (const version of ordered) await fetchVersion(g.name, version, seen);
  }
  return result;
}

/** `resource` for the core group, `resource.group` otherwise: how types are named in details. */
export function typeName(t: { group: string; resource: string }): string {
  return t.group ? `${t.resource}.${t.group}` : t.resource;
}

/**
 * Whether a user's name for a type matches: the plural ("deployments"), singular, kind
 * ("Deployment") or a short name ("deploy"), case-insensitive, optionally qualified by group
 * ("deployments.apps", "widgets.example.com"). An unqualified name matches in every group.
 */
export function matchesResourceType(
  type: Pick<KubernetesResourceType, "group" | "resource" | "kind" | "singularName" | "shortNames">,
  pattern: string,
): boolean {
  const p = pattern.toLowerCase();
  const names = [type.resource, type.kind.toLowerCase(), type.singularName ?? "", ...(type.shortNames ?? [])]
    .filter(Boolean)
    .map((n) => n.toLowerCase());
  if (names.includes(p)) return true;
  const dot = p.indexOf(".");
  if (dot <= 0) return false;
  return p.slice(dot + 1) === type.group.toLowerCase() && names.includes(p.slice(0, dot));
}
