import { createHash, type Hash } from "node:crypto";
import { type FileHandle, mkdtemp, open, rm, rmdir, unlink } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { StowageError } from "../../core/errors.js";

/**
 * A response body on disk instead of in memory: a 0600 file in a fresh 0700 folder, both removed
 * from the file system as soon as the file is open (where the platform allows it; else on
 * `close()`), so nothing is left behind whatever happens to the process later. Bytes are hashed
 * and counted as they are written; reading back checks them against that hash.
 */
export class Spool {
  bytes = 0;
  private hash: Hash = createHash("sha256");
  private hex: string | undefined;
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly handle: FileHandle,
    /** What is still on disk (a platform that cannot unlink an open file); removed on close. */
    private readonly leftover: string | undefined,
  ) {}

  /** A new, empty spool file under `dir`. */
  static async create(dir: string): Promise<Spool> {
    const folder = await mkdtemp(join(dir, "stowage-http-"));
    const path = join(folder, "body");
    let handle: FileHandle;
    try {
      handle = await open(path, "wx+", 0o600);
    } catch (error) {
      await rm(folder, { recursive: true, force: true });
      throw error;
    }
    try {
      await unlink(path);
      await rmdir(folder);
      return new Spool(handle, undefined);
    } catch {
      return new Spool(handle, folder); // e.g. Windows: removed once the handle is closed
    }
  }

  /** Empties the spool for another attempt. */
  async reset(): Promise<void> {
    await this.handle.truncate(0);
    this.bytes = 0;
    this.hash = createHash("sha256");
    this.hex = undefined;
  }

  async write(chunk: Uint8Array): Promise<void> {
    let done = 0;
    while (done < chunk.byteLength) {
      const { bytesWritten } = await this.handle.write(
        chunk,
        done,
        chunk.byteLength - done,
        this.bytes + done,
      );
      done += bytesWritten;
    }
    this.hash.update(chunk);
    this.bytes += chunk.byteLength;
  }

  /** The SHA-256 of what was written, as lowercase hex; call once writing is over. */
  sha256(): string {
    this.hex ??= this.hash.digest("hex");
    return this.hex;
  }

  /** Reads the spool from the start in chunks of at most `size` bytes. */
  async *chunks(size = 1 << 20): AsyncGenerator<Buffer> {
    for (let at = 0; at < this.bytes; ) {
      const buffer = Buffer.allocUnsafe(Math.min(size, this.bytes - at));
      const { bytesRead } = await this.handle.read(buffer, 0, buffer.length, at);
      if (bytesRead === 0) throw new Error("the spool file is shorter than what was written to it");
      at += bytesRead;
      yield buffer.subarray(0, bytesRead);
    }
  }

  /** The whole body in one Buffer: only for bodies known to be small. */
  async readAll(): Promise<Buffer> {
    const parts: Buffer[] = [];
    for await (const chunk of this.chunks()) parts.push(chunk);
    return Buffer.concat(parts, this.bytes);
  }

  /**
   * The body as a stream that checks it against the hash taken while it was written, and closes
   * the spool when it ends, fails or is destroyed. `where` names the source in that check's error.
   */
  stream(where: string): Readable {
    const spool = this;
    async function* replay(): AsyncGenerator<Buffer> {
      try {
        const hash = createHash("sha256");
        for await (const chunk of spool.chunks()) {
          hash.update(chunk);
          yield chunk;
        }
        if (hash.digest("hex") !== spool.sha256()) {
          throw new StowageError("SOURCE_FAILED", `${where}: the spooled body changed on disk`, {
            details: { reason: "spool" },
          });
        }
      } finally {
        await spool.close();
      }
    }
    const stream = Readable.from(replay(), { objectMode: false, highWaterMark: 1 << 20 });
    // A stream destroyed before its first read never enters the generator: close here too.
    stream.once("close", () => void spool.close());
    return stream;
  }

  /** Closes the file (and removes what is left of it); safe to call more than once. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.handle.close().catch(() => undefined);
      if (this.leftover) await rm(this.leftover, { recursive: true, force: true }).catch(() => undefined);
    })();
    return this.closing;
  }
}
