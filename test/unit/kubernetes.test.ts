/**
 * The pure parts of the Kubernetes adapters: option validation, what is stripped, restore order,
 * type matching and selection, archive paths, restore preparation and the YAML round trip. The
 * adapters themselves are tested against a Kubernetes-API-speaking server in test/integration.
 */
import { PassThrough } from "node:stream";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { isStowageError } from "../../src/core/errors.js";
import { type KubernetesResourceType, matchesResourceType } from "../../src/sources/kubernetes/discovery.js";
import { planExport } from "../../src/sources/kubernetes/export-plan.js";
import {
  archivePath,
  isControllerOwned,
  objectToYaml,
  prepareForRestore,
  restoreRank,
  sanitizeObject,
} from "../../src/sources/kubernetes/objects.js";
import { kubernetesLogsSource, kubernetesSource, restoreKubernetes } from "../../src/sources/kubernetes.js";

const kubeConfig = {
  getCurrentCluster: () => ({ server: "http://127.0.0.1:1" }),
  applyToHTTPSOptions: async () => undefined,
};

function issuesOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (error) {
    expect(isStowageError(error, "CONFIG_INVALID")).toBe(true);
    return ((error as { details: { issues: Array<{ path: string }> } }).details.issues ?? []).map(
      (i) => i.path,
    );
  }
  throw new Error("expected CONFIG_INVALID");
}

describe("options", () => {
  it("names every bad option of kubernetesSource", () => {
    expect(issuesOf(() => kubernetesSource({} as never)).sort()).toEqual(["kubeConfig", "namespaces"]);
    expect(issuesOf(() => kubernetesSource({ kubeConfig, namespaces: [] }))).toEqual(["namespaces"]);
    expect(issuesOf(() => kubernetesSource({ kubeConfig, namespaces: ["a"], pageSize: 0 }))).toEqual([
      "pageSize",
    ]);
    expect(issuesOf(() => kubernetesSource({ kubeConfig, namespaces: "all", bogus: 1 } as never))).toEqual([
      "(options)",
    ]);
    expect(
      issuesOf(() =>
        kubernetesSource({
          kubeConfig: { getCurrentCluster: () => null, applyToHTTPSOptions: async () => {} },
          namespaces: "all",
        }),
      ),
    ).toEqual(["kubeConfig"]);
  });

  it("names bad options of restoreKubernetes and kubernetesLogsSource", async () => {
    const error = await restoreKubernetes({ kubeConfig, dryRun: "yes" } as never).catch((e: unknown) => e);
    expect(isStowageError(error, "CONFIG_INVALID")).toBe(true);
    expect(
      (error as { details: { issues: Array<{ path: string }> } }).details.issues.map((i) => i.path).sort(),
    ).toEqual(["dryRun", "stream"]);
    expect(issuesOf(() => kubernetesLogsSource({ kubeConfig, sinceSeconds: -1 } as never)).sort()).toEqual([
      "namespace",
      "sinceSeconds",
    ]);
  });

  it("a source with secrets is sensitive; one without is not", () => {
    expect(kubernetesSource({ kubeConfig, namespaces: ["a"], includeSecrets: true }).sensitive).toBe(true);
    expect(kubernetesSource({ kubeConfig, namespaces: ["a"] }).sensitive).toBe(false);
  });

  it("a restore that cannot start releases its stream", async () => {
    const stream = new PassThrough();
    const error = await restoreKubernetes({
      stream,
      kubeConfig: { getCurrentCluster: () => null, applyToHTTPSOptions: async () => {} },
    }).catch((e: unknown) => e);
    expect(isStowageError(error, "CONFIG_INVALID")).toBe(true);
    expect(stream.destroyed).toBe(true);
  });
});

describe("sanitizeObject", () => {
  const live = {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: {
      name: "web",
      namespace: "shop",
      uid: "0b6c…",
      resourceVersion: "1234",
      generation: 3,
      creationTimestamp: "2024-01-01T00:00:00Z",
      deletionTimestamp: "2024-01-02T00:00:00Z",
      deletionGracePeriodSeconds: 30,
      selfLink: "/apis/apps/v1/namespaces/shop/deployments/web",
      managedFields: [{ manager: "kubectl" }],
      labels: { app: "web" },
      annotations: { "kubectl.kubernetes.io/last-applied-configuration": "{}" },
      finalizers: ["example.com/keep"],
    },
    spec: { replicas: 2 },
    status: { readyReplicas: 2 },
  };

  it("strips status, server-set metadata and the last-applied annotation, and keeps the rest", () => {
    expect(sanitizeObject(live)).toEqual({
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: "web", namespace: "shop", labels: { app: "web" }, finalizers: ["example.com/keep"] },
      spec: { replicas: 2 },
    });
  });

  it("keeps other annotations and does not touch its input", () => {
    const input = structuredClone(live);
    input.metadata.annotations = {
      "kubectl.kubernetes.io/last-applied-configuration": "{}",
      team: "shop",
    } as never;
    const copy = structuredClone(input);
    expect(sanitizeObject(input).metadata.annotations).toEqual({ team: "shop" });
    expect(input).toEqual(copy);
  });
});

describe("isControllerOwned", () => {
  it("is true only with a controller owner reference", () => {
    expect(isControllerOwned({ metadata: { ownerReferences: [{ controller: true }] } })).toBe(true);
    expect(isControllerOwned({ metadata: { ownerReferences: [{ controller: false }, {}] } })).toBe(false);
    expect(isControllerOwned({ metadata: {} })).toBe(false);
  });
});

describe("restoreRank", () => {
  it("orders CRDs, Namespaces, ServiceAccounts, RBAC, ConfigMaps, Secrets, PVCs, Services, workloads, the rest", () => {
    const sequence = [
      { group: "apiextensions.k8s.io", resource: "customresourcedefinitions" },
      { group: "", resource: "namespaces" },
      { group: "", resource: "serviceaccounts" },
      { group: "rbac.authorization.k8s.io", resource: "roles" },
      { group: "rbac.authorization.k8s.io", resource: "rolebindings" },
      { group: "", resource: "configmaps" },
      { group: "", resource: "secrets" },
      { group: "", resource: "persistentvolumeclaims" },
      { group: "", resource: "services" },
      { group: "apps", resource: "deployments" },
      { group: "example.com", resource: "widgets" },
    ];
    const ranks = sequence.map(restoreRank);
    expect([...ranks].sort((a, b) => a - b)).toEqual(ranks);
    expect(new Set(ranks).size).toBe(ranks.length);
    expect(restoreRank({ group: "batch", resource: "cronjobs" })).toBe(
      restoreRank({ group: "", resource: "pods" }),
    );
    // A same-named type in another group is not the built-in one.
    expect(restoreRank({ group: "example.com", resource: "secrets" })).toBe(
      restoreRank({ group: "x.io", resource: "things" }),
    );
  });
});

describe("matchesResourceType", () => {
  const deployments = {
    group: "apps",
    resource: "deployments",
    kind: "Deployment",
    singularName: "deployment",
    shortNames: ["deploy"],
  };
  const coreEvents = { group: "", resource: "events", kind: "Event" };
  const newEvents = { group: "events.k8s.io", resource: "events", kind: "Event" };

  it("matches plural, singular, kind, short names and group-qualified names", () => {
    for (const p of [
      "deployments",
      "deployment",
      "Deployment",
      "deploy",
      "deployments.apps",
      "Deployment.apps",
    ]) {
      expect(matchesResourceType(deployments, p), p).toBe(true);
    }
    for (const p of ["deployments.extensions", "pods", "apps", ""])
      expect(matchesResourceType(deployments, p), p).toBe(false);
  });

  it("an unqualified name matches in every group; a qualified one only in its own", () => {
    expect(matchesResourceType(coreEvents, "events")).toBe(true);
    expect(matchesResourceType(newEvents, "events")).toBe(true);
    expect(matchesResourceType(newEvents, "events.events.k8s.io")).toBe(true);
    expect(matchesResourceType(coreEvents, "events.events.k8s.io")).toBe(false);
  });
});

describe("planExport", () => {
  const type = (
    group: string,
    resource: string,
    kind: string,
    namespaced: boolean,
  ): KubernetesResourceType => ({
    group,
    version: "v1",
    resource,
    kind,
    namespaced,
    verbs: ["get", "list"],
  });
  const types = [
    type("", "events", "Event", true),
    type("apps", "deployments", "Deployment", true),
    type("", "secrets", "Secret", true),
    type("", "namespaces", "Namespace", false),
    type("apiextensions.k8s.io", "customresourcedefinitions", "CustomResourceDefinition", false),
    type("rbac.authorization.k8s.io", "roles", "Role", true),
    type("rbac.authorization.k8s.io", "clusterroles", "ClusterRole", false),
    type("", "configmaps", "ConfigMap", true),
    type("", "persistentvolumeclaims", "PersistentVolumeClaim", true),
    type("", "persistentvolumes", "PersistentVolume", false),
    { ...type("", "bindings", "Binding", true), verbs: ["create"] },
  ];
  const names = (list: KubernetesResourceType[]) =>
    list.map((t) => (t.group ? `${t.resource}.${t.group}` : t.resource));
  const base = { includeSecrets: false, includeCluster: false };

  it("lists listable types in restore order, without events or secrets unless asked, CRDs and Namespaces apart", () => {
    const plan = planExport(types, base);
    expect(names(plan.ordered)).toEqual([
      "roles.rbac.authorization.k8s.io",
      "configmaps",
      "persistentvolumeclaims",
      "deployments.apps",
    ]);
    expect(plan.namespaced).toEqual(plan.ordered);
    expect(plan.crdType?.resource).toBe("customresourcedefinitions");
    expect(plan.namespaceType?.resource).toBe("namespaces");
    expect(plan.allCrds).toBe(false);
    expect(names(planExport(types, { ...base, includeSecrets: true }).ordered)).toContain("secrets");
    expect(names(planExport(types, { ...base, includeResources: ["events"] }).ordered)).toEqual(["events"]);
  });

  it("with cluster resources, puts a rank's cluster-scoped types before its namespaced ones and takes every CRD", () => {
    const plan = planExport(types, { ...base, includeCluster: true });
    expect(names(plan.ordered)).toEqual([
      "clusterroles.rbac.authorization.k8s.io",
      "roles.rbac.authorization.k8s.io",
      "configmaps",
      "persistentvolumes",
      "persistentvolumeclaims",
      "deployments.apps",
    ]);
    expect(plan.allCrds).toBe(true);
    expect(
      planExport(types, { ...base, includeCluster: true, includeResources: ["configmaps"] }).allCrds,
    ).toBe(false);
  });

  it("leaves CRDs and Namespaces out when excludeResources names them", () => {
    const plan = planExport(types, {
      ...base,
      excludeResources: ["customresourcedefinitions", "Namespace", "Deployment"],
    });
    expect(plan.crdType).toBeUndefined();
    expect(plan.namespaceType).toBeUndefined();
    expect(plan.allCrds).toBe(false);
    expect(names(plan.ordered)).not.toContain("deployments.apps");
  });
});

describe("archivePath", () => {
  it("puts namespaced objects under namespaces/ and cluster-scoped ones under cluster/, the core group as core", () => {
    expect(archivePath({ group: "", resource: "configmaps" }, "app", "shop")).toBe(
      "namespaces/shop/core/configmaps/app.yaml",
    );
    expect(archivePath({ group: "apps", resource: "deployments" }, "web", "shop")).toBe(
      "namespaces/shop/apps/deployments/web.yaml",
    );
    expect(archivePath({ group: "rbac.authorization.k8s.io", resource: "clusterroles" }, "system:view")).toBe(
      "cluster/rbac.authorization.k8s.io/clusterroles/system:view.yaml",
    );
  });

  it("never lets a name climb out of its folder", () => {
    for (const name of ["..", ".", "a/b"]) {
      const path = archivePath({ group: "", resource: "configmaps" }, name, "shop");
      expect(path.split("/")).toHaveLength(5);
      expect(path.split("/").slice(0, -1)).not.toContain("..");
      expect(path.endsWith("/...yaml") || path.endsWith("/..yaml")).toBe(false);
    }
  });
});

describe("prepareForRestore", () => {
  it("drops owner references, allocated cluster IPs and a pod's node, and maps namespaces", () => {
    const svc = prepareForRestore(
      {
        apiVersion: "v1",
        kind: "Service",
        metadata: { name: "web", namespace: "shop", ownerReferences: [{ uid: "x" }], uid: "u" },
        spec: { clusterIP: "10.96.0.10", clusterIPs: ["10.96.0.10"], ports: [{ port: 80 }] },
        status: {},
      },
      { shop: "shop-copy" },
    );
    expect(svc).toEqual({
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: "web", namespace: "shop-copy" },
      spec: { ports: [{ port: 80 }] },
    });
    const headless = prepareForRestore({
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: "h" },
      spec: { clusterIP: "None" },
    });
    expect((headless.spec as { clusterIP: string }).clusterIP).toBe("None");
    const pod = prepareForRestore({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: "p" },
      spec: { nodeName: "n1", containers: [] },
    });
    expect(pod.spec).toEqual({ containers: [] });
  });

  it("renames a mapped Namespace (without the old name label) and RoleBinding subjects", () => {
    expect(
      prepareForRestore(
        {
          apiVersion: "v1",
          kind: "Namespace",
          metadata: { name: "shop", labels: { "kubernetes.io/metadata.name": "shop" } },
        },
        { shop: "shop-copy" },
      ),
    ).toEqual({ apiVersion: "v1", kind: "Namespace", metadata: { name: "shop-copy" } });
    const rb = prepareForRestore(
      {
        apiVersion: "rbac.authorization.k8s.io/v1",
        kind: "RoleBinding",
        metadata: { name: "rb", namespace: "shop" },
        subjects: [
          { kind: "ServiceAccount", name: "app", namespace: "shop" },
          { kind: "ServiceAccount", name: "ci", namespace: "ci" },
          { kind: "User", name: "alice" },
        ],
      },
      { shop: "shop-copy" },
    );
    expect(rb.subjects).toEqual([
      { kind: "ServiceAccount", name: "app", namespace: "shop-copy" },
      { kind: "ServiceAccount", name: "ci", namespace: "ci" },
      { kind: "User", name: "alice" },
    ]);
  });
});

describe("objectToYaml", () => {
  const tricky = [
    "<<", // YAML 1.1's merge key, as a key and as a value
    "on",
    "off",
    "yes",
    "no",
    "y",
    "n",
    "~",
    "null",
    "true",
    "0777",
    "010",
    "0x1F",
    "1:20",
    "12:30:00",
    "2001-12-14",
    "1e3",
    ".inf",
    "-.inf",
    ".nan",
    "+12",
    "1_000",
    "#x",
    "- x",
    "a: b",
    "'q'",
    '"q"',
    "  pad  ",
    "line\nbreak\n",
    "tab\there",
    "ünïcödé",
    "",
    "@at",
    "`tick`",
    "%pct",
    "!bang",
    "*star",
    "&amp",
    "{a}",
    "[a]",
  ];

  it("reads back as the same object, for the strings YAML 1.1 readers would change", () => {
    const data = Object.fromEntries(tricky.map((s, i) => [`k${i}`, s]));
    const keysToo = Object.fromEntries(tricky.filter(Boolean).map((s) => [s, s]));
    const object = { apiVersion: "v1", kind: "ConfigMap", metadata: { name: "t" }, data, keysToo };
    expect(parseYaml(objectToYaml(object), { version: "1.1" })).toEqual(object);
  });

  it("reads back as the same object for any JSON a server could send", () => {
    const scalar = fc.oneof(
      fc.string(),
      fc.constantFrom(...tricky),
      fc.integer(),
      fc.double({ noNaN: true, noDefaultInfinity: true }).filter((d) => !Object.is(d, -0)),
      fc.boolean(),
      fc.constant(null),
    );
    const value = fc.letrec((tie) => ({
      v: fc.oneof(
        { depthSize: "small" },
        scalar,
        fc.array(tie("v"), { maxLength: 4 }),
        fc.dictionary(fc.string(), tie("v"), { maxKeys: 4 }),
      ),
    })).v;
    fc.assert(
      fc.property(fc.dictionary(fc.string(), value, { maxKeys: 6 }), (object) => {
        expect(parseYaml(objectToYaml(object), { version: "1.1" })).toEqual(object);
      }),
      { numRuns: 200 },
    );
  });
});
