/** A bad command line: exit 2, printed without a code (`USAGE` under `--json`). */
export class UsageError extends Error {}
