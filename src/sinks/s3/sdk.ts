import { importPeer } from "../../core/peer.js";

/** The AWS SDK's S3 module. */
export type S3Sdk = typeof import("@aws-sdk/client-s3");

/**
 * The AWS SDK's S3 module, loaded at first use: it is an optional peer dependency, so importing
 * `stowage/sinks/s3` works without it, and using a sink without it is UNSUPPORTED naming it.
 */
export const s3Sdk = (where = "s3Sink"): Promise<S3Sdk> =>
  importPeer("@aws-sdk/client-s3", where, () => import("@aws-sdk/client-s3"));
