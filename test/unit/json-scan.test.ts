import { describe, expect, it } from "vitest";
import { JsonScanner, JsonSyntaxError } from "../../src/sources/http/json-scan.js";

/** A small seeded generator, so a failing case can be replayed. */
function rng(seed: number) {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

const KEYS = ["a", "b", "meta", "hash", "0", "a.b", "length", "é", 'q"x', "__proto__"];

function randomValue(r: () => number, depth: number): unknown {
  const pick = r();
  if (depth > 3 || pick < 0.35) {
    const s = r();
    if (s < 0.2) return null;
    if (s < 0.35) return r() < 0.5;
    if (s < 0.6) return Math.round((r() - 0.5) * 1e6) / (r() < 0.5 ? 1 : 1000);
    return ["", "x", "cdd01ef066bc6cf2", 'q"\\\n\u0001é😀', "a.b"][Math.floor(r() * 5)];
  }
  if (pick < 0.65) return Array.from({ length: Math.floor(r() * 4) }, () => randomValue(r, depth + 1));
  const out: Record<string, unknown> = {};
  for (let i = Math.floor(r() * 5); i > 0; i--)
    out[KEYS[Math.floor(r() * KEYS.length)]!] = randomValue(r, depth + 1);
  return out;
}

/** JSON text with random whitespace and, sometimes, duplicate keys and \u escapes. */
function render(value: unknown, r: () => number): string {
  const ws = () => [" ", "", "\n", "\t ", ""][Math.floor(r() * 5)]!;
  const str = (s: string) =>
    r() < 0.2
      ? `"${[...s].map((c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`).join("")}"`
      : JSON.stringify(s);
  if (Array.isArray(value)) return `[${ws()}${value.map((v) => `${ws()}${render(v, r)}${ws()}`).join(",")}]`;
  if (value && typeof value === "object") {
    const entries = Object.entries(value);
    if (entries.length > 0 && r() < 0.2) entries.unshift([entries[0]![0], randomValue(r, 3)]); // a duplicate, overridden
    return `{${ws()}${entries.map(([k, v]) => `${str(k)}${ws()}:${ws()}${render(v, r)}`).join(`,${ws()}`)}${ws()}}`;
  }
  return typeof value === "string" ? str(value) : JSON.stringify(value);
}

function lookup(data: unknown, path: string): { found: boolean; value?: unknown } {
  if (typeof data === "object" && data !== null && Object.hasOwn(data, path)) {
    return { found: true, value: (data as Record<string, unknown>)[path] };
  }
  let at: unknown = data;
  for (const part of path.split(".")) {
    if (typeof at !== "object" || at === null || !Object.hasOwn(at, part)) return { found: false };
    at = (at as Record<string, unknown>)[part];
  }
  return { found: true, value: at };
}

function scan(text: string, fields: string[], chunk: number): JsonScanner {
  const scanner = new JsonScanner(
    fields.flatMap((f) => [[f], f.split(".")]),
    fields.flatMap(() => [1 << 16, 1 << 16]),
  );
  const bytes = Buffer.from(text);
  for (let i = 0; i < bytes.length; i += chunk) scanner.write(bytes.subarray(i, i + chunk));
  scanner.end();
  return scanner;
}

const FIELDS = ["a", "meta.hash", "a.b", "b.0", "b.length", "length", "0", "0.a", "__proto__", 'q"x', "é"];

describe("JsonScanner", () => {
  it("finds what a parse and a lookup find, in any chunking, for random documents", () => {
    const r = rng(20261122);
    let found = 0;
    for (let n = 0; n < 3000; n++) {
      const text = render(randomValue(r, 0), r);
      const data = JSON.parse(text);
      const scanner = scan(text, FIELDS, 1 + Math.floor(r() * 7));
      for (const [i, field] of FIELDS.entries()) {
        const top = scanner.get(2 * i);
        const got = top.found ? top : scanner.get(2 * i + 1);
        const want = lookup(data, field);
        if (want.found) found++;
        expect({ text, field, got }).toEqual({
          text,
          field,
          got: want.found ? { found: true, value: want.value } : { found: false },
        });
      }
    }
    expect(found).toBeGreaterThan(1000);
  });

  it("accepts exactly what JSON.parse accepts", () => {
    const r = rng(7);
    const alphabet = ' {}[]:,"\\-+.0123456789eEtruefalsn\n\u0001xé';
    let invalid = 0;
    for (let n = 0; n < 20_000; n++) {
      const base = render(randomValue(r, 0), r);
      // Mutate one or two characters of a valid document.
      let text = base;
      for (let k = 1 + Math.floor(r() * 2); k > 0; k--) {
        const at = Math.floor(r() * (text.length + 1));
        const c = alphabet[Math.floor(r() * alphabet.length)]!;
        text =
          r() < 0.5 ? text.slice(0, at) + c + text.slice(at + 1) : text.slice(0, at) + c + text.slice(at);
      }
      let parses = true;
      try {
        JSON.parse(text);
      } catch {
        parses = false;
        invalid++;
      }
      let scans = true;
      try {
        scan(text, ["a"], 1 + Math.floor(r() * 5));
      } catch (error) {
        expect(error).toBeInstanceOf(JsonSyntaxError);
        scans = false;
      }
      expect({ text, scans }).toEqual({ text, scans: parses });
    }
    expect(invalid).toBeGreaterThan(5000);
  });

  it("reports a value larger than its limit as too large, not as a value", () => {
    const scanner = new JsonScanner([["blob"]], [100]);
    scanner.write(Buffer.from(`{"blob":"${"x".repeat(500)}","b":1}`));
    scanner.end();
    expect(scanner.get(0)).toEqual({ found: true, tooLarge: true });
  });

  it("refuses empty input, trailing data and unclosed values", () => {
    for (const text of ["", " ", "{} {}", '{"a":1', "[1,]", "01", "-", '"abc', "tru", "1.", "{,}"]) {
      expect(() => scan(text, ["a"], 2), text).toThrow(JsonSyntaxError);
    }
  });
});
