import { type FileHandle, open } from "node:fs/promises";
import { Writable } from "node:stream";

export async function syncFolder(path: string): Promise<void> {
  const handle = await open(path, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Asks the kernel to write a growing file's pages out every 32 MiB while writing goes on
 * (write-behind), so that the fsync before the rename has little left to do and a large backup
 * does not end with seconds of flushing. A failed write-behind sync is kept and fails `sync()`:
 * Linux reports a failed write-back to one sync of an open file only, so the final fsync alone
 * could succeed after pages written earlier were lost.
 * @internal
 */
export class WriteBehind {
  private flushed: Promise<void> = Promise.resolve();
  private failure: { error: unknown } | undefined;
  private synced = 0;

  constructor(private readonly handle: Pick<FileHandle, "datasync" | "sync">) {}

  grown(bytes: number): void {
    if (bytes - this.synced < WRITE_BEHIND_BYTES) return;
    this.synced = bytes;
    this.flushed = this.flushed
      .then(() => this.handle.datasync())
      .catch((error: unknown) => {
        this.failure ??= { error };
      });
  }

  /**
   * Makes the whole file durable: the final fsync starts at once, beside a write-behind sync
   * still running, and fails if it or any write-behind sync failed.
   */
  async sync(): Promise<void> {
    await Promise.all([this.flushed, this.handle.sync()]);
    if (this.failure) throw this.failure.error;
  }
}

/**
 * Writes a stream into an open file in batches of at least 1 MiB (one `writev` of the chunks
 * gathered, not copied), so that a source delivering 10 KiB reads (a child's pipe) costs one
 * trip to the thread pool per MiB instead of one per read, with {@link WriteBehind}. Holds at
 * most one batch in memory beyond the one being written. The caller closes the handle (a
 * FileHandle closes only after its pending operations, so no write or sync outlives it).
 */
export class FileWriter extends Writable {
  readonly behind: WriteBehind;
  private batch: Buffer[] = [];
  private batchBytes = 0;
  private written = 0;

  constructor(private readonly handle: FileHandle) {
    super({ highWaterMark: BATCH_BYTES });
    this.behind = new WriteBehind(handle);
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.batch.push(chunk);
    this.batchBytes += chunk.length;
    if (this.batchBytes < BATCH_BYTES) callback();
    else this.writeBatch().then(() => callback(), callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.writeBatch().then(() => callback(), callback);
  }

  private async writeBatch(): Promise<void> {
    let buffers = this.batch;
    let left = this.batchBytes;
    this.written += left;
    this.batch = [];
    this.batchBytes = 0;
    while (left > 0) {
      const { bytesWritten } = await this.handle.writev(buffers);
      if (bytesWritten === 0) throw new Error("filesystem sink: the file accepted no bytes");
      left -= bytesWritten;
      if (left > 0) buffers = unwritten(buffers, bytesWritten);
    }
    this.behind.grown(this.written);
  }
}

/** The buffers after the first `written` bytes of `buffers` (after a short write). */
function unwritten(buffers: Buffer[], written: number): Buffer[] {
  let i = 0;
  while (written >= buffers[i]!.length) written -= buffers[i++]!.length;
  return [buffers[i]!.subarray(written), ...buffers.slice(i + 1)];
}

const BATCH_BYTES = 1 << 20;
const WRITE_BEHIND_BYTES = 32 << 20;
