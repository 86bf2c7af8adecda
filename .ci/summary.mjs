// Reads vitest JSON reports ("label=path" arguments) and prints one line per run, then the
// closing line "N passed, N failed" over all runs. A runtime that has zstd must not skip a zstd
// test: its only skips may be the ones named "without zstd…".
import { readFileSync } from "node:fs";

const firstLine = (text) =>
  String(text ?? "")
    .split("\n")
    .find((l) => l.trim() !== "") ?? "";

let passed = 0;
let failed = 0;
let skipped = 0;
for (const arg of process.argv.slice(2)) {
  const [label, path, flag] = arg.split("=");
  let r;
  try {
    r = JSON.parse(readFileSync(path, "utf8"));
  } catch {
    console.log(`${label}: no report (the run did not finish)`);
    failed += 1;
    continue;
  }
  // A test file that fails to load has no results of its own; count it as one failure.
  const broken = r.testResults.filter((f) => f.status === "failed" && f.assertionResults.length === 0).length;
  const runSkipped = r.testResults.flatMap((f) =>
    f.assertionResults
      .filter((a) => a.status === "pending" || a.status === "skipped" || a.status === "todo")
      .map((a) => ({ file: f.name, title: a.title })),
  );
  let extra = 0;
  if (flag === "zstd") {
    const wrong = runSkipped.filter((s) => !s.title.startsWith("without zstd"));
    for (const s of wrong) console.log(`${label}: skipped on a runtime with zstd: ${s.title} (${s.file})`);
    const zstdPassed = r.testResults
      .filter((f) => f.name.endsWith("zstd.test.ts"))
      .flatMap((f) => f.assertionResults)
      .filter((a) => a.status === "passed" && !a.title.startsWith("without zstd")).length;
    if (zstdPassed < 5) console.log(`${label}: only ${zstdPassed} zstd tests passed`);
    extra = wrong.length + (zstdPassed < 5 ? 1 : 0);
  }
  // Name every failure with its first error line, so the tail of a CI log says what broke.
  for (const f of r.testResults) {
    if (f.status === "failed" && f.assertionResults.length === 0)
      console.log(`${label}: FAILED to load ${f.name}: ${firstLine(f.message)}`);
    for (const a of f.assertionResults.filter((x) => x.status === "failed"))
      console.log(
        `${label}: FAILED ${a.fullName ?? a.title} (${f.name}): ${firstLine(a.failureMessages?.[0])}`,
      );
  }
  const runFailed = r.numFailedTests + broken + extra;
  console.log(`${label}: ${r.numPassedTests} passed, ${runFailed} failed, ${runSkipped.length} skipped`);
  passed += r.numPassedTests;
  failed += runFailed;
  skipped += runSkipped.length;
}
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
