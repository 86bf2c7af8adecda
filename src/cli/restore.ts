/** `stowage restore`: a job's latest backup (--at <time>) to --out <file|-> or --extract <dir>. */
import { randomBytes } from "node:crypto";
import { createWriteStream, existsSync } from "node:fs";
import { link, open, rename, stat, unlink } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { Readable, type Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { listManifests } from "../core/catalog.js";
import { directoryRestoreTarget } from "../core/directory-target.js";
import { isStowageError, StowageError, wrapError } from "../core/errors.js";
import { restore } from "../core/restore.js";
import type { BackupProgress } from "../core/types.js";
import { type AuditTrail, errorCode, manifestFacts } from "../jobs/audit.js";
import type { StowageConfig } from "../jobs/config.js";
import { selectBackup } from "../policies/select.js";
import { formatBytes } from "../policies/status.js";
import { selectJobs, sinkOf } from "./config.js";
import { type Flags, progressFor } from "./flags.js";
import { EXIT, type Io, outExists, print, UsageError } from "./output.js";
import { byteMeter } from "./progress.js";

async function recordAudit(audit: AuditTrail | undefined, entry: Parameters<AuditTrail["record"]>[0]) {
  await audit?.record(entry);
}

/**
 * Restores one job's backup to a file (whole or not at all), stdout or a folder.
 * @throws {CONFIG_INVALID} --out exists without --force, or is a folder
 * @throws {NOT_FOUND} the job has no backup (at or before --at)
 */
export async function restoreCommand(
  flags: Flags,
  io: Io,
  load: () => Promise<StowageConfig>,
): Promise<number> {
  const config = await load();
  const [name, ...more] = flags.job ?? [];
  if (!name || more.length > 0) throw new UsageError("restore needs exactly one --job");
  if (!flags.out === !flags.extract)
    throw new UsageError("restore needs one of --out <file|-> or --extract <dir>");
  const [job] = selectJobs(config, [name]);
  const sink = sinkOf(job!, flags.from);
  const outPath = flags.out && flags.out !== "-" ? resolve(io.cwd, flags.out) : undefined;
  if (outPath) await checkOut(outPath, flags.force === true);
  const { manifests } = await listManifests(sink, { job: name, signal: io.signal });
  const manifest = selectBackup(manifests, { job: name, ...(flags.at ? { at: flags.at } : {}) });
  if (!manifest) {
    throw new StowageError(
      "NOT_FOUND",
      `job ${name} has no backup${flags.at ? ` at or before ${flags.at}` : ""}`,
      {
        details: { job: name },
      },
    );
  }
  if (flags.out === "-" && io.stdout.isTTY)
    throw new UsageError("refusing to write a backup to a terminal; use --out <file>");
  // --extract is a directory target that keeps what it restores, and takes only a tar.
  const target = flags.extract
    ? directoryRestoreTarget({ directory: resolve(io.cwd, flags.extract), tarOnly: true })
    : undefined;
  const refused = target?.accepts(manifest);
  if (typeof refused === "string") {
    throw new StowageError("CONFIG_INVALID", `restore --extract: ${refused}; use --out <file>`, {
      details: { issues: [{ path: "extract", problem: refused }] },
    });
  }
  const bar = progressFor(flags, io, config);
  const label = `restore ${name}`;
  const t0 = Date.now();
  let bytes = 0;
  const count = (n: number) => {
    bytes = n;
  };
  const meter = byteMeter(count);
  // Progress follows the stored bytes read from the sink: restore releases plain bytes only once
  // they are checked (a whole block of an unencrypted artifact at a time), so counting them would
  // stand still until the end.
  const onProgress = (p: BackupProgress) =>
    bar.update(label, { bytes: p.bytesRead, elapsedMs: Date.now() - t0, total: manifest.artifact.bytes });
  try {
    const plain = await restore({ sink, manifest, keys: job!.keys, signal: io.signal, onProgress });
    let summary: string;
    if (flags.extract) {
      // A generator, not a pipe: a consumer that stops early ends it, and that destroys `plain`.
      const metered = Readable.from(
        (async function* () {
          let n = 0;
          for await (const chunk of plain) {
            n += (chunk as Buffer).length;
            count(n);
            yield chunk as Buffer;
          }
        })(),
      );
      const result = await target!.restore(metered, { manifest, signal: io.signal });
      summary = `${result.details.files} files into ${result.facts?.directory}`;
    } else if (flags.out === "-") {
      await pipeline(plain, meter, io.stdout, { signal: io.signal, end: false });
      summary = "to stdout";
    } else {
      const path = outPath!;
      await writeAtomically(path, flags.force === true, io.signal, (out) =>
        pipeline(plain, meter, out, { signal: io.signal }),
      );
      summary = `to ${path}`;
    }
    bar.done();
    await recordAudit(config.audit, {
      action: "restore",
      ...manifestFacts(manifest),
      result: "ok",
      durationMs: Date.now() - t0,
    });
    await config.audit?.flush();
    const info = {
      ok: true,
      job: name,
      id: manifest.id,
      key: manifest.artifact.key,
      bytes,
      startedAt: manifest.startedAt,
    };
    if (flags.out !== "-") {
      print(
        io,
        flags.json
          ? JSON.stringify(info, null, 2)
          : `restored ${manifest.artifact.key} (${formatBytes(bytes)}) ${summary}`,
      );
    }
    return EXIT.ok;
  } catch (error) {
    bar.done();
    await recordAudit(config.audit, {
      action: "restore",
      ...manifestFacts(manifest),
      result: "failed",
      error: errorCode(error),
      durationMs: Date.now() - t0,
    }).catch(() => undefined);
    await config.audit?.flush().catch(() => undefined);
    throw error;
  }
}

/** Refuses an --out that exists (unless `force`) or is a folder, before anything is restored. */
async function checkOut(path: string, force: boolean): Promise<void> {
  const info = await stat(path).catch(() => undefined);
  if (info?.isDirectory()) throw outExists(path, "is a folder; give a file name (or --extract <dir>)");
  if (info && !force) throw outExists(path, "exists; give --force to replace it");
}

/**
 * Writes a file whole or not at all: `write` fills a temporary file (0600) beside `path`, which is
 * synced and then renamed over `path` (`force`) or hard-linked to it (which refuses an existing
 * file, so a file that appeared meanwhile is not replaced). On any failure the temporary file is
 * removed and `path` is as it was.
 * @throws {CONFIG_INVALID} `path` exists and `force` is not set.
 * @throws {RESTORE_FAILED} the file could not be written; the error of `write` as it is.
 */
async function writeAtomically(
  path: string,
  force: boolean,
  signal: AbortSignal,
  write: (out: Writable) => Promise<void>,
): Promise<void> {
  const temp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString("hex")}.stowage-tmp`);
  const fail = (error: unknown) =>
    isStowageError(error)
      ? error
      : wrapError(error, "RESTORE_FAILED", `restore: writing ${path}`, { path }, signal);
  let placed = false;
  try {
    try {
      await write(createWriteStream(temp, { flags: "wx", mode: 0o600 }));
      const handle = await open(temp, "r+");
      await handle.sync().finally(() => handle.close());
      if (force) await rename(temp, path);
      else {
        await link(temp, path).catch(async (error: NodeJS.ErrnoException) => {
          // A filesystem without hard links: check, then rename (a race remains, a narrow one).
          if (error.code === "EEXIST" || existsSync(path)) throw error;
          await rename(temp, path);
        });
      }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "EEXIST") {
        throw outExists(path, "exists; give --force to replace it");
      }
      throw fail(error);
    }
    placed = true;
  } finally {
    // After a link the temporary name goes; after a failure, the temporary file does.
    if (!placed || !force) await unlink(temp).catch(() => undefined);
  }
}
