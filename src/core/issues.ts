/**
 * The one shape of a problem with an input, in `details.issues` of every CONFIG_INVALID and
 * MANIFEST_INVALID: `path` says where (an option such as `copies.0.sink`, a CLI flag such as
 * `--out`, a manifest field such as `artifact.key`), `problem` what is wrong there. The CLI prints
 * each as `path: problem`.
 */
export interface Issue {
  /** Where: an option, a CLI flag or a manifest field. */
  path: string;
  /** What is wrong there. */
  problem: string;
}

/** Zod's issues in that shape; `root` names an issue about the whole input. */
export function issuesFrom(
  issues: ReadonlyArray<{ path: ReadonlyArray<PropertyKey>; message: string }>,
  root: string,
): Issue[] {
  return issues.map((issue) => ({
    path: issue.path.length > 0 ? issue.path.map(String).join(".") : root,
    problem: issue.message,
  }));
}

/** `path: problem; …` for a message. */
export const listIssues = (issues: readonly Issue[], separator = ": "): string =>
  issues.map((i) => `${i.path}${separator}${i.problem}`).join("; ");
