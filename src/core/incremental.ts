import type { ChainRecord, Manifest } from "./manifest.js";
import type { DecryptionKey, Sink, Source } from "./types.js";

/** `full` stands alone; `differential` depends on the last full; `incremental` on the last backup. */
export type BackupKind = ChainRecord["kind"];
/** The kinds of backup in a chain, from the one that stands alone. */
export const BACKUP_KINDS: readonly BackupKind[] = ["full", "differential", "incremental"];

/** What a job hands a chainable source for one run: the kind, and the base it picked. */
export interface ChainPlan {
  /** The kind of this run. */
  kind: BackupKind;
  /** The backup this run depends on; absent for a full (and then the run is a full). */
  base?: Manifest;
  /** The sink the base is stored in, to read its file index. */
  sink: Sink;
  /** Keys that decrypt the base. */
  keys?: readonly DecryptionKey[];
}

/**
 * A source that can back up only what changed since a base (`directorySource`). Jobs reach it
 * through this contract, never by importing the source.
 */
export interface ChainableSource extends Source {
  /** The same source, set up for one run of `plan.kind` against `plan.base`. */
  chainFrom(plan: ChainPlan): Source;
}

/** Whether a source can take part in a chain (it has `chainFrom`). */
export function isChainable(source: Source): source is ChainableSource {
  return typeof (source as Partial<ChainableSource>).chainFrom === "function";
}

/** Why a chain cannot be followed to its full. */
export type ChainProblem =
  /** A parent the manifest names is not among the manifests. */
  | "missing-link"
  /** A parent that is not what the child says (another job, a kind that cannot be a parent). */
  | "wrong-link"
  /** Following parents comes back to a backup already seen. */
  | "cycle";

/** What {@link resolveChain} found following a backup's parents: the links to restore in order, or where it breaks. */
export type ChainResolution =
  | {
      /** The chain resolves. */
      ok: true;
      /** The links to restore in order: the full first, the backup itself last. */
      links: Manifest[];
    }
  | {
      /** The chain breaks. */
      ok: false;
      /** Why. */
      problem: ChainProblem;
      /** The link whose parent cannot be followed. */
      link: {
        /** Its backup id. */
        id: string;
        /** Its artifact key. */
        key: string;
      };
      /** The id of the backup that names the missing or bad parent. */
      child: string;
    };

/**
 * The links a backup's restore needs, full first and the backup itself last, found among
 * `manifests` by id (pure; no I/O). A backup without a chain record is a chain of one.
 */
export function resolveChain(manifest: Manifest, manifests: Iterable<Manifest>): ChainResolution {
  const byId = new Map<string, Manifest>();
  for (const m of manifests) if (m.job === manifest.job) byId.set(m.id, m);
  const links: Manifest[] = [manifest];
  const seen = new Set<string>([manifest.id]);
  let at = manifest;
  while (at.chain?.parent) {
    const wanted = at.chain.parent;
    const parent = byId.get(wanted.id);
    if (!parent) return { ok: false, problem: "missing-link", link: wanted, child: at.id };
    if (seen.has(parent.id)) return { ok: false, problem: "cycle", link: wanted, child: at.id };
    const fits =
      parent.artifact.key === wanted.key &&
      parent.chain !== undefined &&
      (at.chain.kind !== "differential" || parent.chain.kind === "full") &&
      Date.parse(parent.startedAt) <= Date.parse(at.startedAt);
    if (!fits) return { ok: false, problem: "wrong-link", link: wanted, child: at.id };
    seen.add(parent.id);
    links.unshift(parent);
    at = parent;
  }
  return { ok: true, links };
}

/** Every backup that `manifest` depends on, directly or through its parents (ids). */
export function ancestorsOf(manifest: Manifest, byId: ReadonlyMap<string, Manifest>): string[] {
  const out: string[] = [];
  let at: Manifest | undefined = manifest;
  while (at?.chain?.parent && !out.includes(at.chain.parent.id)) {
    out.push(at.chain.parent.id);
    at = byId.get(at.chain.parent.id);
  }
  return out;
}
