import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

export default defineConfig({
  // Examples import "stowage" as a user would; in this repo that is the source.
  resolve: {
    alias: [
      { find: /^stowage$/, replacement: fileURLToPath(new URL("./src/index.ts", import.meta.url)) },
      { find: /^stowage\/(.*)$/, replacement: fileURLToPath(new URL("./src/$1.ts", import.meta.url)) },
    ],
  },
  test: {
    // CI runs the README's `npm test` unchanged and reads the results from this file.
    ...(process.env.STOWAGE_TEST_REPORT
      ? { reporters: ["default", ["json", { outputFile: process.env.STOWAGE_TEST_REPORT }]] }
      : {}),
    env: { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "true" },
    projects: [
      {
        extends: true,
        test: {
          name: "unit",
          include: ["test/unit/**/*.test.ts"],
          testTimeout: 30_000,
          // Vitest's default is one worker fewer than the cores: one on the 2-core CI machine, which
          // ran every unit file one after another, the two eight-year strategy simulations too.
          maxWorkers: 2,
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          testTimeout: 120_000,
          hookTimeout: 120_000,
          // Servers (PostgreSQL, S3, the Kubernetes API stand-in) are started per file; keep the
          // 2-core CI machine from running too many of them at once.
          maxWorkers: 2,
          // Projects with different worker limits must run as separate groups: units first.
          sequence: { groupOrder: 1 },
        },
      },
      {
        extends: true,
        test: {
          name: "faults",
          // Hostile testing through the public API, one file a port; ends with the line
          // "faults: N injected, N clean, N leftovers, N secrets".
          include: ["test/faults/**/*.test.ts"],
          globalSetup: ["test/faults/summary.ts"],
          testTimeout: 120_000,
          hookTimeout: 120_000,
          maxWorkers: 2,
          sequence: { groupOrder: 2 },
        },
      },
    ],
  },
});
