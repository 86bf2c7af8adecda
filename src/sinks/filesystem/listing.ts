import type { Dirent } from "node:fs";
import { lstat, opendir, readFile, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { throwIfAborted } from "../../core/errors.js";
import { assertSafeKey } from "../../core/keys.js";
import type { Leftover, LeftoverOptions, ObjectInfo } from "../../core/types.js";
import { errnoOf, type Folders, isMissing, startOf } from "./folders.js";
import { TEMP_MARKER } from "./options.js";
import { filesystemNow, OWNER_SUFFIX, ownerAlive } from "./owner.js";

/** The listing and the leftover sweep of a filesystem sink rooted at `root`. */
export function listings(root: string, { keyOf, linkRefused, refuseLinks }: Folders) {
  /**
   * Every file under `dir`, recursively. A symbolic link anywhere below fails the walk (see the
   * factory's comment); an entry whose type the filesystem does not report is looked up.
   */
  async function* walk(dir: string): AsyncGenerator<string> {
    let entries: Dirent[];
    try {
      const handle = await opendir(dir);
      entries = [];
      for await (const entry of handle) entries.push(entry);
    } catch (error) {
      if (isMissing(error) || errnoOf(error) === "ENOTDIR") return;
      throw error;
    }
    for (const entry of entries) {
      const path = join(dir, entry.name);
      let type: Pick<Dirent, "isDirectory" | "isFile" | "isSymbolicLink"> | undefined = entry;
      if (!entry.isDirectory() && !entry.isFile() && !entry.isSymbolicLink()) {
        type = await lstat(path).catch(() => undefined); // DT_UNKNOWN (some NFS, XFS): ask
      }
      if (type?.isDirectory()) yield* walk(path);
      else if (type?.isFile()) yield path;
      else if (type?.isSymbolicLink()) throw await linkRefused(path, "read", keyOf(path));
    }
  }
  /** Every file under the deepest folder `prefix` names in full whose key starts with `prefix`. */
  async function* filesUnder(prefix: string, signal?: AbortSignal): AsyncGenerator<string> {
    const folder = prefix.includes("/") ? prefix.slice(0, prefix.lastIndexOf("/")) : "";
    if (folder) assertSafeKey(folder, "filesystem sink");
    const start = folder ? join(root, ...folder.split("/")) : root;
    await refuseLinks(start, "read", prefix);
    for await (const path of walk(start)) {
      throwIfAborted(signal, "filesystem sink: listing");
      if (keyOf(path).startsWith(prefix)) yield path;
    }
  }
  const statOrGone = (path: string) =>
    stat(path).catch((e: unknown) => {
      if (isMissing(e)) return undefined; // deleted while listing
      throw e;
    });

  async function* listing(prefix: string, signal?: AbortSignal): AsyncGenerator<ObjectInfo> {
    const keys: string[] = [];
    for await (const path of filesUnder(prefix, signal)) {
      if (!basename(path).includes(TEMP_MARKER)) keys.push(keyOf(path));
    }
    keys.sort();
    for (const key of keys) {
      const info = await statOrGone(join(root, ...key.split("/")));
      if (info) yield { key, size: info.size, lastModified: info.mtime };
    }
  }

  async function* leftovers(prefix: string, options: LeftoverOptions): AsyncGenerator<Leftover> {
    const { signal } = options;
    const temps = new Set<string>();
    const records = new Set<string>();
    let swept = root;
    for await (const path of filesUnder(prefix, signal)) {
      const name = basename(path);
      if (!name.includes(TEMP_MARKER)) continue;
      if (name.endsWith(OWNER_SUFFIX)) records.add(path);
      else temps.add(path);
      swept = dirname(path);
    }
    // The filesystem's own time, asked for once and only if a heartbeat must be judged.
    let clock: Promise<number | undefined> | undefined;
    const fsNow = () => {
      clock ??= filesystemNow(swept, TEMP_MARKER);
      return clock;
    };
    /** Whether the writer owning this record is alive; a record gone meanwhile counts as alive. */
    const alive = async (record: string) => {
      const [text, info] = await Promise.all([
        readFile(record, "utf8").catch(() => undefined),
        statOrGone(record),
      ]);
      if (!info) return true; // committed or discarded just now
      return ownerAlive(text, info, fsNow);
    };
    const cutoff = options.now.getTime() - options.olderThanMs;
    const found: Leftover[] = [];
    for (const temp of temps) {
      throwIfAborted(signal, "filesystem sink: looking for leftovers");
      const info = await statOrGone(temp);
      if (!info) continue;
      const record = temp + OWNER_SUFFIX;
      // Looked up again if the walk missed it: a record is made before its file.
      const owned = records.has(record) || (await statOrGone(record)) !== undefined;
      const dead = owned ? !(await alive(record)) : info.mtimeMs < cutoff;
      if (dead)
        found.push({ kind: "temporary-file", key: keyOf(temp), id: keyOf(temp), startedAt: startOf(info) });
    }
    for (const record of records) {
      if (temps.has(record.slice(0, -OWNER_SUFFIX.length))) continue;
      throwIfAborted(signal, "filesystem sink: looking for leftovers");
      const info = await statOrGone(record);
      if (info && !(await alive(record))) {
        found.push({ kind: "owner-record", key: keyOf(record), id: keyOf(record), startedAt: startOf(info) });
      }
    }
    found.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    yield* found;
  }

  return { listing, leftovers, statOrGone };
}
