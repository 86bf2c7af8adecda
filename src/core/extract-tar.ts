import {
  chmod,
  link,
  lstat,
  mkdir,
  mkdtemp,
  open,
  readdir,
  rename,
  rm,
  rmdir,
  symlink,
  unlink,
  utimes,
} from "node:fs/promises";
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import tar from "tar-stream";
import { StowageError, throwIfAborted, wrapError } from "./errors.js";

export interface ExtractTarOptions {
  signal?: AbortSignal;
  /** Refuse the archive once its files add up to more than this many bytes. @default unlimited */
  maxBytes?: number;
}

export interface ExtractTarResult {
  directory: string;
  files: number;
  directories: number;
  symlinks: number;
  hardlinks: number;
  bytes: number;
}

function refuse(name: string, problem: string): StowageError {
  return new StowageError(
    "RESTORE_FAILED",
    `extractTar: refusing entry ${JSON.stringify(name)}: ${problem}`,
    {
      details: { entry: name, problem },
    },
  );
}

/** A relative, normalised archive path, or a refusal for anything that could leave the target. */
function safeRelative(name: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: NUL and friends are exactly what we refuse
  if (/[\u0000-\u001f]/.test(name)) throw refuse(name, "control character in the path");
  if (name.startsWith("/") || isAbsolute(name) || /^[A-Za-z]:/.test(name))
    throw refuse(name, "absolute path");
  const parts = name.split(/[/\\]+/).filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) throw refuse(name, "'..' in the path");
  return parts.join("/");
}

/**
 * Unpacks a tar stream into `directory`, refusing anything that could write outside it: absolute
 * paths, `..`, symlinks and hard links whose targets leave the folder, writes through a symlink,
 * device files and FIFOs. It unpacks into a temporary sibling folder and renames it into place only
 * when the whole archive has been read, so a refused or broken archive leaves nothing behind.
 * `directory` must not exist or be empty. Modes (without setuid/setgid) and mtimes are restored.
 *
 * @throws {RESTORE_FAILED} for a refused entry or a truncated archive; {CONFIG_INVALID} when the
 *   target is a non-empty folder; {ABORTED} when `signal` fires.
 * @example await extractTar(await restore({ sink, manifest, keys }), "/tmp/restored");
 */
export async function extractTar(
  stream: Readable,
  directory: string,
  options: ExtractTarOptions = {},
): Promise<ExtractTarResult> {
  const { signal } = options;
  const target = resolve(directory);
  const existing = await readdir(target).catch((e: NodeJS.ErrnoException) => {
    if (e.code === "ENOENT") return undefined;
    throw wrapError(e, "CONFIG_INVALID", `extractTar: cannot use ${target}`);
  });
  if (existing && existing.length > 0) {
    stream.destroy();
    throw new StowageError("CONFIG_INVALID", `extractTar: ${target} is not empty`, {
      details: { issues: [{ option: "directory", problem: "not empty" }] },
    });
  }
  await mkdir(dirname(target), { recursive: true });
  const temp = await mkdtemp(join(dirname(target), `.${basename(target)}.stowage-extract-`));
  const result: ExtractTarResult = {
    directory: target,
    files: 0,
    directories: 0,
    symlinks: 0,
    hardlinks: 0,
    bytes: 0,
  };
  const dirTimes: Array<{ path: string; mtime: Date }> = [];
  const inside = (p: string) => p === temp || p.startsWith(temp + sep);

  /** Creates the parents of `rel` and checks none of them is a symlink (no writing through links). */
  const knownDirs = new Set<string>([temp]);
  async function parentOf(rel: string, name: string): Promise<string> {
    let dir = temp;
    for (const part of rel.split("/").slice(0, -1)) {
      dir = join(dir, part);
      if (knownDirs.has(dir)) continue;
      const info = await lstat(dir).catch(() => undefined);
      if (info?.isSymbolicLink()) throw refuse(name, "a parent folder is a symlink");
      if (!info) await mkdir(dir, { mode: 0o700 });
      else if (!info.isDirectory()) throw refuse(name, "a parent path is not a folder");
      knownDirs.add(dir);
    }
    return dir;
  }
  async function clear(path: string): Promise<void> {
    const info = await lstat(path).catch(() => undefined);
    if (info?.isDirectory()) throw refuse(relative(temp, path), "an entry would replace a folder");
    if (info) await unlink(path);
  }

  const extract = tar.extract();
  const feeding = pipeline(stream, extract, signal ? { signal } : {});
  feeding.catch(() => undefined); // surfaced by the iteration below or awaited at the end
  try {
    for await (const entry of extract) {
      throwIfAborted(signal, "extractTar");
      const { header } = entry;
      const rel = safeRelative(header.name);
      if (rel === "") {
        entry.resume();
        continue;
      }
      const dest = join(temp, ...rel.split("/"));
      await parentOf(rel, header.name);
      const mode = (header.mode ?? 0o644) & 0o777;
      switch (header.type) {
        case "directory": {
          const info = await lstat(dest).catch(() => undefined);
          if (info && !info.isDirectory()) throw refuse(header.name, "a folder would replace a file or link");
          if (!info) await mkdir(dest, { mode: 0o700 });
          knownDirs.add(dest);
          dirTimes.push({ path: dest, mtime: header.mtime ?? new Date() });
          await chmod(dest, mode | 0o700);
          result.directories++;
          entry.resume();
          break;
        }
        case "file":
        case "contiguous-file": {
          const size = header.size ?? 0;
          if (options.maxBytes !== undefined && result.bytes + size > options.maxBytes) {
            throw refuse(header.name, `the archive exceeds maxBytes (${options.maxBytes})`);
          }
          await clear(dest);
          const handle = await open(dest, "wx", 0o600);
          await pipeline(entry, handle.createWriteStream({ highWaterMark: 1 << 20 }));
          await chmod(dest, mode);
          if (header.mtime) await utimes(dest, header.mtime, header.mtime);
          result.files++;
          result.bytes += size;
          break;
        }
        case "symlink": {
          const linkname = header.linkname ?? "";
          if (isAbsolute(linkname)) throw refuse(header.name, "symlink to an absolute path");
          if (!inside(resolve(dirname(dest), linkname)))
            throw refuse(header.name, "symlink points outside the target");
          await clear(dest);
          await symlink(linkname, dest);
          result.symlinks++;
          entry.resume();
          break;
        }
        case "link": {
          const from = safeRelative(header.linkname ?? "");
          const source = join(temp, ...from.split("/"));
          const info = await lstat(source).catch(() => undefined);
          if (!from || !info?.isFile())
            throw refuse(header.name, "hard link to something not extracted before it");
          await clear(dest);
          await link(source, dest);
          result.hardlinks++;
          entry.resume();
          break;
        }
        default:
          throw refuse(header.name, `entry type ${header.type} (devices and FIFOs are not restored)`);
      }
    }
    await feeding;
    // Folder mtimes last, deepest first, since writing into a folder changes its mtime.
    for (const { path, mtime } of dirTimes.sort((a, b) => b.path.length - a.path.length)) {
      await utimes(path, mtime, mtime);
    }
    if (existing) await rmdir(target);
    await rename(temp, target);
    return result;
  } catch (error) {
    stream.destroy();
    extract.destroy();
    await rm(temp, { recursive: true, force: true });
    throw wrapError(error, "RESTORE_FAILED", "extractTar: the archive could not be unpacked", {}, signal);
  }
}
