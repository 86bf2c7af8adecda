/**
 * Objects as the archive holds them and a restore applies them: what is stripped, the restore
 * order, archive paths and the YAML round trip. Pure functions, no I/O.
 */

import { type ScalarTag, stringify as stringifyYaml, type Tags } from "yaml";
import { enc, type Json, type KubeObject } from "./client.js";
import { typeName } from "./discovery.js";

/**
 * Restore order, by type: CRDs, Namespaces, ServiceAccounts, Roles, RoleBindings, ConfigMaps,
 * Secrets, storage (PVs, PVCs), Services, workloads, then everything else.
 */
const RESTORE_ORDER: string[][] = [
  ["customresourcedefinitions.apiextensions.k8s.io"],
  ["namespaces"],
  ["serviceaccounts"],
  ["clusterroles.rbac.authorization.k8s.io", "roles.rbac.authorization.k8s.io"],
  ["clusterrolebindings.rbac.authorization.k8s.io", "rolebindings.rbac.authorization.k8s.io"],
  ["configmaps", "limitranges", "resourcequotas"],
  ["secrets"],
  ["storageclasses.storage.k8s.io", "persistentvolumes", "persistentvolumeclaims"],
  ["services"],
  [
    "deployments.apps",
    "statefulsets.apps",
    "daemonsets.apps",
    "replicasets.apps",
    "replicationcontrollers",
    "jobs.batch",
    "cronjobs.batch",
    "pods",
  ],
];

/** The rank of a type in the restore order (lower first); everything unlisted ranks last. */
export function restoreRank(t: { group: string; resource: string }): number {
  const name = typeName(t);
  const index = RESTORE_ORDER.findIndex((names) => names.includes(name));
  return index < 0 ? RESTORE_ORDER.length : index;
}

const LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration";
const SERVER_SET_METADATA = [
  "uid",
  "resourceVersion",
  "generation",
  "creationTimestamp",
  "deletionTimestamp",
  "deletionGracePeriodSeconds",
  "managedFields",
  "selfLink",
];

/**
 * An object as a restore may carry it: without `status`, server-set metadata (uid,
 * resourceVersion, generation, creationTimestamp, managedFields, selfLink, deletion stamps) and
 * the last-applied annotation. Returns a new object; the input is not changed.
 */
export function sanitizeObject<T extends Json>(object: T): T {
  const out = structuredClone(object) as Json;
  delete out.status;
  const meta = out.metadata as Json | undefined;
  if (meta) {
    for (const key of SERVER_SET_METADATA) delete meta[key];
    const annotations = meta.annotations as Record<string, string> | undefined;
    if (annotations) {
      delete annotations[LAST_APPLIED];
      if (Object.keys(annotations).length === 0) delete meta.annotations;
    }
  }
  return out as T;
}

/** True for an object a controller made (e.g. the Pods of a ReplicaSet): its controller restores it. */
export function isControllerOwned(object: {
  metadata?: { ownerReferences?: Array<{ controller?: boolean }> };
}): boolean {
  return object.metadata?.ownerReferences?.some((r) => r.controller === true) ?? false;
}

/**
 * The string `<<`, always double-quoted. A plain `<<` is YAML 1.1's merge key: a reader (ours,
 * kubectl's) would merge its value into the map, or fail when it is no map, so an annotation or a
 * custom resource field named `<<` was lost. The yaml package writes `<<` through its merge tag,
 * which wins when several tags identify a value unless the others also have a `test`; this one has
 * a test that matches nothing, so that it is never used to read.
 */
const LITERAL_MERGE_KEY: ScalarTag = {
  tag: "tag:yaml.org,2002:str",
  default: true,
  identify: (value) => value === "<<",
  test: /(?!)/,
  resolve: (text) => text,
  stringify: () => '"<<"',
};

/** YAML 1.1 output quotes `on`, `yes`, `0777`, `1:20`, `<<`…, so Go's YAML (kubectl) reads strings back. */
const YAML_OPTIONS = {
  version: "1.1",
  lineWidth: 0,
  customTags: (tags: Tags) => [LITERAL_MERGE_KEY, ...tags],
} as const;

/** One object as the YAML document the archive holds. */
export function objectToYaml(object: Json): string {
  return stringifyYaml(object, YAML_OPTIONS);
}

/** The archive path of an object: `namespaces/<ns>/<group>/<resource>/<name>.yaml` or `cluster/…`. */
export function archivePath(
  t: { group: string; resource: string },
  name: string,
  namespace?: string,
): string {
  const group = t.group || "core";
  const safe = (s: string) => (s === "." || s === ".." || s.includes("/") ? enc(s).replace(/\./g, "%2E") : s);
  const where = namespace === undefined ? "cluster" : `namespaces/${safe(namespace)}`;
  return `${where}/${group}/${safe(t.resource)}/${safe(name)}.yaml`;
}

/** An archive path taken apart: namespace (absent under `cluster/`), group, resource, name. */
export const ARCHIVE_PATH = /^(?:namespaces\/([^/]+)|cluster)\/([^/]+)\/([^/]+)\/([^/]+)\.yaml$/;

/**
 * Prepares a backed-up object for apply in another place and time: strips server-set fields again
 * (the archive may come from elsewhere), owner references (their uids died with the old
 * objects), a Service's allocated cluster IPs and a Pod's node, and maps namespaces.
 */
export function prepareForRestore(object: Json, namespaceMapping: Record<string, string> = {}): Json {
  const out = sanitizeObject(object) as KubeObject;
  const map = (ns: string) => namespaceMapping[ns] ?? ns;
  const meta = out.metadata;
  delete meta.ownerReferences;
  if (out.kind === "Namespace" && out.apiVersion === "v1") {
    meta.name = map(meta.name);
    // The API server sets this label to the name; a mapped namespace must not carry the old one.
    if (meta.labels) {
      delete meta.labels["kubernetes.io/metadata.name"];
      if (Object.keys(meta.labels).length === 0) delete meta.labels;
    }
  } else if (typeof meta.namespace === "string") meta.namespace = map(meta.namespace);
  const spec = out.spec as Json | undefined;
  if (out.kind === "Service" && out.apiVersion === "v1" && spec && spec.clusterIP !== "None") {
    delete spec.clusterIP;
    delete spec.clusterIPs;
  }
  if (out.kind === "Pod" && out.apiVersion === "v1" && spec) delete spec.nodeName;
  if (
    (out.kind === "RoleBinding" || out.kind === "ClusterRoleBinding") &&
    out.apiVersion === "rbac.authorization.k8s.io/v1" &&
    Array.isArray(out.subjects)
  ) {
    for (const subject of out.subjects as Array<{ kind?: string; namespace?: string }>) {
      if (subject.kind === "ServiceAccount" && subject.namespace) subject.namespace = map(subject.namespace);
    }
  }
  return out;
}
