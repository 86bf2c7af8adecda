/** Options parsed once per distinct content: the same answers as parsing every time; and what a bad one says. */
import { describe, expect, it } from "vitest";
import { isStowageError } from "../../src/core/errors.js";
import { parseOptionsOnce } from "../../src/core/options.js";
import { planRetention, retentionPolicySchema } from "../../src/policies/retention.js";
import { type BytesSourceOptions, bytesSource } from "../../src/sources/bytes.js";

const code = (f: () => unknown): [string, unknown] => {
  try {
    f();
  } catch (error) {
    return isStowageError(error) ? [error.code, error.details.issues] : ["not a StowageError", error];
  }
  return ["no error", undefined];
};

describe("parseOptionsOnce", () => {
  it("answers by content: a policy changed in place is parsed afresh, a bad one always refused", () => {
    const policy: Record<string, unknown> = { keepLast: 3 };
    expect(parseOptionsOnce(retentionPolicySchema, policy, "t")).toEqual({ keepLast: 3, holdLabel: "hold" });
    policy.keepLast = -1;
    expect(code(() => parseOptionsOnce(retentionPolicySchema, policy, "t"))).toEqual([
      "CONFIG_INVALID",
      [expect.objectContaining({ path: "keepLast" })],
    ]);
    // Refused again: a failure is never remembered.
    expect(code(() => parseOptionsOnce(retentionPolicySchema, policy, "t"))[0]).toBe("CONFIG_INVALID");
    policy.keepLast = 3;
    expect(parseOptionsOnce(retentionPolicySchema, policy, "t").keepLast).toBe(3);
  });

  it("does not let a value JSON cannot tell apart pass as one it remembered", () => {
    parseOptionsOnce(retentionPolicySchema, {}, "t");
    // An unknown key holding undefined, a function or a Date would all print as "{}" or a string.
    for (const bad of [{ bogus: undefined }, { bogus: () => 1 }, { keepLast: Number.NaN }]) {
      expect(code(() => parseOptionsOnce(retentionPolicySchema, bad, "t"))[0]).toBe("CONFIG_INVALID");
    }
    parseOptionsOnce(retentionPolicySchema, { maxAge: "30d" }, "t");
    const date = { maxAge: { toJSON: () => "30d" } };
    expect(code(() => parseOptionsOnce(retentionPolicySchema, date, "t"))[0]).toBe("CONFIG_INVALID");
  });

  it("hands each plan its own copy of the policy", () => {
    const now = new Date("2026-01-01T00:00:00Z");
    const a = planRetention([], { keepLast: 2 }, { now });
    (a.policy as { keepLast?: number }).keepLast = 99;
    expect(planRetention([], { keepLast: 2 }, { now }).policy.keepLast).toBe(2);
  });
});

describe("parseOptions", () => {
  it("refuses bytes where the options object belongs with one issue, not one per index and method", () => {
    const [got, issues] = code(() => bytesSource(Buffer.from("hi") as unknown as BytesSourceOptions));
    expect(got).toBe("CONFIG_INVALID");
    expect(issues).toEqual([{ path: "(options)", problem: expect.stringContaining("Buffer of 2 bytes") }]);
    // A plain object with a wrong key still names that key.
    expect(code(() => bytesSource({ data: "x", dta: "y" } as unknown as BytesSourceOptions))).toEqual([
      "CONFIG_INVALID",
      [expect.objectContaining({ path: "(options)", problem: expect.stringContaining('"dta"') })],
    ]);
  });
});
