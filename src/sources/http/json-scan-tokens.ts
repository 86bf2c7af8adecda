/** The body is not valid JSON; `offset` is the byte where that became certain. */
export class JsonSyntaxError extends Error {
  constructor(
    message: string,
    readonly offset: number,
  ) {
    super(`${message} at byte ${offset}`);
    this.name = "JsonSyntaxError";
  }
}

/** One path's outcome: absent, present with its value, or present but too large to compare. */
export type ScannedValue =
  | { found: false }
  | { found: true; value: unknown }
  | { found: true; tooLarge: true };

export interface Target {
  path: readonly string[];
  /** At most this many raw bytes are kept; a larger value is reported as too large. */
  limit: number;
  found: boolean;
  parts: Buffer[];
  size: number;
  tooLarge: boolean;
  /** Set for an array's `length`. */
  length?: number;
}

export interface Container {
  type: "object" | "array";
  /** The current key (object) or index (array); `null` for a key too long to match any path. */
  key: string | null;
  index: number;
  /** Targets that are this array's `length`. */
  lengthTargets?: Target[];
}

export interface Capture {
  target: Target;
  depth: number;
  start: number;
}

// Plain numbers rather than enums: the scanner's states, compared in its hot loop.
export const Mode = {
  Value: 0,
  ObjectFirst: 1,
  ObjectKey: 2,
  Key: 3,
  Colon: 4,
  ObjectNext: 5,
  ArrayFirst: 6,
  ArrayNext: 7,
  String: 8,
  Literal: 9,
  Number: 10,
  End: 11,
} as const;
export type Mode = (typeof Mode)[keyof typeof Mode];

export const Num = { Minus: 0, Zero: 1, Int: 2, Dot: 3, Frac: 4, Exp: 5, ExpSign: 6, ExpDigits: 7 } as const;
export type Num = (typeof Num)[keyof typeof Num];

export const isWhitespace = (c: number) => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
export const isDigit = (c: number) => c >= 0x30 && c <= 0x39;
export const isHex = (c: number) => isDigit(c) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
/** The literals by their first byte (`t`, `f`, `n`). */
export const LITERALS: Record<number, Buffer> = {
  116: Buffer.from("true"),
  102: Buffer.from("false"),
  110: Buffer.from("null"),
};
