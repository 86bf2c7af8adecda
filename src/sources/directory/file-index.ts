import { createHash } from "node:crypto";
import { PassThrough, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Header } from "tar-stream";
import { isStowageError, StowageError, wrapError } from "../../core/errors.js";
import { loadTarStream } from "../../core/lazy-deps.js";
import type { Manifest } from "../../core/manifest.js";
import { restore } from "../../core/restore.js";
import type { Decoder, DecryptionKey, Sink } from "../../core/types.js";

/**
 * The name of the tar member that carries the file index: the last member of every backup of a
 * chain. It travels inside the artifact, so it is compressed and encrypted like the files, and
 * copies, retention and sweeps handle it without knowing it is there. A file of this name at the
 * top of the backed-up folder is left out of a chained backup (`details.skipped`).
 */
export const INDEX_MEMBER = ".stowage-index.ndjson";

const FORMAT = "stowage-directory-index";

/** One path of the tree as the index records it (`/`-separated, relative to the folder). */
export interface IndexEntry {
  /** The path, relative to the backed-up folder. */
  path: string;
  /** What the path is. */
  type: "file" | "directory" | "symlink";
  /** Bytes (0 for a folder). */
  size: number;
  /** The mode, as `stat` gives it. */
  mode: number;
  /** Nanoseconds since the epoch, as decimal text (a number would lose them). */
  mtimeNs: string;
  /** Change time in nanoseconds since the epoch, as decimal text. */
  ctimeNs: string;
  /** The inode number, as decimal text. */
  ino: string;
  /** SHA-256 of a file's bytes. */
  sha256?: string;
  /**
   * The id of the backup whose tar holds this file's bytes; absent when it is this backup's own.
   */
  origin?: string;
}

/** What one backup of a chain records about the tree: every path, and what left since the parent. */
export interface FileIndex {
  /** The kind of backup the index belongs to. */
  kind: "full" | "differential" | "incremental";
  /** In walk order (sorted names, a folder before what is in it). */
  entries: IndexEntry[];
  /** Paths the parent had that this tree no longer has. */
  deleted: string[];
}

/** The index as stored: one JSON header line, one line per entry, one per deleted path. */
export function serializeIndex(index: FileIndex): Buffer {
  const lines = [
    JSON.stringify({ format: FORMAT, version: 1, kind: index.kind, entries: index.entries.length }),
  ];
  for (const e of index.entries) lines.push(JSON.stringify(e));
  for (const path of index.deleted) lines.push(JSON.stringify({ deleted: path }));
  return Buffer.from(`${lines.join("\n")}\n`, "utf8");
}

export const sha256Of = (bytes: Buffer): string => createHash("sha256").update(bytes).digest("hex");

const damaged = (where: string, problem: string, cause?: unknown) =>
  new StowageError("INTEGRITY_MISMATCH", `${where}: the file index ${problem}`, {
    ...(cause !== undefined ? { cause } : {}),
    details: { reason: "index-damaged", problem },
  });

/**
 * Parses a stored index, checking every line's shape: the index decides what a restore takes from
 * which backup, so a malformed one is refused rather than half-used.
 * @throws {INTEGRITY_MISMATCH} with `details.reason: "index-damaged"`.
 */
export function parseIndex(bytes: Buffer, where: string): FileIndex {
  const lines = bytes.toString("utf8").split("\n");
  if (lines.at(-1) === "") lines.pop();
  let header: { format?: unknown; version?: unknown; kind?: unknown; entries?: unknown };
  try {
    header = JSON.parse(lines[0] ?? "");
  } catch (error) {
    throw damaged(where, "has no header", error);
  }
  if (header.format !== FORMAT || header.version !== 1) throw damaged(where, "has an unknown format");
  if (header.kind !== "full" && header.kind !== "differential" && header.kind !== "incremental") {
    throw damaged(where, "names no kind");
  }
  const index: FileIndex = { kind: header.kind, entries: [], deleted: [] };
  for (const [n, line] of lines.slice(1).entries()) {
    let value: Record<string, unknown>;
    try {
      value = JSON.parse(line);
    } catch (error) {
      throw damaged(where, `line ${n + 2} is not JSON`, error);
    }
    if (typeof value.deleted === "string") {
      index.deleted.push(value.deleted);
      continue;
    }
    const ok =
      typeof value.path === "string" &&
      (value.type === "file" || value.type === "directory" || value.type === "symlink") &&
      Number.isSafeInteger(value.size) &&
      Number.isSafeInteger(value.mode) &&
      typeof value.mtimeNs === "string" &&
      typeof value.ctimeNs === "string" &&
      typeof value.ino === "string" &&
      (value.type !== "file" || typeof value.sha256 === "string") &&
      (value.origin === undefined || typeof value.origin === "string");
    if (!ok) throw damaged(where, `line ${n + 2} is not an entry`);
    index.entries.push(value as unknown as IndexEntry);
  }
  if (index.entries.length !== header.entries)
    throw damaged(where, "lists fewer entries than its header says");
  return index;
}

/** An index is at most this large (about a million paths); a larger member is refused, not buffered. */
const MAX_INDEX_BYTES = 512 * 1024 * 1024;

/** Options of {@link readIndex}. */
export interface ReadIndexOptions {
  /** The sink that holds the backup. */
  sink: Sink;
  /** The backup whose file index to read. */
  manifest: Manifest;
  /** Keys that decrypt the artifact. */
  keys?: readonly DecryptionKey[];
  /** Your own decoders, for manifests that name them. */
  transforms?: readonly Decoder[];
  /** Aborts the read. */
  signal?: AbortSignal;
}

/**
 * Reads the file index out of a chained backup: restores its artifact (checking the stored and
 * plain digests as it streams), skips the files and keeps the index member, whose SHA-256 must be
 * the one the manifest records. Memory: the index itself.
 *
 * @throws {RESTORE_FAILED} the manifest has no `chain`, or the artifact has no index member.
 * @throws {INTEGRITY_MISMATCH} the index is damaged or is not the one the manifest names.
 */
export async function readIndex(options: ReadIndexOptions): Promise<FileIndex> {
  const { manifest, signal } = options;
  const key = manifest.artifact.key;
  const chain = manifest.chain;
  if (!chain) {
    throw new StowageError(
      "RESTORE_FAILED",
      `${key}: not part of a chain (its manifest has no chain record)`,
      {
        details: { key, reason: "not-chained" },
      },
    );
  }
  const plain = await restore({
    sink: options.sink,
    manifest,
    ...(options.keys ? { keys: options.keys } : {}),
    ...(options.transforms ? { transforms: options.transforms } : {}),
    verifyFirst: false,
    ...(signal ? { signal } : {}),
  });
  let found: Buffer | undefined;
  await forEachTarEntry(
    plain,
    signal,
    async (entry) => {
      if (entry.header.name !== chain.index.member) {
        entry.resume();
        return;
      }
      const parts: Buffer[] = [];
      let size = 0;
      const body = new PassThrough();
      const copying = pipeline(entry, body);
      for await (const chunk of body) {
        size += (chunk as Buffer).length;
        if (size > MAX_INDEX_BYTES) throw damaged(key, `is larger than ${MAX_INDEX_BYTES} bytes`);
        parts.push(chunk as Buffer);
      }
      await copying;
      found = Buffer.concat(parts);
    },
    (error) => wrapError(error, "RESTORE_FAILED", `${key}: reading its file index`, { key }, signal),
  );
  if (!found) {
    throw new StowageError("RESTORE_FAILED", `${key}: the artifact has no file index member`, {
      details: { key, reason: "index-missing" },
    });
  }
  if (sha256Of(found) !== chain.index.sha256) throw damaged(key, "does not match the manifest's SHA-256");
  return parseIndex(found, key);
}

/**
 * Hands every entry of the tar `plain` to `each`, in order. On a failure it releases both streams
 * and throws the most telling error: a StowageError of `each`, else the stream's own (an
 * INTEGRITY_MISMATCH or DECRYPT_FAILED from `restore`), else `wrap(error)`.
 */
export async function forEachTarEntry(
  plain: Readable,
  signal: AbortSignal | undefined,
  each: (entry: Readable & { header: Header }) => Promise<void>,
  wrap: (error: unknown) => Error,
): Promise<void> {
  const extract = (await loadTarStream()).extract();
  const feeding = pipeline(plain, extract, signal ? { signal } : {});
  feeding.catch(() => undefined);
  try {
    for await (const entry of extract) await each(entry as unknown as Readable & { header: Header });
    await feeding;
  } catch (error) {
    plain.destroy();
    extract.destroy();
    const cause = await feeding.then(
      () => undefined,
      (e: unknown) => e,
    );
    if (isStowageError(error)) throw error;
    if (isStowageError(cause)) throw cause;
    throw wrap(error);
  }
}
