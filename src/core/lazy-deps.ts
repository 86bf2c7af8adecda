/**
 * Runtime dependencies that only some operations need, loaded at their first use, so that
 * `import "stowage"` does not pay for them at start-up (`npm run bench:import` measures it).
 */
import type TarStream from "tar-stream";
import type { glob as Glob } from "tinyglobby";

let tarStream: Promise<typeof TarStream> | undefined;
let tinyglobby: Promise<typeof Glob> | undefined;

/** tar-stream, for the sources that pack a tar and for the restores that read one. */
export function loadTarStream(): Promise<typeof TarStream> {
  tarStream ??= import("tar-stream").then((m) => m.default);
  return tarStream;
}

/** tinyglobby's `glob`, for `logsSource`. */
export function loadGlob(): Promise<typeof Glob> {
  tinyglobby ??= import("tinyglobby").then((m) => m.glob);
  return tinyglobby;
}
