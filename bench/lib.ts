/**
 * Shared shape of benchmark results. Every bench module (bench/<topic>.ts) exports
 * `run(options): Promise<BenchRow[]>`; bench/run.ts runs them all and prints one table.
 * Benchmarks measure and report; they never fail a test run.
 */
export interface BenchRow {
  /** What was measured, e.g. "backup gzip-6 + AES-256-GCM -> file, 1 GiB". */
  name: string;
  /** stowage's figure and the anchor's, in `unit`. */
  stowage: number;
  anchor: number;
  /** The anchor it is compared with, e.g. "gzip -6 | openssl enc -aes-256-cbc". */
  anchorName: string;
  unit: "MB/s" | "s" | "MiB" | "segments";
  /** stowage / anchor for MB/s; anchor / stowage for seconds, MiB and segments (so > 1 is always "stowage is better"). */
  ratio: number;
  /** The bar, e.g. ">= 1.6". */
  target: string;
  pass: boolean;
  /** stowage's peak RSS during the measurement, MiB. */
  peakRssMiB?: number;
  note?: string;
}

export interface BenchOptions {
  /** A scratch folder the bench may fill and must clean. */
  workDir: string;
  /** Scale factor: 1 = the sizes the issues name; smaller for a quick look. */
  scale: number;
  /**
   * Rounds of each measurement (`--repeat`), alternating the sides; the fastest of each side
   * counts. Unset: the module's own default (core 1, postgres 11, s3 5).
   */
  repeat?: number;
  /** `--rows`: measure only the rows whose "name vs anchor" contains this text (peers honours it). */
  rows?: string;
}

/**
 * Runs each of `sides` once a round for `rounds` rounds, each after `settle()` (so every side
 * starts from the same state), in an order that rotates from round to round, so that no side
 * always runs first or always after the same neighbour.
 */
export async function inRotation(
  rounds: number,
  sides: ReadonlyArray<() => Promise<unknown>>,
  settle: () => Promise<unknown>,
): Promise<void> {
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < sides.length; i++) {
      await settle();
      await sides[(round + i) % sides.length]!();
    }
  }
}

/** The median (the upper one of an even count). */
export const median = (xs: readonly number[]): number =>
  [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;
