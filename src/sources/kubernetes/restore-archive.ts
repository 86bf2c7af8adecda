/**
 * A `kubernetesSource` archive as a restore reads it: spooled to a folder, one file per object
 * (objects may arrive in any order, and memory holds an index of names, not the objects), then
 * the objects to apply chosen and put in restore order.
 */

import { createWriteStream } from "node:fs";
import { join } from "node:path";
import { type Readable, Transform, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import tar from "tar-stream";
import { throwIfAborted, wrapError } from "../../core/errors.js";
import type { Json } from "./client.js";
import { matchesResourceType, typeName } from "./discovery.js";
import { ARCHIVE_PATH, restoreRank } from "./objects.js";

export interface SpooledEntry {
  entry: string;
  file?: string;
  namespace?: string;
  group: string;
  resource: string;
  name: string;
  rank: number;
  seq: number;
  /** A Namespace stowage adds because objects need it and the archive has none. */
  synthetic?: boolean;
  tooLarge?: boolean;
}

/** Counts bytes and fails past a limit (the archive's header sizes are not trusted). */
class SizeLimit extends Transform {
  private seen = 0;
  constructor(private readonly limit: number) {
    super();
  }
  override _transform(chunk: Buffer, _e: BufferEncoding, callback: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.limit) callback(new Error(`entry larger than ${this.limit} bytes`));
    else callback(null, chunk);
  }
}

async function readStreamText(stream: AsyncIterable<unknown>, limit: number): Promise<string> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new Error(`entry larger than ${limit} bytes`);
    parts.push(chunk as Buffer);
  }
  return Buffer.concat(parts).toString("utf8");
}

/** The archive, spooled: its objects (each in a file of the spool, or marked too large) and index.json. */
export interface SpooledArchive {
  entries: SpooledEntry[];
  /** The archive's index.json, when it had a readable one. */
  index?: Json;
}

/**
 * Reads the whole archive into `spool`, one file per object; an entry larger than
 * `maxObjectBytes` is recorded as `tooLarge` and not written. Entries outside the archive layout
 * are passed over.
 *
 * @throws {RESTORE_FAILED} when the archive cannot be read.
 * @throws {ABORTED} when `signal` fires.
 */
export async function spoolArchive(
  stream: Readable,
  spool: string,
  maxObjectBytes: number,
  signal: AbortSignal | undefined,
): Promise<SpooledArchive> {
  const entries: SpooledEntry[] = [];
  let index: Json | undefined;
  const extract = tar.extract();
  const feeding = pipeline(stream, extract, signal ? { signal } : {});
  feeding.catch(() => undefined);
  let seq = 0;
  try {
    for await (const entry of extract) {
      throwIfAborted(signal, "restoreKubernetes");
      const name = entry.header.name;
      const match = ARCHIVE_PATH.exec(name);
      if (name === "index.json" && entry.header.type === "file") {
        const text = await readStreamText(entry, 16 << 20);
        try {
          index = JSON.parse(text) as Json;
        } catch {
          // A damaged index is not fatal: the objects carry everything a restore needs.
        }
        continue;
      }
      if (!match || entry.header.type !== "file") {
        entry.resume();
        continue;
      }
      const [, namespace, groupPart, resource, objectName] = match as unknown as [
        string,
        string | undefined,
        string,
        string,
        string,
      ];
      const group = groupPart === "core" ? "" : groupPart;
      const spooled: SpooledEntry = {
        entry: name,
        ...(namespace !== undefined ? { namespace: decodeURIComponent(namespace) } : {}),
        group,
        resource: decodeURIComponent(resource),
        name: decodeURIComponent(objectName),
        rank: restoreRank({ group, resource }),
        seq: seq++,
      };
      if ((entry.header.size ?? 0) > maxObjectBytes) {
        spooled.tooLarge = true;
        entry.resume();
      } else {
        spooled.file = join(spool, `${spooled.seq}.yaml`);
        await pipeline(entry, new SizeLimit(maxObjectBytes), createWriteStream(spooled.file));
      }
      entries.push(spooled);
    }
    await feeding;
  } catch (error) {
    throw wrapError(error, "RESTORE_FAILED", "restoreKubernetes: reading the archive failed", {}, signal);
  }
  return { entries, ...(index !== undefined ? { index } : {}) };
}

/** Which objects of the archive a restore applies. */
export interface RestoreSelection {
  /** Only objects of these namespaces (as named in the backup). */
  namespaces?: string[] | undefined;
  includeResources?: string[] | undefined;
  excludeResources?: string[] | undefined;
  /** Apply cluster-scoped objects other than CRDs and Namespaces. */
  includeCluster: boolean;
}

export const isCrd = (e: SpooledEntry): boolean =>
  e.group === "apiextensions.k8s.io" && e.resource === "customresourcedefinitions";

const isNamespace = (e: SpooledEntry): boolean =>
  e.group === "" && e.resource === "namespaces" && e.namespace === undefined;

/**
 * The entries to apply, in restore order (by rank, then as the archive had them): those the
 * selection names, and the Namespaces they need — the archive's when it has them (even if
 * `includeResources` left them out), else a `synthetic` one.
 */
export function chooseEntries(
  entries: SpooledEntry[],
  index: Json | undefined,
  selection: RestoreSelection,
): SpooledEntry[] {
  // Kinds and short names come from the index (when there is one), so that "Deployment" or
  // "svc" match as they do on backup; without it, resource names still do.
  const aliases = new Map<string, { kind: string; singularName?: string; shortNames?: string[] }>();
  const indexed = (index as { resources?: unknown } | undefined)?.resources;
  for (const r of Array.isArray(indexed) ? (indexed as Array<Record<string, unknown>>) : []) {
    if (typeof r.type !== "string" || typeof r.kind !== "string") continue;
    aliases.set(r.type, {
      kind: r.kind,
      ...(typeof r.singularName === "string" ? { singularName: r.singularName } : {}),
      ...(Array.isArray(r.shortNames)
        ? { shortNames: r.shortNames.filter((n): n is string => typeof n === "string") }
        : {}),
    });
  }
  const typeOf = (e: SpooledEntry) => ({
    group: e.group,
    resource: e.resource,
    kind: "",
    ...aliases.get(typeName(e)),
  });
  const named = (list: string[] | undefined, e: SpooledEntry) =>
    list?.some((p) => matchesResourceType(typeOf(e), p)) ?? false;
  const { namespaces, includeResources, excludeResources, includeCluster } = selection;
  const inScope = (ns: string) => !namespaces || namespaces.includes(ns);
  const chosen = entries.filter((e) => {
    if (named(excludeResources, e)) return false;
    if (e.namespace !== undefined)
      return inScope(e.namespace) && (!includeResources || named(includeResources, e));
    if (isNamespace(e)) return inScope(e.name);
    if (includeResources && !named(includeResources, e)) return false;
    return isCrd(e) || includeCluster;
  });
  // Namespaces the chosen objects need but the archive lacks (or includeResources left out).
  const nsNeeded = new Set(chosen.flatMap((e) => (e.namespace !== undefined ? [e.namespace] : [])));
  for (const e of chosen) if (isNamespace(e)) nsNeeded.delete(e.name);
  for (const e of entries) {
    if (isNamespace(e) && nsNeeded.has(e.name) && !named(excludeResources, e)) {
      chosen.push(e);
      nsNeeded.delete(e.name);
    }
  }
  for (const ns of nsNeeded) {
    chosen.push({
      entry: "",
      group: "",
      resource: "namespaces",
      name: ns,
      rank: 1,
      seq: -1,
      synthetic: true,
    });
  }
  chosen.sort((a, b) => a.rank - b.rank || a.seq - b.seq);
  return chosen;
}
