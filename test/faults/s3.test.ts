/**
 * Faults of the S3 sink, through the public API, against the local S3 test server (s3rver behind
 * its front, whose fault switches cut connections, stall requests and refuse calls). Each fault
 * checks the code, that the sink's listing is unchanged, that the server (ListMultipartUploads
 * read from s3rver's own upload folders) holds no open multipart upload, and that the secret
 * access key and session token appear nowhere in the error chain.
 *
 * The "abort fails" faults expect the upload to remain: they assert that the error names it
 * (`details.openUpload`, `details.leftovers`), remove it with `removeLeftovers`, and report
 * leftovers only if that cleanup did not really remove it.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe } from "vitest";
import {
  applyRetention,
  backup,
  bytesSource,
  findOrphans,
  isStowageError,
  type Leftover,
  listManifests,
  type Manifest,
  planRetention,
  readAll,
  restore,
} from "../../src/index.js";
import { type S3Sink, type S3SinkOptions, s3Sink } from "../../src/sinks/s3.js";
import { failingChunks } from "../../src/testing.js";
import type { Faults, S3TestServer } from "../support/s3-server.js";
import { startS3Server } from "../support/s3-server.js";
import { failureOf, fault, listing, listingChange } from "./harness.js";

const MiB = 1024 * 1024;
/** The sink's (and S3's) smallest part: faults at its edges stay small. */
const PART = 5 * MiB;
// s3rver checks the access key id only, so the secret and the session token are ours to choose:
// they are what must never leak.
const SECRET = "secret-access-key-that-must-not-leak-7f3a";
const TOKEN = "session-token-that-must-not-leak-91c2";
const WRONG_SECRET = "wrong-secret-that-must-not-leak-5d0e";
const secrets = [SECRET, TOKEN, WRONG_SECRET];

let server: S3TestServer;
beforeAll(async () => {
  server = await startS3Server({ local: true });
});
afterAll(async () => {
  await server?.stop();
});

const data = randomBytes(12 * MiB + 17);

/** A fresh bucket and a sink on it, with the secret credentials and a short idle timeout. */
async function place(options: Partial<S3SinkOptions> = {}, credentials?: { accessKeyId: string }) {
  const { bucket } = await server.scratch();
  const client = server.client({
    credentials: {
      accessKeyId: credentials?.accessKeyId ?? "S3RVER",
      secretAccessKey: credentials ? WRONG_SECRET : SECRET,
      sessionToken: TOKEN,
    },
  });
  const sink = s3Sink({ client, bucket, partSize: PART, queueSize: 2, idleTimeout: "1s", ...options });
  const before = await listing(s3Sink({ client: server.client(), bucket }));
  /** What is left: listing changes (seen through a sink with good credentials) and open uploads. */
  const leftovers = async () => {
    const good = s3Sink({ client: server.client(), bucket });
    return [...listingChange(before, await listing(good)), ...(await server.openUploads(bucket))];
  };
  return { bucket, sink, leftovers };
}

/** Runs `body` with the server's faults on, and always switches them off. */
async function withFaults<T>(faults: Faults, body: () => Promise<T>): Promise<T> {
  await server.local!.faults(faults);
  try {
    return await body();
  } finally {
    await server.local!.faults({});
  }
}

/**
 * For the faults where the abort itself cannot get through: checks that the error names the open
 * upload, removes it with removeLeftovers, and returns what is still left (empty only when the
 * cleanup really removed it).
 */
async function expectReportedAndRemove(
  error: unknown,
  bucket: string,
  sink: S3Sink,
  leftovers: () => Promise<string[]>,
): Promise<string[]> {
  if (!isStowageError(error)) return ["the error is not a StowageError"];
  const open = error.details.openUpload as { bucket?: string; key?: string; uploadId?: string } | undefined;
  const reported = error.details.leftovers as Leftover[] | undefined;
  const problems: string[] = [];
  if (!open || open.bucket !== bucket || !open.key || !open.uploadId) {
    problems.push(`details.openUpload is ${JSON.stringify(open)}`);
  }
  if (!reported?.length || reported[0]!.id !== open?.uploadId) {
    problems.push(`details.leftovers is ${JSON.stringify(reported)}`);
  }
  const before = await server.openUploads(bucket);
  if (open?.uploadId && !before.some((u) => u.includes(open.uploadId!))) {
    problems.push(`the server holds no upload ${open.uploadId}, yet the error says it may remain`);
  }
  if (reported?.length) await sink.removeLeftovers!(reported);
  return [...problems, ...(await leftovers())];
}

const backupInto = (sink: S3Sink, source = bytesSource({ data }), signal?: AbortSignal) =>
  backup({ job: "f", source, sink, ...(signal ? { signal } : {}) });

describe("s3 sink", () => {
  for (const at of [1, PART - 1, PART, PART + 1, 11 * MiB]) {
    fault("s3", `the connection is cut at upload byte ${at} and every later PUT too`, async () => {
      const { sink, leftovers } = await place();
      const error = await withFaults({ cut: { afterBytes: at, scope: "writes" } }, () =>
        failureOf(backupInto(sink)),
      );
      return { error, code: "SINK_WRITE_FAILED", leftovers: await leftovers(), secrets };
    });
  }

  for (const at of [PART - 1, PART, PART + 1]) {
    fault(
      "s3",
      `the source fails at byte ${at} (part size ${at - PART >= 0 ? "+" : "-"} ${Math.abs(at - PART)})`,
      async () => {
        const { sink, leftovers } = await place();
        const error = await failureOf(backupInto(sink, bytesSource({ data: failingChunks(data, at) })));
        return { error, code: "SOURCE_FAILED", leftovers: await leftovers(), secrets };
      },
    );
  }

  fault("s3", "the server goes away mid-upload (the abort cannot get through either)", async () => {
    const { bucket, sink, leftovers } = await place();
    const error = await withFaults({ cut: { afterBytes: 7 * MiB, scope: "all" } }, () =>
      failureOf(backupInto(sink)),
    );
    return {
      error,
      code: "SINK_WRITE_FAILED",
      leftovers: await expectReportedAndRemove(error, bucket, sink, leftovers),
      secrets,
    };
  });

  fault("s3", "UploadPart is refused (403) and AbortMultipartUpload fails (500)", async () => {
    const { bucket, sink, leftovers } = await place();
    const error = await withFaults({ failPartsFrom: 2, abortStatus: 500 }, () => failureOf(backupInto(sink)));
    return {
      error,
      code: "SINK_WRITE_FAILED",
      leftovers: await expectReportedAndRemove(error, bucket, sink, leftovers),
      secrets,
    };
  });

  fault("s3", "the source fails at byte 11 MiB and AbortMultipartUpload is refused (403)", async () => {
    const { bucket, sink, leftovers } = await place();
    const error = await withFaults({ abortStatus: 403 }, () =>
      failureOf(backupInto(sink, bytesSource({ data: failingChunks(data, 11 * MiB) }))),
    );
    return {
      error,
      code: "SOURCE_FAILED",
      leftovers: await expectReportedAndRemove(error, bucket, sink, leftovers),
      secrets,
    };
  });

  for (const status of [403, 500] as const) {
    fault("s3", `UploadPart answers ${status} from part 2 on`, async () => {
      const { sink, leftovers } = await place();
      const error = await withFaults({ failPartsFrom: 2, failPartsStatus: status }, () =>
        failureOf(backupInto(sink)),
      );
      return { error, code: "SINK_WRITE_FAILED", leftovers: await leftovers(), secrets };
    });
  }

  fault("s3", "CompleteMultipartUpload answers 500", async () => {
    const { sink, leftovers } = await place();
    const error = await withFaults({ failComplete: true }, () => failureOf(backupInto(sink)));
    return { error, code: "SINK_WRITE_FAILED", leftovers: await leftovers(), secrets };
  });

  fault("s3", "wrong credentials (403) on write", async () => {
    const { sink, leftovers } = await place({}, { accessKeyId: "NOT-A-KEY" });
    const error = await failureOf(backupInto(sink));
    return { error, code: "SINK_WRITE_FAILED", leftovers: await leftovers(), secrets };
  });

  for (const verifyFirst of [false, true]) {
    fault("s3", `wrong credentials (403) on read${verifyFirst ? ", verified first" : ""}`, async () => {
      const { bucket, leftovers } = await place();
      const good = s3Sink({ client: server.client(), bucket, partSize: PART });
      const manifest = await backupInto(good);
      const wrong = s3Sink({
        client: server.client({
          credentials: { accessKeyId: "NOT-A-KEY", secretAccessKey: WRONG_SECRET, sessionToken: TOKEN },
        }),
        bucket,
      });
      const error = await failureOf(async () =>
        readAll(await restore({ sink: wrong, manifest, verifyFirst }), 16 * MiB),
      );
      await good.delete([manifest.artifact.key, `${manifest.artifact.key}.manifest.json`]);
      return { error, code: "SINK_READ_FAILED", leftovers: await leftovers(), secrets };
    });
  }

  fault("s3", "the server accepts connections and never answers (idle timeout)", async () => {
    const { sink, leftovers } = await place();
    const error = await withFaults({ stall: "all" }, () => failureOf(backupInto(sink)));
    const timedOut = isStowageError(error) && error.details.reason === "timeout";
    return {
      error,
      code: "SINK_WRITE_FAILED",
      leftovers: [...(timedOut ? [] : ["details.reason is not timeout"]), ...(await leftovers())],
      secrets,
    };
  });

  fault("s3", "UploadPart stops answering mid-upload (idle timeout)", async () => {
    const { sink, leftovers } = await place();
    const error = await withFaults({ stall: "parts" }, () => failureOf(backupInto(sink)));
    return { error, code: "SINK_WRITE_FAILED", leftovers: await leftovers(), secrets };
  });

  for (const at of [3 * MiB, 7 * MiB]) {
    fault("s3", `abort mid-upload after ${at} bytes`, async () => {
      const { sink, leftovers } = await place();
      const controller = new AbortController();
      const source = bytesSource({
        data: async function* () {
          for (let i = 0; i < data.length; i += MiB) {
            if (i >= at) controller.abort();
            yield data.subarray(i, i + MiB);
          }
        },
      });
      const error = await failureOf(backupInto(sink, source, controller.signal));
      return { error, code: "ABORTED", leftovers: await leftovers(), secrets };
    });
  }

  fault("s3", "abort while parts are held, and they are stored after the abort", async () => {
    const { sink, leftovers } = await place();
    const controller = new AbortController();
    const error = await withFaults({ landPartsAfterAbort: true }, async () => {
      const running = failureOf(backupInto(sink, bytesSource({ data }), controller.signal));
      setTimeout(() => controller.abort(), 500);
      return running;
    });
    return { error, code: "ABORTED", leftovers: await leftovers(), secrets };
  });

  // restore() with verifyFirst (its default for unencrypted backups) reports any failed read as
  // INTEGRITY_MISMATCH; these faults read through the restore path itself, so they turn it off.
  describe("restore", () => {
    let bucket: string;
    let manifest: Manifest;
    let sink: S3Sink;
    beforeAll(async () => {
      // No resumption: every cut below fails the read (resumption has its own test, in
      // test/integration/s3-restore.test.ts, and the fault after this loop).
      ({ bucket, sink } = await place({ readResumes: 0, readPartSize: 8 * MiB }));
      manifest = await backupInto(sink);
    });

    // verifyFirst (the default for an unencrypted artifact) reads the artifact once to check it
    // before releasing a byte: a read that fails there is no damage to the backup either.
    for (const [at, verifyFirst] of [
      [0, false],
      [1, false],
      [64 * 1024, false],
      [PART, false],
      [1, true],
      [PART, true],
    ] as const) {
      const how = verifyFirst ? ", verified first" : "";
      fault("s3", `restore: GetObject's body is cut after ${at} bytes${how}`, async () => {
        const before = await listing(sink);
        const error = await withFaults({ cutGetAfter: at }, async () =>
          failureOf(async () => readAll(await restore({ sink, manifest, verifyFirst }), 16 * MiB)),
        );
        return {
          error,
          code: "SINK_READ_FAILED",
          leftovers: [...listingChange(before, await listing(sink)), ...(await server.openUploads(bucket))],
          secrets,
        };
      });
    }

    fault(
      "s3",
      "restore: every GetObject's body is cut short: resumed readResumes times, then fails",
      async () => {
        const resuming = s3Sink({ client: sink.client, bucket, readResumes: 2, idleTimeout: "1s" });
        const error = await withFaults({ cutGetAfter: 1000 }, async () =>
          failureOf(async () => readAll(await restore({ sink: resuming, manifest }), 16 * MiB)),
        );
        return { error, code: "SINK_READ_FAILED", leftovers: await server.openUploads(bucket), secrets };
      },
    );

    fault("s3", "restore: GetObject's body stops half-way (idle timeout)", async () => {
      const before = await listing(sink);
      const error = await withFaults({ stall: "get-body" }, async () =>
        failureOf(async () => readAll(await restore({ sink, manifest, verifyFirst: false }), 16 * MiB)),
      );
      return {
        error,
        code: "SINK_READ_FAILED",
        leftovers: [...listingChange(before, await listing(sink)), ...(await server.openUploads(bucket))],
        secrets,
      };
    });
  });
});

describe("the host process SIGKILLed mid-upload", () => {
  fault(
    "s3",
    "SIGKILL mid-upload: the open multipart upload is aborted by the next sweep of the job",
    async () => {
      const { bucket, sink, leftovers } = await place();
      const job = "killed";
      // One committed backup, so that a retention plan names the job.
      const kept = await backup({ job, source: bytesSource({ data: "kept" }), sink });
      const child = spawn(
        process.execPath,
        [
          "--import",
          "tsx",
          fileURLToPath(new URL("./support/s3-backup-child.ts", import.meta.url)),
          JSON.stringify({ endpoint: server.endpoint, region: server.region, bucket, job }),
        ],
        {
          cwd: fileURLToPath(new URL("../..", import.meta.url)),
          env: {
            ...process.env,
            AWS_ACCESS_KEY_ID: "S3RVER",
            AWS_SECRET_ACCESS_KEY: SECRET,
            AWS_SESSION_TOKEN: TOKEN,
          },
          stdio: ["ignore", "pipe", "pipe"],
        },
      );
      const output: string[] = [];
      child.stdout!.on("data", (c: Buffer) => output.push(c.toString()));
      child.stderr!.on("data", (c: Buffer) => output.push(c.toString()));
      try {
        // Mid-upload: the multipart upload is open on the server.
        const deadline = Date.now() + 60_000;
        let open: string[] = [];
        while (open.length === 0) {
          if (Date.now() > deadline) throw new Error(`no upload began (child said: ${output.join("")})`);
          await new Promise((resolve) => setTimeout(resolve, 50));
          open = await server.openUploads(bucket);
        }
        const exited = new Promise((resolve) => child.once("exit", resolve));
        child.kill("SIGKILL");
        await exited;
        const problems: string[] = [];
        if ((await server.openUploads(bucket)).length === 0) problems.push("the killed upload is not open");
        // The next sweep: an upload younger than `olderThan` may belong to a live writer elsewhere,
        // so the sweep that removes it runs (as a scheduled prune would) once that age has passed.
        const later = new Date(Date.now() + 2 * 3_600_000);
        const found = await findOrphans(sink, { olderThan: "1h", now: later, prefix: `${job}/` });
        if (found.temporary.length !== 1)
          problems.push(`findOrphans found ${found.temporary.length} uploads`);
        const plan = planRetention((await listManifests(sink)).manifests, { keepLast: 10 }, { now: later });
        await applyRetention({ sink, plan, now: later, orphans: { olderThan: "1h" } });
        const error = await failureOf(sink.read(`${found.temporary[0]?.key ?? "missing"}`));
        await sink.delete([kept.artifact.key, `${kept.artifact.key}.manifest.json`]);
        return {
          error,
          code: "NOT_FOUND",
          leftovers: [...problems, ...(await leftovers())],
          secrets,
          texts: [output.join("")],
        };
      } finally {
        child.kill("SIGKILL");
      }
    },
    120_000,
  );
});
