import { createHash } from "node:crypto";
import { Transform, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Header, Pack } from "tar-stream";
import { listManifests } from "../../core/catalog.js";
import { StowageError, wrapError } from "../../core/errors.js";
import { type ExtractTarResult, extractTar } from "../../core/extract-tar.js";
import { resolveChain } from "../../core/incremental.js";
import { type Manifest, parseManifest } from "../../core/manifest.js";
import { newPack, packedTar } from "../../core/pack-tar.js";
import { restore, verify } from "../../core/restore.js";
import type { Decoder, DecryptionKey, Sink } from "../../core/types.js";
import { type FileIndex, forEachTarEntry, INDEX_MEMBER, type IndexEntry, readIndex } from "./file-index.js";

/** What {@link restoreDirectoryChain} takes: where the chain is, which backup, its keys. */
export interface RestoreDirectoryChainOptions {
  /** The sink that holds every link of the chain. */
  sink: Sink;
  /** The backup to restore: a full, a differential or an incremental (or an unchained backup). */
  manifest: Manifest;
  /** The job's manifests, to find the parents in. @default `listManifests(sink, { job })` */
  manifests?: readonly Manifest[];
  /** Keys for encrypted links: raw keys (matched by fingerprint) and/or passphrases. */
  keys?: DecryptionKey | readonly DecryptionKey[];
  /** Your own transforms, or just their decoders, for manifests that name them; not the built-ins. */
  transforms?: readonly Decoder[];
  /**
   * Re-read every link's stored bytes against its manifest before anything is unpacked, so a
   * corrupt link is named before a byte is written (else it is found while streaming, and the
   * half-unpacked temporary folder is removed). @default true
   */
  verifyFirst?: boolean;
  /** Stops the restore (ABORTED); what was unpacked so far is removed. */
  signal?: AbortSignal;
}

export interface RestoreDirectoryChainResult extends ExtractTarResult {
  /** The ids of the links applied, full first. */
  links: string[];
}

/** RESTORE_FAILED naming the link that breaks the chain. */
function broken(
  reason: "missing-link" | "wrong-link" | "cycle" | "corrupt-link",
  link: { id: string; key: string },
  problem: string,
  cause?: unknown,
): StowageError {
  return new StowageError("RESTORE_FAILED", `restoreDirectoryChain: link ${link.key} ${problem}`, {
    ...(cause !== undefined ? { cause } : {}),
    details: { reason, link: { id: link.id, key: link.key } },
  });
}

const linkOf = (m: Manifest) => ({ id: m.id, key: m.artifact.key });

/**
 * Rebuilds a folder exactly as it was at a chained directory backup: the full, then each
 * differential or incremental in the chain, with deletions applied (a path absent from the
 * backup's file index is not restored). Before anything is unpacked it resolves the chain from the
 * manifests, checks that every link's artifact is there with its recorded size and (with
 * `verifyFirst`) its recorded SHA-256, and reads the backup's own file index; a missing or corrupt
 * link is a `RESTORE_FAILED` naming it (`details.link`, `details.reason`). The links are then
 * streamed one after the other into a single {@link extractTar}, taking from each link only the
 * files the index says it holds, each checked against the index's SHA-256: every rule of
 * `extractTar` holds for every link (no `..`, no absolute paths, no escaping links, no writes
 * through symlinks), and a failure at any byte leaves `directory` absent or empty.
 *
 * @throws {RESTORE_FAILED} a broken chain (`details.reason` `"missing-link"`, `"wrong-link"`,
 *   `"cycle"`, `"corrupt-link"`) or a refused entry (an {@link ExtractRefusal} reason).
 * @throws {INTEGRITY_MISMATCH} a link whose bytes or index do not match (named in the message).
 * @throws {CONFIG_INVALID} the target is not an empty folder. {ABORTED} when `signal` fires.
 * @example await restoreDirectoryChain({ sink, manifest, keys: [{ key }] }, "/srv/app/uploads.restored");
 */
export async function restoreDirectoryChain(
  options: RestoreDirectoryChainOptions,
  directory: string,
): Promise<RestoreDirectoryChainResult> {
  const { sink, signal } = options;
  const manifest = parseManifest(options.manifest, "restoreDirectoryChain: manifest");
  const keys = options.keys === undefined ? [] : Array.isArray(options.keys) ? options.keys : [options.keys];
  const decode = { keys, ...(options.transforms ? { transforms: options.transforms } : {}) };
  const links = await checkedChain(options, manifest);
  // What the backup's tree holds, and from which link: read before a byte is unpacked.
  const index =
    links.length > 1
      ? await readIndex({ sink, manifest, ...decode, ...(signal ? { signal } : {}) }).catch(
          (error: unknown) => {
            throw broken("corrupt-link", linkOf(manifest), "has an unreadable file index", error);
          },
        )
      : undefined;
  const wanted = index ? wantedByLink(index, links, manifest) : undefined;
  const maxBytes = index
    ? index.entries.reduce((sum, e) => sum + (e.type === "file" ? e.size : 0), 0)
    : manifest.content.bytes;

  const pack = await newPack();
  const produced = (async () => {
    for (const [i, link] of links.entries()) {
      const own = i === links.length - 1;
      const take = own ? undefined : wanted!.get(link.id)!;
      await copyLink({ sink, link, decode, pack, take, index, own, ...(signal ? { signal } : {}) });
      if (take && take.size > 0) {
        throw broken("corrupt-link", linkOf(link), `lacks ${take.size} file(s) the index places in it`);
      }
    }
  })();
  const result = await extractTar(packedTar(pack, produced), directory, {
    maxBytes,
    ...(signal ? { signal } : {}),
  });
  await produced;
  return { ...result, links: links.map((l) => l.id) };
}

/** The chain, full first, every link present with its recorded size (and digest, with verifyFirst). */
async function checkedChain(options: RestoreDirectoryChainOptions, manifest: Manifest): Promise<Manifest[]> {
  const { sink, signal } = options;
  if (!manifest.chain) return [manifest];
  const manifests =
    options.manifests ??
    (await listManifests(sink, { job: manifest.job, ...(signal ? { signal } : {}) })).manifests;
  const chain = resolveChain(manifest, manifests);
  if (!chain.ok) {
    const problem =
      chain.problem === "missing-link"
        ? `is missing (needed by ${chain.child})`
        : chain.problem === "cycle"
          ? "leads back to itself"
          : `is not the parent ${chain.child} names`;
    throw broken(chain.problem, chain.link, problem);
  }
  for (const link of chain.links) {
    const info = await sink.stat(link.artifact.key, signal ? { signal } : {}).catch((error: unknown) => {
      throw wrapError(
        error,
        "SINK_READ_FAILED",
        `restoreDirectoryChain: stat ${link.artifact.key}`,
        {},
        signal,
      );
    });
    if (!info) throw broken("missing-link", linkOf(link), "has no artifact in the sink");
    if (info.size !== link.artifact.bytes) {
      throw broken(
        "corrupt-link",
        linkOf(link),
        `is ${info.size} bytes, not the ${link.artifact.bytes} its manifest records`,
      );
    }
  }
  if (options.verifyFirst ?? true) {
    for (const link of chain.links) {
      const report = await verify({ sink, manifest: link, decode: false, ...(signal ? { signal } : {}) });
      if (!report.ok) {
        const missing = report.problems.some((p) => p.code === "NOT_FOUND");
        throw broken(
          missing ? "missing-link" : "corrupt-link",
          linkOf(link),
          "does not match its manifest",
          report.problems[0],
        );
      }
    }
  }
  return chain.links;
}

/** For each earlier link, the files (path → index entry) whose bytes the backup takes from it. */
function wantedByLink(
  index: FileIndex,
  links: Manifest[],
  manifest: Manifest,
): Map<string, Map<string, IndexEntry>> {
  const wanted = new Map(links.map((l) => [l.id, new Map<string, IndexEntry>()]));
  for (const e of index.entries) {
    if (e.type !== "file" || e.origin === undefined) continue;
    const from = e.origin === manifest.id ? undefined : wanted.get(e.origin);
    if (!from) {
      throw broken(
        "corrupt-link",
        linkOf(manifest),
        `has an index that places ${e.path} in ${e.origin}, not a link of its chain`,
      );
    }
    from.set(e.path, e);
  }
  return wanted;
}

interface CopyLink {
  sink: Sink;
  link: Manifest;
  decode: { keys: readonly DecryptionKey[]; transforms?: readonly Decoder[] };
  pack: Pack;
  /** The files to take (removed as they are copied); undefined: every entry but the index. */
  take: Map<string, IndexEntry> | undefined;
  index: FileIndex | undefined;
  own: boolean;
  signal?: AbortSignal;
}

/** Streams one link's tar into `pack`, keeping what the backup takes from it. */
async function copyLink(c: CopyLink): Promise<void> {
  const { link, pack, take, signal } = c;
  const plain = await restore({
    sink: c.sink,
    manifest: link,
    ...c.decode,
    verifyFirst: false,
    ...(signal ? { signal } : {}),
  });
  const ownFiles = c.own && c.index ? new Map(c.index.entries.map((e) => [e.path, e])) : undefined;
  await forEachTarEntry(
    plain,
    signal,
    async (entry) => {
      const { header } = entry;
      const name = header.name;
      let expected: IndexEntry | undefined;
      if (take) {
        expected = header.type === "file" ? take.get(name) : undefined;
        if (!expected) {
          entry.resume();
          return;
        }
        take.delete(name);
      } else if (name === INDEX_MEMBER) {
        entry.resume();
        return;
      } else if (ownFiles && header.type === "file") {
        expected = ownFiles.get(name);
        if (!expected || expected.origin !== undefined) {
          throw broken(
            "corrupt-link",
            linkOf(link),
            `holds ${name}, which its own index does not place in it`,
          );
        }
      }
      const target = pack.entry(copyHeader(header));
      await pipeline(entry, new Expect(expected, name, link), target);
    },
    (error) =>
      wrapError(
        error,
        "RESTORE_FAILED",
        `restoreDirectoryChain: reading link ${link.artifact.key}`,
        { link: linkOf(link) },
        signal,
      ),
  );
}

function copyHeader(h: Header): Parameters<Pack["entry"]>[0] {
  return {
    name: h.name,
    type: h.type,
    mode: h.mode,
    mtime: h.mtime,
    ...(h.size !== undefined ? { size: h.size } : {}),
    ...(h.linkname ? { linkname: h.linkname } : {}),
    ...(h.pax ? { pax: h.pax } : {}),
  };
}

/** Passes a file's bytes on and fails at the end unless they are the size and SHA-256 the index says. */
class Expect extends Transform {
  private readonly hash = createHash("sha256");
  private bytes = 0;
  constructor(
    private readonly expected: IndexEntry | undefined,
    private readonly name: string,
    private readonly link: Manifest,
  ) {
    super({ highWaterMark: 1 << 20 });
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.expected) this.hash.update(chunk);
    callback(null, chunk);
  }
  override _flush(callback: TransformCallback): void {
    const e = this.expected;
    if (!e || (e.size === this.bytes && e.sha256 === this.hash.digest("hex"))) {
      callback();
      return;
    }
    callback(
      new StowageError(
        "INTEGRITY_MISMATCH",
        `restoreDirectoryChain: ${this.name} in link ${this.link.artifact.key} does not match the file index`,
        { details: { reason: "corrupt-link", link: linkOf(this.link), file: this.name } },
      ),
    );
  }
}
