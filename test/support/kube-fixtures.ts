/**
 * Fixtures for the Kubernetes tests: a KubeConfig for the test server, a "shop" namespace seeded
 * the way a controller-managed cluster looks, tar helpers, and kubectl as an independent client.
 */
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { Readable } from "node:stream";
import { promisify } from "node:util";
import type * as KubeClient from "@kubernetes/client-node";
import tar from "tar-stream";
import type { KubeApiServer } from "./kube-api-server.js";

const run = promisify(execFile);
const require = createRequire(import.meta.url);

/**
 * The `@kubernetes/client-node` that `npm install @kubernetes/client-node` gives a user of this
 * runtime, so that each runtime tests the adapter with the client its users have: 2.x where it
 * loads (it brings undici 8, which needs Node ≥ 22.19), 1.x on older Node, where 2.x crashes at
 * import. The devDependencies hold both: 1.x as itself, 2.x as `kubernetes-client-node-2`.
 */
export const kubeClient = await (async () => {
  const [major = 0, minor = 0] = process.versions.node.split(".").map(Number);
  const wants2 = major > 22 || (major === 22 && minor >= 19);
  // A name in a variable, so that the type checker does not load 2.x's types (they need a newer
  // @types/node than the one this package is built against); both majors share the API used here.
  const name = wants2 ? "kubernetes-client-node-2" : "@kubernetes/client-node";
  const module = (await import(name)) as typeof KubeClient;
  const { version } = JSON.parse(
    await readFile(join(dirname(require.resolve(`${name}/package.json`)), "package.json"), "utf8"),
  ) as { version: string };
  return { module, version, major: Number(version.split(".")[0]) };
})();

type KubeConfig = KubeClient.KubeConfig;

/** A KubeConfig for the test server (plain http needs skipTLSVerify in client-node 1.x). */
export function kubeConfigFor(url: string, token?: string): KubeConfig {
  const kc = new kubeClient.module.KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: "test", server: url, skipTLSVerify: true }],
    users: [{ name: "stowage", ...(token ? { token } : {}) }],
    contexts: [{ name: "test", cluster: "test", user: "stowage" }],
    currentContext: "test",
  });
  return kc;
}

export const CRD = {
  apiVersion: "apiextensions.k8s.io/v1",
  kind: "CustomResourceDefinition",
  metadata: { name: "widgets.example.com" },
  spec: {
    group: "example.com",
    scope: "Namespaced",
    names: { plural: "widgets", singular: "widget", kind: "Widget", shortNames: ["wd"] },
    versions: [
      {
        name: "v1",
        served: true,
        storage: true,
        schema: { openAPIV3Schema: { type: "object", "x-kubernetes-preserve-unknown-fields": true } },
        subresources: { status: {} },
      },
    ],
  },
};

/** Values that YAML 1.1 readers (Go's, kubectl's) would turn into booleans, numbers or dates. */
export const TRICKY_DATA = {
  on: "on",
  yes: "yes",
  octal: "0777",
  sexagesimal: "1:20",
  date: "2001-12-14",
  tilde: "~",
  multiline: "line one\nline two\n",
  spaces: "  padded  ",
  json: '{"a": [1, 2]}',
  empty: "",
};

/**
 * The namespace "shop": ConfigMaps (`configMaps` of them, two made through @kubernetes/client-node),
 * Secrets, RBAC, a Service, a PVC, a Deployment with the ReplicaSet and Pods its controllers made,
 * a standalone Pod, an Event, a CRD and a Widget; plus a ConfigMap in "other" and a ClusterRole.
 */
export async function seedShop(server: KubeApiServer, configMaps = 5): Promise<void> {
  server.put({ apiVersion: "v1", kind: "Namespace", metadata: { name: "shop", labels: { team: "shop" } } });
  server.put({ apiVersion: "v1", kind: "Namespace", metadata: { name: "other" } });
  server.put(CRD, "kubectl");

  // Through the official client, as a user's tooling would.
  const core = kubeConfigFor(server.url).makeApiClient(kubeClient.module.CoreV1Api);
  await core.createNamespacedConfigMap({
    namespace: "shop",
    body: {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: {
        name: "app-config",
        labels: { app: "web" },
        annotations: {
          "kubectl.kubernetes.io/last-applied-configuration": '{"kind":"ConfigMap"}',
          owner: "team-shop",
        },
      },
      data: TRICKY_DATA,
    },
  });
  await core.createNamespacedConfigMap({
    namespace: "shop",
    body: {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: "binary" },
      binaryData: { blob: Buffer.from([0, 1, 2, 255]).toString("base64") },
    },
  });
  for (let i = 2; i < configMaps; i++) {
    server.put(
      {
        apiVersion: "v1",
        kind: "ConfigMap",
        metadata: { name: `flags-${i}`, namespace: "shop" },
        data: { index: String(i) },
      },
      "kubectl-client-side-apply",
    );
  }
  server.put(
    {
      apiVersion: "v1",
      kind: "Secret",
      metadata: { name: "db-credentials", namespace: "shop" },
      stringData: { username: "shop", password: "s3cr3t-value" },
    },
    "kubectl",
  );
  server.put(
    {
      apiVersion: "v1",
      kind: "Secret",
      metadata: { name: "tls", namespace: "shop" },
      type: "kubernetes.io/tls",
      data: {
        "tls.crt": Buffer.from("CERT").toString("base64"),
        "tls.key": Buffer.from("KEY").toString("base64"),
      },
    },
    "kubectl",
  );
  server.put(
    { apiVersion: "v1", kind: "ServiceAccount", metadata: { name: "shop-app", namespace: "shop" } },
    "kubectl",
  );
  server.put(
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "Role",
      metadata: { name: "reader", namespace: "shop" },
      rules: [{ apiGroups: [""], resources: ["configmaps"], verbs: ["get", "list"] }],
    },
    "kubectl",
  );
  server.put(
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "RoleBinding",
      metadata: { name: "reader-binding", namespace: "shop" },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "reader" },
      subjects: [{ kind: "ServiceAccount", name: "shop-app", namespace: "shop" }],
    },
    "kubectl",
  );
  server.put(
    {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: "web", namespace: "shop", labels: { app: "web" } },
      spec: {
        selector: { app: "web" },
        ports: [{ name: "http", port: 80, targetPort: 8080, protocol: "TCP" }],
      },
    },
    "kubectl",
  );
  server.put(
    {
      apiVersion: "v1",
      kind: "PersistentVolumeClaim",
      metadata: { name: "data", namespace: "shop" },
      spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "1Gi" } } },
    },
    "kubectl",
  );
  const template = {
    metadata: { labels: { app: "web" } },
    spec: { containers: [{ name: "app", image: "nginx:1.27", ports: [{ containerPort: 8080 }] }] },
  };
  const deployment = server.put(
    {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: "web", namespace: "shop", labels: { app: "web" } },
      spec: { replicas: 2, selector: { matchLabels: { app: "web" } }, template },
    },
    "kubectl",
  );
  const rs = server.put({
    apiVersion: "apps/v1",
    kind: "ReplicaSet",
    metadata: {
      name: "web-7d9f8",
      namespace: "shop",
      labels: { app: "web" },
      ownerReferences: [
        {
          apiVersion: "apps/v1",
          kind: "Deployment",
          name: "web",
          uid: deployment.metadata.uid,
          controller: true,
          blockOwnerDeletion: true,
        },
      ],
    },
    spec: { replicas: 2, selector: { matchLabels: { app: "web" } }, template },
  });
  for (const suffix of ["abcde", "fghij"]) {
    server.put({
      apiVersion: "v1",
      kind: "Pod",
      metadata: {
        name: `web-7d9f8-${suffix}`,
        namespace: "shop",
        labels: { app: "web" },
        ownerReferences: [
          {
            apiVersion: "apps/v1",
            kind: "ReplicaSet",
            name: "web-7d9f8",
            uid: rs.metadata.uid,
            controller: true,
            blockOwnerDeletion: true,
          },
        ],
      },
      spec: { nodeName: "node-1", containers: template.spec.containers },
      status: { phase: "Running", podIP: "10.244.1.5" },
    });
  }
  server.put(
    {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: "debug", namespace: "shop" },
      spec: {
        nodeName: "node-1",
        containers: [{ name: "shell", image: "busybox:1.36", command: ["sleep", "3600"] }],
      },
    },
    "kubectl",
  );
  server.put({
    apiVersion: "v1",
    kind: "Event",
    metadata: { name: "web.17a", namespace: "shop" },
    involvedObject: { kind: "Deployment", name: "web", namespace: "shop" },
    reason: "ScalingReplicaSet",
    message: "Scaled up replica set web-7d9f8 to 2",
  });
  server.put(
    {
      apiVersion: "example.com/v1",
      kind: "Widget",
      metadata: { name: "gizmo", namespace: "shop", labels: { app: "web" } },
      spec: { size: 3, colors: ["red", "green"], nested: { enabled: true } },
      status: { ready: true },
    },
    "kubectl",
  );
  server.put(
    {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: "elsewhere", namespace: "other" },
      data: { x: "1" },
    },
    "kubectl",
  );
  server.put(
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "ClusterRole",
      metadata: { name: "global-reader" },
      rules: [{ apiGroups: [""], resources: ["pods"], verbs: ["get"] }],
    },
    "kubectl",
  );
}

/** Every entry of a tar, in archive order. */
export async function readTar(data: Buffer): Promise<Array<{ name: string; data: Buffer; mtime?: Date }>> {
  const extract = tar.extract();
  Readable.from([data]).pipe(extract);
  const out: Array<{ name: string; data: Buffer; mtime?: Date }> = [];
  for await (const entry of extract) {
    const parts: Buffer[] = [];
    for await (const chunk of entry) parts.push(chunk as Buffer);
    out.push({
      name: entry.header.name,
      data: Buffer.concat(parts),
      ...(entry.header.mtime ? { mtime: entry.header.mtime } : {}),
    });
  }
  return out;
}

/** A tar made of the given entries (for hand-crafted archives). */
export async function makeTar(entries: Array<{ name: string; data: string | Buffer }>): Promise<Buffer> {
  const pack = tar.pack();
  for (const e of entries)
    pack.entry({ name: e.name }, typeof e.data === "string" ? Buffer.from(e.data) : e.data);
  pack.finalize();
  const parts: Buffer[] = [];
  for await (const chunk of pack) parts.push(chunk as Buffer);
  return Buffer.concat(parts);
}

/** Runs kubectl against the server with a throwaway HOME and cache; resolves with stdout. */
export async function kubectl(server: KubeApiServer, args: string[]): Promise<string> {
  const home = await mkdtemp(join(tmpdir(), "stowage-kubectl-"));
  try {
    const { stdout } = await run(
      "kubectl",
      ["--server", server.url, "--cache-dir", join(home, "cache"), "--request-timeout", "20s", ...args],
      {
        env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: home },
        timeout: 60_000,
        maxBuffer: 32 << 20,
      },
    );
    return stdout;
  } finally {
    await rm(home, { recursive: true, force: true });
  }
}
