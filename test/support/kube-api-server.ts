/**
 * A stateful, Kubernetes-API-speaking HTTP server for tests (no real API server can be installed
 * on our machines; see docs/TESTING.md). It speaks enough of the REST API for
 * `@kubernetes/client-node`, `kubectl` and stowage's Kubernetes adapters:
 *
 * - discovery: `/api`, `/apis`, `/apis/{group}`, `/api/v1`, `/apis/{group}/{version}` (verbs,
 *   `namespaced`, kinds, subresources), `/version`;
 * - list (per namespace and across namespaces) with `limit` / `continue` and `labelSelector`;
 * - get, create (POST), delete (a Namespace deletion removes what it held);
 * - server-side apply: PATCH `application/apply-patch+yaml` with `fieldManager` (required) and
 *   `force`, field ownership tracked per manager, 409 Conflict on a field another manager owns;
 * - `dryRun=All` on create/apply/delete: answers as if done, stores nothing;
 * - server-set fields: uid, resourceVersion, creationTimestamp, generation, managedFields,
 *   status, a Service's clusterIP, a Secret's stringData folded into data;
 * - CustomResourceDefinitions: applying one registers its group/resource (served at once,
 *   `Established`), deleting it removes the type and its objects;
 * - errors as `Status` objects (400, 401, 403, 404, 409, 415, 422);
 * - pod logs: `GET /api/v1/namespaces/{ns}/pods/{name}/log?container=&sinceSeconds=`;
 * - update (PUT) with optimistic concurrency as the real API does it: the body's
 *   `metadata.resourceVersion` must be the stored one (409 Conflict when stale, 422 when missing,
 *   404 when the object does not exist), which is what coordination.k8s.io/v1 Leases (served
 *   here) build leader election on; a create of an existing name is 409 AlreadyExists.
 *
 * Tests reach around the API with `put`, `deny`, `setLogs`, `wipe`, `objects` and `requests`.
 */
import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { parse as parseYaml } from "yaml";

export interface ResourceType {
  group: string;
  version: string;
  /** Plural resource name, e.g. "configmaps". */
  resource: string;
  kind: string;
  singularName: string;
  namespaced: boolean;
  verbs: string[];
  shortNames?: string[];
  /** Sets metadata.generation and bumps it when the spec changes. */
  generation?: boolean;
  /** Registered by a CRD (removed when the CRD goes). */
  crd?: string;
  /** Subresources advertised in discovery (e.g. "log", "status"). */
  subresources?: string[];
}

type Obj = Record<string, unknown> & {
  apiVersion?: string;
  kind?: string;
  metadata: Record<string, unknown> & {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
};

export interface RecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  contentType?: string;
}

export interface KubeApiServerOptions {
  /** When set, every request must carry `Authorization: Bearer <token>` (else 401). */
  token?: string;
}

const RW = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

const BUILTIN_TYPES: ResourceType[] = [
  {
    group: "coordination.k8s.io",
    version: "v1",
    resource: "leases",
    kind: "Lease",
    singularName: "lease",
    namespaced: true,
    verbs: RW,
  },
  {
    group: "",
    version: "v1",
    resource: "namespaces",
    kind: "Namespace",
    singularName: "namespace",
    namespaced: false,
    verbs: ["create", "delete", "get", "list", "patch", "update", "watch"],
    shortNames: ["ns"],
    subresources: ["status", "finalize"],
  },
  {
    group: "",
    version: "v1",
    resource: "configmaps",
    kind: "ConfigMap",
    singularName: "configmap",
    namespaced: true,
    verbs: RW,
    shortNames: ["cm"],
  },
  {
    group: "",
    version: "v1",
    resource: "secrets",
    kind: "Secret",
    singularName: "secret",
    namespaced: true,
    verbs: RW,
  },
  {
    group: "",
    version: "v1",
    resource: "serviceaccounts",
    kind: "ServiceAccount",
    singularName: "serviceaccount",
    namespaced: true,
    verbs: RW,
    shortNames: ["sa"],
    subresources: ["token"],
  },
  {
    group: "",
    version: "v1",
    resource: "services",
    kind: "Service",
    singularName: "service",
    namespaced: true,
    verbs: ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
    shortNames: ["svc"],
    subresources: ["status", "proxy"],
  },
  {
    group: "",
    version: "v1",
    resource: "pods",
    kind: "Pod",
    singularName: "pod",
    namespaced: true,
    verbs: RW,
    shortNames: ["po"],
    subresources: ["log", "status", "exec", "binding", "eviction"],
  },
  {
    group: "",
    version: "v1",
    resource: "persistentvolumeclaims",
    kind: "PersistentVolumeClaim",
    singularName: "persistentvolumeclaim",
    namespaced: true,
    verbs: RW,
    shortNames: ["pvc"],
    subresources: ["status"],
  },
  {
    group: "",
    version: "v1",
    resource: "events",
    kind: "Event",
    singularName: "event",
    namespaced: true,
    verbs: RW,
    shortNames: ["ev"],
  },
  // Not listable: discovery shows it, a backup must pass it by.
  {
    group: "",
    version: "v1",
    resource: "bindings",
    kind: "Binding",
    singularName: "binding",
    namespaced: true,
    verbs: ["create"],
  },
  {
    group: "apps",
    version: "v1",
    resource: "deployments",
    kind: "Deployment",
    singularName: "deployment",
    namespaced: true,
    verbs: RW,
    shortNames: ["deploy"],
    generation: true,
    subresources: ["status", "scale"],
  },
  {
    group: "apps",
    version: "v1",
    resource: "replicasets",
    kind: "ReplicaSet",
    singularName: "replicaset",
    namespaced: true,
    verbs: RW,
    shortNames: ["rs"],
    generation: true,
    subresources: ["status", "scale"],
  },
  {
    group: "rbac.authorization.k8s.io",
    version: "v1",
    resource: "roles",
    kind: "Role",
    singularName: "role",
    namespaced: true,
    verbs: RW,
  },
  {
    group: "rbac.authorization.k8s.io",
    version: "v1",
    resource: "rolebindings",
    kind: "RoleBinding",
    singularName: "rolebinding",
    namespaced: true,
    verbs: RW,
  },
  {
    group: "rbac.authorization.k8s.io",
    version: "v1",
    resource: "clusterroles",
    kind: "ClusterRole",
    singularName: "clusterrole",
    namespaced: false,
    verbs: RW,
  },
  {
    group: "apiextensions.k8s.io",
    version: "v1",
    resource: "customresourcedefinitions",
    kind: "CustomResourceDefinition",
    singularName: "customresourcedefinition",
    namespaced: false,
    verbs: RW,
    shortNames: ["crd", "crds"],
    generation: true,
    subresources: ["status"],
  },
  {
    group: "events.k8s.io",
    version: "v1",
    resource: "events",
    kind: "Event",
    singularName: "event",
    namespaced: true,
    verbs: RW,
    shortNames: ["ev"],
  },
];

/** Groups served in more than one version: the older one is listed but not preferred. */
const EXTRA_VERSIONS: Record<string, string[]> = { "apiextensions.k8s.io": ["v1beta1"] };

const KINDS_WITH_STATUS: Record<string, (o: Obj) => unknown> = {
  Namespace: () => ({ phase: "Active" }),
  Pod: () => ({ phase: "Running", podIP: "10.244.0.7", startTime: stamp() }),
  Deployment: (o) => {
    const replicas = ((o.spec as { replicas?: number } | undefined)?.replicas ?? 1) as number;
    return {
      observedGeneration: o.metadata.generation,
      replicas,
      readyReplicas: replicas,
      availableReplicas: replicas,
    };
  },
  ReplicaSet: (o) => {
    const replicas = ((o.spec as { replicas?: number } | undefined)?.replicas ?? 1) as number;
    return { observedGeneration: o.metadata.generation, replicas, readyReplicas: replicas };
  },
  Service: () => ({ loadBalancer: {} }),
  PersistentVolumeClaim: () => ({ phase: "Bound" }),
  CustomResourceDefinition: (o) => {
    const names = (o.spec as { names?: unknown } | undefined)?.names ?? {};
    return {
      acceptedNames: names,
      storedVersions: storageVersions(o),
      conditions: [
        { type: "NamesAccepted", status: "True", reason: "NoConflicts", lastTransitionTime: stamp() },
        { type: "Established", status: "True", reason: "InitialNamesAccepted", lastTransitionTime: stamp() },
      ],
    };
  },
};

function storageVersions(crd: Obj): string[] {
  const versions = (
    (crd.spec as { versions?: Array<{ name: string; storage?: boolean }> })?.versions ?? []
  ).filter((v) => v.storage);
  return versions.map((v) => v.name);
}

const stamp = () => `${new Date().toISOString().slice(0, 19)}Z`;
const clone = <T>(v: T): T => structuredClone(v);
const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) && Array.isArray(b))
    return a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  if (isPlainObject(a) && isPlainObject(b)) {
    const ka = Object.keys(a);
    return ka.length === Object.keys(b).length && ka.every((k) => deepEqual(a[k], b[k]));
  }
  return false;
}

/** Leaf paths of an applied configuration (maps are walked, lists are atomic), JSON-encoded. */
function leafPaths(value: unknown, prefix: string[] = [], out: string[][] = []): string[][] {
  if (isPlainObject(value) && Object.keys(value).length > 0) {
    for (const [k, v] of Object.entries(value)) leafPaths(v, [...prefix, k], out);
  } else if (prefix.length > 0) {
    out.push(prefix);
  }
  return out;
}

function getPath(obj: unknown, path: string[]): unknown {
  let cur = obj;
  for (const p of path) {
    if (!isPlainObject(cur)) return undefined;
    cur = cur[p];
  }
  return cur;
}

function setPath(obj: Record<string, unknown>, path: string[], value: unknown): void {
  let cur = obj;
  for (const p of path.slice(0, -1)) {
    if (!isPlainObject(cur[p])) cur[p] = {};
    cur = cur[p] as Record<string, unknown>;
  }
  cur[path.at(-1)!] = clone(value);
}

function deletePath(obj: Record<string, unknown>, path: string[]): void {
  const parents: Array<Record<string, unknown>> = [];
  let cur: unknown = obj;
  for (const p of path.slice(0, -1)) {
    if (!isPlainObject(cur)) return;
    parents.push(cur);
    cur = cur[p];
  }
  if (!isPlainObject(cur)) return;
  delete cur[path.at(-1)!];
  // Drop maps the deletion left empty.
  for (let i = path.length - 2; i >= 0; i--) {
    const parent = parents[i]!;
    const child = parent[path[i]!];
    if (isPlainObject(child) && Object.keys(child).length === 0) delete parent[path[i]!];
    else break;
  }
}

/** FieldsV1 (`{"f:data":{"f:key":{}}}`) from leaf paths, as the API reports managedFields. */
function fieldsV1(paths: string[][]): Record<string, unknown> {
  const root: Record<string, unknown> = {};
  for (const path of paths) {
    let cur = root;
    for (const p of path) {
      const k = `f:${p}`;
      cur[k] ??= {};
      cur = cur[k] as Record<string, unknown>;
    }
  }
  return root;
}

interface Ownership {
  manager: string;
  operation: "Apply" | "Update";
  apiVersion: string;
  time: string;
  paths: string[][];
}

interface Stored {
  obj: Obj;
  owners: Ownership[];
}

class HttpError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
  }
}

function statusBody(code: number, reason: string, message: string, details?: Record<string, unknown>) {
  return {
    kind: "Status",
    apiVersion: "v1",
    metadata: {},
    status: code < 400 ? "Success" : "Failure",
    message,
    reason,
    ...(details ? { details } : {}),
    code,
  };
}

function groupVersion(t: { group: string; version: string }): string {
  return t.group ? `${t.group}/${t.version}` : t.version;
}

/** Equality-based and set-based label selectors (`a=b,c!=d,e in (x,y),f notin (z),g,!h`). */
export function matchesLabelSelector(labels: Record<string, string>, selector: string): boolean {
  const terms = selector.match(/[^,(]+(\([^)]*\))?/g) ?? [];
  return terms.every((raw) => {
    const term = raw.trim();
    if (!term) return true;
    let m = /^(\S+)\s+(in|notin)\s+\(([^)]*)\)$/.exec(term);
    if (m) {
      const values = m[3]!.split(",").map((s) => s.trim());
      const has = m[1]! in labels && values.includes(labels[m[1]!]!);
      return m[2] === "in" ? has : !has;
    }
    m = /^([^!=\s]+)\s*(==|=|!=)\s*(\S*)$/.exec(term);
    if (m) {
      const equal = labels[m[1]!] === m[3];
      return m[2] === "!=" ? !equal : equal;
    }
    if (term.startsWith("!")) return !(term.slice(1) in labels);
    return term in labels;
  });
}

/** The test server. Start with {@link KubeApiServer.start}; always `close()` it. */
export class KubeApiServer {
  readonly requests: RecordedRequest[] = [];
  /** Requests received whose response has not closed yet (a client that still holds one open). */
  inFlight = 0;
  /** Runs before each request is answered (after it is recorded): delay, abort a client, count. */
  beforeResponse: ((request: RecordedRequest) => Promise<void> | void) | undefined;
  private readonly types: ResourceType[] = BUILTIN_TYPES.map((t) => ({ ...t }));
  private readonly store = new Map<string, Stored>();
  private readonly denied = new Set<string>();
  private readonly logs = new Map<string, Array<{ at: Date; line: string }>>();
  private revision = 1000;
  private ipCounter = 10;

  private constructor(
    private readonly server: Server,
    readonly url: string,
    private readonly options: KubeApiServerOptions,
  ) {}

  /** Starts on a free port on 127.0.0.1 with the namespaces every cluster has. */
  static async start(options: KubeApiServerOptions = {}): Promise<KubeApiServer> {
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    const { port } = server.address() as AddressInfo;
    const api = new KubeApiServer(server, `http://127.0.0.1:${port}`, options);
    server.on("request", (req, res) => {
      api.inFlight++;
      res.once("close", () => api.inFlight--);
      void api.handle(req, res);
    });
    api.wipe();
    return api;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Back to a fresh cluster: only `default` and `kube-system`, no custom types, nothing denied. */
  wipe(): void {
    this.store.clear();
    this.denied.clear();
    this.logs.clear();
    for (let i = this.types.length - 1; i >= 0; i--) if (this.types[i]!.crd) this.types.splice(i, 1);
    for (const name of ["default", "kube-system"]) {
      this.put({ apiVersion: "v1", kind: "Namespace", metadata: { name } });
    }
  }

  /**
   * Makes a resource type answer 403 to every verb ("secrets", "deployments.apps",
   * "widgets.example.com"); `allow` undoes it.
   */
  deny(resource: string): void {
    this.denied.add(resource);
  }

  allow(resource: string): void {
    this.denied.delete(resource);
  }

  /**
   * Stores an object as a controller would have made it (server-set fields added, status kept
   * if given), bypassing the API. Returns the stored object.
   */
  put(object: Record<string, unknown>, manager = "kube-controller-manager"): Obj {
    const obj = clone(object) as Obj;
    const type = this.typeForObject(obj);
    if (!type) throw new Error(`no type for ${obj.apiVersion} ${obj.kind}`);
    const status = obj.status;
    const created = this.writeObject(type, obj.metadata.namespace, obj, manager, "Update", false);
    if (status !== undefined) {
      created.status = clone(status);
      this.store.get(this.key(type, obj.metadata.namespace, obj.metadata.name))!.obj.status = clone(status);
    }
    return clone(created);
  }

  /** The stored object, or undefined. `resource` as in deny(). */
  get(resource: string, namespace: string | undefined, name: string): Obj | undefined {
    const type = this.typeByName(resource);
    if (!type) return undefined;
    const stored = this.store.get(this.key(type, namespace, name));
    return stored ? this.render(type, stored) : undefined;
  }

  /** Every stored object, rendered as the API would return it, in key order. */
  objects(): Obj[] {
    return [...this.store.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([key, stored]) => this.render(this.typeForKey(key)!, stored));
  }

  /** Log lines a pod's container returns (each with the time it was "written"). */
  setLogs(namespace: string, pod: string, container: string, lines: Array<{ at: Date; line: string }>): void {
    this.logs.set(`${namespace}/${pod}/${container}`, lines);
  }

  private key(type: ResourceType, namespace: string | undefined, name: string): string {
    return `${type.group}|${type.resource}|${type.namespaced ? (namespace ?? "") : ""}|${name}`;
  }

  private typeForKey(key: string): ResourceType | undefined {
    const [group, resource] = key.split("|");
    return this.types.find((t) => t.group === group && t.resource === resource);
  }

  private typeByName(name: string): ResourceType | undefined {
    const [resource, ...rest] = name.split(".");
    const group = rest.join(".");
    return this.types.find((t) => t.resource === resource && t.group === group);
  }

  private typeForObject(obj: Obj): ResourceType | undefined {
    const [group, version] = (obj.apiVersion ?? "").includes("/")
      ? (obj.apiVersion as string).split("/")
      : ["", obj.apiVersion];
    return this.types.find((t) => t.group === group && t.version === version && t.kind === obj.kind);
  }

  private isDenied(type: ResourceType): boolean {
    return this.denied.has(type.group ? `${type.resource}.${type.group}` : type.resource);
  }

  private render(type: ResourceType, stored: Stored): Obj {
    const obj = clone(stored.obj);
    obj.apiVersion = groupVersion(type);
    obj.kind = type.kind;
    obj.metadata.managedFields = stored.owners.map((o) => ({
      manager: o.manager,
      operation: o.operation,
      apiVersion: o.apiVersion,
      time: o.time,
      fieldsType: "FieldsV1",
      fieldsV1: fieldsV1(o.paths),
    }));
    return obj;
  }

  // ---- HTTP ----

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://localhost");
    const query = Object.fromEntries(url.searchParams.entries());
    const contentType = req.headers["content-type"];
    const recorded: RecordedRequest = {
      method: req.method ?? "GET",
      path: url.pathname,
      query,
      ...(contentType ? { contentType } : {}),
    };
    this.requests.push(recorded);
    try {
      await this.beforeResponse?.(recorded);
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      const body = Buffer.concat(chunks).toString("utf8");
      if (this.options.token !== undefined && req.headers.authorization !== `Bearer ${this.options.token}`) {
        throw new HttpError(401, "Unauthorized", "Unauthorized");
      }
      const result = this.route(req.method ?? "GET", url.pathname, query, body, contentType);
      if (typeof result.body === "string") {
        res.writeHead(result.code, { "content-type": "text/plain" });
        res.end(result.body);
      } else {
        const text = JSON.stringify(result.body);
        res.writeHead(result.code, { "content-type": "application/json" });
        res.end(text);
      }
    } catch (error) {
      const e =
        error instanceof HttpError
          ? error
          : new HttpError(500, "InternalError", `internal error: ${(error as Error).message}`);
      res.writeHead(e.code, { "content-type": "application/json" });
      res.end(JSON.stringify(statusBody(e.code, e.reason, e.message, e.details)));
    }
  }

  private route(
    method: string,
    path: string,
    query: Record<string, string>,
    body: string,
    contentType: string | undefined,
  ): { code: number; body: unknown } {
    const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
    if (method === "GET" && path === "/version") {
      return {
        code: 200,
        body: {
          major: "1",
          minor: "30",
          gitVersion: "v1.30.0-stowage-test",
          gitCommit: "0000000000000000000000000000000000000000",
          gitTreeState: "clean",
          buildDate: "2024-04-17T00:00:00Z",
          goVersion: "go1.22.2",
          compiler: "gc",
          platform: "linux/amd64",
        },
      };
    }
    if (parts[0] === "api") {
      if (parts.length === 1 && method === "GET") {
        return {
          code: 200,
          body: {
            kind: "APIVersions",
            versions: ["v1"],
            serverAddressByClientCIDRs: [{ clientCIDR: "0.0.0.0/0", serverAddress: "127.0.0.1:6443" }],
          },
        };
      }
      if (parts[1] !== "v1") throw this.notFoundPath();
      if (parts.length === 2 && method === "GET") return { code: 200, body: this.resourceList("", "v1") };
      return this.resourceRoute(method, "", "v1", parts.slice(2), query, body, contentType);
    }
    if (parts[0] === "apis") {
      if (parts.length === 1 && method === "GET") return { code: 200, body: this.groupList() };
      const group = parts[1]!;
      const versions = this.groupVersions(group);
      if (versions.length === 0) throw this.notFoundPath();
      if (parts.length === 2 && method === "GET") return { code: 200, body: this.apiGroup(group) };
      const version = parts[2]!;
      if (!versions.includes(version)) throw this.notFoundPath();
      if (parts.length === 3 && method === "GET")
        return { code: 200, body: this.resourceList(group, version) };
      return this.resourceRoute(method, group, version, parts.slice(3), query, body, contentType);
    }
    throw this.notFoundPath();
  }

  private notFoundPath(): HttpError {
    return new HttpError(404, "NotFound", "the server could not find the requested resource");
  }

  private groupVersions(group: string): string[] {
    const versions = [...new Set(this.types.filter((t) => t.group === group).map((t) => t.version))];
    return [...versions, ...(EXTRA_VERSIONS[group] ?? []).filter((v) => !versions.includes(v))];
  }

  private apiGroup(group: string) {
    const versions = this.groupVersions(group);
    const gv = versions.map((version) => ({ groupVersion: `${group}/${version}`, version }));
    return { kind: "APIGroup", apiVersion: "v1", name: group, versions: gv, preferredVersion: gv[0] };
  }

  private groupList() {
    const groups = [...new Set(this.types.map((t) => t.group).filter(Boolean))];
    return {
      kind: "APIGroupList",
      apiVersion: "v1",
      groups: groups.map((g) => {
        const { kind: _k, apiVersion: _a, ...rest } = this.apiGroup(g);
        return rest;
      }),
    };
  }

  private resourceList(group: string, version: string) {
    const resources: unknown[] = [];
    for (const t of this.types.filter((x) => x.group === group && x.version === version)) {
      resources.push({
        name: t.resource,
        singularName: t.singularName,
        namespaced: t.namespaced,
        kind: t.kind,
        verbs: t.verbs,
        ...(t.shortNames ? { shortNames: t.shortNames } : {}),
        storageVersionHash: Buffer.from(t.resource).toString("base64").slice(0, 11),
      });
      for (const sub of t.subresources ?? []) {
        resources.push({
          name: `${t.resource}/${sub}`,
          singularName: "",
          namespaced: t.namespaced,
          kind: sub === "log" ? "Pod" : t.kind,
          verbs: sub === "log" ? ["get"] : ["get", "patch", "update"],
        });
      }
    }
    return {
      kind: "APIResourceList",
      apiVersion: "v1",
      groupVersion: group ? `${group}/${version}` : version,
      resources,
    };
  }

  private resourceRoute(
    method: string,
    group: string,
    version: string,
    parts: string[],
    query: Record<string, string>,
    body: string,
    contentType: string | undefined,
  ): { code: number; body: unknown } {
    const served = this.types.filter((t) => t.group === group && t.version === version);
    const find = (resource: string) => served.find((t) => t.resource === resource);
    let namespace: string | undefined;
    let rest = parts;
    // namespaces/{ns}/{resource}/... is a namespaced path unless {resource} is a subresource of Namespace.
    if (parts[0] === "namespaces" && parts.length >= 3 && find(parts[2]!)?.namespaced) {
      namespace = parts[1];
      rest = parts.slice(2);
    }
    const type = find(rest[0]!);
    if (!type) throw this.notFoundPath();
    const [, name, sub] = rest;
    if (rest.length > 3) throw this.notFoundPath();
    if (type.namespaced && namespace === undefined && name !== undefined) throw this.notFoundPath();
    if (this.isDenied(type)) {
      const verb =
        method === "GET"
          ? name
            ? "get"
            : "list"
          : method === "POST"
            ? "create"
            : method === "DELETE"
              ? "delete"
              : "patch";
      const where = namespace
        ? ` in the namespace "${namespace}"`
        : type.namespaced
          ? " at the cluster scope"
          : "";
      throw new HttpError(
        403,
        "Forbidden",
        `${type.resource}${type.group ? `.${type.group}` : ""} is forbidden: User "system:serviceaccount:backup:stowage" cannot ${verb} resource "${type.resource}" in API group "${type.group}"${where}`,
        { kind: type.resource, ...(type.group ? { group: type.group } : {}) },
      );
    }
    if (sub !== undefined) {
      if (type.resource === "pods" && sub === "log" && method === "GET") {
        return { code: 200, body: this.podLog(namespace!, name!, query) };
      }
      throw this.notFoundPath();
    }
    const dryRun = query.dryRun === "All";
    if (query.dryRun !== undefined && !dryRun) {
      throw new HttpError(400, "BadRequest", `invalid dry run value: "${query.dryRun}"`);
    }
    if (name === undefined) {
      if (method === "GET") return { code: 200, body: this.list(type, namespace, query) };
      if (method === "POST") {
        const obj = this.parseBody(body, contentType);
        return {
          code: 201,
          body: this.create(type, namespace, obj, query.fieldManager ?? "stowage-test-client", dryRun),
        };
      }
      throw new HttpError(
        405,
        "MethodNotAllowed",
        `the server does not allow this method on the requested resource`,
      );
    }
    if (method === "GET") {
      const stored = this.store.get(this.key(type, namespace, name));
      if (!stored) throw this.notFoundObject(type, name);
      return { code: 200, body: this.render(type, stored) };
    }
    if (method === "PATCH") return this.apply(type, namespace, name, body, contentType, query, dryRun);
    if (method === "PUT") {
      const obj = this.parseBody(body, contentType);
      return { code: 200, body: this.update(type, namespace, name, obj, query.fieldManager, dryRun) };
    }
    if (method === "DELETE") return { code: 200, body: this.remove(type, namespace, name, dryRun) };
    throw new HttpError(
      405,
      "MethodNotAllowed",
      `the server does not allow this method on the requested resource`,
    );
  }

  private notFoundObject(type: ResourceType, name: string): HttpError {
    const what = type.group ? `${type.resource}.${type.group}` : type.resource;
    return new HttpError(404, "NotFound", `${what} "${name}" not found`, {
      name,
      kind: type.resource,
      ...(type.group ? { group: type.group } : {}),
    });
  }

  private parseBody(body: string, contentType: string | undefined): Obj {
    let parsed: unknown;
    try {
      parsed = contentType?.includes("yaml") ? parseYaml(body) : JSON.parse(body);
    } catch (error) {
      throw new HttpError(400, "BadRequest", `error decoding request body: ${(error as Error).message}`);
    }
    if (!isPlainObject(parsed) || !isPlainObject(parsed.metadata)) {
      throw new HttpError(400, "BadRequest", "Object 'metadata' is missing");
    }
    return parsed as Obj;
  }

  private list(type: ResourceType, namespace: string | undefined, query: Record<string, string>) {
    const prefix = `${type.group}|${type.resource}|${namespace ?? ""}`;
    let keys = [...this.store.keys()]
      .filter((k) =>
        namespace === undefined
          ? k.startsWith(`${type.group}|${type.resource}|`)
          : k.startsWith(`${prefix}|`),
      )
      .sort();
    if (query.labelSelector) {
      keys = keys.filter((k) =>
        matchesLabelSelector(this.store.get(k)!.obj.metadata.labels ?? {}, query.labelSelector!),
      );
    }
    if (query.continue) {
      let after: string;
      try {
        after = JSON.parse(Buffer.from(query.continue, "base64").toString("utf8")).after;
      } catch {
        throw new HttpError(400, "BadRequest", "continue key is not valid");
      }
      keys = keys.filter((k) => k > after);
    }
    const limit = query.limit ? Number(query.limit) : 0;
    const page = limit > 0 ? keys.slice(0, limit) : keys;
    const more = keys.length - page.length;
    const items = page.map((k) => {
      const rendered = this.render(type, this.store.get(k)!);
      // Lists of built-in types leave apiVersion/kind off their items, as the real API does.
      if (!type.crd) {
        delete rendered.apiVersion;
        delete rendered.kind;
      }
      return rendered;
    });
    return {
      kind: `${type.kind}List`,
      apiVersion: groupVersion(type),
      metadata: {
        resourceVersion: String(this.revision),
        ...(more > 0
          ? {
              continue: Buffer.from(JSON.stringify({ after: page.at(-1), rv: this.revision })).toString(
                "base64",
              ),
              remainingItemCount: more,
            }
          : {}),
      },
      items,
    };
  }

  private checkTarget(type: ResourceType, namespace: string | undefined, obj: Obj, name?: string): void {
    const expected = groupVersion(type);
    if (obj.apiVersion !== expected || obj.kind !== type.kind) {
      throw new HttpError(
        400,
        "BadRequest",
        `the API version in the data (${obj.apiVersion}) does not match the expected API version (${expected}) or kind (${obj.kind} vs ${type.kind})`,
      );
    }
    if (typeof obj.metadata.name !== "string" || obj.metadata.name === "") {
      throw new HttpError(
        422,
        "Invalid",
        `${type.kind} "" is invalid: metadata.name: Required value: name is required`,
      );
    }
    if (name !== undefined && obj.metadata.name !== name) {
      throw new HttpError(400, "BadRequest", "the name of the object does not match the name on the URL");
    }
    if (type.namespaced) {
      if (obj.metadata.namespace !== undefined && obj.metadata.namespace !== namespace) {
        throw new HttpError(
          400,
          "BadRequest",
          "the namespace of the provided object does not match the namespace sent on the request",
        );
      }
      if (!this.store.has(this.key(this.typeByName("namespaces")!, undefined, namespace!))) {
        throw new HttpError(404, "NotFound", `namespaces "${namespace}" not found`, {
          name: namespace,
          kind: "namespaces",
        });
      }
    }
  }

  private create(
    type: ResourceType,
    namespace: string | undefined,
    obj: Obj,
    manager: string,
    dryRun: boolean,
  ): Obj {
    this.checkTarget(type, namespace, obj);
    if (this.store.has(this.key(type, namespace, obj.metadata.name))) {
      const what = type.group ? `${type.resource}.${type.group}` : type.resource;
      throw new HttpError(409, "AlreadyExists", `${what} "${obj.metadata.name}" already exists`, {
        name: obj.metadata.name,
        kind: type.resource,
      });
    }
    return this.writeObject(type, namespace, obj, manager, "Update", dryRun);
  }

  /**
   * PUT: replaces the object when the body names its current resourceVersion. Nothing happens
   * between the check and the write (one event loop turn), so two writers racing on one version
   * see exactly one success and one 409 Conflict, as etcd's compare-and-swap gives the real API.
   */
  private update(
    type: ResourceType,
    namespace: string | undefined,
    name: string,
    input: Obj,
    manager: string | undefined,
    dryRun: boolean,
  ): Obj {
    const what = type.group ? `${type.resource}.${type.group}` : type.resource;
    if (input.metadata.name !== name) {
      throw new HttpError(
        400,
        "BadRequest",
        `the name of the object (${input.metadata.name}) does not match the name on the URL (${name})`,
      );
    }
    const stored = this.store.get(this.key(type, namespace, name));
    if (!stored) throw this.notFoundObject(type, name);
    const version = input.metadata.resourceVersion;
    if (typeof version !== "string" || version === "") {
      throw new HttpError(
        422,
        "Invalid",
        `${type.kind} "${name}" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update`,
        { name, kind: type.kind },
      );
    }
    if (version !== stored.obj.metadata.resourceVersion) {
      throw new HttpError(
        409,
        "Conflict",
        `Operation cannot be fulfilled on ${what} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
        { name, kind: type.resource, ...(type.group ? { group: type.group } : {}) },
      );
    }
    const obj = clone(input);
    const before = stored.obj.metadata;
    obj.metadata = {
      ...obj.metadata,
      uid: before.uid,
      creationTimestamp: before.creationTimestamp,
      ...(type.namespaced ? { namespace: before.namespace } : {}),
    };
    delete obj.metadata.managedFields;
    delete obj.status;
    if (stored.obj.status !== undefined) obj.status = stored.obj.status;
    this.normalize(type, obj);
    const owners = manager
      ? [
          ...stored.owners.filter((o) => o.manager !== manager),
          {
            manager,
            operation: "Update" as const,
            apiVersion: groupVersion(type),
            time: stamp(),
            paths: leafPaths(obj.spec ?? {}, ["spec"]),
          },
        ]
      : stored.owners;
    if (dryRun) return this.render(type, { obj, owners });
    obj.metadata.resourceVersion = String(++this.revision);
    const next = { obj, owners };
    this.store.set(this.key(type, namespace, name), next);
    return this.render(type, next);
  }

  private apply(
    type: ResourceType,
    namespace: string | undefined,
    name: string,
    body: string,
    contentType: string | undefined,
    query: Record<string, string>,
    dryRun: boolean,
  ): { code: number; body: unknown } {
    if (!contentType?.startsWith("application/apply-patch+yaml")) {
      throw new HttpError(
        415,
        "UnsupportedMediaType",
        `the body of the request was in an unknown format - accepted media types include: application/apply-patch+yaml`,
      );
    }
    const manager = query.fieldManager;
    if (!manager) {
      throw new HttpError(
        400,
        "BadRequest",
        "PATCH, application/apply-patch+yaml requests must set fieldManager",
      );
    }
    const force = query.force === "true";
    const obj = this.parseBody(body, contentType);
    this.checkTarget(type, namespace, obj, name);
    const key = this.key(type, namespace, name);
    const existing = this.store.get(key);
    if (!existing) {
      return { code: 201, body: this.writeObject(type, namespace, obj, manager, "Apply", dryRun) };
    }

    const applied = clone(obj) as Record<string, unknown>;
    delete applied.status; // the main resource ignores status; it has its own subresource
    const appliedPaths = leafPaths(applied).filter(
      (p) =>
        !(p.length === 1 && (p[0] === "apiVersion" || p[0] === "kind")) &&
        !(p[0] === "metadata" && (p[1] === "name" || p[1] === "namespace")),
    );
    const current = clone(existing.obj) as Record<string, unknown>;
    const owners = clone(existing.owners);
    const conflicts: Array<{ type: string; message: string; field: string }> = [];
    for (const path of appliedPaths) {
      const same = deepEqual(getPath(current, path), getPath(applied, path));
      for (const owner of owners) {
        if (owner.manager === manager && owner.operation === "Apply") continue;
        const index = owner.paths.findIndex((p) => deepEqual(p, path));
        if (index < 0) continue;
        if (same) continue; // agreeing on a value is shared ownership, not a conflict
        if (force) owner.paths.splice(index, 1);
        else
          conflicts.push({
            type: "FieldManagerConflict",
            message: `conflict with "${owner.manager}" using ${owner.apiVersion}`,
            field: `.${path.join(".")}`,
          });
      }
    }
    if (conflicts.length > 0) {
      throw new HttpError(
        409,
        "Conflict",
        `Apply failed with ${conflicts.length} conflict${conflicts.length > 1 ? "s" : ""}: ${conflicts.map((c) => `${c.message}: ${c.field}`).join(", ")}`,
        { causes: conflicts },
      );
    }
    // Fields this manager applied before, no longer applies, and no one else owns: removed.
    const mine = owners.find((o) => o.manager === manager && o.operation === "Apply");
    for (const old of mine?.paths ?? []) {
      if (appliedPaths.some((p) => deepEqual(p, old))) continue;
      if (owners.some((o) => o !== mine && o.paths.some((p) => deepEqual(p, old)))) continue;
      deletePath(current, old);
    }
    for (const path of appliedPaths) setPath(current, path, getPath(applied, path));
    const nextOwners = owners.filter((o) => o !== mine && o.paths.length > 0);
    nextOwners.push({
      manager,
      operation: "Apply",
      apiVersion: groupVersion(type),
      time: mine?.time ?? stamp(),
      paths: appliedPaths,
    });
    this.normalize(type, current as Obj);

    const before = existing.obj;
    const samePaths = (a: Ownership[], b: Ownership[]) =>
      a.length === b.length &&
      a.every(
        (o, i) =>
          o.manager === b[i]!.manager && o.operation === b[i]!.operation && deepEqual(o.paths, b[i]!.paths),
      );
    if (deepEqual(current, before) && samePaths(nextOwners, existing.owners)) {
      return { code: 200, body: this.render(type, existing) }; // a no-op apply changes nothing
    }
    const next = current as Obj;
    const meta = next.metadata;
    if (type.generation && !deepEqual(getPath(next, ["spec"]), getPath(before, ["spec"]))) {
      meta.generation = ((before.metadata.generation as number | undefined) ?? 1) + 1;
    }
    for (const o of nextOwners) if (o.manager === manager) o.time = stamp();
    if (KINDS_WITH_STATUS[type.kind]) next.status = KINDS_WITH_STATUS[type.kind]!(next);
    if (dryRun) return { code: 200, body: this.render(type, { obj: next, owners: nextOwners }) };
    meta.resourceVersion = String(++this.revision);
    const stored = { obj: next, owners: nextOwners };
    this.store.set(key, stored);
    if (type.resource === "customresourcedefinitions") this.registerCrd(next);
    return { code: 200, body: this.render(type, stored) };
  }

  /** What the API server does to every object it writes. */
  private normalize(type: ResourceType, obj: Obj): void {
    if (type.kind === "Secret") {
      const stringData = obj.stringData as Record<string, string> | undefined;
      if (stringData) {
        const data = (obj.data ?? {}) as Record<string, string>;
        for (const [k, v] of Object.entries(stringData)) data[k] = Buffer.from(v, "utf8").toString("base64");
        obj.data = data;
        delete obj.stringData;
      }
      obj.type ??= "Opaque";
    }
    if (type.kind === "Service") {
      const spec = (obj.spec ?? {}) as Record<string, unknown>;
      obj.spec = spec;
      if (spec.clusterIP === undefined) {
        const ip = `10.96.0.${this.ipCounter++}`;
        spec.clusterIP = ip;
        spec.clusterIPs = [ip];
      }
      spec.type ??= "ClusterIP";
      spec.sessionAffinity ??= "None";
    }
    if (type.kind === "Namespace") {
      obj.spec = { finalizers: ["kubernetes"] };
      obj.metadata.labels = { ...obj.metadata.labels, "kubernetes.io/metadata.name": obj.metadata.name };
    }
  }

  private writeObject(
    type: ResourceType,
    namespace: string | undefined,
    input: Obj,
    manager: string,
    operation: "Apply" | "Update",
    dryRun: boolean,
  ): Obj {
    const obj = clone(input);
    const paths = leafPaths({ ...obj, status: undefined }).filter(
      (p) =>
        !(p.length === 1 && (p[0] === "apiVersion" || p[0] === "kind" || p[0] === "status")) &&
        !(p[0] === "metadata" && (p[1] === "name" || p[1] === "namespace")),
    );
    delete obj.status;
    const meta = obj.metadata;
    for (const k of [
      "uid",
      "resourceVersion",
      "creationTimestamp",
      "generation",
      "managedFields",
      "selfLink",
    ])
      delete meta[k];
    if (type.namespaced) meta.namespace = namespace ?? meta.namespace;
    else delete meta.namespace;
    meta.uid = randomUUID();
    meta.creationTimestamp = stamp();
    if (type.generation) meta.generation = 1;
    this.normalize(type, obj);
    if (KINDS_WITH_STATUS[type.kind]) obj.status = KINDS_WITH_STATUS[type.kind]!(obj);
    const owners: Ownership[] = [
      { manager, operation, apiVersion: groupVersion(type), time: stamp(), paths },
    ];
    if (dryRun) return this.render(type, { obj, owners });
    meta.resourceVersion = String(++this.revision);
    const stored = { obj, owners };
    this.store.set(this.key(type, meta.namespace, meta.name), stored);
    if (type.resource === "customresourcedefinitions") this.registerCrd(obj);
    return this.render(type, stored);
  }

  private registerCrd(crd: Obj): void {
    const spec = crd.spec as {
      group: string;
      scope: "Namespaced" | "Cluster";
      names: { plural: string; singular?: string; kind: string; shortNames?: string[] };
      versions: Array<{ name: string; served?: boolean; subresources?: { status?: unknown } }>;
    };
    for (let i = this.types.length - 1; i >= 0; i--)
      if (this.types[i]!.crd === crd.metadata.name) this.types.splice(i, 1);
    for (const v of spec.versions.filter((x) => x.served !== false)) {
      this.types.push({
        group: spec.group,
        version: v.name,
        resource: spec.names.plural,
        kind: spec.names.kind,
        singularName: spec.names.singular ?? spec.names.kind.toLowerCase(),
        namespaced: spec.scope === "Namespaced",
        verbs: RW,
        ...(spec.names.shortNames ? { shortNames: spec.names.shortNames } : {}),
        generation: true,
        crd: crd.metadata.name,
        ...(v.subresources?.status ? { subresources: ["status"] } : {}),
      });
    }
  }

  private remove(type: ResourceType, namespace: string | undefined, name: string, dryRun: boolean) {
    const key = this.key(type, namespace, name);
    const stored = this.store.get(key);
    if (!stored) throw this.notFoundObject(type, name);
    const rendered = this.render(type, stored);
    if (dryRun) return rendered;
    this.store.delete(key);
    if (type.resource === "namespaces") {
      for (const k of [...this.store.keys()]) {
        const t = this.typeForKey(k);
        if (t?.namespaced && k.split("|")[2] === name) this.store.delete(k);
      }
    }
    if (type.resource === "customresourcedefinitions") {
      const spec = stored.obj.spec as { group: string; names: { plural: string } };
      for (const k of [...this.store.keys()])
        if (k.startsWith(`${spec.group}|${spec.names.plural}|`)) this.store.delete(k);
      for (let i = this.types.length - 1; i >= 0; i--)
        if (this.types[i]!.crd === name) this.types.splice(i, 1);
    }
    return statusBody(200, "", "", { name, kind: type.resource, uid: stored.obj.metadata.uid });
  }

  private podLog(namespace: string, name: string, query: Record<string, string>): string {
    const pod = this.store.get(this.key(this.typeByName("pods")!, namespace, name));
    if (!pod) throw new HttpError(404, "NotFound", `pods "${name}" not found`, { name, kind: "pods" });
    const containers = ((pod.obj.spec as { containers?: Array<{ name: string }> })?.containers ?? []).map(
      (c) => c.name,
    );
    let container = query.container;
    if (!container) {
      if (containers.length !== 1) {
        throw new HttpError(
          400,
          "BadRequest",
          `a container name must be specified for pod ${name}, choose one of: [${containers.join(" ")}]`,
        );
      }
      container = containers[0]!;
    }
    if ((pod.obj.status as { phase?: string } | undefined)?.phase === "Pending") {
      throw new HttpError(
        400,
        "BadRequest",
        `container "${container}" in pod "${name}" is waiting to start: ContainerCreating`,
      );
    }
    if (!containers.includes(container)) {
      throw new HttpError(400, "BadRequest", `container ${container} is not valid for pod ${name}`);
    }
    const since = query.sinceSeconds
      ? Date.now() - Number(query.sinceSeconds) * 1000
      : Number.NEGATIVE_INFINITY;
    const lines = (this.logs.get(`${namespace}/${name}/${container}`) ?? []).filter(
      (l) => l.at.getTime() >= since,
    );
    return lines.map((l) => `${l.line}\n`).join("");
  }
}
