import type { Manifest } from "../../src/core/manifest.js";

const pad = (n: number, w = 2) => String(n).padStart(w, "0");

/** A backup id for a start time; `suffix` (0..2^32-1) orders equal times (larger sorts newer). */
export function idFor(at: Date, suffix = 0): string {
  const stamp =
    `${at.getUTCFullYear()}${pad(at.getUTCMonth() + 1)}${pad(at.getUTCDate())}T` +
    `${pad(at.getUTCHours())}${pad(at.getUTCMinutes())}${pad(at.getUTCSeconds())}${pad(at.getUTCMilliseconds(), 3)}Z`;
  return `${stamp}-${suffix.toString(16).padStart(8, "0")}`;
}

export interface FakeManifestInput {
  job?: string;
  startedAt: string | Date;
  suffix?: number;
  sink?: string;
  labels?: Record<string, string>;
  retainUntil?: string;
  storedBytes?: number;
  plainBytes?: number;
  durationMs?: number;
  encrypted?: boolean;
  compressed?: boolean;
}

/** A well-formed manifest for policy tests (no artifact exists anywhere). */
export function fakeManifest(input: FakeManifestInput): Manifest {
  const started = new Date(input.startedAt);
  const job = input.job ?? "app-db";
  const id = idFor(started, input.suffix ?? 0);
  const key = `${job}/${id.slice(0, 4)}/${id.slice(4, 6)}/${id.slice(6, 8)}/${id}.sql.gz`;
  const transforms: Manifest["transforms"] = [];
  if (input.compressed !== false) transforms.push({ name: "gzip", role: "compression", level: 6 });
  if (input.encrypted !== false)
    transforms.push({ name: "aes-256-gcm", role: "encryption", keyId: "00112233" });
  return {
    version: 1,
    id,
    job,
    startedAt: started.toISOString(),
    finishedAt: new Date(started.getTime() + (input.durationMs ?? 1000)).toISOString(),
    source: { kind: "bytes", name: "test", details: {} },
    artifact: {
      sink: input.sink ?? "filesystem",
      key,
      location: `file:///backups/${key}`,
      bytes: input.storedBytes ?? 100,
      sha256: "0".repeat(64),
    },
    content: { bytes: input.plainBytes ?? 1000, sha256: "1".repeat(64), contentType: "application/sql" },
    transforms,
    labels: input.labels ?? {},
    ...(input.retainUntil ? { retainUntil: input.retainUntil } : {}),
    generator: { name: "stowage", version: "0.0.0-test" },
  };
}
