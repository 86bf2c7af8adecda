/**
 * `kubernetesLogsSource`: pod logs through the Kubernetes API, as a tar.
 */

import { createReadStream, createWriteStream } from "node:fs";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import tar from "tar-stream";
import type { z } from "zod";
import { throwIfAborted } from "../../core/errors.js";
import { lazySchema, parseOptions } from "../../core/options.js";
import { guardedPack, packedTar } from "../../core/pack-tar.js";
import type { Agrees, Assert } from "../../core/type-checks.js";
import type { Source, SourceContext, SourceOutput } from "../../core/types.js";
import { enc, KubeApiError, KubeClient, type KubeObject, sourceError } from "./client.js";
import type { KubeConfigLike } from "./kube-config.js";
import { kubeConfigSchema } from "./kube-config.js";

/** The zod schema of {@link KubernetesLogsSourceOptions}, which parses the options at the boundary. */
export const kubernetesLogsSourceOptionsSchema = lazySchema((z) =>
  z
    .object({
      kubeConfig: kubeConfigSchema,
      /** The namespace whose pods' logs are exported. */
      namespace: z.string().min(1),
      /** Only pods matching this label selector. @default every pod */
      labelSelector: z.string().min(1).optional(),
      /** Only log lines from the last N seconds. @default the whole log the kubelet keeps */
      sinceSeconds: z.number().int().positive().optional(),
      /** Only these container names (init containers included). @default every container */
      containers: z.array(z.string().min(1)).min(1).optional(),
      /** Prefix each line with its RFC 3339 time (the kubelet's `timestamps`). @default false */
      timestamps: z.boolean().default(false),
      /** Cap per container log (the kubelet's `limitBytes`). @default no cap */
      limitBytes: z.number().int().positive().optional(),
      /** Fail when a container's log cannot be read, instead of listing it in the details. @default false */
      strict: z.boolean().default(false),
      /** Logs can hold secrets; set this to make `backup()` require encryption. @default false */
      sensitive: z.boolean().default(false),
      /** Where each log is staged (tar needs sizes up front). @default the OS temp folder */
      spoolDirectory: z.string().min(1).optional(),
      /** Logical name for the manifest. @default the namespace */
      name: z.string().min(1).optional(),
    })
    .strict(),
);
/** What {@link kubernetesLogsSource} takes: the KubeConfig, which pods' logs, and how much of each. */
export interface KubernetesLogsSourceOptions {
  /** A ready KubeConfig (`@kubernetes/client-node`). */
  kubeConfig: KubeConfigLike;
  /** The namespace whose pods' logs are exported. */
  namespace: string;
  /** Only pods matching this label selector. @default every pod */
  labelSelector?: string;
  /** Only log lines from the last N seconds. @default the whole log the kubelet keeps */
  sinceSeconds?: number;
  /** Only these container names (init containers included). @default every container */
  containers?: string[];
  /** Prefix each line with its RFC 3339 time (the kubelet's `timestamps`). @default false */
  timestamps?: boolean;
  /** Cap per container log (the kubelet's `limitBytes`). @default no cap */
  limitBytes?: number;
  /** Fail when a container's log cannot be read, instead of listing it in the details. @default false */
  strict?: boolean;
  /** Logs can hold secrets; set this to make `backup()` require encryption. @default false */
  sensitive?: boolean;
  /** Where each log is staged (tar needs sizes up front). @default the OS temp folder */
  spoolDirectory?: string;
  /** Logical name for the manifest. @default the namespace */
  name?: string;
}
type _KubernetesLogsSourceOptionsAgrees = Assert<
  Agrees<KubernetesLogsSourceOptions, z.input<typeof kubernetesLogsSourceOptionsSchema>>
>;

/**
 * Pod logs through the Kubernetes API, as a tar: `<pod>/<container>.log` for each container of
 * each pod in `namespace` (matching `labelSelector`), then an `index.json` (bytes per log and the
 * logs that could not be read, e.g. a container still waiting to start). Each log is streamed to a
 * temporary file first, because a tar entry needs its size up front: memory holds one buffer,
 * disk one log at a time.
 *
 * @throws {CONFIG_INVALID} on bad options (each named).
 * @throws {SOURCE_FAILED} (through `backup()`) when pods cannot be listed, or with `strict` when
 *   a log cannot be read.
 * @example
 * await backup({ job: "shop-logs", sink, transforms: [gzip()],
 *   source: kubernetesLogsSource({ kubeConfig: kc, namespace: "shop", sinceSeconds: 86_400 }) });
 */
export function kubernetesLogsSource(options: KubernetesLogsSourceOptions): Source {
  const opts = parseOptions(kubernetesLogsSourceOptionsSchema, options, "kubernetesLogsSource");
  const client = new KubeClient(opts.kubeConfig);
  return {
    kind: "kubernetes-logs",
    name: opts.name ?? opts.namespace,
    sensitive: opts.sensitive,
    async open({ signal }: SourceContext): Promise<SourceOutput> {
      const run: LogsRun = {
        client,
        opts,
        signal,
        pack: guardedPack(tar),
        spool: await mkdtemp(join(opts.spoolDirectory ?? tmpdir(), "stowage-k8s-logs-")),
        pods: 0,
        logs: [],
        failed: [],
      };
      const produced = writeLogs(run);
      const stream = packedTar(run.pack, produced);
      return {
        stream,
        contentType: "application/x-tar",
        details: async () => {
          await produced;
          return {
            server: client.server,
            namespace: opts.namespace,
            ...(opts.labelSelector ? { labelSelector: opts.labelSelector } : {}),
            ...(opts.sinceSeconds ? { sinceSeconds: opts.sinceSeconds } : {}),
            pods: run.pods,
            logs: run.logs.length,
            bytes: run.logs.reduce((n, l) => n + l.bytes, 0),
            failed: run.failed,
          };
        },
      };
    },
  };
}

/** One run of the source: where it writes, and what it found so far (for index.json and details). */
interface LogsRun {
  client: KubeClient;
  opts: z.output<typeof kubernetesLogsSourceOptionsSchema>;
  signal: AbortSignal | undefined;
  pack: tar.Pack;
  /** The folder each log is staged in; removed when the run ends. */
  spool: string;
  pods: number;
  logs: Array<{ pod: string; container: string; entry: string; bytes: number }>;
  failed: Array<{ pod: string; container: string; httpStatus: number; reason: string; message: string }>;
}

/** Lists the pods page by page and packs each wanted container's log, then index.json. */
async function writeLogs(run: LogsRun): Promise<void> {
  const { client, opts, signal, pack } = run;
  try {
    const podsPath = `/api/v1/namespaces/${enc(opts.namespace)}/pods`;
    let token: string | undefined;
    do {
      throwIfAborted(signal, "kubernetes logs source");
      let page: { items?: KubeObject[]; metadata?: { continue?: string } };
      try {
        ({ body: page } = await client.json("GET", podsPath, {
          query: { limit: 100, continue: token, labelSelector: opts.labelSelector },
          signal,
        }));
      } catch (error) {
        throw sourceError(error, `kubernetes logs source: listing pods in ${opts.namespace}`, signal);
      }
      for (const pod of page.items ?? []) {
        run.pods++;
        const spec = pod.spec as {
          initContainers?: Array<{ name: string }>;
          containers?: Array<{ name: string }>;
        };
        const names = [...(spec?.initContainers ?? []), ...(spec?.containers ?? [])]
          .map((c) => c.name)
          .filter((c) => !opts.containers || opts.containers.includes(c));
        for (const container of names) {
          await writeLog(run, pod.metadata.name, container);
        }
      }
      token = page.metadata?.continue || undefined;
    } while (token);
    const index = {
      format: "stowage-kubernetes-logs/1",
      namespace: opts.namespace,
      ...(opts.labelSelector ? { labelSelector: opts.labelSelector } : {}),
      ...(opts.sinceSeconds ? { sinceSeconds: opts.sinceSeconds } : {}),
      pods: run.pods,
      logs: run.logs,
      failed: run.failed,
    };
    const data = Buffer.from(`${JSON.stringify(index, null, 2)}\n`, "utf8");
    await pipeline(Readable.from([data]), pack.entry({ name: "index.json", size: data.length, mode: 0o644 }));
  } finally {
    await rm(run.spool, { recursive: true, force: true });
  }
}

/**
 * Packs one container's log: streamed to a file in the spool first (a tar entry needs its size up
 * front), then into the tar. A log the server will not give (other than for bad credentials) is
 * recorded in `failed`, unless `strict`.
 */
async function writeLog(run: LogsRun, pod: string, container: string): Promise<void> {
  const { client, opts, signal, pack } = run;
  throwIfAborted(signal, "kubernetes logs source");
  const file = join(run.spool, `${run.logs.length + run.failed.length}.log`);
  const path = `/api/v1/namespaces/${enc(opts.namespace)}/pods/${enc(pod)}/log`;
  try {
    const response = await client.stream(path, {
      query: {
        container,
        sinceSeconds: opts.sinceSeconds,
        timestamps: opts.timestamps || undefined,
        limitBytes: opts.limitBytes,
      },
      signal,
    });
    await pipeline(response, createWriteStream(file), signal ? { signal } : {});
  } catch (error) {
    if (error instanceof KubeApiError && error.httpStatus !== 401 && !opts.strict) {
      run.failed.push({
        pod,
        container,
        httpStatus: error.httpStatus,
        reason: error.reason,
        message: error.message,
      });
      return;
    }
    throw sourceError(error, `kubernetes logs source: reading the log of ${pod}/${container}`, signal);
  }
  const { size, mtime } = await stat(file);
  const entry = `${pod}/${container}.log`;
  await pipeline(
    createReadStream(file, { highWaterMark: 1 << 20 }),
    pack.entry({ name: entry, size, mtime, mode: 0o644 }),
  );
  await rm(file, { force: true });
  run.logs.push({ pod, container, entry, bytes: size });
}
