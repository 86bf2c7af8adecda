/**
 * A real S3-speaking server for the integration tests, chosen in this order:
 *
 * 1. `STOWAGE_TEST_S3_ENDPOINT` (+ `STOWAGE_TEST_S3_ACCESS_KEY_ID`, `_SECRET_ACCESS_KEY`,
 *    `_REGION`, `_BUCKET`): any endpoint you name (AWS, MinIO, Ceph...). Tests then work under a
 *    fresh prefix of that bucket (or of a bucket they create when `_BUCKET` is unset).
 * 2. MinIO through testcontainers, when a container runtime is present (DOCKER_HOST or a docker /
 *    podman socket; decided without importing testcontainers, in microseconds).
 * 3. s3rver@3.7.1 in a child process, behind a small front that fixes what s3rver gets wrong
 *    (see s3-server-child.ts). This one also speaks the Glacier restore semantics, so the
 *    restore workflow always runs against it (`startS3Server({ local: true })`).
 *
 * Whichever it is, it is printed once, and a server that cannot start throws: tests fail, never skip.
 */
import { type ChildProcess, execFile, fork } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import {
  CreateBucketCommand,
  ListMultipartUploadsCommand,
  S3Client,
  type S3ClientConfig,
} from "@aws-sdk/client-s3";

const execFileAsync = promisify(execFile);

export interface RequestRecord {
  method: string;
  bucket: string;
  key: string;
  /** The subresource that picks the operation: "uploads", "uploadId", "restore", "delete", "list-type", or "". */
  op: string;
  partNumber?: number;
  bytes?: number;
  storageClass?: string;
  lockMode?: string;
  lockRetainUntil?: string;
  contentMd5: boolean;
  /** The request carried `Expect: 100-continue`. */
  expectContinue: boolean;
  /** GetObject's `Range` header, when it had one ("bytes=0-8388607"). */
  range?: string;
  /** The client's port: requests with the same one came over the same (kept-alive) connection. */
  clientPort: number;
  /** When the front received the request (the server process's performance.now()). */
  startedAt: number;
  /** How long until the response was sent, in ms (unset while it is in flight). */
  ms?: number;
  status?: number;
}

/** The s3rver-only hooks (request log, Glacier semantics, clock). */
export interface LocalControls {
  requests(): Promise<RequestRecord[]>;
  clearRequests(): Promise<void>;
  /** GetObject of GLACIER/DEEP_ARCHIVE objects in this bucket answers InvalidObjectState until restored. */
  coldBucket(bucket: string): Promise<void>;
  /** Completes every restore in progress ("the hours have passed"); returns how many. */
  completeRestores(): Promise<number>;
  /** Moves the server's clock, e.g. past a restored copy's expiry. */
  advanceClock(ms: number): Promise<void>;
  /** Switches faults on (replacing the previous set); `{}` switches them off. */
  faults(faults: Faults): Promise<void>;
}

export interface Faults {
  /** UploadPart answers 403 AccessDenied (not retried) from this part number on. */
  failPartsFrom?: number;
  /** What `failPartsFrom` answers: 403 AccessDenied (the default) or 500 InternalError (retried). */
  failPartsStatus?: 403 | 500;
  /** AbortMultipartUpload answers 405, as plain s3rver does. */
  abortAnswers405?: boolean;
  /** AbortMultipartUpload answers 403 AccessDenied or 500 InternalError. */
  abortStatus?: 403 | 500;
  /** CompleteMultipartUpload answers 500 InternalError. */
  failComplete?: boolean;
  /** DeleteObjects reports AccessDenied for keys starting with this. */
  denyDeletePrefix?: string;
  /** UploadPart requests wait unanswered until faults are switched off. */
  holdParts?: boolean;
  /** CreateMultipartUpload waits until faults change, then is carried out even if its client has gone. */
  holdCreate?: boolean;
  /**
   * Each UploadPart is received whole and never answered; once its upload's abort has been
   * answered it is stored (listings wait for it), re-creating the upload: a part that S3 stores
   * after the abort, as AWS warns it may. ListParts still answers NoSuchUpload; ListMultipartUploads
   * lists the upload.
   */
  landPartsAfterAbort?: boolean;
  /**
   * The connection is cut where PutObject/UploadPart bodies (counted together since the fault was
   * switched on) cross `afterBytes`; then every later PUT ("writes") or every request ("all": the
   * server is gone) is cut as well.
   */
  cut?: { afterBytes: number; scope: "writes" | "all" };
  /**
   * Requests are accepted and never answered: every one ("all"), UploadPart ("parts"), or GetObject
   * after its headers and first 64 KiB ("get-body"). Released (their connections cut) when faults change.
   */
  stall?: "all" | "parts" | "get-body";
  /** GetObject bodies are cut after this many bytes. */
  cutGetAfter?: number;
  /** ListMultipartUploads answers at most this many uploads a page. */
  maxUploadsPerPage?: number;
}

export interface S3TestServer {
  kind: "s3rver" | "minio" | "external";
  endpoint: string;
  region: string;
  /** Settings for `new S3Client(...)`; checksums "WHEN_REQUIRED" (s3rver and many stores need it). */
  clientConfig(overrides?: Partial<S3ClientConfig>): S3ClientConfig;
  client(overrides?: Partial<S3ClientConfig>): S3Client;
  /** A place of one's own: a new bucket (local servers) or a fresh prefix of the given bucket. */
  scratch(): Promise<{ bucket: string; prefix: string }>;
  /** Keys of multipart uploads still open under the bucket/prefix (ListMultipartUploads). */
  openUploads(bucket: string, prefix?: string): Promise<string[]>;
  /** Runs the AWS CLI against this server (credentials in env, never argv), asynchronously. */
  aws(args: string[]): Promise<{ stdout: string; stderr: string }>;
  local?: LocalControls;
  stop(): Promise<void>;
}

const CHILD = fileURLToPath(new URL("./s3-server-child.ts", import.meta.url));
const ROOT = fileURLToPath(new URL("../..", import.meta.url));

function containerRuntimePresent(): boolean {
  if (process.env.DOCKER_HOST) return true;
  const runtimeDir = process.env.XDG_RUNTIME_DIR;
  return (
    existsSync("/var/run/docker.sock") ||
    (runtimeDir !== undefined && existsSync(`${runtimeDir}/podman/podman.sock`)) ||
    existsSync("/run/podman/podman.sock")
  );
}

function makeServer(
  kind: S3TestServer["kind"],
  endpoint: string,
  credentials: { accessKeyId: string; secretAccessKey: string },
  region: string,
  fixedBucket: string | undefined,
  stop: () => Promise<void>,
  local?: LocalControls,
): S3TestServer {
  const clientConfig = (overrides: Partial<S3ClientConfig> = {}): S3ClientConfig => ({
    endpoint,
    region,
    credentials,
    forcePathStyle: true,
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
    ...overrides,
  });
  const admin = new S3Client(clientConfig());
  let ensured: Promise<string> | undefined;
  const server: S3TestServer = {
    kind,
    endpoint,
    region,
    clientConfig,
    client: (overrides) => new S3Client(clientConfig(overrides)),
    async scratch() {
      const suffix = randomBytes(5).toString("hex");
      if (kind === "external") {
        ensured ??= (async () => {
          if (fixedBucket) return fixedBucket;
          const name = `stowage-test-${suffix}`;
          await admin.send(new CreateBucketCommand({ Bucket: name }));
          return name;
        })();
        return { bucket: await ensured, prefix: `stowage-test-${suffix}/` };
      }
      const bucket = `stowage-${suffix}`;
      await admin.send(new CreateBucketCommand({ Bucket: bucket }));
      return { bucket, prefix: "" };
    },
    async openUploads(bucket, prefix = "") {
      const keys: string[] = [];
      let keyMarker: string | undefined;
      let uploadIdMarker: string | undefined;
      for (;;) {
        const page = await admin.send(
          new ListMultipartUploadsCommand({
            Bucket: bucket,
            ...(prefix ? { Prefix: prefix } : {}),
            ...(keyMarker ? { KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker } : {}),
          }),
        );
        for (const upload of page.Uploads ?? []) keys.push(`${upload.Key} (upload ${upload.UploadId})`);
        if (!page.IsTruncated) return keys;
        keyMarker = page.NextKeyMarker;
        uploadIdMarker = page.NextUploadIdMarker;
      }
    },
    async aws(args) {
      const { stdout, stderr } = await execFileAsync("aws", ["--endpoint-url", endpoint, ...args], {
        env: {
          PATH: process.env.PATH ?? "/usr/bin:/bin",
          HOME: process.env.HOME ?? "/tmp",
          AWS_ACCESS_KEY_ID: credentials.accessKeyId,
          AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey,
          AWS_DEFAULT_REGION: region,
          AWS_EC2_METADATA_DISABLED: "true",
          AWS_CONFIG_FILE: "/dev/null",
          AWS_SHARED_CREDENTIALS_FILE: "/dev/null",
          // Same reason as the SDK client: stores that do not speak the new default checksums.
          AWS_REQUEST_CHECKSUM_CALCULATION: "WHEN_REQUIRED",
          AWS_RESPONSE_CHECKSUM_VALIDATION: "WHEN_REQUIRED",
        },
        maxBuffer: 64 << 20,
      });
      return { stdout, stderr };
    },
    async stop() {
      admin.destroy();
      await stop();
    },
    ...(local ? { local } : {}),
  };
  return server;
}

async function startS3rver(): Promise<S3TestServer> {
  const child: ChildProcess = fork(CHILD, [], {
    cwd: ROOT,
    execArgv: ["--openssl-legacy-provider", "--import", "tsx"],
    stdio: ["ignore", "inherit", "inherit", "ipc"],
    env: { ...process.env, NODE_OPTIONS: "" },
  });
  const ready = await new Promise<{ port: number }>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error("s3rver did not start within 30 s"));
    }, 30_000);
    child.once("message", (m: { type: string; port: number }) => {
      clearTimeout(timer);
      if (m.type === "ready") resolve(m);
      else reject(new Error(`s3rver child said ${JSON.stringify(m)}`));
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`s3rver child exited before it was ready (code ${code}, signal ${signal})`));
    });
    child.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });

  let nextId = 1;
  const pending = new Map<number, (result: unknown) => void>();
  child.on("message", (m: { id?: number; result?: unknown }) => {
    if (m.id !== undefined) {
      pending.get(m.id)?.(m.result);
      pending.delete(m.id);
    }
  });
  const call = <T>(type: string, extra: Record<string, unknown> = {}) =>
    new Promise<T>((resolve, reject) => {
      if (!child.connected) return reject(new Error("s3rver child is gone"));
      const id = nextId++;
      pending.set(id, resolve as (r: unknown) => void);
      child.send({ id, type, ...extra });
    });
  const local: LocalControls = {
    requests: () => call<RequestRecord[]>("requests"),
    clearRequests: async () => {
      await call("clearRequests");
    },
    coldBucket: async (bucket) => {
      await call("coldBucket", { bucket });
    },
    completeRestores: () => call<number>("completeRestores"),
    advanceClock: async (ms) => {
      await call("advanceClock", { ms });
    },
    faults: async (faults) => {
      await call("faults", { faults });
    },
  };
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
    if (child.connected) child.send({ id: 0, type: "stop" });
    else child.kill("SIGTERM");
    await exited;
    clearTimeout(timer);
  };
  return makeServer(
    "s3rver",
    `http://127.0.0.1:${ready.port}`,
    { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" },
    "us-east-1",
    undefined,
    stop,
    local,
  );
}

async function startMinio(): Promise<S3TestServer> {
  const { GenericContainer, Wait } = await import("testcontainers");
  const user = "stowage";
  const password = randomBytes(12).toString("hex");
  const container = await new GenericContainer("minio/minio:latest")
    .withEnvironment({ MINIO_ROOT_USER: user, MINIO_ROOT_PASSWORD: password })
    .withCommand(["server", "/data"])
    .withExposedPorts(9000)
    .withWaitStrategy(Wait.forHttp("/minio/health/live", 9000))
    .start();
  return makeServer(
    "minio",
    `http://${container.getHost()}:${container.getMappedPort(9000)}`,
    { accessKeyId: user, secretAccessKey: password },
    "us-east-1",
    undefined,
    async () => {
      await container.stop();
    },
  );
}

/**
 * Starts (or connects to) the S3 server for a test file. With `local: true`, always the s3rver
 * stand-in, for tests that need its hooks (request log, Glacier restore semantics).
 */
export async function startS3Server(options: { local?: boolean } = {}): Promise<S3TestServer> {
  let server: S3TestServer;
  const env = process.env;
  if (!options.local && env.STOWAGE_TEST_S3_ENDPOINT) {
    const accessKeyId = env.STOWAGE_TEST_S3_ACCESS_KEY_ID;
    const secretAccessKey = env.STOWAGE_TEST_S3_SECRET_ACCESS_KEY;
    if (!accessKeyId || !secretAccessKey) {
      throw new Error(
        "STOWAGE_TEST_S3_ENDPOINT is set: set STOWAGE_TEST_S3_ACCESS_KEY_ID and STOWAGE_TEST_S3_SECRET_ACCESS_KEY too",
      );
    }
    server = makeServer(
      "external",
      env.STOWAGE_TEST_S3_ENDPOINT,
      { accessKeyId, secretAccessKey },
      env.STOWAGE_TEST_S3_REGION ?? "us-east-1",
      env.STOWAGE_TEST_S3_BUCKET,
      async () => undefined,
    );
  } else if (!options.local && containerRuntimePresent()) {
    server = await startMinio();
  } else {
    server = await startS3rver();
  }
  console.info(`[stowage tests] S3 server: ${server.kind} at ${server.endpoint}`);
  return server;
}
