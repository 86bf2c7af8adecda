/**
 * `stowage/locks/kubernetes`: a {@link Lock} on coordination.k8s.io/v1 Lease objects, the objects
 * client-go's leader election uses. Every change is a compare-and-swap on the Lease's
 * `resourceVersion` (a create of an existing name is 409 AlreadyExists, an update from a stale
 * version 409 Conflict), so of replicas racing for a free or expired Lease exactly one wins.
 */
import { createHash } from "node:crypto";
import type { z } from "zod";
import {
  type AcquireOptions,
  checkAcquire,
  type Lease,
  type Lock,
  lockFailed,
  trackedLease,
} from "../core/lock.js";
import { lazySchema, parseOptions } from "../core/options.js";
import type { Agrees, Assert } from "../core/type-checks.js";
import { enc, KubeApiError, KubeClient } from "../sources/kubernetes/client.js";
import { type KubeConfigLike, kubeConfigSchema } from "../sources/kubernetes/kube-config.js";

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** The zod schema of {@link KubernetesLeaseOptions}, which parses the options at the boundary. */
export const kubernetesLeaseOptionsSchema = lazySchema((z) =>
  z
    .object({
      /** A ready KubeConfig (`@kubernetes/client-node`); the identity needs get/create/update on leases. */
      kubeConfig: kubeConfigSchema,
      /** The namespace the Lease objects live in, e.g. the service's own. */
      namespace: z.string().regex(DNS_LABEL, "a namespace name (lowercase letters, digits, '-')").max(63),
      /** Lease object names are this plus the lock's name. @default "stowage-" */
      prefix: z
        .string()
        .regex(/^[a-z0-9]([-a-z0-9.]*)?$/, "lowercase letters, digits, '-' and '.'")
        .max(100)
        .default("stowage-"),
    })
    .strict(),
);
/** What {@link kubernetesLease} takes: the KubeConfig, the Leases' namespace and name prefix. */
export interface KubernetesLeaseOptions {
  /** A ready KubeConfig (`@kubernetes/client-node`); the identity needs get/create/update on leases. */
  kubeConfig: KubeConfigLike;
  /** The namespace the Lease objects live in, e.g. the service's own. */
  namespace: string;
  /** Lease object names are this plus the lock's name (lowercase letters, digits, '-' and '.'). @default "stowage-" */
  prefix?: string;
}
type _KubernetesLeaseOptionsAgrees = Assert<
  Agrees<KubernetesLeaseOptions, z.input<typeof kubernetesLeaseOptionsSchema>>
>;

interface LeaseObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; resourceVersion?: string; [k: string]: unknown };
  spec?: {
    holderIdentity?: string | null;
    leaseDurationSeconds?: number;
    acquireTime?: string;
    renewTime?: string;
    leaseTransitions?: number;
  };
}

/** A MicroTime, as the API wants it (RFC 3339 with microseconds). */
const microTime = (ms: number) => new Date(ms).toISOString().replace(/(\.\d{3})Z$/, "$1000Z");

/** A DNS subdomain for any lock name: a name that is not one is cleaned and told apart by a hash. */
function objectName(prefix: string, name: string): string {
  const clean = name
    .toLowerCase()
    .replace(/[^a-z0-9.-]+/g, "-")
    .replace(/^[-.]+|[-.]+$/g, "");
  const base = `${prefix}${clean}`.slice(0, 240);
  if (clean === name && base.length === prefix.length + name.length && /[a-z0-9]$/.test(base)) return base;
  const hash = createHash("sha256").update(name).digest("hex").slice(0, 8);
  return `${base.replace(/[-.]+$/, "")}-${hash}`;
}

/**
 * A lock whose leases are Kubernetes Lease objects in `namespace`, one per lock name
 * (`stowage-<name>`): `holderIdentity` is the replica, `leaseDurationSeconds` the ttl (rounded up
 * to a second), `renewTime` the last renewal and `leaseTransitions` the fencing token, raised on
 * every take-over. An expired Lease (its `renewTime` older than its duration, on this replica's
 * clock: keep the nodes' clocks in sync, as leader election also assumes) is taken over; a
 * released one names no holder. Needs no SDK: only the KubeConfig's cluster and credentials.
 *
 * @throws {CONFIG_INVALID} naming each bad option, or a KubeConfig without a current cluster.
 * @example
 * const kc = new KubeConfig(); kc.loadFromCluster();
 * startScheduler(jobs, { lock: kubernetesLease({ kubeConfig: kc, namespace: "shop" }) });
 */
export function kubernetesLease(options: KubernetesLeaseOptions): Lock {
  const opts = parseOptions(kubernetesLeaseOptionsSchema, options, "kubernetesLease");
  const client = new KubeClient(opts.kubeConfig);
  const base = `/apis/coordination.k8s.io/v1/namespaces/${enc(opts.namespace)}/leases`;
  const status = (error: unknown) => (error instanceof KubeApiError ? error.httpStatus : 0);

  const lock: Lock = {
    kind: "kubernetes",
    async acquire(name: string, acquire: AcquireOptions): Promise<Lease | undefined> {
      checkAcquire("kubernetes", name, acquire);
      const { ttlMs, holder, signal } = acquire;
      const object = objectName(opts.prefix, name);
      const path = `${base}/${enc(object)}`;
      const request = signal ? { signal } : {};
      const started = performance.now();
      const now = Date.now();
      const spec = (transitions: number) => ({
        holderIdentity: holder,
        leaseDurationSeconds: Math.ceil(ttlMs / 1000),
        acquireTime: microTime(now),
        renewTime: microTime(now),
        leaseTransitions: transitions,
      });
      let written: LeaseObject;
      try {
        let current: LeaseObject | undefined;
        try {
          current = (await client.json<LeaseObject>("GET", path, request)).body;
        } catch (error) {
          if (status(error) !== 404) throw error;
        }
        if (!current) {
          const body: LeaseObject = {
            apiVersion: "coordination.k8s.io/v1",
            kind: "Lease",
            metadata: { name: object, namespace: opts.namespace },
            spec: spec(0),
          };
          written = (await client.json<LeaseObject>("POST", base, { ...request, body: JSON.stringify(body) }))
            .body;
        } else {
          if (isHeld(current, now)) return undefined;
          const body: LeaseObject = {
            ...current,
            spec: { ...current.spec, ...spec((current.spec?.leaseTransitions ?? 0) + 1) },
          };
          written = (await client.json<LeaseObject>("PUT", path, { ...request, body: JSON.stringify(body) }))
            .body;
        }
      } catch (error) {
        // 409: AlreadyExists on create, Conflict on update — another replica was first.
        if (status(error) === 409) return undefined;
        throw lockFailed("kubernetes", name, `taking Lease ${opts.namespace}/${object}`, error);
      }
      let version = written.metadata.resourceVersion;
      const token = written.spec?.leaseTransitions ?? 0;
      const write = async (update: LeaseObject["spec"], s?: AbortSignal): Promise<boolean> => {
        const r = s ? { signal: s } : {};
        const body = {
          ...written,
          metadata: { ...written.metadata, resourceVersion: version },
          spec: update,
        };
        try {
          written = (await client.json<LeaseObject>("PUT", path, { ...r, body: JSON.stringify(body) })).body;
          version = written.metadata.resourceVersion;
          return true;
        } catch (error) {
          if (status(error) !== 409 && status(error) !== 404) throw error;
        }
        // Someone else wrote the Lease: still ours only if it names us with our token.
        const seen = (await client.json<LeaseObject>("GET", path, r)).body;
        if (seen.spec?.holderIdentity !== holder || seen.spec?.leaseTransitions !== token) return false;
        written = seen;
        version = seen.metadata.resourceVersion;
        return write(update, s);
      };
      return trackedLease(
        { name, holder, fencingToken: token, ttlMs, kind: "kubernetes" },
        {
          renew: (s) => write({ ...written.spec, renewTime: microTime(Date.now()) }, s),
          release: async (s) => {
            // As client-go does: the Lease stays (its transitions count on), naming no holder.
            const { holderIdentity: _holder, ...rest } = written.spec ?? {};
            await write({ ...rest, leaseDurationSeconds: 1, renewTime: microTime(0) }, s);
          },
        },
        started,
      );
    },
  };
  return lock;
}

function isHeld(lease: LeaseObject, now: number): boolean {
  const spec = lease.spec ?? {};
  if (!spec.holderIdentity) return false;
  const renewed = Date.parse(spec.renewTime ?? spec.acquireTime ?? "");
  if (Number.isNaN(renewed)) return false;
  return renewed + (spec.leaseDurationSeconds ?? 0) * 1000 > now;
}
