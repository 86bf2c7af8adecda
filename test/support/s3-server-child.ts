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
 * - Conditional PutObject (s3rver ignores the headers): `If-None-Match: *` answers 412
 *   PreconditionFailed when the key exists, `If-Match: <ETag>` 412 when the stored ETag differs
 *   and 404 NoSuchKey when there is none. The check and the write run one at a time per key, so
 *   of writers racing on one version exactly one wins, as on S3.
 *
 * Runs in its own process because a process hosting s3rver must not call execFileSync/spawnSync,
 * and with --openssl-legacy-provider so that truncated listings (continuation tokens) work.
 */
import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
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
  existsObject(bucket: string, key: string): Promise<boolean>;
  getMetadata(bucket: string, key: string): Promise<Record<string, string>>;
  getBucketPath(bucket: string): string;
  deleteObject(bucket: string, key: string): Promise<void>;
};

/** Faults the parent can switch on, to see how the client copes (documented in s3-server.ts). */
interface Faults {
  failPartsFrom?: number;
  failPartsStatus?: 403 | 500;
  abortAnswers405?: boolean;
  abortStatus?: 403 | 500;
  failComplete?: boolean;
  denyDeletePrefix?: string;
  holdParts?: boolean;
  holdCreate?: boolean;
  landPartsAfterAbort?: boolean;
  cut?: { afterBytes: number; scope: "writes" | "all" };
  stall?: "all" | "parts" | "get-body";
  cutGetAfter?: number;
  maxUploadsPerPage?: number;
}
let faults: Faults = {};
let releaseHeld: Array<() => void> = [];
/** Resolves at the next change of faults. */
const faultsChanged = () => new Promise<void>((r) => releaseHeld.push(r));
/** Request-body bytes received since `cut` was switched on, and whether the cut has happened. */
let cutState = { bytes: 0, tripped: false };
/** Parts held for `landPartsAfterAbort`, by upload: each starts storing itself when called. */
const heldForAbort = new Map<string, Array<() => Promise<void>>>();
/** Parts being stored after their upload's abort was answered; listings wait for them. */
const landings = new Set<Promise<void>>();

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

/**
 * Receives a request's whole body. Under the `cut` fault it counts the bytes and cuts the
 * connection where the count crosses `afterBytes` (undefined is returned then, and when the client
 * went away mid-body: S3 stores nothing of a body that did not arrive whole).
 */
async function receive(req: IncomingMessage): Promise<Buffer | undefined> {
  const parts: Buffer[] = [];
  try {
    for await (const chunk of req) {
      const piece = chunk as Buffer;
      if (faults.cut) {
        const room = faults.cut.afterBytes - cutState.bytes;
        cutState.bytes += piece.length;
        if (room < piece.length) {
          cutState.tripped = true;
          req.socket.destroy();
          return undefined;
        }
      }
      parts.push(piece);
    }
  } catch {
    return undefined;
  }
  return req.complete ? Buffer.concat(parts) : undefined;
}

/** Pipes s3rver's response body to the client, applying the GetObject body faults. */
async function relayBody(up: IncomingMessage, res: ServerResponse, faulty: boolean): Promise<void> {
  if (!faulty || (faults.cutGetAfter === undefined && faults.stall !== "get-body")) {
    await pipeline(up, res);
    return;
  }
  let sent = 0;
  for await (const chunk of up) {
    const piece = chunk as Buffer;
    const limit = faults.cutGetAfter ?? 64 * 1024;
    if (sent + piece.length > limit) {
      res.write(piece.subarray(0, limit - sent));
      if (faults.stall === "get-body") {
        // Headers and some bytes went out; then nothing, until the faults change.
        while (faults.stall === "get-body") await faultsChanged();
      }
      up.destroy();
      res.destroy();
      return;
    }
    sent += piece.length;
    if (!res.write(piece)) await new Promise((r) => res.once("drain", r));
  }
  res.end();
}

/**
 * Forwards the request to s3rver as it is (headers untouched, so signatures still verify). With
 * `body` (received whole), s3rver gets it even if the client has gone since: S3 carries out a
 * request whose bytes all arrived, and a part that s3rver is still writing must never be cut off
 * halfway (it would re-create an aborted upload's folder later, with no one waiting for it).
 */
function forward(
  req: IncomingMessage,
  res: ServerResponse,
  adjust?: (status: number, headers: Record<string, string | string[] | undefined>) => void,
  body?: Buffer,
  getObject = false,
): Promise<number> {
  return new Promise<number>((resolve) => {
    const upstream = request(
      { host: "127.0.0.1", port: upstreamPort, method: req.method, path: req.url, headers: req.headers },
      (up) => {
        const headers = { ...up.headers };
        adjust?.(up.statusCode ?? 500, headers);
        if (res.destroyed) {
          up.resume();
          up.once("end", () => resolve(up.statusCode ?? 500));
          return;
        }
        res.writeHead(up.statusCode ?? 500, headers);
        relayBody(up, res, getObject && (up.statusCode === 200 || up.statusCode === 206)).then(
          () => resolve(up.statusCode ?? 500),
          () => resolve(up.statusCode ?? 500),
        );
      },
    );
    if (body) {
      upstream.on("error", () => {
        if (!res.headersSent && !res.destroyed) sendError(res, 502, "BadGateway", "upstream failed");
        resolve(502);
      });
      upstream.end(body);
      return;
    }
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

async function listUploads(
  bucket: string,
): Promise<Array<{ uploadId: string; key: string; initiated: Date }>> {
  let ids: string[];
  try {
    ids = await readdir(uploadsDir(bucket));
  } catch {
    return [];
  }
  const uploads: Array<{ uploadId: string; key: string; initiated: Date }> = [];
  for (const uploadId of ids) {
    const folder = join(uploadsDir(bucket), uploadId);
    const key = await readFile(join(folder, "key"), "utf8").catch(() => "(unknown)");
    const initiated = await stat(join(folder, "key")).then(
      (s) => s.mtime,
      () =>
        stat(folder).then(
          (s) => s.mtime,
          () => new Date(),
        ),
    );
    uploads.push({ uploadId, key, initiated: new Date(initiated.getTime() + clockOffset) });
  }
  uploads.sort((a, b) => (a.key === b.key ? a.uploadId.localeCompare(b.uploadId) : a.key < b.key ? -1 : 1));
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

/** Conditional writes per object, one after the other: a check and its write are one step. */
const conditionalWrites = new Map<string, Promise<void>>();

async function oneAtATime(id: string, work: () => Promise<void>): Promise<void> {
  const before = conditionalWrites.get(id) ?? Promise.resolve();
  const mine = before.then(work, work);
  const tail = mine.catch(() => undefined);
  conditionalWrites.set(id, tail);
  try {
    await mine;
  } finally {
    if (conditionalWrites.get(id) === tail) conditionalWrites.delete(id);
  }
}

const bareEtag = (etag: string) => etag.trim().replace(/^W\//, "").replace(/^"|"$/g, "");

/** The stored object's ETag (its MD5, unquoted), or undefined when there is none. */
async function storedEtag(bucket: string, key: string): Promise<string | undefined> {
  if (!(await store.existsObject(bucket, key).catch(() => false))) return undefined;
  const metadata = await store.getMetadata(bucket, key).catch(() => undefined);
  return metadata?.etag === undefined ? undefined : bareEtag(metadata.etag);
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
    ...(req.headers.range ? { range: String(req.headers.range) } : {}),
    startedAt: performance.now(),
  };
  res.once("finish", () => {
    record.ms = performance.now() - record.startedAt;
  });
  log.push(record);
  const id = objectId(record.bucket, key);
  const uploadId = q.get("uploadId") ?? "";

  // A server that is gone or hangs: the connection is cut, or accepted and never answered.
  if (faults.cut?.scope === "all" && cutState.tripped) {
    record.status = 0;
    req.socket.destroy();
    return;
  }
  if (faults.stall === "all") {
    while (faults.stall === "all") await faultsChanged();
    record.status = 0;
    req.socket.destroy();
    return;
  }
  if (faults.cut?.scope === "writes" && cutState.tripped && method === "PUT") {
    record.status = 0;
    req.socket.destroy();
    return;
  }
  // Listings see parts that are landing after an abort (landPartsAfterAbort).
  if (landings.size > 0 && (method === "GET" || method === "DELETE")) await Promise.allSettled([...landings]);

  // ListMultipartUploads: Prefix, MaxUploads and the key / upload-id markers, as on S3.
  if (method === "GET" && key === "" && q.has("uploads")) {
    const prefix = q.get("prefix") ?? "";
    const max = Math.min(Number(q.get("max-uploads") ?? 1000), faults.maxUploadsPerPage ?? 1000);
    const keyMarker = q.get("key-marker");
    const idMarker = q.get("upload-id-marker") ?? "";
    const all = (await listUploads(record.bucket)).filter(
      (u) =>
        u.key.startsWith(prefix) &&
        (keyMarker === null ||
          u.key > keyMarker ||
          (u.key === keyMarker && idMarker !== "" && u.uploadId > idMarker)),
    );
    const page = all.slice(0, max);
    const truncated = all.length > page.length;
    const last = page.at(-1);
    record.status = 200;
    sendXml(
      res,
      200,
      `<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>${xmlEscape(record.bucket)}</Bucket><Prefix>${xmlEscape(prefix)}</Prefix><MaxUploads>${max}</MaxUploads><IsTruncated>${truncated}</IsTruncated>${
        truncated && last
          ? `<NextKeyMarker>${xmlEscape(last.key)}</NextKeyMarker><NextUploadIdMarker>${last.uploadId}</NextUploadIdMarker>`
          : ""
      }${page
        .map(
          (u) =>
            `<Upload><Key>${xmlEscape(u.key)}</Key><UploadId>${u.uploadId}</UploadId><Initiated>${u.initiated.toISOString()}</Initiated><StorageClass>STANDARD</StorageClass></Upload>`,
        )
        .join("")}</ListMultipartUploadsResult>`,
    );
    return;
  }

  // CreateMultipartUpload, held: carried out once released, even if its client has gone.
  if (method === "POST" && key !== "" && q.has("uploads") && faults.holdCreate) {
    const body = (await receive(req)) ?? Buffer.alloc(0);
    while (faults.holdCreate) await faultsChanged();
    record.status = await forward(req, res, undefined, body);
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
      if (faults.abortStatus === 403) {
        record.status = 403;
        sendError(res, 403, "AccessDenied", "Access Denied");
        return;
      }
      if (faults.abortStatus === 500) {
        record.status = 500;
        sendError(res, 500, "InternalError", "We encountered an internal error. Please try again.");
        return;
      }
      aborted.add(uploadId);
      await Promise.allSettled([...(partsInFlight.get(uploadId) ?? [])]);
      // Parts held for landPartsAfterAbort start storing themselves once this answer has gone.
      const held = heldForAbort.get(uploadId) ?? [];
      heldForAbort.delete(uploadId);
      for (const land of held) {
        const landing: Promise<void> = new Promise<void>((resolve) =>
          res.once("close", () => land().finally(resolve)),
        ).finally(() => landings.delete(landing));
        landings.add(landing);
      }
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
      while (faults.holdParts) await faultsChanged();
      if (faults.stall === "parts") {
        while (faults.stall === "parts") await faultsChanged();
        record.status = 0;
        req.socket.destroy();
        return;
      }
      // A client that gave up while its part was held sends nothing more.
      if (req.destroyed || res.destroyed) {
        record.status = 499;
        return;
      }
      // The whole part first: S3 stores nothing of a part that did not arrive whole.
      const body = await receive(req);
      if (body === undefined) {
        record.status = 499;
        return;
      }
      if (faults.landPartsAfterAbort) {
        // Received whole, answered never; stored once the upload's abort has been answered, as S3
        // may store a part that was arriving when the abort came: the upload is back, listed
        // (ListParts still says NoSuchUpload, as it may on S3 after an abort).
        const held = heldForAbort.get(uploadId) ?? [];
        heldForAbort.set(uploadId, held);
        let landed!: () => void;
        const done = new Promise<void>((r) => {
          landed = r;
        });
        held.push(async () => {
          await mkdir(folder, { recursive: true });
          await writeFile(join(folder, "key"), key, { flag: "wx" }).catch(() => undefined);
          await writeFile(join(folder, "metadata"), "{}", { flag: "wx" }).catch(() => undefined);
          record.status = await forward(req, res, undefined, body);
          landed();
        });
        await done;
        return;
      }
      const stillThere = await stat(folder).then(
        () => true,
        () => false,
      );
      if (aborted.has(uploadId) || !stillThere) {
        record.status = 404;
        sendError(res, 404, "NoSuchUpload", "The specified upload does not exist.");
        return;
      }
      if (faults.failPartsFrom !== undefined && (record.partNumber ?? 0) >= faults.failPartsFrom) {
        if (faults.failPartsStatus === 500) {
          record.status = 500;
          sendError(res, 500, "InternalError", "We encountered an internal error. Please try again.");
        } else {
          record.status = 403;
          sendError(res, 403, "AccessDenied", "Access Denied");
        }
        return;
      }
      const meta = await uploadHeaders(record.bucket, uploadId);
      if (meta?.["x-amz-object-lock-mode"] && !hasChecksum(req.headers)) {
        record.status = 400;
        sendError(
          res,
          400,
          "InvalidRequest",
          "Content-MD5 OR x-amz-checksum- HTTP header is required for Put Part requests with Object Lock parameters",
        );
        return;
      }
      // Checked again with no await before the part is registered: an abort that came in while
      // this part was arriving has either been seen here, or waits for the part to be stored.
      // (Without this, s3rver would store the part after the abort, re-creating the upload.)
      if (aborted.has(uploadId)) {
        record.status = 404;
        sendError(res, 404, "NoSuchUpload", "The specified upload does not exist.");
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
        record.status = await forward(req, res, undefined, body);
      } finally {
        set.delete(inFlight);
        done();
      }
      return;
    }
    // CompleteMultipartUpload
    if (method === "POST") {
      if (faults.failComplete) {
        await drain(req);
        record.status = 500;
        sendError(res, 500, "InternalError", "We encountered an internal error. Please try again.");
        return;
      }
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
    const body = await receive(req);
    if (body === undefined) {
      record.status = 499;
      return;
    }
    const ifMatch = req.headers["if-match"];
    const ifNoneMatch = req.headers["if-none-match"];
    if (ifMatch !== undefined || ifNoneMatch !== undefined) {
      await oneAtATime(id, async () => {
        const stored = await storedEtag(record.bucket, key);
        const missing = ifMatch !== undefined && stored === undefined;
        const failed =
          (ifNoneMatch !== undefined && String(ifNoneMatch).trim() === "*" && stored !== undefined) ||
          (ifMatch !== undefined && !missing && bareEtag(String(ifMatch)) !== stored);
        if (missing) {
          record.status = 404;
          sendError(res, 404, "NoSuchKey", "The specified key does not exist.");
        } else if (failed) {
          record.status = 412;
          sendError(
            res,
            412,
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold",
          );
        } else {
          record.status = await forward(req, res, undefined, body);
        }
      });
      return;
    }
    if (req.headers["x-amz-object-lock-mode"] && !hasChecksum(req.headers)) {
      record.status = 400;
      sendError(
        res,
        400,
        "InvalidRequest",
        "Content-MD5 OR x-amz-checksum- HTTP header is required for Put Object requests with Object Lock parameters",
      );
      return;
    }
    record.status = await forward(req, res, undefined, body);
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
  record.status = await forward(req, res, undefined, undefined, method === "GET" && key !== "" && !op);
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
    case "faults": {
      faults = message.faults ?? {};
      cutState = { bytes: 0, tripped: false };
      const waiting = releaseHeld;
      releaseHeld = [];
      for (const release of waiting) release();
      return reply(true);
    }
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
