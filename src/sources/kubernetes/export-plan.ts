/**
 * Which of the discovered types a `kubernetesSource` exports, and in what order. Pure: no I/O.
 */

import { type KubernetesResourceType, matchesResourceType, typeName } from "./discovery.js";
import { restoreRank } from "./objects.js";

/** Types a backup leaves out unless named in `includeResources`: derived, ephemeral or node-bound. */
const DEFAULT_EXCLUDED = [
  "events",
  "events.events.k8s.io",
  "nodes",
  "csinodes.storage.k8s.io",
  "volumeattachments.storage.k8s.io",
  "componentstatuses",
  "pods.metrics.k8s.io",
  "nodes.metrics.k8s.io",
];

/** The options that choose types. */
export interface TypeSelection {
  includeResources?: string[] | undefined;
  excludeResources?: string[] | undefined;
  includeSecrets: boolean;
  /** Export cluster-scoped types (and every CRD, not only those of custom resources found). */
  includeCluster: boolean;
}

export interface ExportPlan {
  /** The CRD type, unless the server has none or `excludeResources` names it. */
  crdType?: KubernetesResourceType;
  /** Export every CRD; else only the CRDs of custom resources found in the namespaces backed up. */
  allCrds: boolean;
  /** The Namespace type, unless the server has none or `excludeResources` names it. */
  namespaceType?: KubernetesResourceType;
  /** The namespaced types to list (CRDs and Namespaces aside), in restore order. */
  namespaced: KubernetesResourceType[];
  /**
   * Every type to list after CRDs and Namespaces, in restore order: cluster-scoped types of a
   * rank before namespaced ones.
   */
  ordered: KubernetesResourceType[];
}

const named = (list: string[] | undefined, t: KubernetesResourceType) =>
  list?.some((p) => matchesResourceType(t, p)) ?? false;

/** What to export of the types discovery found. */
export function planExport(types: KubernetesResourceType[], selection: TypeSelection): ExportPlan {
  const { includeResources, excludeResources, includeSecrets, includeCluster } = selection;
  const wanted = (t: KubernetesResourceType) => {
    if (!t.verbs.includes("list")) return false;
    if (named(excludeResources, t)) return false;
    if (includeResources && !named(includeResources, t)) return false;
    if (!includeResources && named(DEFAULT_EXCLUDED, t)) return false;
    if (t.group === "" && t.resource === "secrets" && !includeSecrets) return false;
    return true;
  };
  const byName = (name: string) => types.find((t) => typeName(t) === name);
  const nsType = byName("namespaces");
  const crdType = byName("customresourcedefinitions.apiextensions.k8s.io");
  const chosen = types
    .filter(wanted)
    .filter((t) => t !== nsType && t !== crdType)
    .sort(
      (a, b) =>
        restoreRank(a) - restoreRank(b) ||
        (typeName(a) < typeName(b) ? -1 : typeName(a) > typeName(b) ? 1 : 0),
    );
  const namespaced = chosen.filter((t) => t.namespaced);
  const clusterScoped = includeCluster ? chosen.filter((t) => !t.namespaced) : [];
  const ordered = [...clusterScoped, ...namespaced].sort(
    (a, b) => restoreRank(a) - restoreRank(b) || Number(a.namespaced) - Number(b.namespaced),
  );
  const crds = crdType && !named(excludeResources, crdType) ? crdType : undefined;
  const namespaces = nsType && !named(excludeResources, nsType) ? nsType : undefined;
  return {
    ...(crds ? { crdType: crds } : {}),
    allCrds: !!crds && includeCluster && (!includeResources || named(includeResources, crds)),
    ...(namespaces ? { namespaceType: namespaces } : {}),
    namespaced,
    ordered,
  };
}
