/**
 * WAL archiving without a server: names and LSNs, the push/fetch contract on a memory sink (a push
 * never lists), the recovery planner, WAL retention, gaps and the archive's status.
 */
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatLsn, groupWalListing, parseLsn, parseWalName, segmentName } from "../../src/core/wal-names.js";
import {
  aes256gcm,
  applyRetention,
  findWalGaps,
  formatPrometheus,
  formatStatusText,
  gzip,
  isStowageError,
  type Manifest,
  memorySink,
  planRetention,
  planWalRetention,
  type Sink,
  summarize,
  validateBackups,
  walArchiveStatus,
} from "../../src/index.js";
import { planRecovery } from "../../src/sources/postgres/wal-plan.js";
import { applyWalRetention, archiveWal, fetchWal, listArchivedWal } from "../../src/sources/postgres.js";
import { codeOf, rejection } from "../support/expect-helpers.js";

const key = randomBytes(32);
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "stowage-wal-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A sink whose `list` fails: what must never be called on the push and fetch paths. */
function noListing(sink: Sink): Sink {
  return {
    ...sink,
    write: sink.write.bind(sink),
    read: sink.read.bind(sink),
    stat: sink.stat.bind(sink),
    delete: sink.delete.bind(sink),
    list: () => {
      throw new Error("listed the archive");
    },
  };
}

describe("WAL names and LSNs", () => {
  it("parses segments, history, backup and partial files, and nothing else", () => {
    expect(parseWalName("0000000200000001000000FF")).toMatchObject({
      kind: "segment",
      timeline: 2,
      segment: 256 + 255,
    });
    expect(parseWalName("00000003.history")).toMatchObject({ kind: "history", timeline: 3 });
    expect(parseWalName("000000010000000000000002.00000028.backup")).toMatchObject({
      kind: "backup",
      segment: 2,
    });
    expect(parseWalName("000000010000000000000004.partial")).toMatchObject({ kind: "partial", segment: 4 });
    for (const bad of [
      "../etc/passwd",
      "0000000100000000000000",
      "000000010000000000000002x",
      "RECOVERYXLOG",
    ]) {
      expect(parseWalName(bad)).toBeUndefined();
    }
    expect(segmentName(2, 256 + 255)).toBe("0000000200000001000000FF");
    expect(parseLsn("16/B374D848")).toBe(0x16b374d848n);
    expect(formatLsn(0x16b374d848n)).toBe("16/B374D848");
    expect(() => parseLsn("nope")).toThrow(expect.objectContaining({ code: "CONFIG_INVALID" }));
  });
});

describe("archiveWal / fetchWal", () => {
  it("stores a segment gzip + AES, fetches it back byte for byte, and never lists", async () => {
    const memory = memorySink();
    const sink = noListing(memory);
    const segment = randomBytes(256 * 1024);
    const path = join(dir, "000000010000000000000007");
    await writeFile(path, segment);
    const transforms = [gzip(), aes256gcm({ key })];
    const first = await archiveWal({ sink, job: "db", path, transforms });
    expect(first).toMatchObject({
      status: "archived",
      key: "db/wal/00000001/000000010000000000000007.gz.enc",
    });
    const again = await archiveWal({ sink, job: "db", path, transforms });
    expect(again.status).toBe("already-archived");

    const dest = join(dir, "fetched");
    await fetchWal({ sink, job: "db", name: "000000010000000000000007", dest, keys: [{ key }] });
    expect((await readFile(dest)).equals(segment)).toBe(true);

    const missing = await fetchWal({
      sink,
      job: "db",
      name: "000000010000000000000008",
      dest: join(dir, "x"),
      keys: [],
    })
      .then(() => undefined)
      .catch((e: unknown) => e);
    expect(isStowageError(missing, "NOT_FOUND")).toBe(true);

    const wrong = await fetchWal({
      sink,
      job: "db",
      name: "000000010000000000000007",
      dest: join(dir, "wrong"),
      keys: [{ key: randomBytes(32) }],
    }).catch((e: unknown) => e);
    expect(isStowageError(wrong, "DECRYPT_FAILED")).toBe(true);
    await expect(readFile(join(dir, "wrong"))).rejects.toMatchObject({ code: "ENOENT" });

    // Different content under the same name: refused, and the archived file is untouched.
    const count = async () => {
      let n = 0;
      for await (const _ of memory.list("db/")) n++;
      return n;
    };
    const before = await count();
    await writeFile(path, randomBytes(1024));
    const clash = await archiveWal({ sink, job: "db", path, transforms }).catch((e: unknown) => e);
    expect(isStowageError(clash, "INTEGRITY_MISMATCH")).toBe(true);
    await fetchWal({ sink, job: "db", name: "000000010000000000000007", dest, keys: [{ key }] });
    expect((await readFile(dest)).equals(segment)).toBe(true);
    expect(await count()).toBe(before);
  });

  it("archives the finished segments after this one with `ahead`, which PostgreSQL then finds archived", async () => {
    const sink = noListing(memorySink());
    const pgWal = join(dir, "ahead", "pg_wal");
    await mkdir(join(pgWal, "archive_status"), { recursive: true });
    const segments = new Map<string, Buffer>();
    for (const n of [1, 2, 3, 4, 5]) {
      const name = segmentName(1, n);
      segments.set(name, randomBytes(64 * 1024));
      await writeFile(join(pgWal, name), segments.get(name)!);
    }
    // Ready: 2-5 of timeline 1 (5's file is missing: a push of it fails), a history file and a
    // segment of another timeline, neither of which a segment push looks ahead at.
    await rm(join(pgWal, segmentName(1, 5)));
    for (const ready of [2, 3, 4, 5]
      .map((n) => segmentName(1, n))
      .concat("00000002.history", segmentName(2, 6))) {
      await writeFile(join(pgWal, "archive_status", `${ready}.ready`), "");
    }
    await writeFile(join(pgWal, "archive_status", `${segmentName(1, 1)}.done`), "");
    const transforms = [gzip(), aes256gcm({ key })];
    const push = (n: number, ahead: number) =>
      archiveWal({ sink, job: "db", path: join(pgWal, segmentName(1, n)), transforms, ahead });

    const first = await push(1, 2);
    expect(first).toMatchObject({ status: "archived", ahead: [segmentName(1, 2), segmentName(1, 3)] });
    expect((await push(2, 0)).status).toBe("already-archived");
    expect((await push(3, 0)).status).toBe("already-archived");
    const notArchived = async (n: number) => {
      const fetched = fetchWal({
        sink,
        job: "db",
        name: segmentName(1, n),
        dest: join(dir, "n"),
        keys: [{ key }],
      });
      expect(await codeOf(fetched)).toBe("NOT_FOUND");
    };
    await notArchived(4); // further than asked for: not touched

    // A push ahead that fails (5 is gone) does not fail the push asked for, and leaves nothing.
    const fourth = await push(4, 16);
    expect(fourth).toMatchObject({ status: "archived", ahead: [] });
    for (const n of [2, 3, 4]) {
      const dest = join(dir, `fetched-${n}`);
      await fetchWal({ sink, job: "db", name: segmentName(1, n), dest, keys: [{ key }] });
      expect((await readFile(dest)).equals(segments.get(segmentName(1, n))!)).toBe(true);
    }
    await notArchived(5);

    const tooMany = await rejection(push(1, 17));
    expect(tooMany.code).toBe("CONFIG_INVALID");
    expect((tooMany.details.issues as Array<{ path: string }>)[0]!.path).toBe("ahead");
  });

  it("refuses a path that is not a WAL file's name, naming the option", async () => {
    const path = join(dir, "postgresql.conf");
    await writeFile(path, "x");
    const error = await archiveWal({ sink: memorySink(), job: "db", path }).catch((e: unknown) => e);
    expect(isStowageError(error, "CONFIG_INVALID")).toBe(true);
    expect((error as { details: { issues: Array<{ path: string }> } }).details.issues[0]!.path).toBe("path");
  });
});

const at = (iso: string) => new Date(iso);
function baseBackup(id: string, finishedAt: string, start: number, stop: number, timeline = 1): Manifest {
  return {
    version: 1,
    id,
    job: "db",
    startedAt: finishedAt,
    finishedAt,
    source: {
      kind: "postgres-basebackup",
      name: "cluster",
      details: {
        startLsn: formatLsn(BigInt(start) * 0x1000000n + 0x28n),
        stopLsn: formatLsn(BigInt(stop) * 0x1000000n + 0x100n),
        timeline,
        startSegment: segmentName(timeline, start),
        stopSegment: segmentName(timeline, stop),
        walSegmentSize: 16 * 1024 * 1024,
      },
    },
    artifact: {
      sink: "memory",
      key: `db/${id}.tar`,
      location: "memory://x",
      bytes: 1,
      sha256: "0".repeat(64),
    },
    content: { bytes: 1, sha256: "0".repeat(64), contentType: "application/x-tar" },
    transforms: [],
    labels: {},
    generator: { name: "stowage", version: "0" },
  };
}
const wal = (names: string[], archivedAt = "2026-12-02T12:00:00Z") =>
  groupWalListing(
    "db",
    names.flatMap((n) => [
      { key: `db/wal/${n.slice(0, 8)}/${n}.gz`, lastModified: at(archivedAt) },
      { key: `db/wal/${n.slice(0, 8)}/${n}.wal.json`, lastModified: at(archivedAt) },
    ]),
  ).files;

describe("planRecovery", () => {
  const bases = [
    baseBackup("20261202T020000000Z-00000001", "2026-12-02T02:00:00Z", 2, 2),
    baseBackup("20261202T080000000Z-00000002", "2026-12-02T08:00:00Z", 5, 5),
  ];
  const archive = wal(
    [2, 3, 4, 5, 6, 7].map((n) => segmentName(1, n)),
    "2026-12-02T12:00:00Z",
  );

  it("picks the newest base backup before the target and checks the chain", () => {
    expect(planRecovery("db", bases, archive, { time: "2026-12-02T07:00:00Z" }).backup.id).toBe(bases[0]!.id);
    expect(planRecovery("db", bases, archive, { time: "2026-12-02T09:00:00Z" }).backup.id).toBe(bases[1]!.id);
    expect(planRecovery("db", bases, archive, { lsn: "0/4000000" }).backup.id).toBe(bases[0]!.id);
    expect(planRecovery("db", bases, archive, "latest")).toMatchObject({
      firstSegment: segmentName(1, 5),
      lastSegment: segmentName(1, 7),
    });
  });

  it("refuses targets outside the archive and names a missing segment", () => {
    const reason = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return (e as { code: string; details: { reason: string; segment?: string } }).details;
      }
      return undefined;
    };
    expect(reason(() => planRecovery("db", bases, archive, { time: "2026-12-01T00:00:00Z" }))?.reason).toBe(
      "before-oldest-backup",
    );
    expect(reason(() => planRecovery("db", bases, archive, { time: "2026-12-02T13:00:00Z" }))?.reason).toBe(
      "after-newest-wal",
    );
    expect(reason(() => planRecovery("db", bases, archive, { lsn: "0/9000000" }))?.reason).toBe(
      "after-newest-wal",
    );
    const holed = archive.filter((f) => f.name !== segmentName(1, 3));
    expect(reason(() => planRecovery("db", bases, holed, { time: "2026-12-02T07:00:00Z" }))).toMatchObject({
      reason: "missing-segment",
      segment: segmentName(1, 3),
    });
    // The newer backup does not need segment 3.
    expect(planRecovery("db", bases, holed, "latest").backup.id).toBe(bases[1]!.id);
    // A later timeline covers the segments after its branch point.
    const branched = [...holed.filter((f) => f.segment! < 3), ...wal([3, 4].map((n) => segmentName(2, n)))];
    expect(planRecovery("db", bases.slice(0, 1), branched, "latest").lastSegment).toBe(segmentName(2, 4));
  });
});

describe("WAL retention, gaps and status", () => {
  const files = wal([
    ...[1, 2, 3, 4, 5, 6].map((n) => segmentName(1, n)),
    "000000010000000000000003.00000028.backup",
    "00000002.history",
    segmentName(2, 6),
    segmentName(2, 7),
  ]);

  it("keeps every segment from the oldest retained base backup's start, and every history file", () => {
    const plan = planWalRetention(
      [baseBackup("20261202T080000000Z-00000002", "2026-12-02T08:00:00Z", 3, 3)],
      files,
    );
    expect(plan.keepFrom).toBe(segmentName(1, 3));
    expect(plan.drop.map((d) => d.file.name)).toEqual([segmentName(1, 1), segmentName(1, 2)]);
    expect(plan.keep.map((d) => d.file.name)).toContain("00000002.history");
    expect(plan.keep.map((d) => d.file.name)).toContain("000000010000000000000003.00000028.backup");
    // No retained base backup: nothing is dropped.
    expect(planWalRetention([], files).drop).toEqual([]);
  });

  it("finds the holes of each timeline and reports RPO and lag", () => {
    const holed = files.filter((f) => f.name !== segmentName(1, 4) && f.name !== segmentName(1, 5));
    expect(findWalGaps(holed)).toEqual([
      {
        timeline: "00000001",
        after: segmentName(1, 3),
        before: segmentName(1, 6),
        firstMissing: segmentName(1, 4),
        missing: 2,
      },
    ]);
    expect(findWalGaps(files)).toEqual([]);
    // Across an xlogid boundary (…000000FF → …0100000000) there is no hole.
    expect(findWalGaps(wal(["0000000100000000000000FF", "000000010000000100000000"]))).toEqual([]);
    const status = walArchiveStatus(files, {
      now: at("2026-12-02T12:00:30Z"),
      currentSegment: segmentName(2, 9),
    });
    expect(status).toMatchObject({
      newestSegment: segmentName(2, 7),
      rpoMs: 30_000,
      lagSegments: 2,
      gaps: [],
    });
  });

  it("applyWalRetention deletes the segments before the oldest kept base backup, record and artifact", async () => {
    const sink = memorySink();
    for (const n of [1, 2, 3]) {
      const path = join(dir, segmentName(1, n));
      await writeFile(path, randomBytes(1024));
      await archiveWal({ sink, job: "db", path, transforms: [gzip()] });
    }
    const kept = [baseBackup("20261202T080000000Z-00000002", "2026-12-02T08:00:00Z", 2, 2)];
    const dry = await applyWalRetention({ sink, job: "db", kept, dryRun: true });
    expect(dry.drop.map((d) => d.file.name)).toEqual([segmentName(1, 1)]);
    expect((await listArchivedWal(sink, "db")).length).toBe(3);
    await applyWalRetention({ sink, job: "db", kept });
    expect((await listArchivedWal(sink, "db")).map((f) => f.name)).toEqual([
      segmentName(1, 2),
      segmentName(1, 3),
    ]);
    expect(await sink.stat(`db/wal/00000001/${segmentName(1, 1)}.gz`)).toBeUndefined();
  });
});

describe("WAL in retention, validation and status", () => {
  it("applyRetention removes the WAL only dropped base backups needed, and honours dryRun", async () => {
    const sink = memorySink();
    for (const n of [1, 2, 3, 4]) {
      const path = join(dir, segmentName(1, n));
      await writeFile(path, randomBytes(1024));
      await archiveWal({ sink, job: "db", path, transforms: [gzip()] });
    }
    await writeFile(join(dir, "00000002.history"), "1\t0/3000000\tno recovery target specified\n");
    await archiveWal({ sink, job: "db", path: join(dir, "00000002.history"), transforms: [gzip()] });
    const older = baseBackup("20261201T080000000Z-00000001", "2026-12-01T08:00:00Z", 2, 2);
    const newer = baseBackup("20261202T080000000Z-00000002", "2026-12-02T08:00:00Z", 3, 3);
    const plan = planRetention([older, newer], { keepLast: 1 }, { now: at("2026-12-02T12:00:00Z") });
    const dry = await applyRetention({ sink, plan, dryRun: true, orphans: false });
    expect(dry.wal.map((w) => w.name)).toEqual([segmentName(1, 1), segmentName(1, 2)]);
    expect(dry.wal[0]).toMatchObject({ job: "db", reason: `before ${segmentName(1, 3)}` });
    expect((await listArchivedWal(sink, "db")).length).toBe(5);

    const done = await applyRetention({ sink, plan, orphans: false });
    expect(done.wal.map((w) => w.key)).toEqual([
      `db/wal/00000001/${segmentName(1, 1)}.gz`,
      `db/wal/00000001/${segmentName(1, 2)}.gz`,
    ]);
    expect(done.walFailed).toEqual([]);
    expect((await listArchivedWal(sink, "db")).map((f) => f.name)).toEqual([
      segmentName(1, 3),
      segmentName(1, 4),
      "00000002.history",
    ]);
    expect(await sink.stat(`db/wal/00000001/${segmentName(1, 2)}.gz`)).toBeUndefined();
    // A plan that keeps no base backup removes no WAL.
    const none = planRetention([], { keepLast: 1 }, { now: at("2026-12-02T12:00:00Z") });
    expect((await applyRetention({ sink, plan: none, orphans: false })).wal).toEqual([]);
  });

  it("validateBackups reports each gap as wal-gap naming the first missing segment", () => {
    const files = wal([1, 2, 5, 6].map((n) => segmentName(1, n)));
    const manifests = [baseBackup("20261202T080000000Z-00000002", "2026-12-02T08:00:00Z", 1, 1)];
    const report = validateBackups(
      manifests,
      {},
      { now: at("2026-12-02T12:00:00Z"), wal: { db: { files } } },
    );
    const gaps = report.jobs[0]!.wal!.gaps;
    expect(gaps).toHaveLength(1);
    expect(gaps[0]).toMatchObject({
      rule: "wal-gap",
      severity: "error",
      firstMissing: segmentName(1, 3),
      missing: 2,
    });
    expect(validateBackups(manifests, {}, { now: at("2026-12-02T12:00:00Z") }).jobs[0]!.wal).toBeUndefined();
    const whole = validateBackups(
      manifests,
      {},
      { now: at("2026-12-02T12:00:00Z"), wal: { db: { files: wal([segmentName(1, 1)]) } } },
    );
    expect(whole.jobs[0]!.wal).toEqual({ files: 1, gaps: [] });
  });

  it("summarize reports the archive's RPO, the archiver's lag and failures, and fails on a gap", () => {
    const manifests = [baseBackup("20261202T080000000Z-00000002", "2026-12-02T11:00:00Z", 1, 1)];
    const now = at("2026-12-02T12:00:30Z");
    const files = wal([1, 2, 3].map((n) => segmentName(1, n)));
    const fresh = summarize(manifests, {
      now,
      wal: {
        db: {
          files,
          archiver: {
            currentSegment: segmentName(1, 4),
            failedCount: 0,
            lastArchivedAt: "2026-12-02T12:00:00Z",
            lastFailedAt: null,
          },
        },
      },
    });
    expect(fresh.jobs[0]).toMatchObject({
      status: "ok",
      wal: { newestSegment: segmentName(1, 3), rpoSeconds: 30, lagSegments: 1, failing: false, gaps: [] },
    });
    const text = formatStatusText(fresh);
    expect(text).toContain(
      `db: newest ${segmentName(1, 3)} archived 30s ago, lag 1 segment, archiver ok, no gaps`,
    );
    const metrics = formatPrometheus(fresh);
    expect(metrics).toContain('stowage_wal_archive_age_seconds{backup_job="db"} 30');
    expect(metrics).toContain('stowage_wal_archiver_lag_segments{backup_job="db"} 1');
    expect(metrics).toContain('stowage_wal_archiver_failing{backup_job="db"} 0');
    expect(metrics).toContain('stowage_wal_gaps{backup_job="db"} 0');

    const behind = summarize(manifests, {
      now,
      wal: {
        db: {
          files,
          archiver: {
            currentSegment: segmentName(1, 7),
            failedCount: 3,
            lastArchivedAt: "2026-12-02T12:00:00Z",
            lastFailedAt: "2026-12-02T12:00:20Z",
            lastFailedWal: segmentName(1, 4),
          },
        },
      },
    });
    expect(behind.jobs[0]!.status).toBe("warning");
    expect(behind.jobs[0]!.wal).toMatchObject({ lagSegments: 4, failing: true, failedCount: 3 });
    expect(behind.jobs[0]!.problems).toHaveLength(2);

    const holed = summarize(manifests, {
      now,
      wal: { db: { files: files.filter((f) => f.name !== segmentName(1, 2)) } },
    });
    expect(holed.jobs[0]!.status).toBe("failing");
    expect(holed.jobs[0]!.wal).toMatchObject({ lagSegments: null, failing: null });
    expect(holed.jobs[0]!.problems.join(" ")).toContain(segmentName(1, 2));
    // A server that could not be asked: the lag is unknown, and the job says so.
    const unasked = summarize(manifests, { now, wal: { db: { files, archiverError: "SOURCE_FAILED" } } });
    expect(unasked.jobs[0]).toMatchObject({ status: "warning", wal: { lagSegments: null } });
    expect(unasked.jobs[0]!.problems).toHaveLength(1);
    // Without a server to ask, the lag is not reported rather than guessed.
    expect(formatPrometheus(holed)).not.toContain("stowage_wal_archiver_lag_segments");
  });
});
