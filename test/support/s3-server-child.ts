/**
 * The child process behind `startS3Server()` (test/support/s3-server.ts): s3rver, plus a small
 * HTTP front that answers the S3 calls s3rver gets wrong or lacks, with their documented semantics:
 *
 * - AbortMultipartUpload (s3rver: 405) removes the upload's parts and answers 204; a part that is
 *   still arriving is waited for first, and later parts for that upload get 404 NoSuchUpload.
 * - ListMultipartUploads and ListParts (s3rver: 501/405) are answered from s3rver's own upload
 *   folders on disk, so "no parts left behind" is checked against what is really stored.
 * - Object Lock: PutObject / CreateMultipartUpload headers are kept and reported by HeadObject;
 *   as on S3, a locked write without Content-MD5 or an x-amz-checksum-* header is refused.
 * - Glacier (RestoreObject, s3rver: 501): in buckets marked cold, GetObject of a GLACIER or
 *   DEEP_ARCHIVE object answers 403 InvalidObjectState until it is restored; RestoreObject answers
 *   202, then 409 RestoreAlreadyInProgress while ongoing, then 200 once restored; HeadObject
 *   carries `x-amz-restore`. The parent completes restores and moves the clock over IPC.
 *
 * Runs in its own process because a process hosting s3rver must not call execFileSync/spawnSync,
 * and with --openssl-legacy-provider so that truncated listings (continuation tokens) work.
 */
import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import { createServer, type IncomingMessage, request, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
// @ts-expect-error s3rver ships no types
import S3rver from "s3rver";
// Type only: erased, so the child does not load its parent module.
import type { RequestRecord } from "./s3-server.js";

interface RestoreState {
  ongoing: boolean;
  days: number;
  tier: string;
  expiry?: number;
}

const dir = await mkdtemp(join(tmpdir(), "stowage-s3rver-"));
const s3rver = new S3rver({
  address: "127.0.0.1",
  port: 0,
  silent: true,
  directory: dir,
  allowMismatchedSignatures: false,
});
const upstreamPort = ((await s3rver.run()) as AddressInfo).port;
const store = s3rver.store as {
  getMetadata(bucket: string, key: string): Promise<Record<string, string>>;
  getBucketPath(bucket: string): string;
  deleteObject(bucket: string, key: string): Promise<void>;
};

/** Faults the parent can switch on, to see how the client copes. */
interface Faults {
  /** UploadPart answers 403 AccessDenied (not retried) from this part number on. */
  failPartsFrom?: number;
  /** AbortMultipartUpload answers 405 as plain s3rver does. */
  abortAnswers405?: boolean;
  /** DeleteObjects reports AccessDenied for keys starting with this. */
  denyDeletePrefix?: string;
  /** UploadPart requests wait (unanswered) until this is switched off. */
  holdParts?: boolean;
}
let faults: Faults = {};
let releaseHeld: Array<() => void> = [];

const log: RequestRecord[] = [];
const coldBuckets = new Set<string>();
const locks = new Map<string, { mode: string; until: string }>();
const restores = new Map<string, RestoreState>();
const aborted = new Set<string>();
const partsInFlight = new Map<string, Set<Promise<void>>>();
let clockOffset = 0;
const now = () => Date.now() + clockOffset;

const uploadsDir = (bucket: string) => join(store.getBucketPath(bucket), "._S3rver_uploads");
const objectId = (bucket: string, key: string) => `${bucket}/${key}`;
const xmlEscape = (s: string) => s.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);

function sendXml(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}) {
  const text = `<?xml version="1.0" encoding="UTF-8"?>\n${body}`;
  res.writeHead(status, {
    "content-type": "application/xml",
    "content-length": Buffer.byteLength(text),
    "x-amz-request-id": randomBytes(8).toString("hex"),
    ...headers,
  });
  res.end(text);
}

function sendError(res: ServerResponse, status: number, code: string, message: string, extra = "") {
  sendXml(
    res,
    status,
    `<Error><Code>${code}</Code><Message>${xmlEscape(message)}</Message>${extra}<RequestId>${randomBytes(8).toString("hex")}</RequestId></Error>`,
  );
}

async function drain(req: IncomingMessage): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of req) parts.push(chunk as Buffer);
  return Buffer.concat(parts);
}

/** Forwards the request to s3rver as it is (headers untouched, so signatures still verify). */
function forward(
  req: IncomingMessage,
  res: ServerResponse,
  adjust?: (status: number, headers: Record<string, string | string[] | undefined>) => void,
): Promise<number> {
  return new Promise<number>((resolve) => {
    const upstream = request(
      { host: "127.0.0.1", port: upstreamPort, method: req.method, path: req.url, headers: req.headers },
      (up) => {
        const headers = { ...up.headers };
        adjust?.(up.statusCode ?? 500, headers);
        res.writeHead(up.statusCode ?? 500, headers);
        pipeline(up, res).then(
          () => resolve(up.statusCode ?? 500),
          () => resolve(up.statusCode ?? 500),
        );
      },
    );
    upstream.on("error", () => {
      if (!res.headersSent) sendError(res, 502, "BadGateway", "upstream failed");
      else res.destroy();
      resolve(502);
    });
    // A client that goes away mid-body must not leave s3rver writing a part.
    req.on("aborted", () => upstream.destroy());
    res.on("close", () => {
      if (!res.writableFinished) upstream.destroy();
    });
    pipeline(req, upstream).catch(() => upstream.destroy());
  });
}

async function listUploads(bucket: string): Promise<Array<{ uploadId: string; key: string }>> {
  let ids: string[];
  try {
    ids = await readdir(uploadsDir(bucket));
  } catch {
    return [];
  }
  const uploads: Array<{ uploadId: string; key: string }> = [];
  for (const uploadId of ids) {
    const key = await readFile(join(uploadsDir(bucket), uploadId, "key"), "utf8").catch(() => "(unknown)");
    uploads.push({ uploadId, key });
  }
  return uploads;
}

async function uploadHeaders(bucket: string, uploadId: string): Promise<Record<string, string> | undefined> {
  try {
    return JSON.parse(await readFile(join(uploadsDir(bucket), uploadId, "metadata"), "utf8"));
  } catch {
    return undefined;
  }
}

const hasChecksum = (headers: IncomingMessage["headers"]) =>
  "content-md5" in headers || Object.keys(headers).some((h) => h.startsWith("x-amz-checksum-"));

function restoreHeader(state: RestoreState | undefined): string | undefined {
  if (!state) return undefined;
  if (state.ongoing) return 'ongoing-request="true"';
  if (state.expiry !== undefined && state.expiry <= now()) return undefined;
  return `ongoing-request="false", expiry-date="${new Date(state.expiry ?? 0).toUTCString()}"`;
}

function isRestored(state: RestoreState | undefined): boolean {
  return !!state && !state.ongoing && (state.expiry ?? 0) > now();
}

async function coldClassOf(bucket: string, key: string): Promise<string | undefined> {
  try {
    const meta = await store.getMetadata(bucket, key);
    const cls = meta["x-amz-storage-class"];
    return cls === "GLACIER" || cls === "DEEP_ARCHIVE" ? cls : undefined;
  } catch {
    return undefined;
  }
}

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? "/", "http://localhost");
  const [, bucket = "", ...rest] = url.pathname.split("/");
  const key = decodeURIComponent(rest.join("/"));
  const q = url.searchParams;
  const method = req.method ?? "GET";
  const op = ["uploads", "uploadId", "restore", "delete", "list-type", "tagging"].find((p) => q.has(p)) ?? "";
  const record: RequestRecord = {
    method,
    bucket: decodeURIComponent(bucket),
    key,
    op,
    ...(q.has("partNumber") ? { partNumber: Number(q.get("partNumber")) } : {}),
    ...(req.headers["content-length"] ? { bytes: Number(req.headers["content-length"]) } : {}),
    ...(req.headers["x-amz-storage-class"]
      ? { storageClass: String(req.headers["x-amz-storage-class"]) }
      : {}),
    ...(req.headers["x-amz-object-lock-mode"]
      ? { lockMode: String(req.headers["x-amz-object-lock-mode"]) }
      : {}),
    ...(req.headers["x-amz-object-lock-retain-until-date"]
      ? { lockRetainUntil: String(req.headers["x-amz-object-lock-retain-until-date"]) }
      : {}),
    contentMd5: "content-md5" in req.headers,
    expectContinue: String(req.headers.expect ?? "").toLowerCase() === "100-continue",
    clientPort: req.socket.remotePort ?? 0,
    startedAt: performance.now(),
  };
  res.once("finish", () => {
    record.ms = performance.now() - record.startedAt;
  });
  log.push(record);
  const id = objectId(record.bucket, key);
  const uploadId = q.get("uploadId") ?? "";

  // ListMultipartUploads
  if (method === "GET" && key === "" && q.has("uploads")) {
    const uploads = await listUploads(record.bucket);
    record.status = 200;
    sendXml(
      res,
      200,
      `<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>${xmlEscape(record.bucket)}</Bucket><IsTruncated>false</IsTruncated>${uploads
        .map(
          (u) =>
            `<Upload><Key>${xmlEscape(u.key)}</Key><UploadId>${u.uploadId}</UploadId><StorageClass>STANDARD</StorageClass></Upload>`,
        )
        .join("")}</ListMultipartUploadsResult>`,
    );
    return;
  }

  if (key !== "" && uploadId) {
    const folder = join(uploadsDir(record.bucket), uploadId);
    const exists = await stat(folder).then(
      () => true,
      () => false,
    );
    // AbortMultipartUpload
    if (method === "DELETE") {
      if (faults.abortAnswers405) {
        record.status = 405;
        sendError(res, 405, "MethodNotAllowed", "The specified method is not allowed against this resource.");
        return;
      }
      aborted.add(uploadId);
      await Promise.allSettled([...(partsInFlight.get(uploadId) ?? [])]);
      if (!exists) {
        record.status = 404;
        sendError(res, 404, "NoSuchUpload", "The specified upload does not exist.");
        return;
      }
      await rm(folder, { recursive: true, force: true });
      record.status = 204;
      res.writeHead(204).end();
      return;
    }
    // ListParts
    if (method === "GET") {
      if (!exists || aborted.has(uploadId)) {
        record.status = 404;
        sendError(res, 404, "NoSuchUpload", "The specified upload does not exist.");
        return;
      }
      const files = (await readdir(folder)).filter((f) => /^\d+$/.test(f)).map(Number);
      files.sort((a, b) => a - b);
      const parts = await Promise.all(
        files.map(async (n) => ({ n, size: (await stat(join(folder, String(n)))).size })),
      );
      record.status = 200;
      sendXml(
        res,
        200,
        `<ListPartsResult><Bucket>${xmlEscape(record.bucket)}</Bucket><Key>${xmlEscape(key)}</Key><UploadId>${uploadId}</UploadId><IsTruncated>false</IsTruncated>${parts
          .map((p) => `<Part><PartNumber>${p.n}</PartNumber><Size>${p.size}</Size></Part>`)
          .join("")}</ListPartsResult>`,
      );
      return;
    }
    // UploadPart
    if (method === "PUT") {
      while (faults.holdParts) await new Promise<void>((r) => releaseHeld.push(r));
      // A client that gave up while its part was held sends nothing more.
      if (req.destroyed || res.destroyed) {
        record.status = 499;
        return;
      }
      const stillThere = await stat(folder).then(
        () => true,
        () => false,
      );
      if (aborted.has(uploadId) || !stillThere) {
        await drain(req);
        record.status = 404;
        sendError(res, 404, "NoSuchUpload", "The specified upload does not exist.");
        return;
      }
      if (faults.failPartsFrom !== undefined && (record.partNumber ?? 0) >= faults.failPartsFrom) {
        await drain(req);
        record.status = 403;
        sendError(res, 403, "AccessDenied", "Access Denied");
        return;
      }
      const meta = await uploadHeaders(record.bucket, uploadId);
      if (meta?.["x-amz-object-lock-mode"] && !hasChecksum(req.headers)) {
        await drain(req);
        record.status = 400;
        sendError(
          res,
          400,
          "InvalidRequest",
          "Content-MD5 OR x-amz-checksum- HTTP header is required for Put Part requests with Object Lock parameters",
        );
        return;
      }
      let done!: () => void;
      const inFlight = new Promise<void>((r) => {
        done = r;
      });
      const set = partsInFlight.get(uploadId) ?? new Set();
      partsInFlight.set(uploadId, set);
      set.add(inFlight);
      try {
        record.status = await forward(req, res);
      } finally {
        set.delete(inFlight);
        done();
      }
      return;
    }
    // CompleteMultipartUpload
    if (method === "POST") {
      const meta = await uploadHeaders(record.bucket, uploadId);
      record.status = await forward(req, res);
      if (record.status === 200) {
        locks.delete(id);
        restores.delete(id);
        if (meta?.["x-amz-object-lock-mode"]) {
          locks.set(id, {
            mode: meta["x-amz-object-lock-mode"],
            until: meta["x-amz-object-lock-retain-until-date"] ?? "",
          });
        }
      }
      return;
    }
  }

  // PutObject: Object Lock needs a checksum, as on S3.
  if (method === "PUT" && key !== "" && !op && !("x-amz-copy-source" in req.headers)) {
    if (req.headers["x-amz-object-lock-mode"] && !hasChecksum(req.headers)) {
      await drain(req);
      record.status = 400;
      sendError(
        res,
        400,
        "InvalidRequest",
        "Content-MD5 OR x-amz-checksum- HTTP header is required for Put Object requests with Object Lock parameters",
      );
      return;
    }
    record.status = await forward(req, res);
    if (record.status === 200) {
      locks.delete(id);
      restores.delete(id);
      if (req.headers["x-amz-object-lock-mode"]) {
        locks.set(id, {
          mode: String(req.headers["x-amz-object-lock-mode"]),
          until: String(req.headers["x-amz-object-lock-retain-until-date"] ?? ""),
        });
      }
    }
    return;
  }

  // DeleteObjects with per-key refusals, answered here (the body is signed, so it cannot be edited).
  if (method === "POST" && key === "" && q.has("delete") && faults.denyDeletePrefix !== undefined) {
    const body = (await drain(req)).toString("utf8");
    const keys = [...body.matchAll(/<Key>([^<]*)<\/Key>/g)].map((m) =>
      m[1]!.replace(
        /&(lt|gt|amp|quot|apos|#\d+);/g,
        (e) =>
          ({ "&lt;": "<", "&gt;": ">", "&amp;": "&", "&quot;": '"', "&apos;": "'" })[e] ??
          String.fromCharCode(Number(e.slice(2, -1))),
      ),
    );
    const out: string[] = [];
    for (const k of keys) {
      if (k.startsWith(faults.denyDeletePrefix)) {
        out.push(
          `<Error><Key>${xmlEscape(k)}</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error>`,
        );
      } else {
        await store.deleteObject(record.bucket, k).catch(() => undefined);
      }
    }
    record.status = 200;
    sendXml(
      res,
      200,
      `<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">${out.join("")}</DeleteResult>`,
    );
    return;
  }

  // RestoreObject
  if (method === "POST" && key !== "" && q.has("restore")) {
    const body = (await drain(req)).toString("utf8");
    const cold = await coldClassOf(record.bucket, key);
    const exists = await store.getMetadata(record.bucket, key).then(
      () => true,
      () => false,
    );
    if (!exists) {
      record.status = 404;
      sendError(res, 404, "NoSuchKey", "The specified key does not exist.");
      return;
    }
    if (!cold) {
      record.status = 403;
      sendError(
        res,
        403,
        "InvalidObjectState",
        "Restore is not allowed for the object's current storage class",
      );
      return;
    }
    const days = Number(/<Days>(\d+)<\/Days>/.exec(body)?.[1] ?? "1");
    const tier = /<Tier>(\w+)<\/Tier>/.exec(body)?.[1] ?? "Standard";
    if (tier === "Expedited" && cold === "DEEP_ARCHIVE") {
      record.status = 403;
      sendError(res, 403, "InvalidObjectState", "Expedited retrieval is not available for DEEP_ARCHIVE");
      return;
    }
    const state = restores.get(id);
    if (state?.ongoing) {
      record.status = 409;
      sendError(res, 409, "RestoreAlreadyInProgress", "Object restore is already in progress");
      return;
    }
    if (isRestored(state)) {
      state!.days = days;
      state!.expiry = now() + days * 86_400_000;
      record.status = 200;
      res.writeHead(200, { "content-length": 0 }).end();
      return;
    }
    restores.set(id, { ongoing: true, days, tier });
    record.status = 202;
    res.writeHead(202, { "content-length": 0 }).end();
    return;
  }

  // HeadObject: add what s3rver does not keep.
  if (method === "HEAD" && key !== "" && !op) {
    const lock = locks.get(id);
    const restoreState = restoreHeader(restores.get(id));
    record.status = await forward(req, res, (status, headers) => {
      if (status !== 200) return;
      if (lock) {
        headers["x-amz-object-lock-mode"] = lock.mode;
        headers["x-amz-object-lock-retain-until-date"] = lock.until;
      }
      if (restoreState) headers["x-amz-restore"] = restoreState;
    });
    return;
  }

  // GetObject of a cold object that is not restored.
  if (method === "GET" && key !== "" && !op && coldBuckets.has(record.bucket)) {
    const cold = await coldClassOf(record.bucket, key);
    if (cold && !isRestored(restores.get(id))) {
      record.status = 403;
      sendError(
        res,
        403,
        "InvalidObjectState",
        "The operation is not valid for the object's storage class",
        `<StorageClass>${cold}</StorageClass>`,
      );
      return;
    }
  }

  if (method === "DELETE" && key !== "" && !op) {
    locks.delete(id);
    restores.delete(id);
  }
  record.status = await forward(req, res);
}

const front = createServer((req, res) => {
  handle(req, res).catch((error: unknown) => {
    if (!res.headersSent) sendError(res, 500, "InternalError", String(error));
    else res.destroy();
  });
});
front.keepAliveTimeout = 30_000;
await new Promise<void>((resolve) => front.listen(0, "127.0.0.1", resolve));

type Message = { id: number; type: string; bucket?: string; ms?: number; faults?: Faults };
process.on("message", (message: Message) => {
  const reply = (result: unknown) => process.send?.({ id: message.id, result });
  switch (message.type) {
    case "requests":
      return reply(log);
    case "clearRequests":
      log.length = 0;
      return reply(true);
    case "coldBucket":
      coldBuckets.add(message.bucket ?? "");
      return reply(true);
    case "completeRestores": {
      let n = 0;
      for (const state of restores.values()) {
        if (state.ongoing) {
          state.ongoing = false;
          state.expiry = now() + state.days * 86_400_000;
          n++;
        }
      }
      return reply(n);
    }
    case "faults":
      faults = message.faults ?? {};
      if (!faults.holdParts) {
        for (const release of releaseHeld) release();
        releaseHeld = [];
      }
      return reply(true);
    case "advanceClock":
      clockOffset += message.ms ?? 0;
      return reply(clockOffset);
    case "stop":
      front.close();
      front.closeAllConnections();
      s3rver.close(() => {
        rm(dir, { recursive: true, force: true }).finally(() => {
          reply(true);
          process.exit(0);
        });
      });
      return;
    default:
      return reply(null);
  }
});
// The parent went away (crashed test worker): do not outlive it.
process.on("disconnect", () => process.exit(0));
process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
process.send?.({ type: "ready", port: (front.address() as AddressInfo).port, directory: dir });
