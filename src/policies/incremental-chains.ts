/**
 * Incremental and differential chains over a listing (pure): each backup names its parent, up to
 * the full. (The signed-manifest chain, each manifest naming its predecessor, is `chain.ts`.)
 */
import { resolveChain } from "../core/incremental.js";
import type { Manifest } from "../core/manifest.js";
import type { Finding } from "./validation.js";

/**
 * The `chain` finding of every backup whose chain cannot be followed to its full among
 * `manifests` (a parent missing, not the parent it names, or a loop), by manifest. Pure. A
 * backup without a chain record, or whose chain resolves, has none.
 */
export function chainFindings(manifests: readonly Manifest[]): Map<Manifest, Finding> {
  const out = new Map<Manifest, Finding>();
  for (const manifest of manifests) {
    if (!manifest.chain?.parent) continue;
    const chain = resolveChain(manifest, manifests);
    if (chain.ok) continue;
    const why =
      chain.problem === "missing-link"
        ? "is missing"
        : chain.problem === "cycle"
          ? "leads back to itself"
          : `is not the parent ${chain.child} names`;
    out.set(manifest, {
      rule: "chain",
      kind: "validity",
      severity: "error",
      message: `broken chain: ${chain.link.id} (${chain.link.key}) ${why}; this ${manifest.chain.kind} cannot be restored`,
      field: "chain.parent",
    });
  }
  return out;
}

/** The part of a retention decision that {@link keepChainParents} reads and changes. */
export interface ChainDecision {
  /** Whether the backup is kept. */
  action: "keep" | "drop";
  /** Why; a kept parent gains a reason naming the child that needs it. */
  reasons: string[];
  /** The backup decided on; its `chain.parent` is followed. */
  manifest: Manifest;
}

/**
 * Keeps every backup that a kept backup depends on (its parent, the parent's parent, up to the
 * full) and that the rules dropped, with the reason `needed by <id>` (or `needed by <id> and N
 * more`), naming the newest kept backup that needs it. Decisions are one
 * retention group's (one job in one tier); a parent outside the group is not there to keep, and
 * validation reports the broken chain. Mutates and returns the decisions. Pure.
 */
export function keepChainParents<D extends ChainDecision>(decisions: D[]): D[] {
  // Most groups are fulls only: no chain to follow, so no index of every id to build.
  if (!decisions.some((d) => d.action === "keep" && d.manifest.chain?.parent)) return decisions;
  const byId = new Map<string, D>();
  for (const d of decisions) byId.set(d.manifest.id, d);
  const neededBy = new Map<D, string[]>();
  for (const d of decisions) {
    if (d.action !== "keep" || !d.manifest.chain?.parent) continue;
    const seen = new Set<string>([d.manifest.id]);
    let at: D | undefined = d;
    while (at?.manifest.chain?.parent) {
      const parent = byId.get(at.manifest.chain.parent.id);
      if (!parent || seen.has(parent.manifest.id)) break;
      seen.add(parent.manifest.id);
      if (parent.action === "drop") {
        const list = neededBy.get(parent) ?? [];
        list.push(d.manifest.id);
        neededBy.set(parent, list);
      }
      at = parent;
    }
  }
  for (const [d, ids] of neededBy) {
    // The newest dependant by name; a full under a day of 15-minute incrementals has ~100.
    const newest = ids.sort().at(-1)!;
    d.action = "keep";
    d.reasons.length = 0;
    d.reasons.push(`needed by ${newest}${ids.length > 1 ? ` and ${ids.length - 1} more` : ""}`);
  }
  return decisions;
}
