import type { StatusReport } from "./status.js";
import type { JobWalStatus } from "./wal-report.js";

/** "1d 4h", "3h 5m", "15m", "42s": the two largest units, for people. */
export function formatDuration(ms: number): string {
  if (ms < 0) return `-${formatDuration(-ms)}`;
  const s = Math.floor(ms / 1000);
  const units: Array<[string, number]> = [
    ["d", Math.floor(s / 86_400)],
    ["h", Math.floor(s / 3600) % 24],
    ["m", Math.floor(s / 60) % 60],
    ["s", s % 60],
  ];
  const first = units.findIndex(([, n]) => n > 0);
  if (first === -1) return "0s";
  return units
    .slice(first, first + 2)
    .filter(([, n]) => n > 0)
    .map(([u, n]) => `${n}${u}`)
    .join(" ");
}

/** 1536 -> "1.5 KiB": binary units, one decimal. */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** "newest 0000…0A archived 12s ago, lag 1 segment, archiver ok, no gaps". */
function walLine(w: JobWalStatus): string {
  if (w.newestSegment === null) return "nothing archived";
  const parts = [`newest ${w.newestSegment} archived ${formatDuration((w.rpoSeconds ?? 0) * 1000)} ago`];
  parts.push(
    w.lagSegments === null ? "lag unknown" : `lag ${w.lagSegments} segment${w.lagSegments === 1 ? "" : "s"}`,
  );
  if (w.failing !== null) parts.push(w.failing ? "archiver FAILING" : "archiver ok");
  parts.push(w.gaps.length === 0 ? "no gaps" : `${w.gaps.length} GAP${w.gaps.length === 1 ? "" : "S"}`);
  return parts.join(", ");
}

const percent = (rate: number | null) => (rate === null ? "-" : `${(rate * 100).toFixed(1)}%`);
const utc = (iso: string) => `${iso.slice(0, 10)} ${iso.slice(11, 19)}`;

/**
 * The report as a person reads it in a terminal: a headline with the overall verdict, one row
 * per job (status, newest backup in UTC, its age, RPO, count, sizes, compliance), then the
 * problems to look at. Plain text, no colours, ends with a newline.
 *
 * @example process.stdout.write(formatStatusText(summarize(manifests, { now: new Date(), rpo: "1h" })));
 */
export function formatStatusText(report: StatusReport): string {
  const o = report.overall;
  const verdict =
    o.status === "ok"
      ? "OK"
      : o.status === "warning"
        ? "WARNING"
        : `FAILING${o.rpoBreached > 0 ? `: ${o.rpoBreached} of ${o.jobs} jobs breach their RPO` : ""}`;
  const lines = [`stowage status at ${utc(report.generatedAt)} UTC: ${verdict}`, ""];
  const header = [
    "JOB",
    "STATUS",
    "LAST BACKUP (UTC)",
    "AGE",
    "RPO",
    "BACKUPS",
    "STORED",
    "PLAIN",
    "COMPLIANT",
  ];
  const rows = report.jobs.map((j) => [
    j.job,
    j.status === "ok" ? "ok" : j.status.toUpperCase(),
    j.last ? utc(j.last.startedAt) : "never",
    j.ageSeconds === null ? "-" : formatDuration(j.ageSeconds * 1000),
    j.rpo === null ? "-" : `${j.rpo}${j.rpoBreached ? " BREACHED" : ""}`,
    String(j.count),
    formatBytes(j.storedBytes),
    formatBytes(j.plainBytes),
    percent(j.complianceRate),
  ]);
  if (rows.length === 0) {
    lines.push("No backups.");
  } else {
    const numeric = new Set([5, 6, 7, 8]);
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
    const render = (cells: string[]) =>
      cells
        .map((c, i) => (numeric.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
        .join("  ")
        .trimEnd();
    lines.push(render(header), ...rows.map(render));
  }
  const wal = report.jobs.filter((j) => j.wal).map((j) => `  ${j.job}: ${walLine(j.wal!)}`);
  if (wal.length > 0) lines.push("", "WAL archive:", ...wal);
  const problems = report.jobs.flatMap((j) => j.problems.map((p) => `  ${j.job}: ${p}`));
  if (problems.length > 0) lines.push("", "Problems:", ...problems);
  lines.push(
    "",
    `Total: ${o.backups} backups in ${o.jobs} jobs, ${formatBytes(o.storedBytes)} stored (${formatBytes(o.plainBytes)} plain), ` +
      `compliance ${percent(o.complianceRate)} (${o.compliant}/${o.backups + o.invalidManifests})` +
      (o.invalidManifests > 0 ? `, ${o.invalidManifests} unreadable manifests` : ""),
  );
  return `${lines.join("\n")}\n`;
}
