import { Cron } from "croner";
import type { ManifestListing } from "../core/catalog.js";
import { type BackupKind, isChainable, resolveChain } from "../core/incremental.js";
import type { Manifest } from "../core/manifest.js";
import type { Source } from "../core/types.js";
import type { Job } from "./job.js";

/** The kinds, largest first: when several fall due at once, the first of them runs. */
export const KIND_ORDER: readonly BackupKind[] = ["full", "differential", "incremental"];

/** Whether the job runs chains: a schedule per kind. */
export const hasKindSchedules = (job: Job): boolean => typeof job.schedule === "object";

/**
 * The base a run of `kind` builds on, from the job's manifests in its primary sink: for an
 * incremental the newest backup whose chain is whole, for a differential the newest full. Pure.
 * `undefined` when there is none (the run is then a full).
 */
export function pickBase(kind: BackupKind, manifests: readonly Manifest[]): Manifest | undefined {
  if (kind === "full") return undefined;
  const newestFirst = manifests
    .filter((m) => m.chain !== undefined && (kind === "incremental" || m.chain.kind === "full"))
    .sort((a, b) => Date.parse(b.startedAt) - Date.parse(a.startedAt) || (a.id < b.id ? 1 : -1));
  return newestFirst.find((m) => resolveChain(m, manifests).ok);
}

/**
 * The source for one run of a job: the job's own, or, for a chainable source run as `kind` (or a
 * job with a schedule per kind, whose runs default to incremental), that source set up against
 * the base picked from the sink's listing. Lists only when it chains.
 */
export async function sourceForRun(
  job: Job,
  kind: BackupKind | undefined,
  list: () => Promise<ManifestListing>,
): Promise<Source> {
  const source = job.source;
  if (!isChainable(source) || (kind === undefined && !hasKindSchedules(job))) return source;
  const wanted = kind ?? "incremental";
  const base = wanted === "full" ? undefined : pickBase(wanted, (await list()).manifests);
  return source.chainFrom({
    kind: base ? wanted : "full",
    sink: job.sink,
    keys: job.keys,
    ...(base ? { base } : {}),
  });
}

/** The job's cron patterns: one without a kind, or one per scheduled kind, largest first. */
export function schedulesOf(job: Job): Array<[BackupKind | undefined, string]> {
  const schedule = job.schedule;
  if (schedule === undefined) return [];
  if (typeof schedule === "string") return [[undefined, schedule]];
  return KIND_ORDER.flatMap((kind) =>
    schedule[kind] ? [[kind, schedule[kind]] as [BackupKind, string]] : [],
  );
}

/**
 * Whether a larger kind than `kind` is also due at `at` (to the second): then only that one runs,
 * so a weekly full does not collide with the incremental of the same minute.
 */
export function largerKindDue(job: Job, kind: BackupKind, at: Date, timezone: string | undefined): boolean {
  for (const [other, pattern] of schedulesOf(job)) {
    if (other === kind) return false;
    const cron = new Cron(pattern, { paused: true, ...(timezone ? { timezone } : {}) });
    const next = cron.nextRun(new Date(Math.floor(at.getTime() / 1000) * 1000 - 1000));
    cron.stop();
    if (next && Math.floor(next.getTime() / 1000) === Math.floor(at.getTime() / 1000)) return true;
  }
  return false;
}
