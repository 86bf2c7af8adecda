import { createWriteStream } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { z } from "zod";
import { extensionOf, formatOf } from "./content-types.js";
import { extractTar } from "./extract-tar.js";
import { lazySchema, parseOptions } from "./options.js";
import type { RestoreTarget } from "./restore-target.js";
import type { Agrees, Assert } from "./type-checks.js";

/** The zod schema of {@link DirectoryRestoreTargetOptions}, which parses the options at the boundary. */
export const directoryRestoreTargetOptionsSchema = lazySchema((z) =>
  z
    .object({
      /**
       * The folder to restore into; it stays. Without it, a scratch folder is made under `parent`
       * and removed by the caller's cleanup (a restore drill).
       */
      directory: z.string().min(1).optional(),
      /** Where a scratch folder is made. @default os.tmpdir() */
      parent: z.string().min(1).optional(),
      /** Refuse a backup that is not a tar instead of writing it as one file. @default false */
      tarOnly: z.boolean().default(false),
    })
    .strict(),
);
/** What {@link directoryRestoreTarget} takes: the folder to restore into (or a scratch one), tar only. */
export interface DirectoryRestoreTargetOptions {
  /**
   * The folder to restore into; it stays. Without it, a scratch folder is made under `parent`
   * and removed by the caller's cleanup (a restore drill).
   * @default a scratch folder under `parent`
   */
  directory?: string;
  /** Where a scratch folder is made. @default os.tmpdir() */
  parent?: string;
  /** Refuse a backup that is not a tar instead of writing it as one file. @default false */
  tarOnly?: boolean;
}
type _DirectoryRestoreTargetOptionsAgrees = Assert<
  Agrees<DirectoryRestoreTargetOptions, z.input<typeof directoryRestoreTargetOptionsSchema>>
>;

/** Whether a backup is a tar, by the one content-type table. */
const isTar = (contentType: string) => formatOf(contentType) === "tar";

/** Counts bytes through a generator: a consumer that stops early ends it, and that destroys the input. */
async function* counted(source: AsyncIterable<Buffer>, count: { bytes: number }) {
  for await (const chunk of source) {
    count.bytes += chunk.length;
    yield chunk;
  }
}

/**
 * A folder as a {@link RestoreTarget}: a tar is extracted into it (by {@link extractTar}, which
 * refuses unsafe entries), anything else is written as one file `restored<ext>` (the extension by
 * the content type). Facts for a check: `directory` (the extracted tree, or the folder holding the
 * file) and `file`.
 *
 * @throws {CONFIG_INVALID} for bad options.
 * @example
 * const target = directoryRestoreTarget({ directory: "/srv/restored", tarOnly: true });
 */
export function directoryRestoreTarget(options: DirectoryRestoreTargetOptions = {}): RestoreTarget {
  const opts = parseOptions(directoryRestoreTargetOptionsSchema, options, "directoryRestoreTarget");
  return {
    kind: "directory",
    accepts: (manifest) =>
      !opts.tarOnly || isTar(manifest.content.contentType)
        ? true
        : `not a tar backup (${manifest.content.contentType})`,
    async restore(plain, { manifest, signal, onCleanup }) {
      let folder = opts.directory;
      if (folder === undefined) {
        folder = await mkdtemp(join(opts.parent ?? tmpdir(), "stowage-drill-"));
        const scratch = folder;
        onCleanup?.(() => rm(scratch, { recursive: true, force: true }));
      }
      if (isTar(manifest.content.contentType)) {
        // A scratch folder holds the tree one level down, so the scratch itself stays ours to remove.
        const directory = opts.directory ?? join(folder, "restored");
        const result = await extractTar(plain, directory, { signal });
        return {
          bytes: manifest.content.bytes, // restore() errors the stream unless every byte matched
          details: { files: result.files, directories: result.directories, fileBytes: result.bytes },
          facts: { directory: result.directory },
        };
      }
      const name = `restored${extensionOf(manifest.content.contentType) ?? ".bin"}`;
      const file = join(folder, name);
      const count = { bytes: 0 };
      await pipeline(
        plain,
        (source: AsyncIterable<Buffer>) => counted(source, count),
        createWriteStream(file, { mode: 0o600 }),
        { signal },
      );
      return {
        bytes: count.bytes,
        details: { file: name, bytes: count.bytes },
        facts: { directory: folder, file },
      };
    },
  };
}

/**
 * A {@link RestoreTarget} that reads the plain bytes (which `restore()` checks against the
 * manifest as they pass) and throws them away: a drill that proves a backup restores without
 * putting it anywhere.
 */
export function streamRestoreTarget(): RestoreTarget {
  return {
    kind: "stream",
    accepts: () => true,
    async restore(plain: Readable, { signal }) {
      const count = { bytes: 0 };
      await pipeline(
        plain,
        async (source: AsyncIterable<Buffer>) => {
          for await (const _ of counted(source, count));
        },
        { signal },
      );
      return { bytes: count.bytes, details: { bytes: count.bytes } };
    },
  };
}
