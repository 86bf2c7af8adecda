/**
 * `stowage/testing`: the conformance suites every built-in adapter runs, for your own adapters.
 * Each takes the test framework's `describe` and `it` (vitest's or `node:test`'s) and asserts with
 * `node:assert`, so it needs no particular runner. See docs/ARCHITECTURE.md, "Adding an adapter".
 *
 * @example
 * import { describe, it } from "vitest";
 * import { sinkConformance, sourceConformance, transformConformance } from "stowage/testing";
 */
export { type TestApi, testBytes } from "./testing/api.js";
export {
  failingChunks,
  type SinkConformanceOptions,
  type SinkFixture,
  sinkConformance,
} from "./testing/sink.js";
export { type SourceFixture, sourceConformance } from "./testing/source.js";
export { type TransformConformanceOptions, transformConformance } from "./testing/transform.js";
