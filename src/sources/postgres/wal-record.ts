/**
 * The record beside each archived WAL file: a manifest-shaped JSON (so that `restore()` undoes its
 * transforms and checks its digests as for any backup), at a key fixed by the file's name, so that
 * a push or a fetch finds it with one read and never lists the archive.
 */
import { Readable } from "node:stream";
import { isStowageError, StowageError, wrapError } from "../../core/errors.js";
import { type Manifest, parseManifest } from "../../core/manifest.js";
import { readAll } from "../../core/streams.js";
import type { Sink } from "../../core/types.js";
import { type WalFileName, walRecordKey, walTimelinePrefix } from "../../core/wal-names.js";

/** The manifest `source.kind` of an archived WAL file. */
export const WAL_SOURCE_KIND = "postgres-wal";

const MAX_RECORD_BYTES = 1 << 20;

/**
 * The record of an archived WAL file, or undefined when there is none (never archived, or a push
 * that did not finish).
 * @throws {SINK_READ_FAILED} the sink failed; {MANIFEST_INVALID} a record that does not parse or
 *   names an artifact that is not this file's.
 */
export async function readWalRecord(
  sink: Sink,
  job: string,
  file: WalFileName,
  signal?: AbortSignal,
): Promise<Manifest | undefined> {
  const key = walRecordKey(job, file);
  let text: string;
  try {
    text = (await readAll(await sink.read(key, signal ? { signal } : {}), MAX_RECORD_BYTES)).toString("utf8");
  } catch (error) {
    if (isStowageError(error, "NOT_FOUND")) return undefined;
    throw wrapError(error, "SINK_READ_FAILED", `reading WAL record ${key}`, { key }, signal);
  }
  const record = parseManifest(text, `WAL record ${key}`);
  const own = `${walTimelinePrefix(job, file.timeline)}${file.name}`;
  const artifact = record.artifact.key;
  if (
    record.job !== job ||
    record.source.kind !== WAL_SOURCE_KIND ||
    record.source.name !== file.name ||
    !(artifact === own || artifact.startsWith(`${own}.`))
  ) {
    throw new StowageError(
      "MANIFEST_INVALID",
      `WAL record ${key} does not describe ${file.name} of job ${job}`,
      {
        details: { key, issues: [{ path: "artifact.key", problem: "not this WAL file's" }] },
      },
    );
  }
  return record;
}

/** Writes a record (after its artifact: its presence means a whole file). */
export async function writeWalRecord(
  sink: Sink,
  key: string,
  body: Buffer,
  signal?: AbortSignal,
): Promise<void> {
  try {
    await sink.write(key, Readable.from([body]), {
      contentType: "application/json",
      ...(signal ? { signal } : {}),
    });
  } catch (error) {
    throw wrapError(error, "SINK_WRITE_FAILED", `writing WAL record ${key}`, { key }, signal);
  }
}
