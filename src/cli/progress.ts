/**
 * Progress for long commands. On a terminal: one line redrawn in place with bytes and rate, and,
 * where the size is known (restore, verify), a bar, the percentage and an ETA. Off a terminal (a
 * CronJob's log): one plain line per operation every `intervalMs` (`--progress-interval`, default
 * 30 s), so the log shows life long before the end; the same facts go to the config's logger, if
 * any, as `info({ event: "progress", ... })`. `--no-progress` turns all of it off.
 */
import { Transform } from "node:stream";
import type { Logger } from "../jobs/logger.js";
import { formatBytes, formatDuration } from "../policies/status.js";
import type { Io } from "./output.js";

/** The default `--progress-interval`: often enough for a CronJob's log, rare enough to read it. */
export const DEFAULT_PROGRESS_INTERVAL = "30s";

/** One operation's state: bytes so far, since when, and the size when it is known. */
export interface ProgressState {
  bytes: number;
  elapsedMs: number;
  total?: number;
}

export interface ProgressOptions {
  /** False under `--no-progress`. */
  enabled: boolean;
  /** Off a terminal (and to the logger): one line per operation this often. */
  intervalMs: number;
  logger?: Logger;
}

export interface Progress {
  /** The latest state of the operation `label` (e.g. "restore state"). */
  update(label: string, state: ProgressState): void;
  /** `label` is over: no more lines for it. */
  end(label: string): void;
  /** Everything is over: clears the terminal line and stops the timer. */
  done(): void;
}

const rateOf = (s: ProgressState) => (s.elapsedMs > 0 ? (s.bytes / s.elapsedMs) * 1000 : 0);

/** The facts of one progress line: percentage and ETA only where the total is known. */
export function progressFacts(state: ProgressState) {
  const rate = rateOf(state);
  const known = state.total !== undefined && state.total > 0;
  const percent = known ? Math.min(100, Math.floor((state.bytes / state.total!) * 100)) : undefined;
  const etaMs =
    known && rate > 0 ? Math.max(0, Math.round(((state.total! - state.bytes) / rate) * 1000)) : undefined;
  return { bytes: state.bytes, total: state.total, percent, rate, etaMs, elapsedMs: state.elapsedMs };
}

function describe(label: string, state: ProgressState): string {
  const f = progressFacts(state);
  const size =
    f.total !== undefined && f.total > 0
      ? `${formatBytes(f.bytes)}/${formatBytes(f.total)}`
      : formatBytes(f.bytes);
  const percent = f.percent !== undefined ? ` ${f.percent}%` : "";
  const eta = f.etaMs !== undefined ? ` ETA ${formatDuration(f.etaMs)}` : "";
  return `${label} ${size}${percent} ${formatBytes(f.rate)}/s${eta}`;
}

/** A progress reporter for `io` (see the file's comment for what it shows where). */
export function progress(io: Io, options: ProgressOptions): Progress {
  const tty = options.enabled && io.stderr.isTTY === true;
  const lines = options.enabled && !tty;
  const logger = options.enabled ? options.logger : undefined;
  const active = new Map<string, ProgressState>();
  let timer: NodeJS.Timeout | undefined;
  let shown = false;
  let drawnAt = 0;

  const tick = () => {
    for (const [label, state] of active) {
      if (lines) io.stderr.write(`stowage: progress ${describe(label, state)}\n`);
      logger?.info({ event: "progress", operation: label, ...progressFacts(state) }, "progress");
    }
  };
  const draw = (label: string, state: ProgressState) => {
    const now = Date.now();
    const last = state.total !== undefined && state.bytes >= state.total;
    if (now - drawnAt < 100 && !last) return; // a redraw per chunk would cost more than the copy
    drawnAt = now;
    const width = 24;
    const bar =
      state.total && state.total > 0
        ? `[${"#".repeat(Math.round((Math.min(state.bytes, state.total) / state.total) * width)).padEnd(width, ".")}] `
        : "";
    io.stderr.write(`\r\x1b[K${bar}${describe(label, state)}`);
    shown = true;
  };

  return {
    update(label, state) {
      if (!options.enabled) return;
      active.set(label, state);
      if (tty) draw(label, state);
      if ((lines || logger) && !timer && options.intervalMs > 0) {
        timer = setInterval(tick, options.intervalMs);
        timer.unref();
      }
    },
    end(label) {
      active.delete(label);
      if (tty && shown) io.stderr.write("\r\x1b[K");
      shown = false;
    },
    done() {
      active.clear();
      if (timer) clearInterval(timer);
      timer = undefined;
      if (tty && shown) io.stderr.write("\r\x1b[K");
      shown = false;
    },
  };
}

/** A pass-through stream that counts the bytes through it into `onBytes(total so far)`. */
export function byteMeter(onBytes: (bytes: number) => void): Transform {
  let bytes = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      bytes += chunk.length;
      onBytes(bytes);
      callback(null, chunk);
    },
  });
}
