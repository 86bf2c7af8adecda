/**
 * Progress for the operations that move an artifact's bytes (restore, verify, copyBackup, rekey),
 * in the event `backup` emits, so that one listener serves them all.
 */
import { Transform, type TransformCallback } from "node:stream";
import { throttle } from "./streams.js";
import type { BackupProgress } from "./types.js";

/** Receives progress events: at most every 250 ms while bytes move, and once with `done: true`. */
export type ProgressListener = (progress: BackupProgress) => void;

/** The interval between two progress events, as `backup` has it. */
const INTERVAL_MS = 250;

/**
 * Counts an operation's bytes and reports them to a listener, throttled. Without a listener every
 * method does nothing and `meter` adds no stage, so an operation pays nothing for progress it was
 * not asked for.
 */
export class ProgressCounter {
  private bytesRead = 0;
  private bytesWritten = 0;
  private readonly started = Date.now();
  private readonly emit: ((value: BackupProgress, force?: boolean) => void) | undefined;

  constructor(listener: ProgressListener | undefined) {
    this.emit = listener ? throttle(INTERVAL_MS, listener) : undefined;
  }

  /** Bytes read so far (a running total, as `HashCounter`'s `onBytes` gives it). */
  readonly read = (total: number): void => {
    this.bytesRead = total;
    this.report(false);
  };

  /** Bytes written or released so far (a running total). */
  readonly written = (total: number): void => {
    this.bytesWritten = total;
    this.report(false);
  };

  /** The final event. Called once, after the last byte; never after a failure. */
  done(): void {
    this.report(true);
  }

  /** A pass-through stage that counts into `read` or `written`; none without a listener. */
  meter(which: "read" | "written"): Transform[] {
    if (!this.emit) return [];
    const count = which === "read" ? this.read : this.written;
    let total = 0;
    return [
      new Transform({
        transform(chunk: Buffer, _encoding, callback: TransformCallback) {
          total += chunk.length;
          count(total);
          callback(null, chunk);
        },
      }),
    ];
  }

  private report(done: boolean): void {
    this.emit?.(
      {
        bytesRead: this.bytesRead,
        bytesWritten: this.bytesWritten,
        elapsedMs: Date.now() - this.started,
        done,
      },
      done,
    );
  }
}
