import { StowageError } from "./errors.js";

const loaded = new Map<string, Promise<unknown>>();

/**
 * Loads an optional peer dependency at first use, once per process. An adapter whose SDK is an
 * optional peer imports it only through here, so that importing the adapter's subpath never fails
 * and a missing package is a clear error when the adapter is first used.
 *
 * @param name the package to install, e.g. `"@aws-sdk/client-s3"`.
 * @param where who needs it, for the message, e.g. `"s3Sink"`.
 * @param load the dynamic import, e.g. `() => import("@aws-sdk/client-s3")` (a literal specifier,
 *   so that bundlers see it).
 * @throws {UNSUPPORTED} naming the package (`details.package`) when it cannot be loaded; the
 *   loader's error is the `cause`.
 * @example const sdk = await importPeer("@aws-sdk/client-s3", "s3Sink", () => import("@aws-sdk/client-s3"));
 */
export async function importPeer<T>(name: string, where: string, load: () => Promise<T>): Promise<T> {
  let pending = loaded.get(name) as Promise<T> | undefined;
  if (!pending) {
    pending = load();
    loaded.set(name, pending);
    // A failed load is not cached: the package may be installed while the process runs.
    pending.catch(() => loaded.delete(name));
  }
  try {
    return await pending;
  } catch (error) {
    throw new StowageError(
      "UNSUPPORTED",
      `${where} needs the optional peer dependency "${name}", which cannot be loaded: npm install ${name}`,
      { cause: error, details: { package: name, where } },
    );
  }
}
