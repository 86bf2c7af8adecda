/**
 * A streaming JSON checker for bodies too large to parse whole: it validates the syntax (RFC 8259,
 * as `JSON.parse` accepts it) chunk by chunk in constant memory, and captures the raw text of a
 * few values at given paths, so `expect.requiredFields` still works on a body of any size.
 *
 * Paths resolve as `lookup` does on a parsed value: object keys by name, array elements by index
 * (`"items.0"`), an array's `length`, and the last of duplicate keys wins.
 */

import {
  type Capture,
  type Container,
  isDigit,
  isHex,
  isWhitespace,
  JsonSyntaxError,
  LITERALS,
  Mode,
  Num,
  type ScannedValue,
  type Target,
} from "./json-scan-tokens.js";

export { JsonSyntaxError, type ScannedValue } from "./json-scan-tokens.js";

/**
 * Feed it the body with `write(chunk)`, then call `end()`; either throws {@link JsonSyntaxError}.
 * `get(path)` then says what was found at a path given to the constructor.
 */
export class JsonScanner {
  private readonly targets: Target[];
  private readonly maxDepth: number;
  private readonly keyLimit: number;
  private readonly stack: Container[] = [];
  private readonly captures: Capture[] = [];
  private mode: Mode = Mode.Value;
  private num: Num = Num.Int;
  private literal: Buffer = LITERALS[0x74]!;
  private literalAt = 0;
  /** 0: plain, 1: after a backslash, 2–5: reading the hex digits of `\u`. */
  private escape = 0;
  private keyParts: Buffer[] = [];
  private keySize = 0;
  private keyTooLong = false;
  private offset = 0;

  /** @param paths each a list of segments; `limits[i]` caps the raw bytes kept for `paths[i]`. */
  constructor(paths: ReadonlyArray<readonly string[]>, limits: readonly number[]) {
    this.targets = paths.map((path, i) => ({
      path,
      limit: limits[i] ?? 1 << 16,
      found: false,
      parts: [],
      size: 0,
      tooLarge: false,
    }));
    this.maxDepth = Math.max(0, ...paths.map((p) => p.length));
    // A key is compared only with path segments: one much longer than the longest cannot match.
    this.keyLimit = 6 * Math.max(0, ...paths.flat().map((s) => Buffer.byteLength(s))) + 16;
  }

  /** What was found at `paths[i]`; meaningful after `end()`. */
  get(i: number): ScannedValue {
    const t = this.targets[i]!;
    if (!t.found) return { found: false };
    if (t.length !== undefined) return { found: true, value: t.length };
    if (t.tooLarge) return { found: true, tooLarge: true };
    return { found: true, value: JSON.parse(Buffer.concat(t.parts, t.size).toString("utf8")) };
  }

  write(chunk: Buffer): void {
    const n = chunk.length;
    let i = 0;
    while (i < n) {
      const c = chunk[i]!;
      switch (this.mode) {
        case Mode.String:
        case Mode.Key: {
          const start = i;
          if (this.escape === 0) {
            // The hot loop: most bytes of a large body are inside strings.
            while (i < n) {
              const d = chunk[i]!;
              if (d === 0x22 || d === 0x5c || d < 0x20) break;
              i++;
            }
            if (this.mode === Mode.Key && i > start) this.keyBytes(chunk.subarray(start, i));
            if (i === n) break;
            const d = chunk[i]!;
            if (d < 0x20) this.fail("a control character in a string", i);
            if (d === 0x5c) {
              this.escape = 1;
              if (this.mode === Mode.Key) this.keyBytes(chunk.subarray(i, i + 1));
              i++;
              break;
            }
            // The closing quote.
            i++;
            if (this.mode === Mode.Key) {
              this.finishKey();
              this.mode = Mode.Colon;
            } else this.valueEnd(chunk, i);
            break;
          }
          if (this.escape === 1) {
            if (c === 0x75) this.escape = 2;
            else if (
              c === 0x22 ||
              c === 0x5c ||
              c === 0x2f ||
              c === 0x62 ||
              c === 0x66 ||
              c === 0x6e ||
              c === 0x72 ||
              c === 0x74
            )
              this.escape = 0;
            else this.fail("a bad escape in a string", i);
          } else {
            if (!isHex(c)) this.fail("a bad \\u escape in a string", i);
            this.escape = this.escape === 5 ? 0 : this.escape + 1;
          }
          if (this.mode === Mode.Key) this.keyBytes(chunk.subarray(i, i + 1));
          i++;
          break;
        }
        case Mode.Number: {
          if (this.numberByte(c, i)) i++;
          else {
            this.valueEnd(chunk, i); // the byte after a number belongs to what follows it
          }
          break;
        }
        case Mode.Literal: {
          if (c !== this.literal[this.literalAt]) this.fail("an unexpected character", i);
          i++;
          if (++this.literalAt === this.literal.length) this.valueEnd(chunk, i);
          break;
        }
        default: {
          if (isWhitespace(c)) {
            i++;
            break;
          }
          this.structural(c, chunk, i);
          i++;
        }
      }
    }
    // Keep what the open captures saw of this chunk; they continue at the start of the next.
    for (const capture of this.captures) {
      this.keep(capture.target, chunk.subarray(capture.start));
      capture.start = 0;
    }
    this.offset += n;
  }

  end(): void {
    if (this.mode === Mode.Number) {
      if (
        this.num !== Num.Zero &&
        this.num !== Num.Int &&
        this.num !== Num.Frac &&
        this.num !== Num.ExpDigits
      ) {
        this.fail("an incomplete number", 0);
      }
      this.valueEnd(Buffer.alloc(0), 0);
    }
    if (this.mode !== Mode.End) this.fail("unexpected end of the body", 0);
  }

  private fail(problem: string, at: number): never {
    throw new JsonSyntaxError(problem, this.offset + at);
  }

  private structural(c: number, chunk: Buffer, i: number): void {
    const mode = this.mode;
    if (mode === Mode.Value) this.valueStart(c, i);
    else if (mode === Mode.ArrayFirst) {
      if (c === 0x5d) this.close(chunk, i, "array");
      else {
        this.mode = Mode.Value;
        this.valueStart(c, i);
      }
    } else if (mode === Mode.ArrayNext) {
      if (c === 0x2c) {
        this.stack.at(-1)!.index++;
        this.mode = Mode.Value;
      } else if (c === 0x5d) this.close(chunk, i, "array");
      else this.fail("expected ',' or ']'", i);
    } else if (mode === Mode.ObjectFirst) {
      if (c === 0x7d) this.close(chunk, i, "object");
      else if (c === 0x22) this.keyStart();
      else this.fail("expected a key or '}'", i);
    } else if (mode === Mode.ObjectKey) {
      if (c === 0x22) this.keyStart();
      else this.fail("expected a key", i);
    } else if (mode === Mode.Colon) {
      if (c === 0x3a) this.mode = Mode.Value;
      else this.fail("expected ':'", i);
    } else if (mode === Mode.ObjectNext) {
      if (c === 0x2c) this.mode = Mode.ObjectKey;
      else if (c === 0x7d) this.close(chunk, i, "object");
      else this.fail("expected ',' or '}'", i);
    } else this.fail("unexpected data after the JSON value", i);
  }

  private valueStart(c: number, i: number): void {
    let kind: "object" | "array" | "scalar";
    if (c === 0x7b) kind = "object";
    else if (c === 0x5b) kind = "array";
    else if (c === 0x22 || c === 0x2d || isDigit(c) || LITERALS[c]) kind = "scalar";
    else this.fail("expected a value", i);
    const lengthTargets = this.begin(i);
    if (kind === "object") {
      this.stack.push({ type: "object", key: null, index: 0 });
      this.mode = Mode.ObjectFirst;
    } else if (kind === "array") {
      this.stack.push({
        type: "array",
        key: null,
        index: 0,
        ...(lengthTargets.length > 0 ? { lengthTargets } : {}),
      });
      this.mode = Mode.ArrayFirst;
    } else if (c === 0x22) {
      this.mode = Mode.String;
      this.escape = 0;
    } else if (c === 0x2d || isDigit(c)) {
      this.mode = Mode.Number;
      this.num = c === 0x2d ? Num.Minus : c === 0x30 ? Num.Zero : Num.Int;
    } else {
      this.mode = Mode.Literal;
      this.literal = LITERALS[c]!;
      this.literalAt = 1;
    }
  }

  /**
   * A value starts at the current path: it replaces whatever an earlier duplicate key left at or
   * under this path, and starts a capture where a target is this path. Returns the targets that
   * are this value's `length`, should it be an array.
   */
  private begin(i: number): Target[] {
    const depth = this.stack.length;
    if (depth > this.maxDepth) return [];
    const lengthTargets: Target[] = [];
    for (const t of this.targets) {
      if (t.path.length < depth || !this.onPath(t.path, depth)) continue;
      t.found = false;
      t.parts = [];
      t.size = 0;
      t.tooLarge = false;
      delete t.length;
      if (t.path.length === depth) {
        t.found = true;
        this.captures.push({ target: t, depth, start: i });
      } else if (t.path.length === depth + 1 && t.path[depth] === "length") {
        lengthTargets.push(t);
      }
    }
    return lengthTargets;
  }

  /** Whether the first `depth` segments of `path` are the current position's. */
  private onPath(path: readonly string[], depth: number): boolean {
    for (let d = 0; d < depth; d++) {
      const container = this.stack[d]!;
      const segment = container.type === "object" ? container.key : String(container.index);
      if (segment === null || segment !== path[d]) return false;
    }
    return true;
  }

  private close(chunk: Buffer, i: number, type: "object" | "array"): void {
    const top = this.stack.pop()!;
    if (top.type !== type) this.fail("mismatched brackets", i);
    if (top.lengthTargets) {
      // An empty array closes from ArrayFirst with index 0; otherwise index counts commas.
      const length = this.mode === Mode.ArrayFirst ? 0 : top.index + 1;
      for (const t of top.lengthTargets) {
        t.found = true;
        t.length = length;
      }
    }
    this.valueEnd(chunk, i + 1);
  }

  /** A value ended just before `end` in `chunk`: finish the captures it closes, move on. */
  private valueEnd(chunk: Buffer, end: number): void {
    const depth = this.stack.length;
    for (let k = this.captures.length - 1; k >= 0; k--) {
      const capture = this.captures[k]!;
      if (capture.depth !== depth) continue;
      this.keep(capture.target, chunk.subarray(capture.start, end));
      this.captures.splice(k, 1);
    }
    const top = this.stack.at(-1);
    this.mode = !top ? Mode.End : top.type === "object" ? Mode.ObjectNext : Mode.ArrayNext;
  }

  private keep(t: Target, bytes: Buffer): void {
    if (t.tooLarge || bytes.length === 0) return;
    t.size += bytes.length;
    if (t.size > t.limit) {
      t.tooLarge = true;
      t.parts = [];
      return;
    }
    t.parts.push(Buffer.from(bytes)); // a copy: the chunk it views is not ours to keep
  }

  private keyStart(): void {
    this.mode = Mode.Key;
    this.escape = 0;
    this.keyParts = [];
    this.keySize = 0;
    this.keyTooLong = false;
  }

  private keyBytes(bytes: Buffer): void {
    if (this.keyTooLong) return;
    this.keySize += bytes.length;
    if (this.keySize > this.keyLimit || this.stack.length > this.maxDepth) {
      this.keyTooLong = true;
      this.keyParts = [];
      return;
    }
    this.keyParts.push(Buffer.from(bytes));
  }

  private finishKey(): void {
    const top = this.stack.at(-1)!;
    top.key = this.keyTooLong
      ? null
      : (JSON.parse(`"${Buffer.concat(this.keyParts, this.keySize).toString("utf8")}"`) as string);
    this.keyParts = [];
  }

  /** Whether `c` continues the number; false when the number has ended just before it. */
  private numberByte(c: number, i: number): boolean {
    const digit = isDigit(c);
    switch (this.num) {
      case Num.Minus:
        if (!digit) this.fail("a bad number", i);
        this.num = c === 0x30 ? Num.Zero : Num.Int;
        return true;
      case Num.Zero:
      case Num.Int:
        if (digit && this.num === Num.Int) return true;
        if (digit) this.fail("a number with a leading zero", i);
        if (c === 0x2e) {
          this.num = Num.Dot;
          return true;
        }
        if (c === 0x65 || c === 0x45) {
          this.num = Num.Exp;
          return true;
        }
        return false;
      case Num.Dot:
        if (!digit) this.fail("a bad number", i);
        this.num = Num.Frac;
        return true;
      case Num.Frac:
        if (digit) return true;
        if (c === 0x65 || c === 0x45) {
          this.num = Num.Exp;
          return true;
        }
        return false;
      case Num.Exp:
        if (c === 0x2b || c === 0x2d) {
          this.num = Num.ExpSign;
          return true;
        }
        if (!digit) this.fail("a bad number", i);
        this.num = Num.ExpDigits;
        return true;
      case Num.ExpSign:
        if (!digit) this.fail("a bad number", i);
        this.num = Num.ExpDigits;
        return true;
      case Num.ExpDigits:
        return digit;
    }
  }
}
