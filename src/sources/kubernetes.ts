/**
 * Kubernetes: resource export (`kubernetesSource`), ordered restore (`restoreKubernetes`) and pod
 * logs (`kubernetesLogsSource`). This entry exports the factories, their option schemas and the
 * public types; the parts live in `./kubernetes/`: the KubeConfig shape, a small REST client,
 * discovery, the pure object functions (stripping, restore order, archive paths, YAML), the export
 * (plan and archive), the restore (archive, apply) and the logs source.
 *
 * The user passes a ready `KubeConfig` from `@kubernetes/client-node` (1.x or 2.x, an optional
 * peer). stowage uses it for what it is good at — the current cluster, TLS material, tokens,
 * exec/OIDC plugins and proxies, via `getCurrentCluster()` and `applyToHTTPSOptions()` — and
 * speaks the REST API itself over `node:http(s)`. Why not the generated typed clients: they
 * deserialize built-in kinds into model classes that drop fields the client version does not know
 * (a backup must keep every field), they buffer pod logs whole, and they do not page generic
 * lists. Nothing here imports the package at run time.
 */

export type { Json } from "./kubernetes/client.js";
export type { KubernetesArchiveIndex, KubernetesSkippedType } from "./kubernetes/export-archive.js";
export {
  type KubernetesSourceOptions,
  kubernetesSource,
  kubernetesSourceOptionsSchema,
} from "./kubernetes/export-source.js";
export type { KubeConfigLike } from "./kubernetes/kube-config.js";
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
export {
  type KubernetesRestoreTargetOptions,
  kubernetesRestoreTarget,
  kubernetesRestoreTargetOptionsSchema,
} from "./kubernetes/restore-target.js";
