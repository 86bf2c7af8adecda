/** S3's limits, and the part size that grows so a backup of unknown length always fits. */

const MiB = 1024 * 1024;

/** S3's limits on multipart uploads. */
export const S3_LIMITS = {
  /** Parts in one multipart upload. */
  maxParts: 10_000,
  /** Bytes of every part but the last: 5 MiB. */
  minPartSize: 5 * MiB,
  /** Bytes of one part: 5 GiB. */
  maxPartSize: 5 * 1024 * MiB,
  /** Bytes of one object: 5 TiB. */
  maxObjectSize: 5 * 1024 * 1024 * MiB,
} as const;

/** The part size doubles after every this many parts (see {@link partSizeFor}). */
export const PARTS_PER_STEP = 1_000;

/**
 * The size of part `partNumber` (1-based) of an upload that started with `partSize`: the
 * configured size for parts 1–1,000, twice that for 1,001–2,000, and so on, capped at S3's 5 GiB.
 * The length of a stream is unknown when its upload starts; this schedule lets any stream of up to
 * {@link largestBackupBytes} fit in S3's 10,000 parts while small backups keep small parts (and
 * little memory).
 */
export function partSizeFor(partNumber: number, partSize: number): number {
  const step = Math.floor((partNumber - 1) / PARTS_PER_STEP);
  return Math.min(S3_LIMITS.maxPartSize, partSize * 2 ** step);
}

/**
 * The largest backup an S3 sink with this `partSize` can store: the sum of its 10,000 part sizes
 * (see {@link partSizeFor}), at most S3's 5 TiB object limit. With 5 MiB parts that is about
 * 4.9 TiB; from 6 MiB up, S3's own 5 TiB limit is the bound.
 */
export function largestBackupBytes(partSize: number): number {
  let total = 0;
  for (let step = 0; step < S3_LIMITS.maxParts / PARTS_PER_STEP; step++) {
    total += PARTS_PER_STEP * partSizeFor(step * PARTS_PER_STEP + 1, partSize);
  }
  return Math.min(total, S3_LIMITS.maxObjectSize);
}
