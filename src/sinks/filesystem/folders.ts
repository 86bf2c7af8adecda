import { randomBytes } from "node:crypto";
import type { Stats } from "node:fs";
import { type FileHandle, lstat, mkdir, open, readlink, rename, rmdir } from "node:fs/promises";
import { dirname, join, relative, sep } from "node:path";
import { pathToFileURL } from "node:url";
import { StowageError, type StowageErrorCode } from "../../core/errors.js";
import { assertSafeKey } from "../../core/keys.js";
import { syncFolder, type WriteBehind } from "./file-writer.js";
import { type ParsedFilesystemSinkOptions, TEMP_MARKER } from "./options.js";
import { type Claim, claim } from "./owner.js";

export const errnoOf = (error: unknown) => (error as NodeJS.ErrnoException | null)?.code;
export const isMissing = (error: unknown) => errnoOf(error) === "ENOENT";

/** The code of an error the sink raises itself, by what it was doing. */
const CODES = {
  write: "SINK_WRITE_FAILED",
  read: "SINK_READ_FAILED",
  delete: "SINK_DELETE_FAILED",
} as const satisfies Record<string, StowageErrorCode>;
export type Operation = keyof typeof CODES;

/** When a temporary file began, as its filesystem says. */
export const startOf = (info: Stats) => (info.birthtimeMs > 0 ? info.birthtime : info.mtime);

/** The paths, folders and commit of a filesystem sink rooted at `root` (an absolute path). */
export function folders(root: string, opts: ParsedFilesystemSinkOptions) {
  const pathOf = (key: string) => {
    assertSafeKey(key, "filesystem sink");
    return join(root, ...key.split("/"));
  };
  const keyOf = (path: string) => relative(root, path).split(sep).join("/");
  const tempName = (name: string) => `.${name}${TEMP_MARKER}${randomBytes(6).toString("hex")}`;

  /** The error for a path below the root that meets the symbolic link `link`. */
  const linkRefused = async (link: string, operation: Operation, key: string) => {
    const target = await readlink(link).catch(() => undefined);
    const verb = { write: "write", read: "read", delete: "delete" }[operation];
    return new StowageError(
      CODES[operation],
      `filesystem sink: refusing to ${verb} "${key}" through the symbolic link ${link}${target === undefined ? "" : ` (to ${target})`}: the sink never follows a link below its root`,
      {
        details: {
          key,
          link: keyOf(link),
          ...(target === undefined ? {} : { target }),
          reason: "symbolic-link",
        },
      },
    );
  };
  /**
   * Refuses a path below the root that goes through a symbolic link (a folder or the last part).
   * Parts that do not exist yet are fine: the sink creates them as real folders.
   */
  const refuseLinks = async (path: string, operation: Operation, key: string) => {
    const parts = relative(root, path).split(sep).filter(Boolean);
    let at = root;
    for (const part of parts) {
      at = join(at, part);
      let info: Stats;
      try {
        info = await lstat(at);
      } catch (error) {
        if (isMissing(error) || errnoOf(error) === "ENOTDIR") return;
        throw error;
      }
      if (info.isSymbolicLink()) throw await linkRefused(at, operation, key);
    }
  };

  /** SINK_WRITE_FAILED naming the folder and the real cause. */
  const writeFailed = (what: string, folder: string, cause: unknown) => {
    const errno = errnoOf(cause);
    return new StowageError(
      "SINK_WRITE_FAILED",
      `filesystem sink: cannot ${what} ${folder}: ${errno ?? (cause as Error | undefined)?.message ?? String(cause)}`,
      { cause, details: { folder, ...(errno ? { errno } : {}) } },
    );
  };
  /**
   * Makes `folder` and any missing parents, and returns the folders whose entries changed (the
   * parent of each folder made): a new folder is on disk only once its parent has been
   * synced, so the commit syncs them with the object's own folder.
   * @throws {SINK_WRITE_FAILED} naming the folder that could not be made and why.
   */
  const makeFolder = async (folder: string): Promise<string[]> => {
    let first: string | undefined;
    try {
      first = await mkdir(folder, { recursive: true, mode: opts.dirMode });
    } catch (error) {
      first = await makeFolderStepwise(folder, error);
    }
    if (first === undefined) return [];
    const changed: string[] = [];
    for (let dir = folder; dirname(dir) !== dir; dir = dirname(dir)) {
      changed.push(dirname(dir));
      if (dir === first) break;
    }
    return changed;
  };
  /**
   * Node 20's recursive mkdir reports ENOENT for whatever stopped it below an existing folder
   * (a read-only mount, a permission): made one folder at a time, the real cause shows.
   */
  const makeFolderStepwise = async (folder: string, error: unknown): Promise<string | undefined> => {
    const missing: string[] = [];
    for (
      let dir = folder;
      !(await lstat(dir).then(
        () => true,
        () => false,
      ));
      dir = dirname(dir)
    ) {
      missing.unshift(dir);
      if (dirname(dir) === dir) break;
    }
    if (missing.length === 0) throw writeFailed("create the folder", folder, error);
    let first: string | undefined;
    for (const dir of missing) {
      try {
        await mkdir(dir, { mode: opts.dirMode });
        first ??= dir;
      } catch (e) {
        if (errnoOf(e) !== "EEXIST") throw writeFailed("create the folder", dir, e);
      }
    }
    return first;
  };
  /**
   * Creates the folder, the owner record and the temporary file, in that order (a sweep that
   * sees the file sees its record). A concurrent `delete` may remove the folder it just emptied
   * between the steps; then the folder is made again, once.
   */
  const openTemp = async (
    folder: string,
    temp: string,
    flags: "wx" | "wx+",
    retry = true,
  ): Promise<{ handle: FileHandle; made: string[]; owner: Claim }> => {
    const made = await makeFolder(folder);
    let owner: Claim;
    try {
      owner = await claim(temp, opts.fileMode, opts.heartbeatMs);
    } catch (error) {
      if (retry && isMissing(error)) return openTemp(folder, temp, flags, false);
      throw writeFailed("create a file in the folder", folder, error);
    }
    try {
      return { handle: await open(temp, flags, opts.fileMode), made, owner };
    } catch (error) {
      await owner.release();
      if (retry && isMissing(error)) return openTemp(folder, temp, flags, false);
      throw writeFailed("create a file in the folder", folder, error);
    }
  };
  /** Removes `dir` and its parents while they are empty, up to (not including) the root. */
  const removeEmptyFolders = async (dir: string) => {
    for (; dir.startsWith(root + sep); dir = dirname(dir)) {
      if (
        !(await rmdir(dir).then(
          () => true,
          () => false,
        ))
      )
        break;
    }
  };
  /**
   * The end of every write: the file's data on disk, the file renamed to its key, the folder
   * (so the new name) on disk, with the parent of every folder made for it, and the owner record
   * removed. Closes the handle whatever happens.
   */
  const commit = async (
    handle: FileHandle,
    behind: WriteBehind,
    temp: string,
    key: string,
    made: string[],
    owner: Claim,
  ) => {
    const path = pathOf(key);
    try {
      await behind.sync();
    } finally {
      await handle.close();
    }
    const folder = dirname(path);
    const changed = [folder, ...made, ...(await makeFolder(folder))];
    await rename(temp, path);
    // Synced together, the new name and any new folders on its way cost about one journal commit.
    await Promise.all([...new Set(changed)].map(syncFolder));
    await owner.release();
    return { key, location: pathToFileURL(path).href };
  };

  return {
    pathOf,
    keyOf,
    tempName,
    linkRefused,
    refuseLinks,
    openTemp,
    removeEmptyFolders,
    commit,
  };
}

export type Folders = ReturnType<typeof folders>;
