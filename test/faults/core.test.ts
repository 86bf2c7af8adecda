/**
 * Faults of the core pipeline itself, with small hand-made adapters around the memory and
 * filesystem sinks: a source that fails late or early, a transform that fails to start or on its
 * first chunk, a sink that stops reading mid-write or refuses the manifest, and a copy into a sink
 * that fails. Every fault checks the code, that the listing is as it was, and the key.
 */
import { randomBytes } from "node:crypto";
import { Transform as NodeTransform, Readable } from "node:stream";
import { describe } from "vitest";
import {
  aes256gcm,
  backup,
  bytesSource,
  copyBackup,
  filesystemSink,
  gzip,
  memorySink,
  type Sink,
  type Source,
  type SourceOutput,
  type Transform,
} from "../../src/index.js";
import {
  failsWritesAfter,
  failureOf,
  fault,
  filesUnder,
  listing,
  listingChange,
  tempFolders,
} from "./harness.js";

const freshRoot = tempFolders("core");

const hexKey = randomBytes(32).toString("hex");
const data = randomBytes(2 * 1024 * 1024 + 5);
const pipelines = {
  plain: () => [] as Transform[],
  "gzip + aes-256-gcm": () => [gzip(), aes256gcm({ key: hexKey })],
};

/** A source whose output `make` builds. */
function handMade(make: () => SourceOutput | Promise<SourceOutput>): Source {
  return { kind: "test", name: "hand-made", open: async () => make() };
}

/** A memory sink already holding one good backup, and its listing. */
async function seeded() {
  const sink = memorySink();
  await backup({ job: "j", source: bytesSource({ data: "the backup before" }), sink });
  return { sink, before: await listing(sink) };
}

describe("core pipeline", () => {
  for (const [label, transforms] of Object.entries(pipelines)) {
    fault("core", `source details() rejects after a clean end (${label})`, async () => {
      const { sink, before } = await seeded();
      const source = handMade(() => ({
        stream: Readable.from([data]),
        contentType: "application/octet-stream",
        details: async () => {
          throw new Error("the dump process exited with status 1 after its last byte");
        },
      }));
      const error = await failureOf(backup({ job: "j", source, transforms: transforms(), sink }));
      return {
        error,
        code: "SOURCE_FAILED",
        leftovers: listingChange(before, await listing(sink)),
        secrets: [hexKey],
      };
    });

    fault("core", `source stream errors before its first byte (${label})`, async () => {
      const { sink, before } = await seeded();
      const source = handMade(() => ({
        stream: new Readable({
          read() {
            this.destroy(new Error("connection refused before the first row"));
          },
        }),
        contentType: "application/octet-stream",
        details: async () => ({}),
      }));
      const error = await failureOf(backup({ job: "j", source, transforms: transforms(), sink }));
      return {
        error,
        code: "SOURCE_FAILED",
        leftovers: listingChange(before, await listing(sink)),
        secrets: [hexKey],
      };
    });

    for (const limit of [0, 64 * 1024, 1 << 20]) {
      fault("core", `sink stops reading after ${limit} bytes (${label}, memory sink)`, async () => {
        const { sink, before } = await seeded();
        const error = await failureOf(
          backup({
            job: "j",
            source: bytesSource({ data }),
            transforms: transforms(),
            sink: failsWritesAfter(sink, limit, "EIO"),
          }),
        );
        return {
          error,
          code: "SINK_WRITE_FAILED",
          leftovers: listingChange(before, await listing(sink)),
          secrets: [hexKey],
        };
      });
    }
  }

  fault("core", "source open() rejects", async () => {
    const { sink, before } = await seeded();
    const source: Source = {
      kind: "test",
      name: "refuses",
      open: async () => {
        throw new Error("ECONNREFUSED 127.0.0.1:5432");
      },
    };
    const error = await failureOf(
      backup({ job: "j", source, transforms: pipelines["gzip + aes-256-gcm"](), sink }),
    );
    return {
      error,
      code: "SOURCE_FAILED",
      leftovers: listingChange(before, await listing(sink)),
      secrets: [hexKey],
    };
  });

  fault("core", "a transform throws when asked to encode", async () => {
    const { sink, before } = await seeded();
    let destroyed = false;
    const source = handMade(() => {
      const stream = Readable.from([data]);
      stream.once("close", () => {
        destroyed = true;
      });
      return { stream, contentType: "application/octet-stream", details: async () => ({}) };
    });
    const broken: Transform = {
      ...gzip(),
      name: "broken",
      encode: () => {
        throw new Error("codec not available");
      },
    };
    const error = await failureOf(
      backup({ job: "j", source, transforms: [broken, aes256gcm({ key: hexKey })], sink }),
    );
    return {
      error,
      code: "TRANSFORM_FAILED",
      leftovers: [
        ...listingChange(before, await listing(sink)),
        ...(destroyed ? [] : ["the source stream was left open"]),
      ],
      secrets: [hexKey],
    };
  });

  fault("core", "a transform's stream fails on its first chunk", async () => {
    const { sink, before } = await seeded();
    const broken: Transform = {
      ...gzip(),
      name: "broken",
      encode: () =>
        new NodeTransform({
          transform(_chunk, _enc, callback) {
            callback(new Error("bad input to the codec"));
          },
        }),
    };
    const error = await failureOf(
      backup({
        job: "j",
        source: bytesSource({ data }),
        transforms: [broken, aes256gcm({ key: hexKey })],
        sink,
      }),
    );
    return {
      error,
      code: "TRANSFORM_FAILED",
      leftovers: listingChange(before, await listing(sink)),
      secrets: [hexKey],
    };
  });

  fault("core", "the sink refuses the manifest: the artifact is removed (memory sink)", async () => {
    const { sink, before } = await seeded();
    const refusing: Sink = {
      ...sink,
      async write(k, body, options) {
        if (k.endsWith(".manifest.json")) throw new Error("EDQUOT: quota exceeded");
        return sink.write(k, body, options);
      },
    };
    const error = await failureOf(
      backup({
        job: "j",
        source: bytesSource({ data }),
        transforms: pipelines["gzip + aes-256-gcm"](),
        sink: refusing,
      }),
    );
    return {
      error,
      code: "SINK_WRITE_FAILED",
      leftovers: listingChange(before, await listing(sink)),
      secrets: [hexKey],
    };
  });

  fault("core", "the sink refuses the manifest: the artifact is removed (filesystem sink)", async () => {
    const root = await freshRoot();
    const sink = filesystemSink({ root });
    const refusing: Sink = {
      ...sink,
      write(k, body, options) {
        if (k.endsWith(".manifest.json")) return Promise.reject(new Error("EROFS: read-only file system"));
        return sink.write(k, body, options);
      },
    };
    const error = await failureOf(
      backup({
        job: "j",
        source: bytesSource({ data }),
        transforms: pipelines["gzip + aes-256-gcm"](),
        sink: refusing,
      }),
    );
    return { error, code: "SINK_WRITE_FAILED", leftovers: await filesUnder(root), secrets: [hexKey] };
  });

  for (const limit of [0, 1 << 20]) {
    fault("core", `copyBackup into a sink that stops reading after ${limit} bytes`, async () => {
      const from = memorySink();
      const manifest = await backup({
        job: "j",
        source: bytesSource({ data }),
        transforms: pipelines["gzip + aes-256-gcm"](),
        sink: from,
      });
      const fromBefore = await listing(from);
      const { sink: to, before } = await seeded();
      const error = await failureOf(copyBackup({ manifest, from, to: failsWritesAfter(to, limit, "EIO") }));
      return {
        error,
        code: "SINK_WRITE_FAILED",
        leftovers: [
          ...listingChange(before, await listing(to)),
          ...listingChange(fromBefore, await listing(from)),
        ],
        secrets: [hexKey],
      };
    });
  }

  fault("core", "copyBackup of an artifact changed in the source sink", async () => {
    const from = memorySink();
    const manifest = await backup({ job: "j", source: bytesSource({ data }), sink: from });
    const stored = from.objects.get(manifest.artifact.key)!;
    stored.data = Buffer.concat([stored.data.subarray(0, -1), Buffer.from([stored.data.at(-1)! ^ 1])]);
    const { sink: to, before } = await seeded();
    const error = await failureOf(copyBackup({ manifest, from, to }));
    return { error, code: "INTEGRITY_MISMATCH", leftovers: listingChange(before, await listing(to)) };
  });
});
