/**
 * stowage's status metrics in a prom-client registry, for services that already expose
 * `/metrics` with prom-client: the same families, help and labels as `formatPrometheus`.
 */
import type { z } from "zod";
import { lazySchema, parseOptions } from "../core/options.js";
import type { Agrees, Assert } from "../core/type-checks.js";
import { type MetricFamily, STATUS_FAMILIES, statusMetrics } from "../policies/prometheus.js";
import type { StatusReport } from "../policies/status.js";

/** The part of a prom-client Gauge this uses (prom-client 13 and later). */
export interface GaugeLike {
  /** Drops every labelled value, so a series that is gone from the report is gone from the scrape. */
  reset(): void;
  /** Sets the value of the series with these labels. */
  set(labels: Record<string, string>, value: number): void;
  /** Sets the value of the series without labels. */
  set(value: number): void;
}

/** The part of prom-client this uses: pass the module itself (`import * as client from "prom-client"`). */
export interface PromClientLike {
  /** prom-client's Gauge class; one gauge is made per metric family, collected at each scrape. */
  Gauge: {
    /** Makes a gauge from its name, help and label names, with a `collect` run at each scrape. */
    new (config: {
      name: string;
      help: string;
      labelNames: readonly string[];
      registers?: never[];
      collect?: (this: GaugeLike) => void | Promise<void>;
    }): unknown;
  };
}

const statusCollectorSchema = lazySchema((z) =>
  z
    .object({
      /** The prom-client module, injected so that stowage does not depend on it. */
      client: z.custom<PromClientLike>(
        (v) => typeof (v as PromClientLike | undefined)?.Gauge === "function",
        'expected the prom-client module (import * as client from "prom-client")',
      ),
      /** The registry to register in. @default prom-client's global registry */
      registry: z.unknown().optional(),
      /**
       * Makes the report for a scrape, e.g. `() => listManifests(sink).then(({ manifests }) =>
       * summarize(manifests, { now: new Date(), rpo: "1h" }))`. Called once per scrape, however many
       * families the scrape collects.
       */
      report: z.custom<() => StatusReport | Promise<StatusReport>>(
        (v) => typeof v === "function",
        "expected a function",
      ),
    })
    .strict(),
);
/** What {@link statusCollector} takes: the prom-client module, where the report comes from, the registry. */
export interface StatusCollectorOptions {
  /** The prom-client module, injected so that stowage does not depend on it. */
  client: PromClientLike;
  /**
   * Makes the report for a scrape, e.g. `() => listManifests(sink).then(({ manifests }) =>
   * summarize(manifests, { now: new Date(), rpo: "1h" }))`. Called once per scrape, however many
   * families the scrape collects.
   */
  report: () => StatusReport | Promise<StatusReport>;
  /** The registry to register in. @default prom-client's global registry */
  registry?: unknown;
}
type _StatusCollectorOptionsAgrees = Assert<
  Agrees<StatusCollectorOptions, z.input<typeof statusCollectorSchema>>
>;

/**
 * Registers stowage's status gauges in a prom-client registry. Each scrape calls `report` once
 * (the families share the result while that scrape runs) and sets every gauge from it; series of a
 * job that disappeared are dropped. The families and their meaning: `statusMetrics`.
 *
 * @throws {CONFIG_INVALID} for a missing client or report function.
 * @example
 * import * as client from "prom-client";
 * statusCollector({ client, report: async () => summarize((await listManifests(sink)).manifests, { now: new Date() }) });
 */
export function statusCollector(options: StatusCollectorOptions): void {
  const o = parseOptions(statusCollectorSchema, options, "statusCollector");
  // prom-client collects the gauges one after another; the first asks for the report, the rest of
  // the same scrape reuse it. A report older than one second is never reused.
  let current: { at: number; families: Promise<Map<string, MetricFamily>> } | undefined;
  const families = () => {
    const now = Date.now();
    if (!current || now - current.at > 1000) {
      const made = Promise.resolve()
        .then(() => o.report())
        .then((report) => new Map(statusMetrics(report).map((f) => [f.name, f])));
      current = { at: now, families: made };
    }
    return current.families;
  };
  for (const family of STATUS_FAMILIES) {
    new o.client.Gauge({
      name: family.name,
      help: family.help,
      labelNames: family.labelNames,
      ...(o.registry !== undefined ? { registers: [o.registry as never] } : {}),
      async collect() {
        const found = (await families()).get(family.name);
        this.reset();
        for (const sample of found?.samples ?? []) {
          if (family.labelNames.length === 0) this.set(sample.value);
          else this.set(sample.labels, sample.value);
        }
      },
    });
  }
}
