/**
 * The job's chain, checked over a listing (pure): each signed manifest names the job's previous
 * manifest on its sink (`previous`: id and `manifestDigest`). See `validateBackups` with `chain`.
 * (Incremental chains, parent to full, are `incremental-chains.ts`.)
 */
import type { Manifest } from "../core/manifest.js";
import { manifestDigest } from "../core/signing.js";

/** A chain finding before validation gives it its kind. */
export interface ChainFinding {
  rule: "chain-gap" | "chain-replay";
  severity: "error" | "warning";
  message: string;
  field: string;
}

/** The id a rekeyed manifest stands in for (its aes-256-gcm record's `rekeyedFrom`). */
function rekeyedFrom(m: Manifest): string | undefined {
  for (const t of m.transforms) if (typeof t.rekeyedFrom === "string") return t.rekeyedFrom;
  return undefined;
}

/**
 * Chain findings per manifest, job by job:
 * - `chain-gap` (warning) on a manifest whose predecessor is not listed though it is newer than the
 *   job's oldest listed backup: something between them was deleted (or thinned by retention).
 * - `chain-replay` (error) on a listed predecessor whose manifest is not the one its successor
 *   chained to (its digest differs: replaced, rewritten or replayed from elsewhere); on a manifest
 *   whose `previous` is not older than itself; on a second manifest with an id already seen.
 * A predecessor that was rekeyed is found by the new manifest's `rekeyedFrom`; its digest changed
 * with the rekey, so only its presence is checked. Manifests without `previous` (unsigned, older,
 * or a job's first) are not checked.
 */
export function chainFindings(manifests: readonly Manifest[]): Map<Manifest, ChainFinding[]> {
  const out = new Map<Manifest, ChainFinding[]>();
  const add = (m: Manifest, f: ChainFinding) => out.set(m, [...(out.get(m) ?? []), f]);
  const jobs = new Map<string, Manifest[]>();
  for (const m of manifests) jobs.set(m.job, [...(jobs.get(m.job) ?? []), m]);
  for (const list of jobs.values()) {
    const sorted = [...list].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const byId = new Map<string, Manifest>();
    const byOldId = new Map<string, Manifest>();
    for (const m of sorted) {
      if (byId.has(m.id)) {
        add(m, {
          rule: "chain-replay",
          severity: "error",
          message: `a second manifest with id ${m.id}: one of them was replayed`,
          field: "id",
        });
        continue;
      }
      byId.set(m.id, m);
      const old = rekeyedFrom(m);
      if (old) byOldId.set(old, m);
    }
    const oldest = sorted[0]?.id ?? "";
    for (const m of sorted) {
      const prev = m.previous;
      if (!prev) continue;
      if (prev.id >= m.id) {
        add(m, {
          rule: "chain-replay",
          severity: "error",
          message: `names ${prev.id} as its predecessor, which is not older than itself`,
          field: "previous.id",
        });
        continue;
      }
      const listed = byId.get(prev.id);
      if (listed) {
        if (manifestDigest(listed) !== prev.sha256) {
          add(listed, {
            rule: "chain-replay",
            severity: "error",
            message: `is not the manifest its successor ${m.id} chained to (digest differs): replaced, rewritten or replayed`,
            field: "id",
          });
        }
        continue;
      }
      if (byOldId.has(prev.id) || prev.id < oldest) continue; // rekeyed, or older than the listing
      add(m, {
        rule: "chain-gap",
        severity: "warning",
        message: `its predecessor ${prev.id} is missing: a backup was deleted from the middle of the chain`,
        field: "previous.id",
      });
    }
  }
  return out;
}
