import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { copyBackup } from "../../src/core/copy.js";
import { backup, bytesSource, gzip, isStowageError, memorySink, readAll, restore } from "../../src/index.js";

describe("copyBackup (memory sinks)", () => {
  it("copies the artifact and writes the manifest last with the new sink, location and class", async () => {
    const from = memorySink();
    const to = memorySink({ storageClasses: ["COLD"] });
    const data = randomBytes(200_000);
    const manifest = await backup({
      job: "j",
      source: bytesSource({ data }),
      transforms: [gzip()],
      sink: from,
    });
    const copied = await copyBackup({ manifest, from, to, storageClass: "COLD" });
    expect(copied.artifact).toMatchObject({
      sink: "memory",
      storageClass: "COLD",
      location: `memory://${manifest.artifact.key}`,
    });
    expect([...to.objects.keys()].sort()).toEqual([
      manifest.artifact.key,
      `${manifest.artifact.key}.manifest.json`,
    ]);
    expect((await readAll(await restore({ sink: to, manifest: copied }))).equals(data)).toBe(true);
  });

  it("a corrupted artifact fails INTEGRITY_MISMATCH and leaves the destination empty", async () => {
    const from = memorySink();
    const to = memorySink();
    const manifest = await backup({
      job: "j",
      source: bytesSource({ data: randomBytes(100_000) }),
      sink: from,
    });
    from.objects.get(manifest.artifact.key)!.data[5]! ^= 1;
    const error = await copyBackup({ manifest, from, to }).catch((e: unknown) => e);
    expect(isStowageError(error, "INTEGRITY_MISMATCH")).toBe(true);
    expect(to.objects.size).toBe(0);
  });

  it("a missing artifact is NOT_FOUND and writes nothing", async () => {
    const from = memorySink();
    const to = memorySink();
    const manifest = await backup({ job: "j", source: bytesSource({ data: "x" }), sink: from });
    from.objects.delete(manifest.artifact.key);
    const error = await copyBackup({ manifest, from, to }).catch((e: unknown) => e);
    expect(isStowageError(error, "NOT_FOUND")).toBe(true);
    expect(to.objects.size).toBe(0);
  });
});
