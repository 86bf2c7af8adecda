/**
 * The KubeConfig stowage needs, structurally, so that no module's types require
 * `@kubernetes/client-node`: the package is an optional peer and never imported at run time.
 */

import type * as https from "node:https";
import { lazySchema } from "../../core/options.js";

/**
 * What stowage uses of a `KubeConfig` from `@kubernetes/client-node`: any `KubeConfig` (1.x or
 * 2.x) fits. Build it as you would for the client: `kc.loadFromDefault()`, `loadFromCluster()`,
 * `loadFromOptions(...)`.
 */
export interface KubeConfigLike {
  /** The cluster the current context names, or null when there is none (CONFIG_INVALID then). */
  getCurrentCluster(): {
    /** The API server's URL, e.g. `https://10.0.0.1:443`. */
    server: string;
  } | null;
  /** Adds the context's credentials (CA, client certificate, token) to a request's options. */
  applyToHTTPSOptions(options: https.RequestOptions): Promise<void>;
}

/** Accepts any object with the two methods stowage calls. */
export const kubeConfigSchema = lazySchema((z) =>
  z.custom<KubeConfigLike>(
    (v) =>
      typeof v === "object" &&
      v !== null &&
      typeof (v as KubeConfigLike).getCurrentCluster === "function" &&
      typeof (v as KubeConfigLike).applyToHTTPSOptions === "function",
    "expected a KubeConfig from @kubernetes/client-node",
  ),
);
