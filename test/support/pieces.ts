/**
 * Cuts `data` into pieces of pseudo-random sizes (1 byte to `max`) from a seeded generator, so a
 * decoder meets every boundary a reader could hand it, the same way on every run.
 */
export function randomPieces(data: Buffer, seed: number, max: number): Buffer[] {
  const pieces: Buffer[] = [];
  let x = seed;
  for (let at = 0; at < data.length; ) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    const n = 1 + (x % max);
    pieces.push(data.subarray(at, at + n));
    at += n;
  }
  return pieces;
}
