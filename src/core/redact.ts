/**
 * Redacting secrets (passwords, tokens, keys) from what stowage says: messages, details and the
 * cause chains of errors. Every adapter redacts through here, so a secret reads the same
 * everywhere (`[REDACTED]`) and a cause's own cause is not forgotten.
 */

/** What a secret is replaced with in messages, details and causes. */
export const REDACTED = "[REDACTED]";

/** Replaces every secret in a text. */
export type Redact = (text: string) => string;

export interface RedactorOptions {
  /**
   * Secrets shorter than this are not replaced: a fragment of a header ("Bearer") would blank out
   * ordinary words. A password is given with 1, so that a short one is still hidden. @default 4
   */
  minLength?: number;
  /** Shapes replaced besides the secrets themselves, e.g. `password=…` in a libpq message. */
  patterns?: ReadonlyArray<readonly [RegExp, string]>;
}

/**
 * A function that replaces each secret (longest first, so that a secret holding another goes
 * whole) and each pattern in a text.
 * @example const redact = redactor([password, encodeURIComponent(password)], { minLength: 1 });
 */
export function redactor(secrets: Iterable<string | undefined>, options: RedactorOptions = {}): Redact {
  const minLength = options.minLength ?? 4;
  const list = [
    ...new Set(
      [...secrets].filter((s): s is string => typeof s === "string" && s.length >= Math.max(1, minLength)),
    ),
  ].sort((a, b) => b.length - a.length);
  const patterns = options.patterns ?? [];
  return (text) => {
    let out = text;
    for (const secret of list) out = out.split(secret).join(REDACTED);
    for (const [pattern, replacement] of patterns) out = out.replace(pattern, replacement);
    return out;
  };
}

/** A copy of `value` (JSON-like) with every secret replaced; for details and index files. */
export function redactDeep<T>(value: T, redact: Redact): T {
  const text = JSON.stringify(value);
  if (text === undefined) return value;
  const safe = redact(text);
  return safe === text ? value : (JSON.parse(safe) as T);
}

/**
 * A copy of an error whose message and causes' messages are redacted (its name and `code` kept):
 * the original may quote a URL, a header or a connection string. Not an Error: as it is.
 */
export function redactCause(error: unknown, redact: Redact, depth = 0): unknown {
  if (!(error instanceof Error) || depth > 4) return error;
  const copy = new Error(redact(error.message), {
    cause: redactCause((error as { cause?: unknown }).cause, redact, depth + 1),
  });
  copy.name = error.name;
  const code = (error as { code?: unknown }).code;
  if (typeof code === "string") (copy as Error & { code: string }).code = code;
  return copy;
}
