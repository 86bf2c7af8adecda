/**
 * stowage: automated, verifiable backups. The root entry holds the core, the built-in transforms
 * and the light adapters (memory and filesystem sinks, bytes and directory sources). Adapters with
 * heavy SDKs live on subpaths (`stowage/sinks/s3`, `stowage/sources/postgres`, ...).
 */
export { type BackupOptions, backup, backupOptionsSchema } from "./core/backup.js";
export type { ArtifactBlocks } from "./core/blocks.js";
export type { ManifestCache } from "./core/catalog.js";
export {
  type ListManifestsOptions,
  listManifests,
  type ManifestListing,
  readManifest,
} from "./core/catalog.js";
// Signed manifests and the job's chain (docs/FORMAT.md, "Manifest signatures").
export { findPrevious } from "./core/chain.js";
export { type ContentFormat, extensionOf, formatOf } from "./core/content-types.js";
export { type CopyBackupOptions, copyBackup } from "./core/copy.js";
export {
  type DirectoryRestoreTargetOptions,
  directoryRestoreTarget,
  directoryRestoreTargetOptionsSchema,
  streamRestoreTarget,
} from "./core/directory-target.js";
export {
  isAbortError,
  isStowageError,
  StowageError,
  type StowageErrorCode,
  type StowageErrorOptions,
} from "./core/errors.js";
export {
  type ExtractRefusal,
  type ExtractTarOptions,
  type ExtractTarResult,
  extractTar,
} from "./core/extract-tar.js";
// Chains of full, differential and incremental backups (docs/FORMAT.md).
export {
  BACKUP_KINDS,
  type BackupKind,
  type ChainableSource,
  type ChainPlan,
  type ChainProblem,
  type ChainResolution,
  isChainable,
  resolveChain,
} from "./core/incremental.js";
export { type Issue, issuesFrom } from "./core/issues.js";
export { artifactKey, assertSafeKey, newBackupId } from "./core/keys.js";
// The Lock contract jobs run on across replicas; the adapters are on `stowage/locks/*`.
export {
  type AcquireOptions,
  type Fence,
  type Lease,
  type LeaseEngine,
  type LeaseRecord,
  type Lock,
  leaseRecordSchema,
  lockSchema,
  trackedLease,
} from "./core/lock.js";
export {
  type ChainRecord,
  chainRecordSchema,
  MANIFEST_SUFFIX,
  MANIFEST_VERSION,
  type Manifest,
  type ManifestArtifact,
  type ManifestContent,
  type ManifestSource,
  manifestKeyFor,
  manifestSchema,
  parseManifest,
  SUPPORTED_MANIFEST_VERSIONS,
  serializeManifest,
  type TransformRecord,
  transformRecordSchema,
} from "./core/manifest.js";
export { durationSchema, parseDuration, parseOptions } from "./core/options.js";
export type { ProgressListener } from "./core/progress.js";
export {
  type DigestCheck,
  type RestoreOptions,
  restore,
  restoredManifest,
  type VerifyOptions,
  type VerifyReport,
  verify,
} from "./core/restore.js";
export {
  type RestoreTarget,
  type RestoreTargetContext,
  type RestoreTargetResult,
  restoreTargetSchema,
} from "./core/restore-target.js";
export {
  type ApplyRetentionOptions,
  type ApplyRetentionResult,
  applyRetention,
  type DeletedBackup,
  type FailedDeletion,
  type FindOrphansOptions,
  findOrphans,
  type OrphanReport,
} from "./core/retention-apply.js";
export type { Signer } from "./core/signing.js";
export {
  canonicalJson,
  generateSigningKey,
  type ManifestSignature,
  manifestDigest,
  type SigningKeyPair,
  verifyKeyId,
} from "./core/signing.js";
export type { ByteCap } from "./core/streams.js";
export { HashCounter, readAll } from "./core/streams.js";
export type {
  BackupIdentity,
  BackupProgress,
  DecodeContext,
  Decoder,
  DecryptionKey,
  FileSourceOutput,
  Leftover,
  LeftoverOptions,
  ObjectInfo,
  OpenFileOptions,
  ReadOptions,
  Sink,
  SinkCapabilities,
  SinkFile,
  Source,
  SourceContext,
  SourceOutput,
  Transform,
  WriteOptions,
  WrittenObject,
} from "./core/types.js";
export { type VerifyChainOptions, type VerifyChainReport, verifyChain } from "./core/verify-chain.js";
export { VERSION } from "./core/version.js";
export type { DeletedWal, FailedWalDeletion } from "./core/wal-prune.js";
// Jobs, the backup cycle, the scheduler, audit trail and restore drills. Adapters with SDKs are
// loaded only when a drill needs them.
export * from "./jobs/index.js";
export type { KindSchedules } from "./jobs/job.js";
export { copySchema } from "./jobs/job.js";
export type { GaugeLike } from "./jobs/metrics.js";
export type { ChainDecision } from "./policies/incremental-chains.js";
// Pure policies over manifests (retention, validation, status); the list lives in policies/index.ts.
export * from "./policies/index.js";
export {
  type FilesystemSink,
  type FilesystemSinkOptions,
  filesystemSink,
  filesystemSinkOptionsSchema,
} from "./sinks/filesystem.js";
export type { StoredObject } from "./sinks/memory.js";
export {
  type MemorySink,
  type MemorySinkOptions,
  memorySink,
  memorySinkOptionsSchema,
} from "./sinks/memory.js";
export type { Chunks } from "./sources/bytes.js";
export { type BytesSourceOptions, bytesSource, bytesSourceOptionsSchema } from "./sources/bytes.js";
export type { ReadIndexOptions } from "./sources/directory/file-index.js";
export type { DirectoryIncrementalOptions } from "./sources/directory.js";
export {
  type DirectorySource,
  type DirectorySourceOptions,
  directoryIncrementalSchema,
  directorySource,
  directorySourceOptionsSchema,
  type FileIndex,
  INDEX_MEMBER,
  type IndexEntry,
  type RestoreDirectoryChainOptions,
  type RestoreDirectoryChainResult,
  readIndex,
  restoreDirectoryChain,
} from "./sources/directory.js";
// Light sources (no SDK): also on their subpaths stowage/sources/http and stowage/sources/logs.
export {
  type HttpBundleSourceOptions,
  type HttpRestoreTargetOptions,
  type HttpSourceOptions,
  httpBundleSource,
  httpRestoreTarget,
  httpSource,
  type RestoreHttpOptions,
  restoreHttp,
} from "./sources/http.js";
export { type LogsSourceOptions, logsSource } from "./sources/logs.js";
export type { ScryptParams } from "./transforms/aes-256-gcm/format.js";
export {
  AES_FORMAT_VERSION,
  AES_LIMITS,
  type Aes256GcmOptions,
  aes256gcm,
  aes256gcmOptionsSchema,
  generateKey,
  generateKeyPair,
  identityToRecipient,
  type KeyPair,
  keyFingerprint,
  type Recipient,
  type RecipientRecord,
  type RecipientType,
  type RekeyOptions,
  recipientFingerprint,
  recipientIds,
  rekey,
  rekeyOptionsSchema,
} from "./transforms/aes-256-gcm.js";
export {
  type CompressionOptions,
  compression,
  compressionOptionsSchema,
  defaultCodec,
} from "./transforms/compression.js";
export { type GzipOptions, gzip, gzipOptionsSchema } from "./transforms/gzip.js";
export { type ZstdOptions, zstd, zstdAvailable, zstdOptionsSchema } from "./transforms/zstd.js";
