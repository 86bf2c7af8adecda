/**
 * PostgreSQL versions: reading them, and whether a `pg_dump` can dump a server.
 */
import { StowageError } from "../../core/errors.js";

/** A PostgreSQL major version from a `--version` line or a version string ("15.18", "9.6.24"). */
export function parsePostgresVersion(text: string): { version: string; major: number } | undefined {
  const match = /(?:\(PostgreSQL\)\s+|^)(\d+)(?:\.(\d+))?(?:\.(\d+))?/.exec(text.trim());
  if (!match) return undefined;
  const first = Number(match[1]);
  const second = match[2] === undefined ? undefined : Number(match[2]);
  const major = first >= 10 ? first : Number(`${first}.${second ?? 0}`);
  const version = [match[1], match[2], match[3]].filter((p) => p !== undefined).join(".");
  return { version, major };
}

/** The major version in `server_version_num` (150018 → 15; 90624 → 9.6). */
export function serverMajor(serverVersionNum: number): number {
  return serverVersionNum >= 100000
    ? Math.floor(serverVersionNum / 10000)
    : Math.floor(serverVersionNum / 10000) + Math.floor((serverVersionNum % 10000) / 100) / 10;
}

/**
 * Checks that a `pg_dump` can dump a server: pg_dump refuses servers of a newer major version.
 *
 * @returns both versions, for the manifest.
 * @throws {SOURCE_FAILED} naming both versions when the server is newer, or when the
 *   `pg_dump --version` output cannot be read.
 * @example assertPgDumpCanDump("pg_dump (PostgreSQL) 15.18", 160004) // throws: server 16 is newer
 */
export function assertPgDumpCanDump(
  pgDumpVersionOutput: string,
  serverVersionNum: number,
  serverVersion = String(serverVersionNum),
): { pgDumpVersion: string; pgDumpMajor: number; serverMajor: number } {
  const dump = parsePostgresVersion(pgDumpVersionOutput);
  if (!dump) {
    throw new StowageError(
      "SOURCE_FAILED",
      `pg_dump: cannot read its version from "${pgDumpVersionOutput.trim().slice(0, 120)}"`,
      { details: { pgDumpVersionOutput: pgDumpVersionOutput.trim().slice(0, 200) } },
    );
  }
  const major = serverMajor(serverVersionNum);
  if (major > dump.major) {
    throw new StowageError(
      "SOURCE_FAILED",
      `pg_dump ${dump.version} cannot dump PostgreSQL server ${serverVersion}: the server's major version (${major}) is newer than pg_dump's (${dump.major}); install a pg_dump of major version ${major} or later`,
      {
        details: {
          pgDumpVersion: dump.version,
          pgDumpMajor: dump.major,
          serverVersion,
          serverMajor: major,
        },
      },
    );
  }
  return { pgDumpVersion: dump.version, pgDumpMajor: dump.major, serverMajor: major };
}
