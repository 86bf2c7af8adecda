// The entry of `stowage/sources/http`: factories, their option schemas, public constants and
// types. The implementation lives in `./http/` (secrets, exchange, spool, expect, and one module
// per factory); nothing internal is exported from here.
export {
  bundleEntrySchema,
  HTTP_BUNDLE_FORMAT,
  type HttpBundleEntry,
  type HttpBundleIndex,
  type HttpBundleService,
  type HttpBundleSourceOptions,
  httpBundleIndexSchema,
  httpBundleServiceSchema,
  httpBundleSource,
  httpBundleSourceOptionsSchema,
} from "./http/bundle-source.js";
export { DEFAULT_HTTP_MAX_BYTES, type HttpFailureReason, type HttpRequestOptions } from "./http/exchange.js";
export {
  DEFAULT_HTTP_MAX_PARSE_BYTES,
  type HttpExpect,
  httpExpectSchema,
  MAX_HTTP_PARSE_BYTES,
} from "./http/expect.js";
export { type HttpSourceOptions, httpSource, httpSourceOptionsSchema } from "./http/http-source.js";
export {
  type RestoreHttpOptions,
  type RestoreHttpResult,
  restoreHttp,
  restoreHttpOptionsSchema,
} from "./http/restore.js";
export {
  type HttpRestoreTargetOptions,
  httpRestoreTarget,
  httpRestoreTargetOptionsSchema,
} from "./http/restore-target.js";
export { DEFAULT_SECRET_HEADERS } from "./http/secrets.js";
