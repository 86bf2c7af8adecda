import type { z } from "zod";
import { lazySchema, parseOptions } from "../../core/options.js";
import type { RestoreTarget } from "../../core/restore-target.js";
import type { Agrees, Assert } from "../../core/type-checks.js";
import { type RestoreHttpOptions, restoreHttp, restoreHttpOptionsSchema } from "./restore.js";

/** The zod schema of {@link HttpRestoreTargetOptions}, which parses the options at the boundary. */
export const httpRestoreTargetOptionsSchema = lazySchema((z) =>
  restoreHttpOptionsSchema
    .omit({ stream: true, signal: true, contentType: true })
    .extend({
      /** Content type of a single state. @default the backup's content type */
      contentType: z.string().min(1).optional(),
    })
    .strict(),
);
/**
 * What {@link httpRestoreTarget} takes: {@link RestoreHttpOptions} without `stream` and `signal`
 * (the restore gives them), and a `contentType` that defaults to the backup's.
 */
export interface HttpRestoreTargetOptions
  extends Omit<RestoreHttpOptions, "stream" | "signal" | "contentType"> {
  /** Content type of a single state. @default the backup's content type */
  contentType?: string;
}
type _HttpRestoreTargetOptionsAgrees = Assert<
  Agrees<HttpRestoreTargetOptions, z.input<typeof httpRestoreTargetOptionsSchema>>
>;

/**
 * A service's restore endpoint as a {@link RestoreTarget}: the state (or each service of a bundle)
 * is sent back by {@link restoreHttp}, with the options it takes (`url`, `headers`, `method`…).
 * A single state is sent with the backup's content type unless `contentType` names another. Fact
 * for a check: `http` (the requests sent and the services skipped).
 *
 * @throws {CONFIG_INVALID} for bad options.
 * @example
 * const target = httpRestoreTarget({ url: "http://{name}:8080/api/v1/restore", headers: { Authorization: `Bearer ${token}` } });
 */
export function httpRestoreTarget(options: HttpRestoreTargetOptions): RestoreTarget {
  // Checked now, so a bad option is reported when the target is made; restoreHttp parses the input again.
  parseOptions(httpRestoreTargetOptionsSchema, options, "httpRestoreTarget");
  return {
    kind: "http",
    accepts: () => true,
    async restore(plain, { manifest, signal }) {
      const result = await restoreHttp({
        contentType: manifest.content.contentType,
        ...options,
        stream: plain,
        signal,
      });
      const bytes = result.requests.reduce((n, r) => n + r.bytes, 0);
      return {
        bytes: manifest.content.bytes, // restore() errors the stream unless every byte matched
        details: { requests: result.requests.length, bytesSent: bytes, skipped: result.skipped.length },
        facts: { http: result },
      };
    },
  };
}
