/**
 * A signal of our own, linked to the caller's: it aborts when the caller's does (with its reason),
 * when `abort()` is called (the first failing stage stops the others), or after a timeout. Written
 * once here because a forgotten `removeEventListener` or `clearTimeout` keeps a run alive, and a
 * caller's signal that is already aborted never fires its "abort" event.
 */
export interface LinkedSignal {
  readonly signal: AbortSignal;
  /** Aborts the linked signal only (the caller's stays as it is). */
  abort(reason?: unknown): void;
  /** Whether the timeout, rather than the caller or `abort()`, aborted the signal. */
  readonly timedOut: boolean;
  /** Stops following the caller's signal and clears the timer; call it in `finally`. */
  dispose(): void;
}

export interface LinkSignalOptions {
  /** Abort after this many milliseconds. @default no timeout */
  timeoutMs?: number;
  /** The reason the timeout aborts with. @default the platform's AbortError */
  timeoutReason?: () => unknown;
}

/**
 * Links a new signal to `outer` (which may be absent), with an optional timeout.
 * @example
 * const link = linkSignal(options.signal, { timeoutMs: 30_000 });
 * try { await work(link.signal); } finally { link.dispose(); }
 */
export function linkSignal(outer: AbortSignal | undefined, options: LinkSignalOptions = {}): LinkedSignal {
  const controller = new AbortController();
  let timedOut = false;
  const forward = () => controller.abort(outer?.reason);
  if (outer?.aborted) forward();
  else outer?.addEventListener("abort", forward, { once: true });
  const timer =
    options.timeoutMs === undefined
      ? undefined
      : setTimeout(() => {
          if (controller.signal.aborted) return;
          timedOut = true;
          controller.abort(options.timeoutReason?.());
        }, options.timeoutMs);
  return {
    signal: controller.signal,
    abort: (reason?: unknown) => controller.abort(reason),
    get timedOut() {
      return timedOut;
    },
    dispose() {
      clearTimeout(timer);
      outer?.removeEventListener("abort", forward);
    },
  };
}
