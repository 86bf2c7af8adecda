/** `stowage verify`: re-read the latest backup (--all: every backup) of each job in each sink. */
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { listManifests } from "../core/catalog.js";
import type { StowageError } from "../core/errors.js";
import type { Manifest } from "../core/manifest.js";
import { type VerifyOptions, verify } from "../core/restore.js";
import type { Sink } from "../core/types.js";
import { verifyChain } from "../core/verify-chain.js";
import { type AuditTrail, errorCode, manifestFacts } from "../jobs/audit.js";
import type { StowageConfig } from "../jobs/config.js";
import { selectBackup } from "../policies/select.js";
import { selectJobs, sinkOf } from "./config.js";
import { type Flags, progressFor } from "./flags.js";
import { EXIT, type Io, print } from "./output.js";
import { byteMeter, type Progress } from "./progress.js";

interface VerifyLine {
  job: string;
  sink: string;
  key?: string;
  id?: string;
  status: "ok" | "failed" | "skipped" | "missing";
  problems: string[];
  plainChecked?: boolean;
}

async function recordAudit(audit: AuditTrail | undefined, entry: Parameters<AuditTrail["record"]>[0]) {
  await audit?.record(entry);
}

/**
 * `sink` as it is, except that reading the manifest's artifact counts the stored bytes into
 * `bar` (verify has no progress events of its own; the artifact's size is in the manifest).
 */
function metered(sink: Sink, manifest: Manifest, label: string, bar: Progress): Sink {
  const t0 = Date.now();
  return new Proxy(sink, {
    get(target, property) {
      if (property === "read") {
        return async (key: string, options?: Parameters<Sink["read"]>[1]): Promise<Readable> => {
          const stream = await target.read(key, options);
          if (key !== manifest.artifact.key) return stream;
          const meter = byteMeter((bytes) =>
            bar.update(label, { bytes, elapsedMs: Date.now() - t0, total: manifest.artifact.bytes }),
          );
          // pipeline hands an error of the sink's stream on to the reader, and a reader that stops
          // early destroys the sink's stream; its own rejection is the reader's to see.
          pipeline(stream, meter).catch(() => undefined);
          return meter;
        };
      }
      const value = Reflect.get(target, property, target) as unknown;
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

/** Verifies the latest (or every) backup in each sink; exit 1 when one fails or is missing. */
export async function verifyCommand(
  flags: Flags,
  io: Io,
  load: () => Promise<StowageConfig>,
): Promise<number> {
  const config = await load();
  const bar = progressFor(flags, io, config);
  try {
    return await verifyAll(config, flags, io, bar);
  } finally {
    bar.done();
  }
}

async function verifyAll(config: StowageConfig, flags: Flags, io: Io, bar: Progress): Promise<number> {
  const jobs = selectJobs(config, flags.job);
  const lines: VerifyLine[] = [];
  for (const job of jobs) {
    const targets: Array<{ name: string; sink: Sink }> = flags.from
      ? [{ name: flags.from, sink: sinkOf(job, flags.from) }]
      : [
          { name: "primary", sink: job.sink },
          ...job.copies.map((c, i) => ({ name: c.name ?? job.copies[i]!.sink.kind, sink: c.sink })),
        ];
    for (const { name, sink } of targets) {
      if (sink.capabilities.readLatency === "hours") {
        lines.push({
          job: job.name,
          sink: name,
          status: "skipped",
          problems: ["archive: restore before verifying"],
        });
        continue;
      }
      let manifests: Manifest[];
      let invalid: Array<{ key: string; error: StowageError }>;
      try {
        ({ manifests, invalid } = await listManifests(sink, { job: job.name, signal: io.signal }));
      } catch (error) {
        lines.push({ job: job.name, sink: name, status: "failed", problems: [errorCode(error)] });
        continue;
      }
      for (const bad of invalid) {
        lines.push({ job: job.name, sink: name, key: bad.key, status: "failed", problems: [bad.error.code] });
      }
      const chosen = flags.all
        ? manifests
        : [selectBackup(manifests, { job: job.name })].filter((m) => m !== undefined);
      if (chosen.length === 0)
        lines.push({ job: job.name, sink: name, status: "missing", problems: ["NOT_FOUND"] });
      for (const manifest of chosen) {
        const t0 = Date.now();
        try {
          const label = `verify ${job.name}@${name}`;
          const checked = {
            sink: metered(sink, manifest, label, bar),
            manifest,
            keys: job.keys,
            signal: io.signal,
          };
          const report = await (flags.chain ? chainAsOne(checked, manifests) : verify(checked)).finally(() =>
            bar.end(label),
          );
          lines.push({
            job: job.name,
            sink: name,
            key: manifest.artifact.key,
            id: manifest.id,
            status: report.ok ? "ok" : "failed",
            problems: report.problems.map((p) => p.code),
            plainChecked: report.plain !== undefined,
          });
          await recordAudit(config.audit, {
            action: "verify",
            ...manifestFacts(manifest),
            sink: sink.kind,
            result: report.ok ? "ok" : "failed",
            ...(report.ok ? {} : { error: report.problems[0]?.code ?? "INTEGRITY_MISMATCH" }),
            durationMs: Date.now() - t0,
          });
        } catch (error) {
          lines.push({
            job: job.name,
            sink: name,
            key: manifest.artifact.key,
            status: "failed",
            problems: [errorCode(error)],
          });
          await recordAudit(config.audit, {
            action: "verify",
            ...manifestFacts(manifest),
            result: "failed",
            error: errorCode(error),
          });
        }
      }
    }
  }
  await config.audit?.flush();
  const failed = lines.filter((l) => l.status === "failed" || l.status === "missing");
  if (flags.json) print(io, JSON.stringify({ ok: failed.length === 0, results: lines }, null, 2));
  else {
    for (const l of lines) {
      const what = l.key ?? "(no backup)";
      const extra =
        l.problems.length > 0
          ? `  ${l.problems.join(", ")}`
          : l.plainChecked
            ? "  (trial restore: plain bytes checked)"
            : l.status === "ok"
              ? "  (stored bytes only: the job has no keys to decrypt a trial restore)"
              : "";
      print(io, `${l.status.toUpperCase().padEnd(7)} ${l.job}@${l.sink}  ${what}${extra}`);
    }
  }
  return failed.length === 0 ? EXIT.ok : EXIT.failed;
}

/**
 * `--chain`: the backup and every link it depends on, as one report: ok when the chain resolves
 * and every link verifies; a broken chain is `RESTORE_FAILED`, a link's problems are its own codes.
 */
async function chainAsOne(options: VerifyOptions, manifests: readonly Manifest[]) {
  const report = await verifyChain({ ...options, manifests });
  const own = report.links.at(-1);
  return {
    ok: report.ok,
    problems: [
      ...(report.broken
        ? [{ code: "RESTORE_FAILED", message: `broken chain at ${report.broken.link.key}` }]
        : []),
      ...report.links.flatMap((l) => l.problems),
    ],
    ...(own?.plain ? { plain: own.plain } : {}),
  };
}
