/**
 * The one table from a backup's content type to what it is: the file extension an artifact (or a
 * restored file) gets, and the format a restore target recognises. Sources name their content type
 * in `SourceOutput.contentType`; the backup names the artifact by it and restore targets decide by
 * it whether they accept a backup.
 */
export type ContentFormat = "sql" | "pg-custom" | "tar" | "json" | "ndjson" | "csv" | "text";

const CONTENT_TYPES: Readonly<Record<string, { extension: string; format: ContentFormat }>> = {
  "application/sql": { extension: ".sql", format: "sql" },
  "application/x-postgresql-custom": { extension: ".dump", format: "pg-custom" },
  "application/x-tar": { extension: ".tar", format: "tar" },
  "application/json": { extension: ".json", format: "json" },
  "application/x-ndjson": { extension: ".jsonl", format: "ndjson" },
  "text/csv": { extension: ".csv", format: "csv" },
  "text/plain": { extension: ".txt", format: "text" },
};

/** The extension for a content type (with its dot), or `undefined` for one the table does not know. */
export const extensionOf = (contentType: string): string | undefined => CONTENT_TYPES[contentType]?.extension;

/** The format of a content type, or `undefined` for one the table does not know. */
export const formatOf = (contentType: string): ContentFormat | undefined =>
  CONTENT_TYPES[contentType]?.format;
