/**
 * Epoch milliseconds of an ISO time, exactly as `Date.parse` gives them (NaN for a bad one), with
 * the answers remembered. Every retention plan and status parses the start and finish of every
 * backup a job holds, the same strings run after run, and parsing costs several times a lookup.
 * Pure: the same string always gives the same number. Bounded: forgotten all at once past `MAX`.
 */
const MAX = 100_000;
const known = new Map<string, number>();

/** @internal `Date.parse(iso)`, remembered. */
export function epochOf(iso: string): number {
  let ms = known.get(iso);
  if (ms === undefined) {
    ms = Date.parse(iso);
    if (known.size >= MAX) known.clear();
    known.set(iso, ms);
  }
  return ms;
}
