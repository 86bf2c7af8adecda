import { S3Client } from "@aws-sdk/client-s3";
import { describe, expect, it } from "vitest";
import { isStowageError, type StowageError } from "../../src/index.js";
import { glacierSink } from "../../src/sinks/glacier.js";
import { largestBackupBytes, partSizeFor, S3_LIMITS, s3Sink } from "../../src/sinks/s3.js";

const MiB = 1024 * 1024;
const client = new S3Client({ region: "us-east-1", credentials: { accessKeyId: "x", secretAccessKey: "y" } });

function optionsNamed(make: () => unknown): string[] {
  try {
    make();
  } catch (error) {
    expect(isStowageError(error, "CONFIG_INVALID")).toBe(true);
    return ((error as StowageError).details.issues as Array<{ path: string }>).map((i) => i.path).sort();
  }
  throw new Error("expected CONFIG_INVALID");
}

describe("s3Sink options", () => {
  it("names every bad option", () => {
    expect(
      optionsNamed(() =>
        s3Sink({
          client: {} as S3Client,
          bucket: "a/b",
          partSize: MiB,
          queueSize: 0,
          storageClass: "GLACIER" as "STANDARD",
          objectLock: { mode: "LEGAL" as "GOVERNANCE", retainFor: "soon" },
        }),
      ),
    ).toEqual([
      "bucket",
      "client",
      "objectLock.mode",
      "objectLock.retainFor",
      "partSize",
      "queueSize",
      "storageClass",
    ]);
    expect(optionsNamed(() => s3Sink({ client, bucket: "b", kmsKeyId: "k" }))).toEqual(["kmsKeyId"]);
    expect(optionsNamed(() => s3Sink({ client, bucket: "b", unknown: 1 } as never))).toEqual(["(options)"]);
  });

  it("declares immediate reads and its storage classes; glacier declares hours", () => {
    const sink = s3Sink({ client, bucket: "b", prefix: "p" });
    expect(sink.prefix).toBe("p/");
    expect(sink.capabilities.readLatency).toBe("immediate");
    expect(sink.capabilities.storageClasses).toContain("STANDARD_IA");
    expect(sink.capabilities.storageClasses).not.toContain("GLACIER");
    expect(glacierSink({ client, bucket: "b" }).capabilities.readLatency).toBe("hours");
  });
});

describe("part size schedule", () => {
  it("starts at partSize and doubles every 1,000 parts, capped at 5 GiB", () => {
    expect(partSizeFor(1, 5 * MiB)).toBe(5 * MiB);
    expect(partSizeFor(1000, 5 * MiB)).toBe(5 * MiB);
    expect(partSizeFor(1001, 5 * MiB)).toBe(10 * MiB);
    expect(partSizeFor(10_000, 5 * MiB)).toBe(512 * 5 * MiB);
    expect(partSizeFor(10_000, 64 * MiB)).toBe(S3_LIMITS.maxPartSize);
  });

  it("lets 10,000 parts hold about 4.9 TiB from 5 MiB, and S3's 5 TiB from 8 MiB", () => {
    let sum = 0;
    for (let n = 1; n <= S3_LIMITS.maxParts; n++) sum += partSizeFor(n, 5 * MiB);
    expect(largestBackupBytes(5 * MiB)).toBe(sum);
    expect(sum).toBe(1000 * 5 * MiB * 1023);
    expect(largestBackupBytes(8 * MiB)).toBe(S3_LIMITS.maxObjectSize);
  });
});
