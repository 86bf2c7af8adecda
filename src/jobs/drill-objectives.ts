import { parseDuration } from "../core/options.js";
import type { DrillReport } from "./drill.js";
import type { JobObjectives } from "./job.js";

/** A drill's clock: the time given, a function of it, or the real clock. */
export const clockOf = (now: Date | (() => Date) | undefined): (() => Date) =>
  now === undefined ? () => new Date() : typeof now === "function" ? now : () => now;

/** The limits a drill is measured against: the options' own, else the job's `objectives`. */
export interface DrillLimits {
  rpo?: string;
  rto?: string;
  objectives?: JobObjectives;
}

const BREACH = {
  rpo: { code: "RPO_BREACHED", says: "the backup is older than the RPO of" },
  rto: { code: "RTO_BREACHED", says: "restore and check took longer than the RTO of" },
} as const;

/**
 * Puts the measured RPO and RTO against their limits into `report.objectives`, and a breach into
 * `report.errors`. A measure the drill did not reach (null) is not judged.
 */
export function measureObjectives(report: DrillReport, limits: DrillLimits): void {
  for (const which of ["rpo", "rto"] as const) {
    const limit = limits[which] ?? limits.objectives?.[which];
    const measured = which === "rpo" ? report.rpoMs : report.rtoMs;
    if (!limit || measured === null) continue;
    // The class is reported only for the job's own limit, not for one the options override.
    const cls = limits[which] === undefined ? limits.objectives?.[`${which}Class`] : undefined;
    const limitMs = parseDuration(limit, which);
    const objective = { limitMs, met: measured <= limitMs, ...(cls ? { class: cls } : {}) };
    report.objectives[which] = objective;
    if (!objective.met) {
      report.errors.push({
        stage: "objective",
        code: BREACH[which].code,
        message: `${BREACH[which].says} ${limit}${cls ? ` (${cls})` : ""}`,
      });
    }
  }
}
