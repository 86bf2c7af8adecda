/**
 * Three scheduler processes (separate Node processes, as three replicas of a service are) share
 * one lock of each kind against a real server: the Kubernetes API test server (Leases), a real
 * PostgreSQL (advisory locks) and the S3 test server (conditional PUTs). Over many short ticks each
 * tick runs exactly once; a holder killed with SIGKILL mid-run commits nothing and the next tick
 * runs on another replica; a holder paused (SIGSTOP) past its ttl and resumed does not commit. The
 * shared sink and the shared audit trail are what is asserted on.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { listManifests } from "../../src/core/catalog.js";
import { readAuditLog } from "../../src/jobs/audit.js";
import { filesystemSink } from "../../src/sinks/filesystem.js";
import { KubeApiServer } from "../support/kube-api-server.js";
import type { ReplicaConfig } from "../support/lock-replica.js";
import { startPostgres, type TestPostgres } from "../support/postgres.js";
import { type S3TestServer, startS3Server } from "../support/s3-server.js";

const REPLICA = fileURLToPath(new URL("../support/lock-replica.ts", import.meta.url));
const TICK_MS = 3_000;

interface Said {
  replica: string;
  type: string;
  scheduledFor?: string;
  reason?: string;
  errors?: string[];
  key?: string;
  fencingToken?: number;
  at: number;
}

class Replica {
  readonly said: Said[] = [];
  readonly exited: Promise<void>;
  private readonly child: ChildProcess;

  constructor(
    readonly name: string,
    config: ReplicaConfig,
    private readonly all: Said[],
  ) {
    // Node itself with tsx's loader (not the tsx binary, which would run a grandchild): the pid
    // the test signals is the replica's own.
    this.child = spawn(process.execPath, ["--import", "tsx", REPLICA], {
      env: {
        ...process.env,
        STOWAGE_LOCK_REPLICA: JSON.stringify(config),
        AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "true",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let buffered = "";
    this.child.stdout!.on("data", (chunk: Buffer) => {
      buffered += chunk.toString("utf8");
      for (let nl = buffered.indexOf("\n"); nl >= 0; nl = buffered.indexOf("\n")) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (!line.startsWith("{")) continue;
        const said = { ...(JSON.parse(line) as Omit<Said, "at">), at: Date.now() };
        this.said.push(said);
        this.all.push(said);
      }
    });
    let errors = "";
    this.child.stderr!.on("data", (chunk: Buffer) => {
      errors = (errors + chunk.toString("utf8")).slice(-4000);
    });
    this.exited = new Promise((resolve) =>
      this.child.once("exit", (code, signal) => {
        if (code !== 0 && signal === null) console.error(`replica ${name} exited ${code}: ${errors}`);
        resolve();
      }),
    );
  }

  signal(signal: NodeJS.Signals): void {
    this.child.kill(signal);
  }

  /** The tick this replica started last. */
  lastStarted(): string {
    return this.said.filter((s) => s.type === "started").at(-1)!.scheduledFor!;
  }

  lastToken(): number {
    return this.said.filter((s) => s.type === "acquired").at(-1)!.fencingToken!;
  }
}

async function waitFor<T>(what: string, probe: () => T | undefined, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = probe();
    if (found !== undefined && found !== false) return found;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The scenario every lock kind goes through; `lockConfig` says how to reach its engine. */
async function threeReplicas(kind: ReplicaConfig["kind"], lockConfig: Partial<ReplicaConfig>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), `stowage-locks-${kind}-`));
  const sinkRoot = join(dir, "sink");
  const auditPath = join(dir, "audit.jsonl");
  const all: Said[] = [];
  const replicas = ["r1", "r2", "r3"].map(
    (name) =>
      new Replica(
        name,
        {
          replica: name,
          kind,
          sinkRoot,
          auditPath,
          schedule: "*/3 * * * * *",
          ttl: "2s",
          runMs: 700,
          ...lockConfig,
        },
        all,
      ),
  );
  const byName = (name: string) => replicas.find((r) => r.name === name)!;
  try {
    await waitFor(
      "three replicas ready",
      () => replicas.every((r) => r.said.some((s) => s.type === "ready")),
      60_000,
    );
    const readyAt = Date.now();
    const succeeded = () => all.filter((s) => s.type === "succeeded");

    // 1. Several ticks with all three up.
    await waitFor(
      "four ticks run",
      () =>
        new Set(
          succeeded()
            .filter((s) => s.at > readyAt)
            .map((s) => s.scheduledFor),
        ).size >= 4,
      40_000,
    );

    // 2. The holder is killed mid-run (while its source is still streaming).
    const markKill = Date.now();
    const opened = await waitFor("a run in progress", () =>
      all.find((s) => s.type === "open" && s.at > markKill),
    );
    const victim = byName(opened.replica);
    victim.signal("SIGKILL");
    await victim.exited;
    const killedTick = victim.lastStarted();
    const killedToken = victim.lastToken();
    const next = await waitFor("the tick after the kill", () =>
      succeeded().find((s) => Date.parse(s.scheduledFor!) > Date.parse(killedTick)),
    );
    expect(next.replica).not.toBe(victim.name);
    expect(Date.parse(next.scheduledFor!) - Date.parse(killedTick)).toBe(TICK_MS);

    // 3. A holder is paused past its ttl mid-run, then resumed: it must not commit.
    const markPause = Date.now();
    const opened2 = await waitFor("a run in progress", () =>
      all.find((s) => s.type === "open" && s.at > markPause && s.replica !== victim.name),
    );
    const paused = byName(opened2.replica);
    paused.signal("SIGSTOP");
    const pausedTick = paused.lastStarted();
    const pausedToken = paused.lastToken();
    await new Promise((r) => setTimeout(r, 2 * TICK_MS + 500));
    // Meanwhile the remaining replica ran the ticks the paused one could not.
    expect(
      succeeded().some(
        (s) => s.replica !== paused.name && Date.parse(s.scheduledFor!) > Date.parse(pausedTick),
      ),
    ).toBe(true);
    paused.signal("SIGCONT");
    const outcome = await waitFor("the paused run's outcome", () =>
      paused.said.find(
        (s) => (s.type === "failed" || s.type === "succeeded") && s.scheduledFor === pausedTick,
      ),
    );
    expect(outcome.type).toBe("failed");
    expect(outcome.errors).toContain("LOCK_LOST");

    const stopAt = Date.now();
    for (const r of replicas) if (r !== victim) r.signal("SIGTERM");
    await Promise.all(replicas.map((r) => r.exited));

    // Each tick ran at most once, and every tick from the first to shortly before the stop ran
    // exactly once, except the two whose holder was killed or paused. Those two committed nothing
    // from their holder; a replica whose attempt at the same tick came late (a loaded host, still
    // within the tick's hold) may have found the lease free and run it: that is the work moving
    // to a live replica, under a later fencing token, not a second run.
    const runs = succeeded();
    const ticks = runs.map((s) => s.scheduledFor!);
    expect(new Set(ticks).size).toBe(ticks.length);
    const first = Math.min(...ticks.map(Date.parse));
    for (let t = first; t < stopAt - 2 * TICK_MS; t += TICK_MS) {
      const tick = new Date(t).toISOString();
      if (tick === killedTick || tick === pausedTick) {
        const [holder, token] = tick === killedTick ? [victim.name, killedToken] : [paused.name, pausedToken];
        const takenOver = runs.find((s) => s.scheduledFor === tick);
        if (takenOver) {
          expect(takenOver.replica, tick).not.toBe(holder);
          expect(takenOver.fencingToken!, tick).toBeGreaterThan(token);
        }
        continue;
      }
      expect(ticks, `tick ${tick} runs once`).toContain(tick);
    }
    // Which replicas succeeded is not asserted: one replica may win every tick it is up for, and
    // the two that lost their runs (killed, paused) may have had no others. That the work moved is
    // asserted above: the tick after the kill and the ticks during the pause ran elsewhere.

    // The sink holds exactly what the successful runs committed, each under its own lease.
    const sink = filesystemSink({ root: sinkRoot });
    const { manifests, invalid } = await listManifests(sink, { job: "app-db" });
    expect(invalid).toEqual([]);
    expect(manifests.map((m) => m.artifact.key).sort()).toEqual(runs.map((s) => s.key).sort());
    for (const m of manifests) {
      const run = runs.find((s) => s.key === m.artifact.key)!;
      expect(m.lease).toMatchObject({
        lock: kind,
        name: "app-db",
        holder: run.replica,
        fencingToken: run.fencingToken,
      });
      expect(m.source.details.replica).toBe(run.replica);
    }
    const tokens = manifests.map((m) => m.lease!.fencingToken);
    expect(
      manifests.some((m) => m.lease!.fencingToken === killedToken || m.lease!.fencingToken === pausedToken),
    ).toBe(false);
    // Fencing tokens grow with time: a later holder's token is always larger.
    expect([...tokens].sort((a, b) => a - b)).toEqual(tokens);
    // Nothing half-written is visible: every listed artifact has its manifest beside it.
    const listed: string[] = [];
    for await (const info of sink.list("app-db/")) listed.push(info.key);
    const artifacts = listed.filter((k) => !k.endsWith(".manifest.json"));
    expect(artifacts.sort()).toEqual(manifests.map((m) => m.artifact.key).sort());

    // The audit trail says which replica ran each backup, and records the paused one's refusal.
    const audit = await readAuditLog({ path: auditPath });
    const ok = audit.filter((e) => e.action === "backup" && e.result === "ok");
    expect(ok.map((e) => e.key).sort()).toEqual(manifests.map((m) => m.artifact.key).sort());
    for (const e of ok) {
      const m = manifests.find((x) => x.artifact.key === e.key)!;
      expect(e.replica).toBe(m.lease!.holder);
      expect(e.fencingToken).toBe(m.lease!.fencingToken);
    }
    expect(audit).toContainEqual(
      expect.objectContaining({
        action: "backup",
        result: "failed",
        error: "LOCK_LOST",
        replica: paused.name,
      }),
    );
  } finally {
    for (const r of replicas) {
      r.signal("SIGCONT");
      r.signal("SIGKILL");
    }
    await Promise.all(replicas.map((r) => r.exited));
    await rm(dir, { recursive: true, force: true });
  }
}

describe("three replicas on a Kubernetes Lease", () => {
  let server: KubeApiServer;
  beforeAll(async () => {
    server = await KubeApiServer.start();
    server.put({ apiVersion: "v1", kind: "Namespace", metadata: { name: "shop" } });
  });
  afterAll(() => server?.close());

  it("runs each tick once, survives SIGKILL and SIGSTOP of the holder", async () => {
    await threeReplicas("kubernetes", { kubernetes: { url: server.url, namespace: "shop" } });
    // The Lease stays, released (no holder), its transitions counted on.
    const lease = server.get("leases.coordination.k8s.io", "shop", "stowage-app-db");
    const spec = (lease?.spec ?? {}) as { holderIdentity?: string; leaseTransitions?: number };
    expect(spec.holderIdentity).toBeUndefined();
    expect(spec.leaseTransitions).toBeGreaterThan(4);
  }, 180_000);
});

describe("three replicas on a PostgreSQL advisory lock", () => {
  let pg: TestPostgres;
  beforeAll(async () => {
    pg = await startPostgres();
  }, 120_000);
  afterAll(() => pg?.stop());

  it("runs each tick once, survives SIGKILL and SIGSTOP of the holder", async () => {
    await threeReplicas("postgres", { postgres: { connection: pg.connection() } });
  }, 180_000);
});

describe("three replicas on an S3 lease object", () => {
  let s3: S3TestServer;
  beforeAll(async () => {
    s3 = await startS3Server();
  }, 60_000);
  afterAll(() => s3?.stop());

  it("runs each tick once, survives SIGKILL and SIGSTOP of the holder", async () => {
    const { bucket, prefix } = await s3.scratch();
    await threeReplicas("s3", { s3: { clientConfig: s3.clientConfig(), bucket, prefix: `${prefix}locks/` } });
  }, 180_000);
});
