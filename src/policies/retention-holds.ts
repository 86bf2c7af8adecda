import type { Manifest } from "../core/manifest.js";
import { epochOf } from "./instant.js";

/** Labels an S3 Object Lock date may be recorded under (ISO time); see {@link lockedUntil}. */
export const OBJECT_LOCK_LABELS = ["object-lock-until", "objectLockRetainUntil"] as const;

/**
 * The S3 Object Lock retain-until date of a backup, if its manifest records one. The S3 sink
 * reports its lock date to `backup()`, which records it as the manifest's `retainUntil` (a hold
 * planRetention honours anyway); this also reads it where other tools put it: a label
 * `object-lock-until` or `objectLockRetainUntil`, or a field `objectLock.retainUntil` /
 * `artifact.objectLock.retainUntil` / `artifact.objectLockRetainUntil` (ISO time).
 * An unreadable date is returned as NaN, which retention treats as locked.
 */
export function lockedUntil(manifest: Manifest):
  | {
      /** The date as recorded (ISO 8601). */
      text: string;
      /** The date in epoch milliseconds. */
      ms: number;
    }
  | undefined {
  const loose = manifest as unknown as {
    objectLock?: { retainUntil?: unknown };
    artifact?: { objectLock?: { retainUntil?: unknown }; objectLockRetainUntil?: unknown };
  };
  // Retention asks this of every backup a job holds on every run, and most record no lock at all.
  if (
    manifest.labels?.[OBJECT_LOCK_LABELS[0]] === undefined &&
    manifest.labels?.[OBJECT_LOCK_LABELS[1]] === undefined &&
    loose.objectLock === undefined &&
    loose.artifact?.objectLock === undefined &&
    loose.artifact?.objectLockRetainUntil === undefined
  ) {
    return undefined;
  }
  const candidates: unknown[] = [
    ...OBJECT_LOCK_LABELS.map((l) => manifest.labels?.[l]),
    loose.objectLock?.retainUntil,
    loose.artifact?.objectLock?.retainUntil,
    loose.artifact?.objectLockRetainUntil,
  ];
  let best: { text: string; ms: number } | undefined;
  for (const value of candidates) {
    if (value === undefined || value === null || value === "") continue;
    const text = value instanceof Date ? value.toISOString() : String(value);
    const ms = value instanceof Date ? value.getTime() : Date.parse(text);
    if (Number.isNaN(ms)) return { text, ms: Number.NaN };
    if (!best || ms > best.ms) best = { text, ms };
  }
  return best;
}

/** The holds that keep a backup at `now`, as reasons. */
export function holdsOf(manifest: Manifest, holdLabel: string, now: number): string[] {
  const reasons: string[] = [];
  const label = manifest.labels?.[holdLabel];
  if (typeof label === "string" && label !== "") reasons.push(label === holdLabel ? "hold" : `hold ${label}`);
  if (manifest.retainUntil !== undefined) {
    const until = epochOf(manifest.retainUntil);
    // An unreadable date keeps the backup: when in doubt, do not delete.
    if (Number.isNaN(until) || until > now) reasons.push(`hold until ${manifest.retainUntil}`);
  }
  const lock = lockedUntil(manifest);
  if (lock && (Number.isNaN(lock.ms) || lock.ms > now)) reasons.push(`object lock until ${lock.text}`);
  return reasons;
}
