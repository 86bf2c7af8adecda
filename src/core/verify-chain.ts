import { listManifests } from "./catalog.js";
import { type ChainProblem, resolveChain } from "./incremental.js";
import { type Manifest, parseManifest } from "./manifest.js";
import { type VerifyOptions, type VerifyReport, verify } from "./restore.js";

/** Options of {@link verifyChain}: those of {@link verify}, and the job's manifests. */
export interface VerifyChainOptions extends VerifyOptions {
  /** The job's manifests, to find the parents in. @default `listManifests(sink, { job })` */
  manifests?: readonly Manifest[];
}

/** What {@link verifyChain} found, link by link. */
export interface VerifyChainReport {
  /** True when the chain resolves and every link verifies. */
  ok: boolean;
  /** One report a link, full first and the backup itself last (as far as the chain resolved). */
  links: VerifyReport[];
  /** Set when the chain cannot be followed to its full: which link, and why. */
  broken?: {
    /** Why the chain breaks there. */
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
}

/**
 * `verify` for a backup and every backup it depends on: resolves the chain from the manifests
 * (a missing parent is reported as `broken`, not thrown) and verifies each link's artifact, with
 * keys also a trial decode of each. For a backup without a chain record, the same as `verify`.
 *
 * @throws {ABORTED} when `signal` fires; {MANIFEST_INVALID} for a manifest that does not parse.
 * @example const report = await verifyChain({ sink, manifest, keys }); if (!report.ok) alert(report)
 */
export async function verifyChain(options: VerifyChainOptions): Promise<VerifyChainReport> {
  const manifest = parseManifest(options.manifest, "verifyChain: manifest");
  const { sink, signal } = options;
  const manifests =
    options.manifests ??
    (manifest.chain
      ? (await listManifests(sink, { job: manifest.job, ...(signal ? { signal } : {}) })).manifests
      : [manifest]);
  const chain = resolveChain(manifest, manifests);
  const report: VerifyChainReport = { ok: false, links: [] };
  if (!chain.ok) {
    const { problem, link, child } = chain;
    report.broken = { problem, link, child };
  }
  for (const link of chain.ok ? chain.links : [manifest]) {
    report.links.push(await verify({ ...options, manifest: link }));
  }
  report.ok = chain.ok && report.links.every((r) => r.ok);
  return report;
}
