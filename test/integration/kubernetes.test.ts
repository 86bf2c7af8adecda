/**
 * The Kubernetes adapters against a Kubernetes-API-speaking server (test/support/kube-api-server.ts)
 * over real sockets, with the KubeConfig of the @kubernetes/client-node this runtime's users get
 * (1.x on Node 20, 2.x from Node 22.19 on) and kubectl as an independent client. Backups go through the real core: gzip + AES-256-GCM into a sink.
 */
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { parse as parseYaml } from "yaml";
import type { Source } from "../../src/core/types.js";
import {
  aes256gcm,
  backup,
  filesystemSink,
  generateKey,
  gzip,
  type Manifest,
  memorySink,
  readAll,
  restore,
  type Sink,
} from "../../src/index.js";
import {
  type KubernetesArchiveIndex,
  type KubernetesRestoreResult,
  kubernetesLogsSource,
  kubernetesSource,
  restoreKubernetes,
} from "../../src/sources/kubernetes.js";
import { sourceConformance } from "../../src/testing.js";
import { KubeApiServer } from "../support/kube-api-server.js";
import {
  kubeClient,
  kubeConfigFor,
  kubectl,
  makeTar,
  readTar,
  seedShop,
  TRICKY_DATA,
} from "../support/kube-fixtures.js";

let server: KubeApiServer;
const key = generateKey().toString("hex");
const keys = [{ key }];
const encrypted = () => [gzip(), aes256gcm({ key })];

beforeAll(async () => {
  // No skip: if the server cannot start, every test here fails.
  server = await KubeApiServer.start();
});
afterAll(async () => {
  await server?.close();
});
beforeEach(() => {
  server.wipe();
  server.requests.length = 0;
  server.beforeResponse = undefined;
});

describe("the client-node a user of this runtime installs", () => {
  it("is the one these tests build their KubeConfig with: 2.x where it loads, 1.x on Node 20", () => {
    const [major = 0, minor = 0] = process.versions.node.split(".").map(Number);
    const loads2 = major > 22 || (major === 22 && minor >= 19);
    expect(kubeClient.major).toBe(loads2 ? 2 : 1);
    expect(kubeConfigFor(server.url)).toBeInstanceOf(kubeClient.module.KubeConfig);
  });
});

async function plainTar(sink: Sink, manifest: Manifest): Promise<Buffer> {
  return readAll(await restore({ sink, manifest, keys }));
}

async function backupShop(sink: Sink, extra: Partial<Parameters<typeof kubernetesSource>[0]> = {}) {
  return backup({
    job: "shop-k8s",
    source: kubernetesSource({
      kubeConfig: kubeConfigFor(server.url),
      namespaces: ["shop"],
      includeSecrets: true,
      pageSize: 2,
      ...extra,
    }),
    transforms: encrypted(),
    sink,
  });
}

const SERVER_SET = ["uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink"];

interface Doc {
  apiVersion: unknown;
  kind: unknown;
  status?: unknown;
  metadata: Record<string, unknown> & { annotations?: Record<string, string> };
  data?: Record<string, string>;
  spec?: unknown;
}

describe("kubernetesSource + restoreKubernetes", () => {
  it("backs up a namespace, and a wiped server gets it back in dependency order", async () => {
    await seedShop(server, 5);
    const original = new Map(
      server.objects().map((o) => [`${o.kind}/${o.metadata.namespace ?? ""}/${o.metadata.name}`, o]),
    );
    const dir = await mkdtemp(join(tmpdir(), "stowage-k8s-"));
    try {
      const sink = filesystemSink({ root: dir });
      const manifest = await backupShop(sink);

      // Details: counts per type, owned objects passed over, server version.
      const details = manifest.source.details as Record<string, unknown>;
      expect(manifest.source.kind).toBe("kubernetes");
      expect(details.serverVersion).toBe("v1.30.0-stowage-test");
      expect(details.resources).toEqual({
        "customresourcedefinitions.apiextensions.k8s.io": 1,
        namespaces: 1,
        serviceaccounts: 1,
        "roles.rbac.authorization.k8s.io": 1,
        "rolebindings.rbac.authorization.k8s.io": 1,
        configmaps: 5,
        secrets: 2,
        persistentvolumeclaims: 1,
        services: 1,
        "deployments.apps": 1,
        pods: 1,
        "widgets.example.com": 1,
      });
      expect(details.ownedSkipped).toBe(3); // the ReplicaSet and its two Pods
      expect(details.objects).toBe(17);
      expect(details.forbidden).toEqual([]);

      // Pagination: 5 ConfigMaps at 2 a page is 3 requests, each following the last continue token.
      const cmLists = server.requests.filter(
        (r) => r.method === "GET" && r.path === "/api/v1/namespaces/shop/configmaps",
      );
      expect(cmLists).toHaveLength(3);
      expect(cmLists.every((r) => r.query.limit === "2")).toBe(true);
      expect(cmLists[0]!.query.continue).toBeUndefined();
      expect(cmLists[1]!.query.continue).toBeTruthy();
      expect(cmLists[2]!.query.continue).toBeTruthy();
      expect(cmLists[2]!.query.continue).not.toBe(cmLists[1]!.query.continue);

      // The archive: one YAML document per object, index.json last.
      const entries = await readTar(await plainTar(sink, manifest));
      const names = entries.map((e) => e.name);
      expect(names.at(-1)).toBe("index.json");
      expect(new Set(names)).toEqual(
        new Set([
          "cluster/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com.yaml",
          "cluster/core/namespaces/shop.yaml",
          "namespaces/shop/core/serviceaccounts/shop-app.yaml",
          "namespaces/shop/rbac.authorization.k8s.io/roles/reader.yaml",
          "namespaces/shop/rbac.authorization.k8s.io/rolebindings/reader-binding.yaml",
          "namespaces/shop/core/configmaps/app-config.yaml",
          "namespaces/shop/core/configmaps/binary.yaml",
          "namespaces/shop/core/configmaps/flags-2.yaml",
          "namespaces/shop/core/configmaps/flags-3.yaml",
          "namespaces/shop/core/configmaps/flags-4.yaml",
          "namespaces/shop/core/secrets/db-credentials.yaml",
          "namespaces/shop/core/secrets/tls.yaml",
          "namespaces/shop/core/persistentvolumeclaims/data.yaml",
          "namespaces/shop/core/services/web.yaml",
          "namespaces/shop/apps/deployments/web.yaml",
          "namespaces/shop/core/pods/debug.yaml",
          "namespaces/shop/example.com/widgets/gizmo.yaml",
          "index.json",
        ]),
      );
      // In restore order: the CRD, the Namespace, ..., workloads, the Widget last.
      expect(names.slice(0, 2)).toEqual([
        "cluster/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com.yaml",
        "cluster/core/namespaces/shop.yaml",
      ]);
      expect(names.indexOf("namespaces/shop/core/configmaps/app-config.yaml")).toBeLessThan(
        names.indexOf("namespaces/shop/apps/deployments/web.yaml"),
      );
      expect(names.at(-2)).toBe("namespaces/shop/example.com/widgets/gizmo.yaml");

      const docs = new Map(
        entries
          .filter((e) => e.name.endsWith(".yaml"))
          .map((e) => [e.name, parseYaml(e.data.toString("utf8"), { version: "1.1" }) as Doc]),
      );
      for (const [name, doc] of docs) {
        expect(doc.status, name).toBeUndefined();
        for (const field of SERVER_SET) expect(doc.metadata[field], `${name} ${field}`).toBeUndefined();
        expect(
          doc.metadata.annotations?.["kubectl.kubernetes.io/last-applied-configuration"],
        ).toBeUndefined();
        expect(typeof doc.apiVersion).toBe("string");
        expect(typeof doc.kind).toBe("string");
      }
      const appConfig = docs.get("namespaces/shop/core/configmaps/app-config.yaml")!;
      expect(appConfig.data).toEqual(TRICKY_DATA);
      expect(appConfig.metadata.annotations).toEqual({ owner: "team-shop" });
      expect(docs.get("namespaces/shop/core/secrets/db-credentials.yaml")!.data?.password).toBe(
        Buffer.from("s3cr3t-value").toString("base64"),
      );
      expect(docs.get("namespaces/shop/example.com/widgets/gizmo.yaml")!.spec).toEqual({
        size: 3,
        colors: ["red", "green"],
        nested: { enabled: true },
      });

      const index = JSON.parse(entries.at(-1)!.data.toString("utf8")) as KubernetesArchiveIndex;
      expect(index.server.version?.gitVersion).toBe("v1.30.0-stowage-test");
      expect(index.objects).toBe(17);
      expect(index.resources.find((r) => r.type === "deployments.apps")).toMatchObject({
        group: "apps",
        version: "v1",
        kind: "Deployment",
        namespaced: true,
        count: 1,
      });
      expect(index.resources.find((r) => r.type === "replicasets.apps")).toMatchObject({
        count: 0,
        ownedSkipped: 1,
      });
      expect(index.resources.find((r) => r.type === "pods")).toMatchObject({ count: 1, ownedSkipped: 2 });
      expect(index.resources.some((r) => r.resource === "events")).toBe(false);

      // Wipe the server, restore.
      server.wipe();
      server.requests.length = 0;
      const report = await restoreKubernetes({
        stream: await restore({ sink, manifest, keys }),
        kubeConfig: kubeConfigFor(server.url),
      });
      expect(report.counts).toEqual({ created: 17, configured: 0, unchanged: 0, failed: 0, unverified: 0 });
      expect(report.results.every((r) => r.status === "created")).toBe(true);

      // Applied in dependency order, all through server-side apply as "stowage".
      const patches = server.requests.filter((r) => r.method === "PATCH");
      expect(patches).toHaveLength(17);
      expect(
        patches.every(
          (r) => r.query.fieldManager === "stowage" && r.contentType === "application/apply-patch+yaml",
        ),
      ).toBe(true);
      const order = patches.map((r) => r.path);
      const at = (suffix: string) => order.findIndex((p) => p.endsWith(suffix));
      expect(at("/customresourcedefinitions/widgets.example.com")).toBe(0);
      expect(at("/api/v1/namespaces/shop")).toBe(1);
      expect(at("/serviceaccounts/shop-app")).toBe(2);
      expect(at("/roles/reader")).toBeLessThan(at("/rolebindings/reader-binding"));
      expect(at("/rolebindings/reader-binding")).toBeLessThan(at("/configmaps/app-config"));
      expect(at("/configmaps/app-config")).toBeLessThan(at("/secrets/db-credentials"));
      expect(at("/secrets/db-credentials")).toBeLessThan(at("/persistentvolumeclaims/data"));
      expect(at("/persistentvolumeclaims/data")).toBeLessThan(at("/services/web"));
      expect(at("/services/web")).toBeLessThan(at("/deployments/web"));
      expect(at("/deployments/web")).toBeLessThan(at("/widgets/gizmo"));

      // The objects are back with their data, as new objects; owned ones were not exported.
      const cm = server.get("configmaps", "shop", "app-config")!;
      expect(cm.data).toEqual(TRICKY_DATA);
      expect(cm.metadata.annotations).toEqual({ owner: "team-shop" });
      expect(cm.metadata.labels).toEqual({ app: "web" });
      expect(cm.metadata.uid).not.toBe(original.get("ConfigMap/shop/app-config")!.metadata.uid);
      expect((cm.metadata.managedFields as Array<{ manager: string }>).map((m) => m.manager)).toEqual([
        "stowage",
      ]);
      expect(server.get("configmaps", "shop", "binary")!.binaryData).toEqual(
        original.get("ConfigMap/shop/binary")!.binaryData,
      );
      expect(server.get("secrets", "shop", "db-credentials")!.data).toEqual(
        original.get("Secret/shop/db-credentials")!.data,
      );
      expect(server.get("secrets", "shop", "tls")!.type).toBe("kubernetes.io/tls");
      expect(server.get("deployments.apps", "shop", "web")!.spec).toEqual(
        original.get("Deployment/shop/web")!.spec,
      );
      expect(server.get("widgets.example.com", "shop", "gizmo")!.spec).toEqual(
        original.get("Widget/shop/gizmo")!.spec,
      );
      expect(
        server.get("rolebindings.rbac.authorization.k8s.io", "shop", "reader-binding")!.subjects,
      ).toEqual([{ kind: "ServiceAccount", name: "shop-app", namespace: "shop" }]);
      const svc = server.get("services", "shop", "web")!;
      expect((svc.spec as { ports: unknown }).ports).toEqual([
        { name: "http", port: 80, targetPort: 8080, protocol: "TCP" },
      ]);
      expect(server.get("namespaces", undefined, "shop")!.metadata.labels).toEqual({
        team: "shop",
        "kubernetes.io/metadata.name": "shop",
      });
      expect(server.get("pods", "shop", "debug")).toBeDefined();
      expect(server.get("pods", "shop", "web-7d9f8-abcde")).toBeUndefined();
      expect(server.get("replicasets.apps", "shop", "web-7d9f8")).toBeUndefined();
      expect(server.get("events", "shop", "web.17a")).toBeUndefined();
      expect(server.get("configmaps", "other", "elsewhere")).toBeUndefined();
      expect(
        server.get("clusterroles.rbac.authorization.k8s.io", undefined, "global-reader"),
      ).toBeUndefined();

      // Restoring again changes nothing.
      const again = await restoreKubernetes({
        stream: await restore({ sink, manifest, keys }),
        kubeConfig: kubeConfigFor(server.url),
      });
      expect(again.counts).toEqual({ created: 0, configured: 0, unchanged: 17, failed: 0, unverified: 0 });

      // kubectl, an independent client, lists what was restored.
      const listed = JSON.parse(
        await kubectl(server, [
          "get",
          "configmaps,secrets,services,deployments.apps,widgets.example.com",
          "-n",
          "shop",
          "-o",
          "json",
        ]),
      ) as { items: Array<{ kind: string; metadata: { name: string }; data?: Record<string, string> }> };
      expect(listed.items.map((i) => `${i.kind}/${i.metadata.name}`).sort()).toEqual(
        [
          "ConfigMap/app-config",
          "ConfigMap/binary",
          "ConfigMap/flags-2",
          "ConfigMap/flags-3",
          "ConfigMap/flags-4",
          "Deployment/web",
          "Secret/db-credentials",
          "Secret/tls",
          "Service/web",
          "Widget/gizmo",
        ].sort(),
      );
      expect(listed.items.find((i) => i.metadata.name === "app-config")!.data).toEqual(TRICKY_DATA);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("kubectl reads the archive's YAML as the objects that were backed up (YAML 1.1 safe)", async () => {
    await seedShop(server, 2);
    const sink = memorySink();
    const manifest = await backupShop(sink, { includeResources: ["configmaps"] });
    const entries = await readTar(await plainTar(sink, manifest));
    const dir = await mkdtemp(join(tmpdir(), "stowage-k8s-yaml-"));
    try {
      const { writeFile } = await import("node:fs/promises");
      const file = join(dir, "app-config.yaml");
      await writeFile(file, entries.find((e) => e.name.endsWith("/app-config.yaml"))!.data);
      const out = JSON.parse(
        await kubectl(server, ["create", "--dry-run=client", "--validate=false", "-o", "json", "-f", file]),
      ) as { data: Record<string, string> };
      expect(out.data).toEqual(TRICKY_DATA);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("records a type the credentials may not list (403) and skips it; strict fails the backup", async () => {
    await seedShop(server, 2);
    server.deny("secrets");
    const sink = memorySink();
    const manifest = await backupShop(sink);
    const details = manifest.source.details as {
      forbidden: string[];
      skipped: Array<Record<string, unknown>>;
      resources: Record<string, number>;
    };
    expect(details.forbidden).toEqual(["secrets"]);
    expect(details.skipped).toEqual([
      expect.objectContaining({ type: "secrets", namespace: "shop", reason: "forbidden", httpStatus: 403 }),
    ]);
    expect(details.resources.secrets).toBeUndefined();
    expect(details.resources.configmaps).toBe(2);
    const entries = await readTar(await plainTar(sink, manifest));
    expect(entries.some((e) => e.name.includes("/secrets/"))).toBe(false);
    const index = JSON.parse(entries.at(-1)!.data.toString("utf8")) as KubernetesArchiveIndex;
    expect(index.skipped).toEqual([expect.objectContaining({ type: "secrets", reason: "forbidden" })]);

    const strictSink = memorySink();
    const failure = await backupShop(strictSink, { strict: true }).catch((e: unknown) => e);
    expect(failure).toMatchObject({ code: "SOURCE_FAILED", details: { type: "secrets", httpStatus: 403 } });
    expect(strictSink.objects.size).toBe(0);
  });

  it("a dry run checks every object and leaves the server unchanged", async () => {
    await seedShop(server, 3);
    const sink = memorySink();
    const manifest = await backupShop(sink);
    server.wipe();
    const before = JSON.stringify(server.objects());
    server.requests.length = 0;
    const dry = await restoreKubernetes({
      stream: await restore({ sink, manifest, keys }),
      kubeConfig: kubeConfigFor(server.url),
      dryRun: true,
    });
    expect(JSON.stringify(server.objects())).toBe(before);
    expect(server.requests.filter((r) => r.method === "PATCH").every((r) => r.query.dryRun === "All")).toBe(
      true,
    );
    // The Namespace and the CRD would be created; what lives in them cannot be checked before they exist.
    expect(
      dry.results
        .filter((r) => r.status === "created")
        .map((r) => r.type)
        .sort(),
    ).toEqual(["customresourcedefinitions.apiextensions.k8s.io", "namespaces"]);
    expect(dry.counts.failed).toBe(0);
    expect(dry.counts.unverified).toBe(dry.results.length - 2);

    // Against the restored namespace, with one object changed since: precise answers, still nothing stored.
    await restoreKubernetes({
      stream: await restore({ sink, manifest, keys }),
      kubeConfig: kubeConfigFor(server.url),
    });
    server.put({ apiVersion: "v1", kind: "Namespace", metadata: { name: "scratch" } });
    const changed = server.get("configmaps", "shop", "flags-2")!;
    await fetch(`${server.url}/api/v1/namespaces/shop/configmaps/flags-2?fieldManager=stowage&force=true`, {
      method: "PATCH",
      headers: { "content-type": "application/apply-patch+yaml" },
      body: JSON.stringify({
        apiVersion: "v1",
        kind: "ConfigMap",
        metadata: { name: "flags-2" },
        data: { index: "changed" },
      }),
    });
    expect(server.get("configmaps", "shop", "flags-2")!.data).toEqual({ index: "changed" });
    expect(changed.data).toEqual({ index: "2" });
    const snapshot = JSON.stringify(server.objects());
    const check = await restoreKubernetes({
      stream: await restore({ sink, manifest, keys }),
      kubeConfig: kubeConfigFor(server.url),
      dryRun: true,
    });
    expect(JSON.stringify(server.objects())).toBe(snapshot);
    const byName = (n: string) => check.results.find((r) => r.name === n)!;
    expect(byName("flags-2").status).toBe("configured");
    expect(byName("app-config").status).toBe("unchanged");
    expect(check.counts).toMatchObject({ created: 0, failed: 0, unverified: 0, configured: 1 });
  });

  it("maps a namespace onto another one", async () => {
    await seedShop(server, 2);
    const sink = memorySink();
    const manifest = await backupShop(sink);
    const shopBefore = JSON.stringify(server.objects().filter((o) => o.metadata.namespace === "shop"));
    const report = await restoreKubernetes({
      stream: await restore({ sink, manifest, keys }),
      kubeConfig: kubeConfigFor(server.url),
      namespaceMapping: { shop: "shop-copy" },
    });
    expect(report.counts.failed).toBe(0);
    expect(
      report.results.filter((r) => r.namespace !== undefined).every((r) => r.namespace === "shop-copy"),
    ).toBe(true);
    expect(server.get("namespaces", undefined, "shop-copy")!.metadata.labels).toEqual({
      team: "shop",
      "kubernetes.io/metadata.name": "shop-copy",
    });
    expect(server.get("configmaps", "shop-copy", "app-config")!.data).toEqual(TRICKY_DATA);
    expect(server.get("widgets.example.com", "shop-copy", "gizmo")).toBeDefined();
    expect(
      server.get("rolebindings.rbac.authorization.k8s.io", "shop-copy", "reader-binding")!.subjects,
    ).toEqual([{ kind: "ServiceAccount", name: "shop-app", namespace: "shop-copy" }]);
    // The source namespace is untouched.
    expect(JSON.stringify(server.objects().filter((o) => o.metadata.namespace === "shop"))).toBe(shopBefore);
    const listed = JSON.parse(
      await kubectl(server, ["get", "configmaps", "-n", "shop-copy", "-o", "json"]),
    ) as {
      items: Array<{ metadata: { name: string; namespace: string } }>;
    };
    expect(listed.items.map((i) => i.metadata.name).sort()).toEqual(["app-config", "binary"]);
  });

  it("reports a conflicting object with the server's reason and goes on; strict stops; force takes over", async () => {
    await seedShop(server, 2);
    const sink = memorySink();
    const manifest = await backupShop(sink);
    server.wipe();
    server.put({ apiVersion: "v1", kind: "Namespace", metadata: { name: "shop" } });
    // Someone else applied a different app-config in the meantime.
    const res = await fetch(`${server.url}/api/v1/namespaces/shop/configmaps/app-config?fieldManager=helm`, {
      method: "PATCH",
      headers: { "content-type": "application/apply-patch+yaml" },
      body: JSON.stringify({
        apiVersion: "v1",
        kind: "ConfigMap",
        metadata: { name: "app-config" },
        data: { on: "off" },
      }),
    });
    expect(res.status).toBe(201);
    const kc = kubeConfigFor(server.url);

    const report = await restoreKubernetes({
      stream: await restore({ sink, manifest, keys }),
      kubeConfig: kc,
    });
    const conflict = report.results.find((r) => r.name === "app-config")!;
    expect(conflict).toMatchObject({ status: "failed", reason: "Conflict", httpStatus: 409 });
    expect(conflict.message).toContain("helm");
    expect(report.counts.failed).toBe(1);
    expect(server.get("configmaps", "shop", "binary")).toBeDefined(); // the rest went on
    expect(server.get("widgets.example.com", "shop", "gizmo")).toBeDefined();
    expect(server.get("configmaps", "shop", "app-config")!.data).toEqual({ on: "off" });

    const strict = await restoreKubernetes({
      stream: await restore({ sink, manifest, keys }),
      kubeConfig: kc,
      strict: true,
    }).catch((e: unknown) => e);
    expect(strict).toMatchObject({
      code: "RESTORE_FAILED",
      details: { result: { name: "app-config", reason: "Conflict" } },
    });

    const forced = await restoreKubernetes({
      stream: await restore({ sink, manifest, keys }),
      kubeConfig: kc,
      force: true,
    });
    expect(forced.results.find((r) => r.name === "app-config")!.status).toBe("configured");
    expect(forced.counts.failed).toBe(0);
    expect(server.get("configmaps", "shop", "app-config")!.data).toEqual(TRICKY_DATA);
  });

  it("restores only what is asked for, and a damaged entry fails alone", async () => {
    const tarball = await makeTar([
      {
        name: "namespaces/shop/core/configmaps/good.yaml",
        data: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: good\n  namespace: shop\ndata:\n  a: '1'\n",
      },
      {
        name: "namespaces/shop/core/configmaps/broken.yaml",
        data: "apiVersion: v1\nkind: ConfigMap\nmetadata: [unclosed\n",
      },
      {
        name: "namespaces/shop/core/configmaps/liar.yaml",
        data: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: someone-else\n",
      },
      {
        name: "namespaces/shop/core/secrets/s.yaml",
        data: "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  k: v\n",
      },
      { name: "README.txt", data: "not an object" },
    ]);
    const kc = kubeConfigFor(server.url);
    const report = await restoreKubernetes({
      stream: Readable.from([tarball]),
      kubeConfig: kc,
      excludeResources: ["secrets"],
    });
    const status = Object.fromEntries(
      report.results.map((r: KubernetesRestoreResult) => [
        r.name,
        `${r.status}${r.reason ? `:${r.reason}` : ""}`,
      ]),
    );
    // The archive has no Namespace object for "shop": stowage adds one so the objects have somewhere to go.
    expect(status).toEqual({
      shop: "created",
      good: "created",
      broken: "failed:InvalidEntry",
      liar: "failed:InvalidEntry",
    });
    expect(server.get("configmaps", "shop", "good")!.data).toEqual({ a: "1" });
    expect(server.get("secrets", "shop", "s")).toBeUndefined();

    const garbage = await restoreKubernetes({
      stream: Readable.from([Buffer.from("this is not a tar archive at all".repeat(40))]),
      kubeConfig: kc,
    }).catch((e: unknown) => e);
    expect(garbage).toMatchObject({ code: "RESTORE_FAILED" });
  });

  it("refuses a backup with secrets and no encryption, unless told to store it in the clear", async () => {
    await seedShop(server, 2);
    const kc = kubeConfigFor(server.url);
    const sink = memorySink();
    server.requests.length = 0;
    const refused = await backup({
      job: "shop-k8s",
      source: kubernetesSource({ kubeConfig: kc, namespaces: ["shop"], includeSecrets: true }),
      transforms: [gzip()],
      sink,
    }).catch((e: unknown) => e);
    expect(refused).toMatchObject({ code: "CONFIG_INVALID" });
    expect(sink.objects.size).toBe(0);
    expect(server.requests).toHaveLength(0); // refused before the source was opened

    const withoutSecrets = kubernetesSource({ kubeConfig: kc, namespaces: ["shop"] });
    expect(withoutSecrets.sensitive).toBe(false);
    const plain = await backup({ job: "shop-k8s", source: withoutSecrets, transforms: [gzip()], sink });
    expect((plain.source.details as { resources: Record<string, number> }).resources.secrets).toBeUndefined();

    const optedOut = await backup({
      job: "shop-k8s",
      source: kubernetesSource({ kubeConfig: kc, namespaces: ["shop"], includeSecrets: true }),
      transforms: [gzip()],
      sink,
      allowUnencrypted: true,
    });
    expect((optedOut.source.details as { resources: Record<string, number> }).resources.secrets).toBe(2);
  });

  it("backs up every namespace and cluster-scoped types with namespaces: 'all'", async () => {
    await seedShop(server, 2);
    const sink = memorySink();
    const manifest = await backup({
      job: "cluster",
      source: kubernetesSource({ kubeConfig: kubeConfigFor(server.url), namespaces: "all", pageSize: 3 }),
      transforms: encrypted(),
      sink,
    });
    const names = (await readTar(await plainTar(sink, manifest))).map((e) => e.name);
    expect(names).toContain("cluster/rbac.authorization.k8s.io/clusterroles/global-reader.yaml");
    expect(names).toContain("namespaces/other/core/configmaps/elsewhere.yaml");
    expect(names).toContain("cluster/core/namespaces/kube-system.yaml");
    expect(names.some((n) => n.includes("/secrets/"))).toBe(false);
    expect(names.some((n) => n.includes("/events/"))).toBe(false);
    // Across namespaces, lists are cluster-wide and paged.
    expect(server.requests.filter((r) => r.path === "/api/v1/configmaps").length).toBe(1);
    expect(server.requests.filter((r) => r.path === "/api/v1/namespaces" && r.method === "GET").length).toBe(
      2,
    );

    // A restore can pick namespaces and types out of a whole-cluster backup.
    server.wipe();
    const kc = kubeConfigFor(server.url);
    const other = await restoreKubernetes({
      stream: await restore({ sink, manifest, keys }),
      kubeConfig: kc,
      namespaces: ["other"],
    });
    expect(other.results.map((r) => `${r.type}/${r.name}`).sort()).toEqual([
      "configmaps/elsewhere",
      "customresourcedefinitions.apiextensions.k8s.io/widgets.example.com",
      "namespaces/other",
    ]);
    expect(server.get("clusterroles.rbac.authorization.k8s.io", undefined, "global-reader")).toBeUndefined();
    const kinds = await restoreKubernetes({
      stream: await restore({ sink, manifest, keys }),
      kubeConfig: kc,
      namespaces: ["shop"],
      includeResources: ["Deployment", "svc"],
    });
    expect(kinds.results.map((r) => `${r.type}/${r.name}:${r.status}`).sort()).toEqual([
      "deployments.apps/web:created",
      "namespaces/shop:created",
      "services/web:created",
    ]);
  });

  it("a restore honours its signal and leaves no spool behind", async () => {
    await seedShop(server, 2);
    const sink = memorySink();
    const manifest = await backupShop(sink);
    server.wipe();
    const spools = async () =>
      (await readdir(tmpdir())).filter((n) => n.startsWith("stowage-k8s-restore-")).length;
    const before = await spools();
    const controller = new AbortController();
    let patches = 0;
    server.beforeResponse = (r) => {
      if (r.method === "PATCH" && ++patches === 3) controller.abort();
    };
    const aborted = await restoreKubernetes({
      stream: await restore({ sink, manifest, keys }),
      kubeConfig: kubeConfigFor(server.url),
      signal: controller.signal,
    }).catch((e: unknown) => e);
    expect(aborted).toMatchObject({ code: "ABORTED" });
    expect(patches).toBe(3);
    expect(await spools()).toBe(before);

    // A server that is gone fails the restore (not each object), and cleans up too.
    const dead = await KubeApiServer.start();
    await dead.close();
    const down = await restoreKubernetes({
      stream: await restore({ sink, manifest, keys }),
      kubeConfig: kubeConfigFor(dead.url),
    }).catch((e: unknown) => e);
    expect(down).toMatchObject({ code: "RESTORE_FAILED" });
    expect(await spools()).toBe(before);
  });

  it("streams as pages arrive: an unread stream stops the listing, and destroying it ends the run", async () => {
    server.put({ apiVersion: "v1", kind: "Namespace", metadata: { name: "bulk" } });
    const big = "x".repeat(64 << 10);
    for (let i = 0; i < 200; i++) {
      server.put({
        apiVersion: "v1",
        kind: "ConfigMap",
        metadata: { name: `cm-${String(i).padStart(3, "0")}`, namespace: "bulk" },
        data: { big },
      });
    }
    const pages = () => server.requests.filter((r) => r.path === "/api/v1/namespaces/bulk/configmaps").length;
    const source = kubernetesSource({
      kubeConfig: kubeConfigFor(server.url),
      namespaces: ["bulk"],
      includeResources: ["configmaps"],
      pageSize: 10,
    });
    // 200 objects of 64 KiB are 20 pages and 12.8 MiB; nobody reads, so listing must stall early.
    const idle = await source.open({ signal: new AbortController().signal, startedAt: new Date() });
    // On a busy machine the first page may take a while: wait for it, then give the listing time
    // to run ahead if it would.
    await vi.waitFor(() => expect(pages()).toBeGreaterThan(0), { timeout: 20_000, interval: 20 });
    await new Promise((r) => setTimeout(r, 500));
    expect(pages()).toBeLessThan(6);
    const stalledAt = pages();
    idle.stream.destroy();
    await expect(idle.details()).rejects.toBeDefined();
    await new Promise((r) => setTimeout(r, 200));
    expect(pages()).toBe(stalledAt); // nothing more was asked for

    // Read to the end: every page, every object, once.
    server.requests.length = 0;
    const full = await source.open({ signal: new AbortController().signal, startedAt: new Date() });
    const entries = await readTar(await readAll(full.stream, 64 << 20));
    expect(pages()).toBe(20);
    expect(entries.filter((e) => e.name.startsWith("namespaces/bulk/core/configmaps/"))).toHaveLength(200);
    expect((await full.details()).objects).toBe(201);
  });

  it("honours a label selector", async () => {
    await seedShop(server, 3);
    const sink = memorySink();
    const manifest = await backupShop(sink, { labelSelector: "app=web" });
    const names = (await readTar(await plainTar(sink, manifest))).map((e) => e.name).sort();
    expect(names).toEqual(
      [
        "cluster/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com.yaml",
        "cluster/core/namespaces/shop.yaml",
        "index.json",
        "namespaces/shop/apps/deployments/web.yaml",
        "namespaces/shop/core/configmaps/app-config.yaml",
        "namespaces/shop/core/services/web.yaml",
        "namespaces/shop/example.com/widgets/gizmo.yaml",
      ].sort(),
    );
  });

  it("fails cleanly: server down, wrong credentials, missing namespace, abort — nothing in the sink", async () => {
    // Server down: a port nothing listens on (one we just closed).
    const dead = await KubeApiServer.start();
    const deadUrl = dead.url;
    await dead.close();
    const sink = memorySink();
    const down = await backup({
      job: "k",
      source: kubernetesSource({ kubeConfig: kubeConfigFor(deadUrl), namespaces: ["shop"] }),
      sink,
    }).catch((e: unknown) => e);
    expect(down).toMatchObject({ code: "SOURCE_FAILED" });

    // Wrong credentials: the token never shows in the error.
    const guarded = await KubeApiServer.start({ token: "right-token-123" });
    try {
      guarded.put({ apiVersion: "v1", kind: "Namespace", metadata: { name: "shop" } });
      const wrong = await backup({
        job: "k",
        source: kubernetesSource({
          kubeConfig: kubeConfigFor(guarded.url, "wrong-token-456"),
          namespaces: ["shop"],
        }),
        sink,
      }).catch((e: unknown) => e);
      expect(wrong).toMatchObject({ code: "SOURCE_FAILED", details: { httpStatus: 401 } });
      const text = `${(wrong as Error).message} ${JSON.stringify((wrong as { details: unknown }).details)}`;
      expect(text).not.toContain("wrong-token-456");
      expect(text).not.toContain("right-token-123");
      const right = await backup({
        job: "k",
        source: kubernetesSource({
          kubeConfig: kubeConfigFor(guarded.url, "right-token-123"),
          namespaces: ["shop"],
        }),
        sink,
      });
      expect(JSON.stringify(right)).not.toContain("right-token-123");
      expect((right.source.details as { objects: number }).objects).toBe(1);
      sink.objects.clear();
    } finally {
      await guarded.close();
    }

    const missing = await backup({
      job: "k",
      source: kubernetesSource({ kubeConfig: kubeConfigFor(server.url), namespaces: ["nowhere"] }),
      sink,
    }).catch((e: unknown) => e);
    expect(missing).toMatchObject({
      code: "SOURCE_FAILED",
      details: { namespace: "nowhere", httpStatus: 404 },
    });

    // Abort while the source is listing.
    await seedShop(server, 6);
    const controller = new AbortController();
    let lists = 0;
    server.beforeResponse = (r) => {
      if (r.method === "GET" && r.query.limit && ++lists === 4) controller.abort();
    };
    const aborted = await backup({
      job: "k",
      source: kubernetesSource({ kubeConfig: kubeConfigFor(server.url), namespaces: ["shop"], pageSize: 1 }),
      sink,
      signal: controller.signal,
    }).catch((e: unknown) => e);
    expect(aborted).toMatchObject({ code: "ABORTED" });
    expect(sink.objects.size).toBe(0);
  });
});

describe("kubernetesLogsSource", () => {
  it("exports pod logs, one file per pod and container, and restores them byte for byte", async () => {
    server.put({ apiVersion: "v1", kind: "Namespace", metadata: { name: "shop" } });
    const pod = (name: string, containers: string[], labels: Record<string, string>, phase = "Running") =>
      server.put({
        apiVersion: "v1",
        kind: "Pod",
        metadata: { name, namespace: "shop", labels },
        spec: { containers: containers.map((c) => ({ name: c, image: "app:1" })) },
        status: { phase },
      });
    pod("web-a", ["app", "sidecar"], { app: "web" });
    pod("web-b", ["app"], { app: "web" });
    pod("web-c", ["app"], { app: "web" }, "Pending");
    pod("db-0", ["postgres"], { app: "db" });
    const now = Date.now();
    const old = new Date(now - 2 * 3600_000);
    const recent = new Date(now - 600_000);
    server.setLogs("shop", "web-a", "app", [
      { at: old, line: "old line that sinceSeconds drops" },
      { at: recent, line: "GET /cart 200" },
      { at: recent, line: "GET /checkout 500 ünïcödé" },
    ]);
    server.setLogs("shop", "web-a", "sidecar", [{ at: recent, line: "proxy ready" }]);
    server.setLogs("shop", "web-b", "app", []);
    server.setLogs("shop", "db-0", "postgres", [{ at: recent, line: "checkpoint complete" }]);

    const sink = memorySink();
    const manifest = await backup({
      job: "shop-logs",
      source: kubernetesLogsSource({
        kubeConfig: kubeConfigFor(server.url),
        namespace: "shop",
        labelSelector: "app=web",
        sinceSeconds: 3600,
      }),
      transforms: encrypted(),
      sink,
    });
    expect(manifest.source.kind).toBe("kubernetes-logs");
    const details = manifest.source.details as {
      pods: number;
      logs: number;
      bytes: number;
      failed: Array<Record<string, unknown>>;
    };
    expect(details.pods).toBe(3);
    expect(details.logs).toBe(3);
    expect(details.failed).toEqual([
      expect.objectContaining({ pod: "web-c", container: "app", httpStatus: 400, reason: "BadRequest" }),
    ]);

    const entries = await readTar(await plainTar(sink, manifest));
    const files = Object.fromEntries(entries.map((e) => [e.name, e.data.toString("utf8")]));
    expect(Object.keys(files).sort()).toEqual([
      "index.json",
      "web-a/app.log",
      "web-a/sidecar.log",
      "web-b/app.log",
    ]);
    expect(files["web-a/app.log"]).toBe("GET /cart 200\nGET /checkout 500 ünïcödé\n");
    expect(files["web-a/sidecar.log"]).toBe("proxy ready\n");
    expect(files["web-b/app.log"]).toBe("");
    expect(details.bytes).toBe(
      Buffer.byteLength(files["web-a/app.log"]!) + Buffer.byteLength("proxy ready\n"),
    );
    const index = JSON.parse(files["index.json"]!) as {
      logs: Array<{ entry: string; bytes: number }>;
      failed: unknown[];
    };
    expect(index.logs.map((l) => l.entry)).toEqual(["web-a/app.log", "web-a/sidecar.log", "web-b/app.log"]);
    expect(index.failed).toHaveLength(1);
    const logRequests = server.requests.filter((r) => r.path.endsWith("/log"));
    expect(logRequests.every((r) => r.query.sinceSeconds === "3600" && r.query.container)).toBe(true);

    // strict: the unreadable container fails the run and leaves nothing.
    const strictSink = memorySink();
    const failed = await backup({
      job: "shop-logs",
      source: kubernetesLogsSource({
        kubeConfig: kubeConfigFor(server.url),
        namespace: "shop",
        strict: true,
      }),
      sink: strictSink,
    }).catch((e: unknown) => e);
    expect(failed).toMatchObject({ code: "SOURCE_FAILED", details: { httpStatus: 400 } });
    expect(strictSink.objects.size).toBe(0);

    // containers: only the named ones.
    const some = await backup({
      job: "shop-logs",
      source: kubernetesLogsSource({
        kubeConfig: kubeConfigFor(server.url),
        namespace: "shop",
        containers: ["sidecar", "postgres"],
      }),
      sink,
    });
    const names = (await readTar(await plainTar(sink, some))).map((e) => e.name).sort();
    expect(names).toEqual(["db-0/postgres.log", "index.json", "web-a/sidecar.log"]);
  });
});

afterEach(() => {
  server.beforeResponse = undefined;
});

const slow = { describe, it: (name: string, fn: () => Promise<void>) => it(name, fn, 120_000) };
const conformanceToken = "kube-conformance-token-77d1";
// The server is wiped before each case; each seeds it. The failing source has the token but a
// port nobody listens on (127.0.0.1:9), so its open fails with the token in its kubeconfig.
/** A suite fixture from a source factory by server URL: released once no request is still open. */
function suiteFixture(make: (url: string) => Source) {
  return {
    source: make(server.url),
    released: async () => {
      if (server.inFlight > 0) throw new Error(`${server.inFlight} request(s) still open`);
    },
    secrets: [conformanceToken],
    failing: () => make("http://127.0.0.1:9"),
  };
}

sourceConformance(slow, "kubernetesSource", async () => {
  await seedShop(server, 60);
  const make = (url: string) =>
    kubernetesSource({
      kubeConfig: kubeConfigFor(url, conformanceToken),
      namespaces: ["shop"],
      includeSecrets: true,
      pageSize: 5,
    });
  return suiteFixture(make);
});

sourceConformance(slow, "kubernetesLogsSource", async () => {
  server.put({ apiVersion: "v1", kind: "Namespace", metadata: { name: "shop" } });
  const recent = new Date(Date.now() - 60_000);
  for (let i = 0; i < 12; i++) {
    const name = `web-${i}`;
    server.put({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name, namespace: "shop", labels: { app: "web" } },
      spec: { containers: [{ name: "app", image: "app:1" }] },
      status: { phase: "Running" },
    });
    // 2,000 lines of ~60 bytes a pod: enough that a stream is cut mid-way.
    const lines = Array.from({ length: 2_000 }, (_, n) => ({
      at: recent,
      line: `${name} GET /item/${n} 200 ${"x".repeat(32)}`,
    }));
    server.setLogs("shop", name, "app", lines);
  }
  const make = (url: string) =>
    kubernetesLogsSource({ kubeConfig: kubeConfigFor(url, conformanceToken), namespace: "shop" });
  return suiteFixture(make);
});
