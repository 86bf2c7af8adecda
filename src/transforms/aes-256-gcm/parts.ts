/** Exact-size runs of a byte stream, for the chunk reader and writer (./chunks.ts). */

/** A FIFO of buffers that hands out exact-size runs as lists of views, never copying. */
export class PartQueue {
  private parts: Buffer[] = [];
  length = 0;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.parts.push(chunk);
    this.length += chunk.length;
  }

  /** The next `n` bytes as views of the buffers that hold them. */
  take(n: number): Buffer[] {
    const out: Buffer[] = [];
    let want = n;
    while (want > 0) {
      const part = this.parts[0]!;
      if (part.length <= want) {
        out.push(part);
        this.parts.shift();
        want -= part.length;
      } else {
        out.push(part.subarray(0, want));
        this.parts[0] = part.subarray(want);
        want = 0;
      }
    }
    this.length -= n;
    return out;
  }

  /** A copy of the first `n` bytes (at most what is queued), leaving them queued. */
  peek(n: number): Buffer {
    const out = Buffer.allocUnsafe(Math.min(n, this.length));
    let filled = 0;
    for (const part of this.parts) {
      if (filled === out.length) break;
      filled += part.copy(out, filled, 0, Math.min(part.length, out.length - filled));
    }
    return out;
  }

  /** The next `n` bytes as one buffer (copies only when they span buffers). */
  takeJoined(n: number): Buffer {
    const parts = this.take(n);
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts, n);
  }
}
