import { describe, expect, it } from "vitest";
import type { Manifest } from "../../src/core/manifest.js";
import {
  passesValidation,
  type ValidationRules,
  validateBackups,
  validateManifest,
} from "../../src/policies/index.js";
import { fakeManifest } from "../support/retention-fixtures.js";

const now = new Date("2026-11-21T12:00:00Z");
const HASH = { constitutional_hash: "cdd01ef066bc6cf2" };
const good = fakeManifest({ startedAt: "2026-11-21T11:50:00Z", labels: HASH, plainBytes: 5000 });
const strict: ValidationRules = {
  requiredLabels: HASH,
  requireEncryption: true,
  requireCompression: true,
  minBytes: 1024,
  maxAge: "15m",
};

const rulesOf = (m: Manifest, rules: ValidationRules, at = now) =>
  validateManifest(m, rules, { now: at }).map((f) => f.rule);

describe("validateManifest", () => {
  it("finds nothing wrong with a backup that meets every rule", () => {
    expect(validateManifest(good, strict, { now })).toEqual([]);
    expect(validateManifest(good, {}, { now })).toEqual([]);
  });

  it("required labels: missing and wrong values, each named by field", () => {
    const missing = fakeManifest({ startedAt: "2026-11-21T11:50:00Z" });
    expect(validateManifest(missing, { requiredLabels: HASH }, { now })).toEqual([
      {
        rule: "required-label",
        kind: "compliance",
        severity: "error",
        field: "labels.constitutional_hash",
        message: expect.stringContaining("missing"),
      },
    ]);
    const wrong = fakeManifest({
      startedAt: "2026-11-21T11:50:00Z",
      labels: { constitutional_hash: "deadbeef" },
    });
    expect(
      validateManifest(wrong, { requiredLabels: { ...HASH, env: "prod" } }, { now }).map((f) => f.field),
    ).toEqual(["labels.constitutional_hash", "labels.env"]);
    // The value must match exactly: case and whitespace count.
    const spaced = fakeManifest({
      startedAt: "2026-11-21T11:50:00Z",
      labels: { constitutional_hash: " cdd01ef066bc6cf2" },
    });
    expect(rulesOf(spaced, { requiredLabels: HASH })).toEqual(["required-label"]);
  });

  it("encryption and compression required", () => {
    const plain = fakeManifest({ startedAt: "2026-11-21T11:50:00Z", encrypted: false, compressed: false });
    expect(rulesOf(plain, { requireEncryption: true, requireCompression: true })).toEqual([
      "encryption",
      "compression",
    ]);
    expect(rulesOf(plain, {})).toEqual([]);
    const gzOnly = fakeManifest({ startedAt: "2026-11-21T11:50:00Z", encrypted: false });
    expect(rulesOf(gzOnly, { requireEncryption: true, requireCompression: true })).toEqual(["encryption"]);
  });

  it("minimum size is checked on plain bytes, inclusive", () => {
    const small = fakeManifest({ startedAt: "2026-11-21T11:50:00Z", plainBytes: 1023, storedBytes: 5000 });
    expect(rulesOf(small, { minBytes: 1024 })).toEqual(["min-size"]);
    const exact = fakeManifest({ startedAt: "2026-11-21T11:50:00Z", plainBytes: 1024 });
    expect(rulesOf(exact, { minBytes: 1024 })).toEqual([]);
    const empty = fakeManifest({ startedAt: "2026-11-21T11:50:00Z", plainBytes: 0 });
    expect(rulesOf(empty, { minBytes: 1 })).toEqual(["min-size"]);
  });

  it("maximum age (RPO) is a freshness finding from the start time; exactly the RPO is still met", () => {
    const m = fakeManifest({ startedAt: "2026-11-21T11:45:00Z" });
    expect(rulesOf(m, { maxAge: "15m" })).toEqual([]);
    const late = validateManifest(m, { maxAge: "15m" }, { now: new Date(now.getTime() + 1) });
    expect(late).toEqual([
      {
        rule: "max-age",
        kind: "freshness",
        severity: "error",
        field: "startedAt",
        message: expect.any(String),
      },
    ]);
    // Freshness does not make a backup unusable.
    expect(passesValidation(late)).toBe(true);
  });

  it("schema version and timestamps are validity findings", () => {
    expect(rulesOf(good, { supportedVersions: [2] })).toEqual(["schema-version"]);
    const backwards = { ...good, finishedAt: "2026-11-21T11:49:59.999Z" };
    const findings = validateManifest(backwards, {}, { now });
    expect(findings.map((f) => [f.rule, f.kind, f.severity])).toEqual([["timestamps", "validity", "error"]]);
    expect(passesValidation(findings)).toBe(false);
  });

  it("a future-dated backup is a warning beyond the tolerance (clock skew), not a failure", () => {
    const ahead = fakeManifest({ startedAt: "2026-11-21T12:04:59Z" });
    expect(rulesOf(ahead, {})).toEqual([]);
    const far = fakeManifest({ startedAt: "2026-11-21T12:05:01Z" });
    const findings = validateManifest(far, {}, { now });
    expect(findings.map((f) => [f.rule, f.severity])).toEqual([["future-dated", "warning"]]);
    expect(passesValidation(findings)).toBe(true);
    expect(rulesOf(far, { futureTolerance: "1h" })).toEqual([]);
  });

  it("is pure: the same input gives the same findings, and the manifest is not touched", () => {
    const copy = structuredClone(good);
    const a = validateManifest(good, strict, { now: new Date("2027-01-01T00:00:00Z") });
    const b = validateManifest(good, strict, { now: new Date("2027-01-01T00:00:00Z") });
    expect(a).toEqual(b);
    expect(good).toEqual(copy);
  });

  it("names a bad rule or a bad now", () => {
    const issues = (fn: () => unknown) => {
      try {
        fn();
      } catch (error) {
        const e = error as { code: string; details: { issues: Array<{ path: string }> } };
        return [e.code, e.details.issues.map((i) => i.path)];
      }
      return undefined;
    };
    expect(issues(() => validateManifest(good, { maxAge: "15 minutes" }, { now }))).toEqual([
      "CONFIG_INVALID",
      ["maxAge"],
    ]);
    expect(
      issues(() => validateManifest(good, { minBytes: -1, requireEncryption: "yes" } as never, { now })),
    ).toEqual(["CONFIG_INVALID", ["requireEncryption", "minBytes"]]);
    expect(issues(() => validateManifest(good, { requiredLabel: HASH } as never, { now }))).toEqual([
      "CONFIG_INVALID",
      ["(options)"],
    ]);
    expect(issues(() => validateManifest(good, {}, { now: new Date("x") }))).toEqual([
      "CONFIG_INVALID",
      ["now"],
    ]);
  });
});

describe("validateBackups", () => {
  const manifests = [
    good, // valid, compliant
    fakeManifest({ startedAt: "2026-11-21T11:00:00Z", labels: HASH, plainBytes: 5000, suffix: 1 }), // stale but fine
    fakeManifest({ startedAt: "2026-11-21T10:00:00Z", plainBytes: 5000, suffix: 2 }), // valid, not compliant
    fakeManifest({ startedAt: "2026-11-21T09:00:00Z", labels: HASH, encrypted: false, suffix: 3 }), // invalid
    fakeManifest({ job: "logs", startedAt: "2026-11-21T11:59:00Z", labels: HASH, plainBytes: 5000 }),
  ];

  it("aggregates per job: total, valid, compliant and their rates, as the seeds' script prints them", () => {
    const report = validateBackups(manifests, strict, {
      now,
      invalid: [{ key: "app-db/2026/11/20/broken.manifest.json", error: new Error("not JSON") }],
    });
    expect(report).toMatchObject({
      now: "2026-11-21T12:00:00.000Z",
      total: 6,
      valid: 4,
      compliant: 3,
      validityRate: 4 / 6,
      complianceRate: 3 / 6,
    });
    const [appDb, logs] = report.jobs;
    expect(appDb).toMatchObject({
      job: "app-db",
      total: 5,
      valid: 3,
      compliant: 2,
      validityRate: 3 / 5,
      complianceRate: 2 / 5,
      invalidManifests: ["app-db/2026/11/20/broken.manifest.json"],
    });
    expect(logs).toMatchObject({
      job: "logs",
      total: 1,
      valid: 1,
      compliant: 1,
      validityRate: 1,
      complianceRate: 1,
      backups: [],
    });
    // Only backups with findings are listed, newest first; the stale ones carry max-age.
    expect(appDb!.backups.map((b) => [b.startedAt, b.findings.map((f) => f.rule)])).toEqual([
      ["2026-11-21T11:00:00.000Z", ["max-age"]],
      ["2026-11-21T10:00:00.000Z", ["required-label", "max-age"]],
      ["2026-11-21T09:00:00.000Z", ["encryption", "min-size", "max-age"]],
    ]);
  });

  it("has null rates when there are no backups", () => {
    expect(validateBackups([], {}, { now })).toEqual({
      now: "2026-11-21T12:00:00.000Z",
      total: 0,
      valid: 0,
      compliant: 0,
      validityRate: null,
      complianceRate: null,
      jobs: [],
    });
  });
});

describe("requiredRecipients (issue 9: encrypted to the offline recovery key)", () => {
  it("passes only when every required fingerprint is among the artifact's recipients", async () => {
    const { aes256gcm, backup, bytesSource, generateKeyPair, keyFingerprint, memorySink, validateManifest } =
      await import("../../src/index.js");
    const recovery = generateKeyPair();
    const service = generateKeyPair();
    const rawKey = Buffer.alloc(32, 7);
    const sink = memorySink();
    const both = await backup({
      job: "r",
      source: bytesSource({ data: "x" }),
      sink,
      transforms: [aes256gcm({ recipients: [service.recipient, recovery.recipient] })],
    });
    const serviceOnly = await backup({
      job: "r",
      source: bytesSource({ data: "x" }),
      sink,
      transforms: [aes256gcm({ recipients: [service.recipient] })],
    });
    const raw = await backup({
      job: "r",
      source: bytesSource({ data: "x" }),
      sink,
      transforms: [aes256gcm({ key: rawKey })],
    });
    const now = { now: new Date() };
    const rules = { requiredRecipients: [recovery.id] };
    expect(validateManifest(both, rules, now)).toEqual([]);
    expect(validateManifest(serviceOnly, rules, now).map((f) => [f.rule, f.kind])).toEqual([
      ["recipient", "compliance"],
    ]);
    expect(validateManifest(raw, { requiredRecipients: [keyFingerprint(rawKey)] }, now)).toEqual([]);
    expect(validateManifest(raw, rules, now).map((f) => f.rule)).toEqual(["recipient"]);
  });
});
