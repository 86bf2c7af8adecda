import type { Manifest } from "../core/manifest.js";
import { signatureProblem } from "../core/signing.js";
import { epochOf } from "./instant.js";
import {
  type CompiledRules,
  compileRules,
  type Finding,
  KIND,
  nowMs,
  type RuleId,
  type ValidateOptions,
  type ValidationRules,
} from "./validation-rules.js";

const SIGNATURE_MESSAGES = {
  unsigned: "not signed",
  "unknown-key": "signed by a key that is not among the verify keys",
  "bad-signature": "the signature does not match: the manifest was changed after it was signed",
} as const;

export function check(manifest: Manifest, c: CompiledRules, now: number): Finding[] {
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
  for (const [label, expected] of c.labels) {
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
