import type { z } from "zod";
import { StowageError } from "../core/errors.js";
import { type Manifest, SUPPORTED_MANIFEST_VERSIONS } from "../core/manifest.js";
import { durationSchema, lazySchema, loadZod, parseDuration, parseOptionsOnce } from "../core/options.js";
import { signatureProblem, type VerifyKeyring, verifyKeyring } from "../core/signing.js";
import type { Agrees, Assert } from "../core/type-checks.js";
import { chainFindings } from "./chain.js";
import { chainFindings as brokenChainFindings } from "./incremental-chains.js";
import { epochOf } from "./instant.js";
import { type WalGapFinding, type WalInput, walGapFindings } from "./wal-report.js";

/**
 * What a backup must satisfy. Every rule is optional; the structural checks (schema version,
 * timestamps, future dates) always run.
 */
export const validationRulesSchema = lazySchema((z) =>
  z
    .object({
      /**
       * Labels every backup must carry, with these exact values (the seeds' constitutional hash:
       * `{ constitutional_hash: "cdd01ef066bc6cf2" }`).
       */
      requiredLabels: z.record(z.string().min(1), z.string()).optional(),
      /** The backup must have gone through an encryption transform. @default false */
      requireEncryption: z.boolean().default(false),
      /**
       * Recipients every backup must be encrypted to, by fingerprint (`recipientFingerprint(recipient)`
       * or `keyFingerprint(key)`), e.g. the offline recovery key. Implies encryption.
       */
      requiredRecipients: z
        .array(z.string().regex(/^[0-9a-f]{16}$/, "a 16-hex-digit fingerprint"))
        .optional(),
      /** The backup must have gone through a compression transform. @default false */
      requireCompression: z.boolean().default(false),
      /** The smallest plausible backup, in plain (uncompressed, unencrypted) bytes. */
      minBytes: z.number().int().nonnegative().optional(),
      /**
       * The recovery point objective: a backup older than this (start time to `now`) breaches it.
       * A "freshness" rule: it says the job is late, not that the backup is bad.
       */
      maxAge: durationSchema.optional(),
      /** Manifest schema versions accepted. @default SUPPORTED_MANIFEST_VERSIONS */
      supportedVersions: z.array(z.number().int().positive()).min(1).optional(),
      /** How far in the future a start time may lie before it is reported (clock skew). @default "5m" */
      futureTolerance: durationSchema.default("5m"),
      /**
       * Every backup's manifest must be signed (rule `signature`). With `verifyKeys`, by one of them,
       * over the manifest as it is; without, the signature's presence alone is checked. @default false
       */
      requireSignature: z.boolean().default(false),
      /**
       * Public keys (`stowage-verify1:…`) that may sign. Given, a manifest that is unsigned, signed
       * by another key or changed after signing fails rule `signature`, as with `requireSignature`.
       */
      verifyKeys: z.array(z.string()).optional(),
      /**
       * `validateBackups` follows each job's chain (`previous`): a predecessor missing from the middle
       * is a `chain-gap` warning (a deleted backup, or retention that thinned the middle); a
       * predecessor whose manifest is not the one its successor chained to, or a chain that runs
       * backwards or repeats an id, is a `chain-replay` error. @default false
       */
      chain: z.boolean().default(false),
    })
    .strict(),
);
/** The rules `validateManifest` checks a manifest against. */
export interface ValidationRules {
  /**
   * Labels every backup must carry, with these exact values (the seeds' constitutional hash:
   * `{ constitutional_hash: "cdd01ef066bc6cf2" }`).
   */
  requiredLabels?: Record<string, string>;
  /** The backup must have gone through an encryption transform. @default false */
  requireEncryption?: boolean;
  /**
   * Recipients every backup must be encrypted to, by fingerprint (`recipientFingerprint(recipient)`
   * or `keyFingerprint(key)`), e.g. the offline recovery key. Implies encryption.
   */
  requiredRecipients?: string[];
  /** The backup must have gone through a compression transform. @default false */
  requireCompression?: boolean;
  /** The smallest plausible backup, in plain (uncompressed, unencrypted) bytes. */
  minBytes?: number;
  /**
   * The recovery point objective: a backup older than this (start time to `now`) breaches it.
   * A "freshness" rule: it says the job is late, not that the backup is bad.
   */
  maxAge?: string;
  /** Manifest schema versions accepted. @default SUPPORTED_MANIFEST_VERSIONS */
  supportedVersions?: number[];
  /** How far in the future a start time may lie before it is reported (clock skew). @default "5m" */
  futureTolerance?: string;
  /**
   * Every backup's manifest must be signed (rule `signature`). With `verifyKeys`, by one of them,
   * over the manifest as it is; without, the signature's presence alone is checked. @default false
   */
  requireSignature?: boolean;
  /**
   * Public keys (`stowage-verify1:…`) that may sign. Given, a manifest that is unsigned, signed
   * by another key or changed after signing fails rule `signature`, as with `requireSignature`.
   */
  verifyKeys?: string[];
  /**
   * `validateBackups` follows each job's chain (`previous`): a predecessor missing from the middle
   * is a `chain-gap` warning; a predecessor whose manifest is not the one its successor chained
   * to, or a chain that runs backwards or repeats an id, is a `chain-replay` error. @default false
   */
  chain?: boolean;
}
type _ValidationRulesAgrees = Assert<Agrees<ValidationRules, z.input<typeof validationRulesSchema>>>;
type ParsedRules = z.output<typeof validationRulesSchema>;

/**
 * What a finding is about. `validity`: the backup itself is unusable or unsound (schema version,
 * timestamps, size, missing encryption or compression); `compliance`: it lacks what the
 * organisation requires (labels); `freshness`: it is older than the RPO, which says the job is
 * late, not that this backup is bad.
 */
export type FindingKind = "validity" | "compliance" | "freshness";

/** Rule ids, stable for programs and dashboards. */
export type RuleId =
  | "schema-version"
  | "timestamps"
  | "future-dated"
  | "required-label"
  | "encryption"
  | "recipient"
  | "compression"
  | "min-size"
  | "max-age"
  | "signature"
  | "chain-gap"
  | "chain-replay"
  /** A differential or incremental whose parents cannot be followed to a full (validateBackups). */
  | "chain"
  /** A hole in a timeline's archived WAL (validateBackups, given `wal`): recovery stops there. */
  | "wal-gap";

/** One rule's verdict on one backup. Only failures are reported; no finding means the rule passed. */
export interface Finding {
  /** The rule that found it. */
  rule: RuleId;
  /** What it concerns: the backup's validity, its compliance with policy, or its freshness. */
  kind: FindingKind;
  /** `error` fails the backup; `warning` is reported and does not. */
  severity: "error" | "warning";
  /** A sentence for people. */
  message: string;
  /** The manifest field the finding is about, e.g. `labels.constitutional_hash`. */
  field?: string;
}

const KIND: Record<RuleId, FindingKind> = {
  "schema-version": "validity",
  timestamps: "validity",
  "future-dated": "validity",
  encryption: "validity",
  compression: "validity",
  "min-size": "validity",
  "required-label": "compliance",
  recipient: "compliance",
  "max-age": "freshness",
  signature: "validity",
  "chain-gap": "compliance",
  "chain-replay": "validity",
  chain: "validity",
  "wal-gap": "validity",
};

/** Options for {@link validateManifest} and {@link validateBackups}. */
export interface ValidateOptions {
  /** The reference time for age rules. The policies never read the clock. */
  now: Date;
}

/** Rules after parsing, with durations in milliseconds; parse once, check many manifests. */
export interface CompiledRules {
  rules: ParsedRules;
  maxAgeMs: number | undefined;
  futureToleranceMs: number;
  versions: readonly number[];
  /** The parsed `verifyKeys`, when given. */
  ring: VerifyKeyring | undefined;
}

/**
 * The rules schema nested under an option name, built once per name: zod compiles a schema on its
 * first parse, and a schema built anew on every call (every retention plan, every status) spent
 * more time compiling than checking. Names come from this library's code, so the map stays small.
 */
const nestedRules = new Map<string, z.ZodType<Record<string, ParsedRules>>>();
function rulesUnder(option: string) {
  let schema = nestedRules.get(option);
  if (!schema) {
    schema = loadZod().object({ [option]: validationRulesSchema }) as z.ZodType<Record<string, ParsedRules>>;
    nestedRules.set(option, schema);
  }
  return schema;
}

/** Compiled rules by their parsed form, which {@link parseOptionsOnce} hands out once per content. */
const compiled = new WeakMap<object, CompiledRules>();

/**
 * @internal Parses rules once per distinct content (a job validates and plans with the same rules
 * on every run); then many manifests are checked. @throws {CONFIG_INVALID}
 */
export function compileRules(
  rules: ValidationRules | undefined,
  where: string,
  option?: string,
): CompiledRules {
  // Inside another function's options, a bad rule is named with its path: "rules.maxAge".
  const parsed = option
    ? parseOptionsOnce(rulesUnder(option), { [option]: rules ?? {} }, where)[option]!
    : parseOptionsOnce(validationRulesSchema, rules ?? {}, where);
  const known = compiled.get(parsed);
  if (known) return known;
  const c: CompiledRules = {
    rules: parsed,
    maxAgeMs: parsed.maxAge === undefined ? undefined : parseDuration(parsed.maxAge, "maxAge"),
    futureToleranceMs: parseDuration(parsed.futureTolerance, "futureTolerance"),
    versions: parsed.supportedVersions ?? SUPPORTED_MANIFEST_VERSIONS,
    ring: verifyKeyring(parsed.verifyKeys, option ? `${option}.verifyKeys` : "verifyKeys"),
  };
  compiled.set(parsed, c);
  return c;
}

/** @internal The reference time as epoch milliseconds. @throws {CONFIG_INVALID} */
export function nowMs(now: unknown, where: string): number {
  const ms =
    now instanceof Date
      ? now.getTime()
      : typeof now === "string" || typeof now === "number"
        ? new Date(now).getTime()
        : Number.NaN;
  if (!Number.isFinite(ms)) {
    throw new StowageError("CONFIG_INVALID", `${where}: invalid options: now: expected a valid Date`, {
      details: { issues: [{ path: "now", problem: "expected a valid Date" }] },
    });
  }
  return ms;
}

const SIGNATURE_MESSAGES = {
  unsigned: "not signed",
  "unknown-key": "signed by a key that is not among the verify keys",
  "bad-signature": "the signature does not match: the manifest was changed after it was signed",
} as const;

function check(manifest: Manifest, c: CompiledRules, now: number): Finding[] {
  const findings: Finding[] = [];
  const add = (rule: RuleId, message: string, field?: string, severity: "error" | "warning" = "error") =>
    findings.push({ rule, kind: KIND[rule], severity, message, ...(field ? { field } : {}) });
  const { rules } = c;

  if (!c.versions.includes(manifest.version)) {
    add(
      "schema-version",
      `manifest version ${manifest.version} is not supported (accepted: ${c.versions.join(", ")})`,
      "version",
    );
  }
  const started = epochOf(manifest.startedAt);
  const finished = epochOf(manifest.finishedAt);
  if (!(finished >= started)) {
    add(
      "timestamps",
      `finished (${manifest.finishedAt}) before it started (${manifest.startedAt})`,
      "finishedAt",
    );
  }
  if (started - now > c.futureToleranceMs) {
    add(
      "future-dated",
      `started ${manifest.startedAt}, after now: the clock of the host that made it may be wrong`,
      "startedAt",
      "warning",
    );
  }
  for (const [label, expected] of Object.entries(rules.requiredLabels ?? {})) {
    const actual = manifest.labels[label];
    if (actual === undefined) {
      add(
        "required-label",
        `label ${label} is missing (required: ${JSON.stringify(expected)})`,
        `labels.${label}`,
      );
    } else if (actual !== expected) {
      add(
        "required-label",
        `label ${label} is ${JSON.stringify(actual)}, required ${JSON.stringify(expected)}`,
        `labels.${label}`,
      );
    }
  }
  if (rules.requireEncryption && !manifest.transforms.some((t) => t.role === "encryption")) {
    add("encryption", "not encrypted: no encryption transform was applied", "transforms");
  }
  if (rules.requiredRecipients) {
    // Fingerprints an encryption record names: v2 `recipients[].id`, v1 `keyId`.
    const named = new Set<string>();
    for (const t of manifest.transforms.filter((t) => t.role === "encryption")) {
      if (typeof t.keyId === "string") named.add(t.keyId);
      if (Array.isArray(t.recipients)) {
        for (const r of t.recipients as Array<{ id?: unknown }>)
          if (typeof r?.id === "string") named.add(r.id);
      }
    }
    for (const id of rules.requiredRecipients) {
      if (!named.has(id)) add("recipient", `not encrypted to required recipient ${id}`, "transforms");
    }
  }
  if (rules.requireCompression && !manifest.transforms.some((t) => t.role === "compression")) {
    add("compression", "not compressed: no compression transform was applied", "transforms");
  }
  if (rules.minBytes !== undefined && manifest.content.bytes < rules.minBytes) {
    add(
      "min-size",
      `${manifest.content.bytes} plain bytes, fewer than the minimum ${rules.minBytes}`,
      "content.bytes",
    );
  }
  if (c.ring) {
    const problem = signatureProblem(manifest, c.ring);
    if (problem) add("signature", SIGNATURE_MESSAGES[problem], "signature");
  } else if (rules.requireSignature && !manifest.signature) {
    add("signature", SIGNATURE_MESSAGES.unsigned, "signature");
  }
  if (c.maxAgeMs !== undefined && now - started > c.maxAgeMs) {
    add("max-age", `older than ${rules.maxAge}: started ${manifest.startedAt}`, "startedAt");
  }
  return findings;
}

/** @internal Findings of one manifest with compiled rules (no option parsing). */
export function findingsOf(manifest: Manifest, c: CompiledRules, now: number): Finding[] {
  return check(manifest, c, now);
}

/**
 * True when the findings leave the backup usable as a restore point: no `error` of kind
 * `validity` or `compliance`. Freshness (`max-age`) does not count: a backup does not become bad
 * by getting old, and retention must still protect the newest one when the job has stopped.
 */
export function passesValidation(findings: readonly Finding[]): boolean {
  return !findings.some((f) => f.severity === "error" && f.kind !== "freshness");
}

/**
 * Checks one manifest against the rules. Pure: `now` is an argument, nothing is read.
 *
 * @returns the failed rules (empty when every rule passes), each with a stable `rule` id, a
 *   `kind` (validity / compliance / freshness), a `severity` and a message a person can act on.
 * @throws {CONFIG_INVALID} for bad rules or an invalid `now`, naming the option.
 * @example
 * validateManifest(manifest, { requiredLabels: { constitutional_hash: "cdd01ef066bc6cf2" },
 *   requireEncryption: true, maxAge: "15m" }, { now: new Date() })
 * // [] or [{ rule: "required-label", kind: "compliance", severity: "error", field: "labels.constitutional_hash", ... }]
 */
export function validateManifest(
  manifest: Manifest,
  rules: ValidationRules,
  options: ValidateOptions,
): Finding[] {
  return check(manifest, compileRules(rules, "validateManifest"), nowMs(options?.now, "validateManifest"));
}

/** The validation figures of one job (or of all jobs together). */
export interface ValidationSummary {
  /** Backups seen, counting those whose manifest could not be read. */
  total: number;
  /** Backups with no validity error (schema version, timestamps, size, encryption, compression). */
  valid: number;
  /** Valid backups that also meet every compliance rule (required labels). */
  compliant: number;
  /** valid / total; `null` when there are no backups. */
  validityRate: number | null;
  /** compliant / total; `null` when there are no backups. */
  complianceRate: number | null;
}

/** One backup's findings. */
export interface BackupFindings {
  /** The backup's id. */
  id: string;
  /** Its artifact's key. */
  key: string;
  /** When it started (ISO 8601). */
  startedAt: string;
  /** What the rules found. */
  findings: Finding[];
}

/** One job's validation: its counts, and the backups with findings. */
export interface JobValidation extends ValidationSummary {
  /** The job's name. */
  job: string;
  /** Manifests of this job that could not be read or parsed (by key). */
  invalidManifests: string[];
  /** Only the backups that have findings, newest first. */
  backups: BackupFindings[];
  /** For a job whose WAL was given (`options.wal`): the archived files and the gaps in each timeline. */
  wal?: { files: number; gaps: WalGapFinding[] };
}

/** What `validateBackups` returns: counts over every job, and each job's. */
export interface ValidationReport extends ValidationSummary {
  /** The report's `now` (ISO 8601). */
  now: string;
  /** One entry a job. */
  jobs: JobValidation[];
}

/** An unreadable manifest, as `listManifests` reports it in `invalid`. */
export interface InvalidManifestEntry {
  /** The manifest's key. */
  key: string;
  /** Why it could not be read: a StowageError, or anything with `code` and `message`. */
  error?: { code?: string; message?: string } | unknown;
}

export interface ValidateBackupsOptions extends ValidateOptions {
  /** `listManifests(...).invalid`: counted as backups that are neither valid nor compliant. */
  invalid?: readonly InvalidManifestEntry[];
  /**
   * The WAL archive of each job that archives WAL (`{ "app-db": { files: await listArchivedWal(sink,
   * "app-db") } }`): its gaps are reported in the job's `wal.gaps`, rule `wal-gap`.
   */
  wal?: Readonly<Record<string, WalInput>>;
}

const rate = (n: number, total: number) => (total === 0 ? null : n / total);

/** @internal The job an invalid manifest's key belongs to (keys start with `<job>/`). */
export function jobOfKey(key: string): string {
  const slash = key.indexOf("/");
  return slash > 0 ? key.slice(0, slash) : "(unknown)";
}

/**
 * Validates every backup and aggregates per job: total, valid, compliant, validity rate and
 * compliance rate — the figures the seeds' validation script prints. Freshness findings
 * (`maxAge`) are listed but do not make a backup invalid or non-compliant. A differential or
 * incremental whose chain cannot be followed to its full among `manifests` gets a `chain`
 * finding (validity, error) naming the missing link. Given a job's WAL archive (`options.wal`),
 * each hole in a timeline's sequence is a `wal-gap` finding in the job's `wal.gaps`, naming the
 * first missing segment (recovery cannot replay past it).
 *
 * @throws {CONFIG_INVALID} for bad rules or an invalid `now`.
 * @example
 * const report = validateBackups(manifests, { requiredLabels: { constitutional_hash: "cdd01ef066bc6cf2" } },
 *   { now: new Date(), invalid: listing.invalid });
 * console.log(`${report.compliant}/${report.total} compliant`);
 */
export function validateBackups(
  manifests: readonly Manifest[],
  rules: ValidationRules,
  options: ValidateBackupsOptions,
): ValidationReport {
  const c = compileRules(rules, "validateBackups");
  const now = nowMs(options?.now, "validateBackups");
  const jobs = new Map<string, JobValidation>();
  const jobFor = (job: string) => {
    let entry = jobs.get(job);
    if (!entry) {
      entry = {
        job,
        total: 0,
        valid: 0,
        compliant: 0,
        validityRate: null,
        complianceRate: null,
        invalidManifests: [],
        backups: [],
      };
      jobs.set(job, entry);
    }
    return entry;
  };
  const chained = c.rules.chain ? chainFindings(manifests) : undefined;
  const brokenChains = brokenChainFindings(manifests);
  for (const manifest of manifests) {
    const entry = jobFor(manifest.job);
    const findings = check(manifest, c, now);
    for (const f of chained?.get(manifest) ?? []) findings.push({ ...f, kind: KIND[f.rule] });
    const broken = brokenChains.get(manifest);
    if (broken) findings.push(broken);
    entry.total++;
    const errors = findings.filter((f) => f.severity === "error");
    const valid = !errors.some((f) => f.kind === "validity");
    if (valid) entry.valid++;
    if (valid && !errors.some((f) => f.kind === "compliance")) entry.compliant++;
    if (findings.length > 0) {
      entry.backups.push({
        id: manifest.id,
        key: manifest.artifact.key,
        startedAt: manifest.startedAt,
        findings,
      });
    }
  }
  for (const bad of options.invalid ?? []) {
    const entry = jobFor(jobOfKey(bad.key));
    entry.total++;
    entry.invalidManifests.push(bad.key);
  }
  for (const [job, wal] of Object.entries(options.wal ?? {})) {
    jobFor(job).wal = { files: wal.files.length, gaps: walGapFindings(wal) };
  }
  const list = [...jobs.values()].sort((a, b) => (a.job < b.job ? -1 : a.job > b.job ? 1 : 0));
  let total = 0;
  let valid = 0;
  let compliant = 0;
  for (const entry of list) {
    entry.validityRate = rate(entry.valid, entry.total);
    entry.complianceRate = rate(entry.compliant, entry.total);
    entry.invalidManifests.sort();
    entry.backups.sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : a.key < b.key ? 1 : -1));
    total += entry.total;
    valid += entry.valid;
    compliant += entry.compliant;
  }
  return {
    now: new Date(now).toISOString(),
    total,
    valid,
    compliant,
    validityRate: rate(valid, total),
    complianceRate: rate(compliant, total),
    jobs: list,
  };
}
