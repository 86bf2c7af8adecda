import type { z } from "zod";
import { StowageError } from "../core/errors.js";
import { SUPPORTED_MANIFEST_VERSIONS } from "../core/manifest.js";
import { durationSchema, lazySchema, loadZod, parseDuration, parseOptionsOnce } from "../core/options.js";
import { type VerifyKeyring, verifyKeyring } from "../core/signing.js";
import type { Agrees, Assert } from "../core/type-checks.js";

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
export type ParsedRules = z.output<typeof validationRulesSchema>;

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

export const KIND: Record<RuleId, FindingKind> = {
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
  /** `requiredLabels` as pairs, taken apart once rather than for every manifest checked. */
  labels: ReadonlyArray<readonly [string, string]>;
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
    labels: Object.entries(parsed.requiredLabels ?? {}),
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
