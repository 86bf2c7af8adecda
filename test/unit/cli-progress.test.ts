import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { progress, progressFacts } from "../../src/cli/progress.js";

function io(isTTY: boolean) {
  const stderr = Object.assign(new PassThrough(), { isTTY });
  let text = "";
  stderr.on("data", (chunk: Buffer) => {
    text += chunk.toString();
  });
  return {
    io: { stdout: new PassThrough(), stderr, cwd: ".", signal: new AbortController().signal },
    text: () => text,
  };
}

describe("CLI progress", () => {
  it("where the size is known: a percentage and an ETA from the rate so far; none where it is not", () => {
    expect(progressFacts({ bytes: 250, total: 1000, elapsedMs: 1000 })).toMatchObject({
      percent: 25,
      rate: 250,
      etaMs: 3000,
    });
    const unknown = progressFacts({ bytes: 250, elapsedMs: 1000 });
    expect(unknown.percent).toBeUndefined();
    expect(unknown.etaMs).toBeUndefined();
  });

  it("on a terminal: one line redrawn in place with the percentage, cleared at the end", () => {
    const t = io(true);
    const bar = progress(t.io, { enabled: true, intervalMs: 30_000 });
    bar.update("restore db", { bytes: 1000, total: 1000, elapsedMs: 500 });
    expect(t.text().startsWith("\r\x1b[K")).toBe(true);
    expect(t.text()).toMatch(/restore db .*\b100%/);
    expect(t.text()).not.toContain("\n");
    bar.done();
    expect(t.text().endsWith("\r\x1b[K")).toBe(true);
  });

  it("off a terminal: nothing per chunk, one line per operation each interval, also to the logger; --no-progress: nothing", async () => {
    const t = io(false);
    const logged: Array<Record<string, unknown>> = [];
    const noop = () => undefined;
    const logger = {
      debug: noop,
      warn: noop,
      error: noop,
      info: (f: Record<string, unknown>) => logged.push(f),
    };
    const bar = progress(t.io, { enabled: true, intervalMs: 20, logger });
    bar.update("verify db@primary", { bytes: 10, total: 100, elapsedMs: 5 });
    expect(t.text()).toBe("");
    await new Promise((resolve) => setTimeout(resolve, 70));
    bar.done();
    const lines = t.text().trimEnd().split("\n");
    expect(lines.length).toBeGreaterThanOrEqual(1);
    for (const line of lines) expect(line).toMatch(/verify db@primary .*\b10%/);
    expect(logged[0]).toMatchObject({ event: "progress", operation: "verify db@primary", percent: 10 });
    const after = t.text();
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(t.text()).toBe(after); // done() stops the timer

    const off = io(false);
    const silent = progress(off.io, { enabled: false, intervalMs: 10, logger });
    silent.update("restore db", { bytes: 1, elapsedMs: 1 });
    await new Promise((resolve) => setTimeout(resolve, 40));
    silent.done();
    expect(off.text()).toBe("");
  });
});
