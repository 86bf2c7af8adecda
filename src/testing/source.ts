import assert from "node:assert/strict";
import { inspect } from "node:util";
import type { Source, SourceOutput } from "../core/types.js";
import { codeOf, rejectionOf, type TestApi, watchUncaught } from "./api.js";

/** What a source's conformance run needs; `setup` makes a fresh one for each test. */
export interface SourceFixture {
  /** A source with at least a few chunks of data to give (a few hundred KiB or more). */
  source: Source;
  /**
   * Resolves once the source holds nothing any more (its child process reaped, its socket or
   * file closed), and rejects naming what it still holds; polled for a few seconds after a stop.
   * @default nothing checked beyond the stream being destroyed
   */
  released?: () => Promise<void>;
  /** Strings that must never appear in an error (passwords, tokens). */
  secrets?: string[];
  /**
   * A source configured like `source` whose open, stream or details() fails (a wrong password, a
   * refused request, a folder that is not there). Required: every source can fail, and the suite
   * checks that it does so with a coded error (a `StowageError` `code`) and no secret. A
   * source of bytes already in hand fails through what feeds it (a generator that throws).
   */
  failing: () => Source;
  /** Removes what the test made (a database, a server, a folder); run after each test, passed or failed. */
  cleanup?: () => Promise<void>;
}

const context = (signal: AbortSignal) => ({ signal, startedAt: new Date(), job: "conformance" });

/** Polls `released` until it resolves, for at most `ms`. */
async function eventuallyReleased(fixture: SourceFixture, ms = 10_000): Promise<void> {
  if (!fixture.released) return;
  const until = Date.now() + ms;
  for (;;) {
    try {
      return await fixture.released();
    } catch (error) {
      if (Date.now() > until) throw error;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** An abort as stowage codes it (ABORTED), or as Node's streams raise it (AbortError). */
const isAbort = (error: unknown): boolean =>
  codeOf(error) === "ABORTED" ||
  codeOf(error) === "ABORT_ERR" ||
  (error as Error | undefined)?.name === "AbortError";

type Settled = { state: "resolved" } | { state: "rejected"; error: unknown } | { state: "pending" };

/** How a promise settles within `ms` (a source's details() must not hang once its stream is done). */
function settled(promise: Promise<unknown>, ms = 10_000): Promise<Settled> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<Settled>((resolve) => {
    timer = setTimeout(() => resolve({ state: "pending" }), ms);
  });
  return Promise.race([
    promise.then(
      (): Settled => ({ state: "resolved" }),
      (error: unknown): Settled => ({ state: "rejected", error }),
    ),
    late,
  ]).finally(() => clearTimeout(timer));
}

/** Reads the stream to its end; the number of bytes. */
async function drain(output: SourceOutput): Promise<number> {
  let bytes = 0;
  for await (const chunk of output.stream) bytes += (chunk as Uint8Array).length;
  return bytes;
}

function assertNoSecret(error: unknown, secrets: readonly string[]): void {
  const text = `${inspect(error, { depth: 10 })} ${JSON.stringify((error as { details?: unknown })?.details ?? {})}`;
  for (const secret of secrets) assert.ok(!text.includes(secret), "a secret appears in the error");
}

/**
 * The conformance suite of a {@link Source}: what `backup` relies on to leave nothing behind.
 *
 * @example
 * import { describe, it } from "node:test";
 * import { sourceConformance } from "stowage/testing";
 * sourceConformance({ describe, it }, "mine", async () => ({ source: mySource(options) }));
 */
export function sourceConformance(api: TestApi, name: string, setup: () => Promise<SourceFixture>): void {
  const { describe, it } = api;
  const withFixture = (fn: (f: SourceFixture) => Promise<void>) => async () => {
    const fixture = await setup();
    const uncaught = watchUncaught();
    try {
      await fn(fixture);
      await uncaught.check();
    } finally {
      uncaught.dispose();
      await fixture.cleanup?.();
    }
  };

  describe(`source conformance: ${name}`, () => {
    it(
      "gives every byte and then details() that survive JSON, and releases what it held",
      withFixture(async (f) => {
        const output = await f.source.open(context(new AbortController().signal));
        assert.equal(typeof output.contentType, "string");
        const bytes = await drain(output);
        assert.ok(bytes > 0, "the source gave no bytes");
        const details = await output.details();
        assert.deepEqual(JSON.parse(JSON.stringify(details)), details);
        await eventuallyReleased(f);
      }),
    );

    it(
      "fails with ABORTED when the signal has already fired, holding nothing",
      withFixture(async (f) => {
        const controller = new AbortController();
        controller.abort();
        const error = await rejectionOf(
          (async () => {
            const output = await f.source.open(context(controller.signal));
            await drain(output);
            await output.details();
          })(),
        );
        assert.ok(isAbort(error), `expected ABORTED, got ${String(codeOf(error))}`);
        assertNoSecret(error, f.secrets ?? []);
        await eventuallyReleased(f);
      }),
    );

    it(
      "stops on an abort mid-stream: the stream ends or errors, details() settles, nothing is held",
      withFixture(async (f) => {
        const controller = new AbortController();
        const output = await f.source.open(context(controller.signal));
        const details = settled(output.details());
        const error = await (async () => {
          for await (const _ of output.stream) controller.abort();
        })().then(
          () => undefined,
          (e: unknown) => e,
        );
        if (error !== undefined) assert.ok(isAbort(error), `expected ABORTED, got ${String(codeOf(error))}`);
        const outcome = await details;
        assert.notEqual(outcome.state, "pending", "details() never settled after an abort");
        if (outcome.state === "rejected") assertNoSecret(outcome.error, f.secrets ?? []);
        await eventuallyReleased(f);
      }),
    );

    it(
      "releases what it held when the consumer stops early, and details() settles",
      withFixture(async (f) => {
        const output = await f.source.open(context(new AbortController().signal));
        const details = settled(output.details());
        for await (const _ of output.stream) break; // destroys the stream
        assert.notEqual((await details).state, "pending", "details() never settled after an early stop");
        await eventuallyReleased(f);
      }),
    );

    it(
      "fails with a coded error that carries no secret",
      withFixture(async (f) => {
        assert.equal(typeof f.failing, "function", "the fixture has no `failing` source");
        const error = await rejectionOf(
          (async () => {
            const output = await f.failing().open(context(new AbortController().signal));
            await drain(output);
            await output.details();
          })(),
        );
        assert.equal(typeof codeOf(error), "string");
        assertNoSecret(error, f.secrets ?? []);
        await eventuallyReleased(f);
      }),
    );
  });
}
