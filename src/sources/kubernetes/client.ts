/**
 * A small REST client on top of the KubeConfig: the KubeConfig supplies the cluster, TLS material
 * and (refreshed) tokens, and requests go over `node:http(s)`. The entry (`../kubernetes.ts`) says
 * why stowage does not use the generated typed clients.
 */

import { once } from "node:events";
import * as http from "node:http";
import * as https from "node:https";
import { StowageError, wrapError } from "../../core/errors.js";
import { VERSION } from "../../core/version.js";
import type { KubeConfigLike } from "./kube-config.js";

export type Json = Record<string, unknown>;

export interface KubeObject extends Json {
  apiVersion?: string;
  kind?: string;
  metadata: Json & {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    ownerReferences?: Array<{ controller?: boolean; kind?: string; name?: string }>;
  };
}

/** A non-2xx answer from the API server, with the reason from its `Status` object. */
export class KubeApiError extends Error {
  constructor(
    readonly httpStatus: number,
    readonly reason: string,
    message: string,
    readonly path: string,
    readonly details: Json | undefined,
  ) {
    super(message);
    this.name = "KubeApiError";
  }
}

interface RequestOptions {
  query?: Record<string, string | number | boolean | undefined>;
  body?: string;
  contentType?: string;
  signal?: AbortSignal | undefined;
  /** Larger answers fail rather than fill memory. @default 256 MiB */
  maxBytes?: number;
}

/** Paths as the API spells them: `/api/v1/...` for the core group, `/apis/{group}/{version}/...`. */
export function groupVersionPath(group: string, version: string): string {
  return group ? `/apis/${group}/${version}` : `/api/${version}`;
}

export function apiVersionOf(group: string, version: string): string {
  return group ? `${group}/${version}` : version;
}

export function splitApiVersion(apiVersion: string): { group: string; version: string } {
  const slash = apiVersion.indexOf("/");
  return slash < 0
    ? { group: "", version: apiVersion }
    : { group: apiVersion.slice(0, slash), version: apiVersion.slice(slash + 1) };
}

/** One path segment, escaped. */
export const enc = encodeURIComponent;

export class KubeClient {
  private readonly base: URL;

  constructor(private readonly kubeConfig: KubeConfigLike) {
    const cluster = kubeConfig.getCurrentCluster();
    if (!cluster?.server) {
      throw new StowageError("CONFIG_INVALID", "kubernetes: the KubeConfig has no current cluster", {
        details: { issues: [{ path: "kubeConfig", problem: "no current cluster (server)" }] },
      });
    }
    try {
      this.base = new URL(cluster.server);
    } catch (error) {
      throw new StowageError("CONFIG_INVALID", "kubernetes: the current cluster's server is not a URL", {
        cause: error,
        details: { issues: [{ path: "kubeConfig", problem: "cluster server is not a URL" }] },
      });
    }
  }

  /** Where requests go, for details and messages (no credentials are ever part of it). */
  get server(): string {
    return this.base.origin + this.base.pathname.replace(/\/$/, "");
  }

  /** Sends one request; resolves with the response still unread. */
  private async send(
    method: string,
    path: string,
    options: RequestOptions,
    accept: string,
  ): Promise<http.IncomingMessage> {
    // Asked for on every request: exec and OIDC plugins refresh short-lived tokens here.
    const auth: https.RequestOptions = {};
    await this.kubeConfig.applyToHTTPSOptions(auth);
    const search = new URLSearchParams();
    for (const [k, v] of Object.entries(options.query ?? {})) if (v !== undefined) search.set(k, String(v));
    const qs = search.toString();
    const prefix = this.base.pathname.replace(/\/$/, "");
    const headers: http.OutgoingHttpHeaders = {
      ...(auth.headers as http.OutgoingHttpHeaders | undefined),
      accept,
      "user-agent": `stowage/${VERSION}`,
    };
    if (options.body !== undefined) {
      headers["content-type"] = options.contentType ?? "application/json";
      headers["content-length"] = Buffer.byteLength(options.body);
    }
    const lib = this.base.protocol === "https:" ? https : http;
    const request = lib.request({
      ...auth,
      protocol: this.base.protocol,
      hostname: this.base.hostname.replace(/^\[|\]$/g, ""),
      port: this.base.port || undefined,
      method,
      path: `${prefix}${path}${qs ? `?${qs}` : ""}`,
      headers,
      ...(options.signal ? { signal: options.signal } : {}),
    });
    request.end(options.body);
    const [response] = (await once(request, "response")) as [http.IncomingMessage];
    // From here a broken connection errors the response, which its reader sees.
    request.on("error", () => undefined);
    return response;
  }

  private async readBody(response: http.IncomingMessage, maxBytes: number, path: string): Promise<Buffer> {
    const parts: Buffer[] = [];
    let size = 0;
    for await (const chunk of response) {
      size += (chunk as Buffer).length;
      if (size > maxBytes) {
        response.destroy();
        throw new KubeApiError(
          0,
          "TooLarge",
          `the answer to ${path} exceeds ${maxBytes} bytes`,
          path,
          undefined,
        );
      }
      parts.push(chunk as Buffer);
    }
    return Buffer.concat(parts);
  }

  private async failure(response: http.IncomingMessage, path: string): Promise<KubeApiError> {
    const body = await this.readBody(response, 1 << 20, path).catch(() => Buffer.alloc(0));
    const status = response.statusCode ?? 0;
    let parsed: Json | undefined;
    try {
      parsed = JSON.parse(body.toString("utf8")) as Json;
    } catch {
      parsed = undefined;
    }
    const isStatus = parsed?.kind === "Status";
    const reason =
      (isStatus && typeof parsed?.reason === "string" && parsed.reason) ||
      http.STATUS_CODES[status] ||
      "Error";
    const message =
      (isStatus && typeof parsed?.message === "string" && parsed.message) ||
      `${status} ${http.STATUS_CODES[status] ?? ""}`.trim();
    return new KubeApiError(
      status,
      reason,
      message,
      path,
      isStatus ? (parsed?.details as Json | undefined) : undefined,
    );
  }

  /** A JSON request: the parsed body of a 2xx answer, or a {@link KubeApiError}. */
  async json<T = Json>(
    method: string,
    path: string,
    options: RequestOptions = {},
  ): Promise<{ status: number; body: T }> {
    const response = await this.send(method, path, options, "application/json");
    const status = response.statusCode ?? 0;
    if (status < 200 || status > 299) throw await this.failure(response, path);
    const body = await this.readBody(response, options.maxBytes ?? 256 << 20, path);
    try {
      return { status, body: JSON.parse(body.toString("utf8")) as T };
    } catch (error) {
      throw new KubeApiError(status, "BadResponse", `the answer to ${path} is not JSON`, path, {
        cause: String(error),
      });
    }
  }

  /** A streamed answer (pod logs): the response of a 2xx, or a {@link KubeApiError}. */
  async stream(path: string, options: RequestOptions = {}): Promise<http.IncomingMessage> {
    const response = await this.send("GET", path, options, "text/plain, */*");
    const status = response.statusCode ?? 0;
    if (status < 200 || status > 299) throw await this.failure(response, path);
    return response;
  }
}

/** A KubeApiError (or anything else) as the StowageError a source throws. */
export function sourceError(error: unknown, what: string, signal?: AbortSignal): StowageError {
  if (error instanceof KubeApiError) {
    return new StowageError(
      "SOURCE_FAILED",
      `${what}: ${error.httpStatus} ${error.reason}: ${error.message}`,
      {
        cause: error,
        details: { path: error.path, httpStatus: error.httpStatus, reason: error.reason },
      },
    );
  }
  return wrapError(error, "SOURCE_FAILED", what, {}, signal);
}
