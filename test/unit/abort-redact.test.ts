/** The shared plumbing every adapter uses: a signal linked to the caller's with a timeout, and redaction. */
import { describe, expect, it } from "vitest";
import { linkSignal } from "../../src/core/abort.js";
import { REDACTED, redactCause, redactDeep, redactor } from "../../src/core/redact.js";

describe("linkSignal", () => {
  it("follows the caller's signal, even one already aborted, with its reason", () => {
    const outer = new AbortController();
    const link = linkSignal(outer.signal);
    outer.abort("stop");
    expect(link.signal.aborted).toBe(true);
    expect(link.signal.reason).toBe("stop");
    expect(link.timedOut).toBe(false);
    const late = linkSignal(outer.signal);
    expect(late.signal.reason).toBe("stop");
    link.dispose();
    late.dispose();
  });

  it("aborts on its own without touching the caller's, and stops following it once disposed", () => {
    const outer = new AbortController();
    const mine = linkSignal(outer.signal);
    mine.abort("first failure");
    expect(outer.signal.aborted).toBe(false);
    const disposed = linkSignal(outer.signal);
    disposed.dispose();
    outer.abort();
    expect(disposed.signal.aborted).toBe(false);
  });

  it("times out with the given reason and says so; a disposed timer never fires", async () => {
    const link = linkSignal(undefined, { timeoutMs: 5, timeoutReason: () => "too slow" });
    const cleared = linkSignal(undefined, { timeoutMs: 5 });
    cleared.dispose();
    await new Promise((r) => setTimeout(r, 50));
    expect(link.signal.reason).toBe("too slow");
    expect(link.timedOut).toBe(true);
    expect(cleared.signal.aborted).toBe(false);
  });
});

describe("redactor", () => {
  it("replaces each secret, longest first, and each pattern, with one marker", () => {
    const redact = redactor(["hunter2", "hunter2-long"], { patterns: [[/pw=\S+/g, `pw=${REDACTED}`]] });
    expect(redact("a hunter2-long b hunter2 c pw=xyz")).toBe(`a ${REDACTED} b ${REDACTED} c pw=${REDACTED}`);
  });

  it("leaves fragments shorter than minLength, unless told otherwise", () => {
    expect(redactor(["abc"])("abc")).toBe("abc");
    expect(redactor(["abc"], { minLength: 1 })("abc")).toBe(REDACTED);
  });

  it("reaches details and every cause of an error, keeping names and codes", () => {
    const redact = redactor(["t0ken-value"]);
    expect(redactDeep({ url: "x?t=t0ken-value", n: 1 }, redact)).toEqual({ url: `x?t=${REDACTED}`, n: 1 });
    const inner = Object.assign(new TypeError("inner t0ken-value"), { code: "ECONNRESET" });
    const outer = new Error("outer t0ken-value", { cause: inner });
    const safe = redactCause(outer, redact) as Error & { cause: Error & { code: string } };
    expect(safe.message).toBe(`outer ${REDACTED}`);
    expect(safe.cause.message).toBe(`inner ${REDACTED}`);
    expect(safe.cause.name).toBe("TypeError");
    expect(safe.cause.code).toBe("ECONNRESET");
  });
});
