import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { pipeline } from "node:stream/promises";
import type { BackupKind } from "../../core/incremental.js";
import type { ChainRecord, Manifest } from "../../core/manifest.js";
import { type FileIndex, INDEX_MEMBER, type IndexEntry, serializeIndex, sha256Of } from "./file-index.js";
import { type Entry, unreadable } from "./walk.js";

/** The SHA-256 of an empty file, which is never opened. */
export const EMPTY_SHA256 = sha256Of(Buffer.alloc(0));

/** The base a differential or incremental run compares against. */
export interface IndexBase {
  manifest: Manifest;
  index: FileIndex;
}

/**
 * Builds one run's file index while the tree is walked, and decides for each file whether its
 * bytes must be packed: a file is unchanged when its type, size, mtime, ctime, mode and inode are
 * those of the base (and, with `compareContent`, its SHA-256 too). GNU tar's listed-incremental
 * and restic compare the same metadata; ctime catches an mtime set back by hand.
 */
export class IndexBuilder {
  private readonly entries: IndexEntry[] = [];
  /** The base's paths not seen yet; what is left at the end was deleted. */
  private readonly left: Map<string, IndexEntry>;

  constructor(
    readonly kind: BackupKind,
    private readonly base: IndexBase | undefined,
    private readonly compareContent: boolean,
  ) {
    this.left = new Map((base?.index.entries ?? []).map((e) => [e.path, e]));
  }

  /**
   * The base's entry for a file that has not changed (its bytes stay in the backup that holds
   * them), or `undefined` when the file must be packed in this run.
   */
  async unchanged(root: string, entry: Entry): Promise<IndexEntry | undefined> {
    const before = this.left.get(entry.rel);
    if (
      before?.type !== "file" ||
      before.size !== entry.size ||
      before.mode !== entry.mode ||
      before.mtimeNs !== entry.mtimeNs ||
      before.ctimeNs !== entry.ctimeNs ||
      before.ino !== entry.ino
    ) {
      return undefined;
    }
    if (this.compareContent && (await hashFile(root, entry)) !== before.sha256) return undefined;
    return before;
  }

  /** Records a path; `kept` is the base's entry of a file whose bytes this run does not pack. */
  record(entry: Entry, sha256?: string, kept?: IndexEntry): void {
    this.left.delete(entry.rel);
    const e: IndexEntry = {
      path: entry.rel,
      type: entry.type,
      size: entry.type === "file" ? entry.size : 0,
      mode: entry.mode,
      mtimeNs: entry.mtimeNs,
      ctimeNs: entry.ctimeNs,
      ino: entry.ino,
    };
    if (entry.type === "file") e.sha256 = kept?.sha256 ?? sha256;
    // Bytes kept from the base live where the base found them: in the base, or further back.
    if (kept) e.origin = kept.origin ?? this.base!.manifest.id;
    this.entries.push(e);
  }

  /** The finished index, its stored bytes and the manifest's chain record. */
  finish(): { index: FileIndex; bytes: Buffer; record: ChainRecord } {
    const index: FileIndex = { kind: this.kind, entries: this.entries, deleted: [...this.left.keys()] };
    const bytes = serializeIndex(index);
    const base = this.base?.manifest;
    return {
      index,
      bytes,
      record: {
        kind: this.kind,
        ...(base ? { parent: { id: base.id, key: base.artifact.key } } : {}),
        index: { member: INDEX_MEMBER, entries: this.entries.length, sha256: sha256Of(bytes) },
      },
    };
  }
}

async function hashFile(root: string, entry: Entry): Promise<string> {
  if (entry.size === 0) return EMPTY_SHA256;
  const hash = createHash("sha256");
  try {
    await pipeline(createReadStream(entry.abs, { highWaterMark: 1 << 20 }), hash);
  } catch (error) {
    throw unreadable(root, entry.rel, error);
  }
  return hash.digest("hex");
}

/**
 * The indexes a source keeps between runs in one process, by the SHA-256 the manifests record:
 * the last full's and the last run's. A job's next incremental (or differential) finds its base's
 * index here instead of reading the base's artifact back; a miss reads it from the sink.
 * Memory: two indexes (about 200 bytes a path).
 */
export class IndexCache {
  private last: { sha256: string; index: FileIndex } | undefined;
  private full: { sha256: string; index: FileIndex } | undefined;

  get(sha256: string): FileIndex | undefined {
    if (this.last?.sha256 === sha256) return this.last.index;
    if (this.full?.sha256 === sha256) return this.full.index;
    return undefined;
  }

  put(sha256: string, index: FileIndex): void {
    this.last = { sha256, index };
    if (index.kind === "full") this.full = this.last;
  }
}
