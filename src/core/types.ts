import type { FileHandle } from "node:fs/promises";
import type { Duplex, Readable } from "node:stream";
import type { ArchiverStats } from "../policies/wal-report.js";
import type { ChainRecord, TransformRecord } from "./manifest.js";

/** What a source hands the pipeline for one run. */
export interface SourceOutput {
  /** The raw bytes. An error on this stream fails the backup. */
  stream: Readable;
  /** e.g. "application/sql", "application/x-tar", "application/json". */
  contentType: string;
  /** Extension for the artifact key before transform extensions, e.g. ".sql", ".tar". */
  extension?: string;
  /**
   * Settles after the stream has ended: checks the exit code or the response, and returns the
   * facts the manifest keeps (rows, kinds, versions). A rejection fails the backup; the core
   * waits for it before the sink commits, so a source that fails late still leaves nothing.
   */
  details(): Promise<Record<string, unknown>>;
  /**
   * For a source that backs up only what changed since a parent backup: the manifest's `chain`
   * record (kind, parent, where the file index is). Called after `details()` has settled.
   */
  chain?(): ChainRecord | undefined;
}

/**
 * What {@link Source.openToFile} hands back. The bytes go straight into the file, so there is no
 * stream: `finished` says when the writer is done and whether it succeeded.
 */
export interface FileSourceOutput extends Omit<SourceOutput, "stream"> {
  /**
   * As {@link SourceOutput.chain}: the manifest's `chain` record for a source that backs up only
   * what changed since a parent backup. Called after `details()` has settled.
   */
  chain?(): ChainRecord | undefined;
  /**
   * Resolves once everything has been written and the writer succeeded (e.g. pg_dump exited 0
   * without reporting an error); rejects with the source's failure, or ABORTED after `stop()`.
   */
  finished: Promise<void>;
  /** Stops the writer (kills and reaps the child) and resolves once it is gone; idempotent. */
  stop(): Promise<void>;
}

/** Context handed to {@link Source.open}. */
export interface SourceContext {
  /** Aborts the run: the source stops its work and releases what it holds. */
  signal: AbortSignal;
  /** The job the run belongs to, for a source to name in its errors. */
  job?: string;
  /** When the run started; sources use it for relative windows such as "the last 24h". */
  startedAt: Date;
}

/**
 * Where bytes come from. A source must release what it holds (child process, file handle,
 * connection) when its stream ends, errors or is destroyed.
 */
export interface Source {
  /** "postgres" | "kubernetes" | "http" | "logs" | "directory" | "bytes" | ... */
  kind: string;
  /** Logical name, e.g. the database name. */
  name: string;
  /**
   * A source whose bytes are secret (e.g. Kubernetes Secrets) sets this; `backup()` then refuses
   * to run without an encryption transform unless `allowUnencrypted` is set.
   */
  sensitive?: boolean;
  /** Starts producing bytes: resolves with the stream and a `details()` that settles after the stream ends. */
  open(context: SourceContext): Promise<SourceOutput>;
  /**
   * Optional fast path for a source whose bytes come from another process: start it writing
   * straight into `fd`, an open file, so that the bytes never pass through this process (what a
   * shell's `> file` does). `backup()` takes this path only when there are no transforms and the
   * sink offers {@link Sink.openFile}; it hashes the file as it grows and commits it when the
   * writer has finished. The writer must only append: bytes are hashed once, as they land, so a
   * writer that seeks back and rewrites (pg_dump's custom format does) must not offer this. A
   * source must release its process on `stop()` and on `context.signal`.
   */
  openToFile?(fd: number, context: SourceContext): Promise<FileSourceOutput>;
  /**
   * Optional, for a source whose server archives WAL into the job (a PostgreSQL base backup):
   * the server's archiver statistics and current WAL file, which `stowage status` reports as the
   * archiver's lag. Rejects when the server cannot be asked.
   */
  archiverStatus?(options?: { signal?: AbortSignal }): Promise<ArchiverStats>;
}

/** Keys handed to decoders; see `aes256gcm`. */
export type DecryptionKey =
  | {
      /** A raw 32-byte key (bytes, or 64 hex or 44 base64 characters). */
      key: Uint8Array | string;
      /** The key's fingerprint, checked against the artifact's header; computed when absent. */
      keyId?: string;
    }
  | {
      /** A passphrase, stretched with scrypt and the artifact's salt. */
      passphrase: string;
    }
  | {
      /** The secret identity from `generateKeyPair()`, for backups encrypted to its recipient. */
      identity: string;
    };

/** The backup an artifact belongs to, which an encryption stage binds into its header. */
export interface BackupIdentity {
  /** The job's name. */
  job: string;
  /** The backup's id (time-sortable). */
  id: string;
}

/** Context handed to {@link Decoder.decode}. */
export interface DecodeContext {
  /** The keys a decrypting stage tries, in order; empty for stages that need none. */
  keys: readonly DecryptionKey[];
  /**
   * The backup the manifest says this is (restore, verify): a stage that bound an identity when it
   * encoded (aes-256-gcm format 3) refuses an artifact bound to another one.
   */
  identity?: BackupIdentity;
}

/**
 * The decoding half of a stage: all that `restore` and `verify` need to undo a stage that a
 * manifest names. Every {@link Transform} is one; a decoder alone cannot write backups.
 */
export interface Decoder {
  /** The name manifests record for the stage, e.g. "gzip", "aes-256-gcm". */
  name: string;
  /** A fresh stream that undoes the stage, configured from what the manifest recorded. */
  decode(record: TransformRecord, context: DecodeContext): Duplex | Promise<Duplex>;
}

/** One reversible stage between the source and the sink. */
export interface Transform extends Decoder {
  /** What the stage does, so validation can require "compressed" or "encrypted". */
  role: "compression" | "encryption" | "other";
  /** Appended to the artifact key, e.g. ".gz", ".enc". */
  extension: string;
  /**
   * A fresh stream for one artifact. `backup()` passes the backup's identity, for a stage that
   * binds it (aes-256-gcm); a stage may ignore it.
   */
  encode(identity?: BackupIdentity): Duplex | Promise<Duplex>;
  /** What the manifest records: enough to reverse the stage (level, cipher, key id, chunk size). */
  describe(): TransformRecord;
}

/** Options of {@link Sink.write}. */
export interface WriteOptions {
  /** Aborts the write; nothing is left under the key. */
  signal?: AbortSignal;
  /** The media type stored with the object where the sink can, e.g. "application/gzip". */
  contentType?: string;
  /** A storage class the sink supports (see {@link SinkCapabilities.storageClasses}). */
  storageClass?: string;
  /** Small string metadata stored with the object where the sink can. */
  metadata?: Record<string, string>;
}

/** What {@link Sink.write} committed. */
export interface WrittenObject {
  /** The key the object was committed under. */
  key: string;
  /** A URI a person can paste: file:///…, s3://bucket/key, memory://key. */
  location: string;
  /** The storage class the object was written in, when the sink has several. */
  storageClass?: string;
  /**
   * The object cannot be deleted before this time (e.g. S3 Object Lock). `backup()` records the
   * later of this and its own `retainUntil` in the manifest, so retention keeps the backup until then.
   */
  retainUntil?: Date;
}

/** One committed object, as {@link Sink.list} and {@link Sink.stat} report it. */
export interface ObjectInfo {
  /** The object's key. */
  key: string;
  /** Its size in bytes. */
  size: number;
  /** When it was committed, by the sink's clock. */
  lastModified: Date;
  /** Its storage class, when the sink has several. */
  storageClass?: string;
}

/** Options of the sink calls that only read or delete. */
export interface ReadOptions {
  /** Aborts the call. */
  signal?: AbortSignal;
}

/** What a sink can do, declared so the core can refuse an impossible plan before reading a byte. */
export interface SinkCapabilities {
  /** Storage classes accepted by `write`; absent means the sink has one class. */
  storageClasses?: readonly string[];
  /** "immediate" for disks and S3 Standard; "hours" for cold archives that need a restore request. */
  readLatency: "immediate" | "hours";
  /** Whether `delete` removes objects (false for write-once stores). */
  delete: boolean;
}

/** Options of {@link Sink.openFile}. */
export interface OpenFileOptions extends WriteOptions {
  /**
   * What the key the file will be committed as starts with, e.g. `"app-db/2026/11/29/<backup id>"`:
   * the sink keeps the temporary file beside it, so that a sweep of the job's prefix finds it.
   * @default "" (the sink's top)
   */
  prefix?: string;
}

/**
 * A temporary file from {@link Sink.openFile} that another process writes into; `commit` makes it
 * an object, as `write` would have.
 */
export interface SinkFile {
  /** Open for reading and writing; the core reads it back to hash what was written. */
  readonly handle: FileHandle;
  /** Tells the sink how far the file has grown, so that it can write pages out as it goes. */
  grown(bytes: number): void;
  /** Makes the file the object at `key`: durably, all or nothing, like `write`. */
  commit(key: string, options?: WriteOptions): Promise<WrittenObject>;
  /** Closes and removes the temporary file, if it is still there; never throws. */
  discard(): Promise<void>;
}

/**
 * Where artifacts and manifests are kept. `write` is all or nothing: it resolves only after the
 * body has ended and the object is durably committed; if the body errors or the signal fires,
 * nothing is left under `key` (nor anywhere the sink's `list` would show).
 */
export interface Sink {
  /** "filesystem" | "s3" | "glacier" | "memory" | ... */
  kind: string;
  /** What the sink supports, checked before a backup opens its source. */
  capabilities: SinkCapabilities;
  /** Writes `body` under `key`, all or nothing; resolves once the object is durably committed. */
  write(key: string, body: Readable, options?: WriteOptions): Promise<WrittenObject>;
  /** @throws {NOT_FOUND} when there is no object at `key`. */
  read(key: string, options?: ReadOptions): Promise<Readable>;
  /** The object at `key`, or `undefined` when there is none. */
  stat(key: string, options?: ReadOptions): Promise<ObjectInfo | undefined>;
  /** Every committed object whose key starts with `prefix`, in key order. */
  list(prefix: string, options?: ReadOptions): AsyncIterable<ObjectInfo>;
  /** Deletes the keys; a missing key is not an error. */
  delete(keys: readonly string[], options?: ReadOptions): Promise<void>;
  /**
   * Optional, for sinks on a local disk: a temporary file that a source's process can write into
   * directly (see {@link Source.openToFile}); the artifact then never passes through this process.
   */
  openFile?(options?: OpenFileOptions): Promise<SinkFile>;
  /**
   * Optional, for sinks where an interrupted write leaves something `list` does not show
   * (a filesystem's temporary files, S3's open multipart uploads): those under `prefix` that no
   * live writer owns any more. A sink that can tell liveness (a heartbeat, a lock) uses it; one that
   * cannot reports only leftovers that started before `now - olderThanMs`.
   */
  leftovers?(prefix: string, options: LeftoverOptions): AsyncIterable<Leftover>;
  /** Removes leftovers that `leftovers` reported; one already gone is not an error. */
  removeLeftovers?(leftovers: readonly Leftover[], options?: ReadOptions): Promise<void>;
}

/** Something an interrupted write left in a sink that its `list` does not show. */
export interface Leftover {
  /** What it is: "temporary-file", "multipart-upload", ... */
  kind: string;
  /** The key it belongs to: the temporary file's own key, or the object key an upload was for. */
  key: string;
  /** The sink's handle for removing it: the temporary file's key, a multipart upload's id, ... */
  id: string;
  /** When its write began, by the sink's clock. */
  startedAt: Date;
}

/** Options of {@link Sink.leftovers}. */
export interface LeftoverOptions extends ReadOptions {
  /** For sinks that cannot tell a live writer from a dead one: only leftovers older than this. */
  olderThanMs: number;
  /** The reference time for `olderThanMs`. */
  now: Date;
}

/** A progress event, emitted at most a few times a second and once at the end. */
export interface BackupProgress {
  /** Plain bytes read from the source so far. */
  bytesRead: number;
  /** Stored bytes handed to the sink so far. */
  bytesWritten: number;
  /** Milliseconds since the backup started. */
  elapsedMs: number;
  /** True on the last event, once the backup is committed. */
  done: boolean;
}
