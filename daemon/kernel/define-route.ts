import { Router, type Request, type RequestHandler, type Response } from "express";
import { z } from "zod";
import type { ApplianceContext } from "../context.js";
import { currentActor, type Actor } from "./actor.js";
import { API_BASE, openApiRegistry, problemResponse, type Tag } from "./openapi.js";
import type { Action } from "./policy.js";
import { requestMeta, type RequestMeta } from "./request-meta.js";
import { assertWellFormedInput, parseInput } from "./input.js";

const wellFormed = <T>(value: T, where: string): T => (assertWellFormedInput(value, where), value);

/**
 * One route definition (docs/architecture.md, "Routes"): `defineRoute(spec, handler)` registers the
 * operation in the OpenAPI description with its real request and response schemas, and returns a
 * `Route` that `mountRoutes` puts on a router behind the policy check of its action. The kernel
 * names no capability: the policy check comes in as a `RouteBinding` from the composition root
 * (daemon/http/app.ts binds access/guard.ts).
 */

export type Method = "get" | "post" | "put" | "patch" | "delete";

/**
 * Who may call the route:
 * - a policy action (`resource:verb`, ./policy.ts): the policy decides, 401/403 otherwise;
 * - `"authenticated"`: any signed-in caller, session or API token (the handler reads `actor`);
 * - `"session"`: a browser session, also one still waiting for its second factor (sign-in steps);
 * - `"public"`: no credentials (health, first-run setup, sign-in, unseal).
 */
export type RouteAccess = Action | "authenticated" | "session" | "public";

/** A non-JSON body or response: its media type and what it is. */
export type RawContent = { mediaType: string; description: string };

type Schema = z.ZodType;
type ObjectSchema = z.ZodObject;
type Out<S> = S extends Schema ? z.output<S> : undefined;

/** What a handler may return for a JSON response: the schema's input, with Date wherever a string is sent (JSON turns it into ISO 8601). */
export type Sendable<T> = T extends string
  ? T | Date
  : T extends Date
    ? T
    : T extends readonly (infer U)[]
      ? Sendable<U>[]
      : T extends object
        ? { [K in keyof T]: Sendable<T[K]> }
        : T;

/** A handler that answers by itself (a problem, a stream) returns nothing. */
type Reply<R> = R extends Schema ? Sendable<z.input<R>> | void : void;

export type RouteSpec<
  P extends ObjectSchema | undefined,
  Q extends ObjectSchema | undefined,
  B extends Schema | RawContent | undefined,
  R extends Schema | RawContent | undefined,
> = {
  method: Method;
  /** Express path; under /api/v1 unless `root` is set. Parameters as `:name`. */
  path: string;
  /** Mounted at the server root instead of /api/v1 (health and metrics). */
  root?: boolean;
  action: RouteAccess;
  tag: Tag;
  /** One line for the operation list (OpenAPI summary). */
  summary: string;
  description?: string;
  params?: P;
  query?: Q;
  /** A JSON body schema, or a raw body the handler reads itself (attachments). */
  body?: B;
  /** Request headers the route reads (documented, parsed by the handler). */
  headers?: ObjectSchema;
  /** The JSON response schema, or a streamed response the handler writes itself. None: 204 No Content. */
  response?: R;
  /** The success status: 200 with a response, 204 without; 201 or 202 where the route says so; 303 for a browser redirect (the handler sends it). */
  status?: 200 | 201 | 202 | 204 | 303;
  /** What the success response is (defaults to the summary). */
  responseDescription?: string;
  /** Problems this route answers besides those every route of its kind may answer, by status. */
  problems?: Partial<Record<number, string>>;
  /** Middleware that runs before the policy check (rate limits, the seal gate). */
  use?: (ctx: ApplianceContext) => RequestHandler[];
};

export type RouteInput<P, Q, B> = {
  ctx: ApplianceContext;
  req: Request;
  res: Response;
  params: Out<P>;
  query: Out<Q>;
  body: B extends Schema ? z.output<B> : undefined;
  /** The caller (401 when there is none); read it only where the route needs a signed-in caller. */
  readonly actor: Actor;
  /** Source address, user agent and request id for the audit trail. */
  readonly meta: RequestMeta;
};

export type RouteHandler<P, Q, B, R> = (input: RouteInput<P, Q, B>) => Promise<Reply<R>> | Reply<R>;

/** A defined route: what `mountRoutes` mounts and the route-coverage test walks. */
export type Route = {
  method: Method;
  /** Full Express path, e.g. /api/v1/patients/:id. */
  path: string;
  /** Path relative to the mount point (/api/v1 or the root). */
  localPath: string;
  root: boolean;
  action: RouteAccess;
  operationId: string;
  status: number;
  mount(ctx: ApplianceContext, router: Router, binding: RouteBinding): void;
};

/** How the composition root ties routes to the policy (daemon/access/guard.ts provides it). */
export type RouteBinding = {
  /** Whether the policy table knows the action: a misspelt action fails at start-up, not at the first request. */
  knows(action: string): boolean;
  /** Lets a request through only when the policy allows the action to the caller: 401 / 403 otherwise. */
  authorize(ctx: ApplianceContext, action: string): RequestHandler;
  /** Sees every error of a policy-bound handler before it goes on (a service's own denial is audited like the guard's). */
  refused(ctx: ApplianceContext, req: Request, res: Response, action: string, err: unknown): Promise<void>;
};

const defined: Route[] = [];
const undocumented: string[] = [];

/**
 * Successes a route sent with a status its OpenAPI operation does not declare ("POST /tenants
 * sent 200, documents 201"). Empty unless a handler that answers by itself picks its own status;
 * the test appliance fails its test when this is not empty.
 */
export function undocumentedSuccesses(): readonly string[] {
  return undocumented;
}

/** Every route defined so far (all of them once the capabilities' route modules are loaded). */
export function definedRoutes(): readonly Route[] {
  return defined;
}

export const isPolicyAction = (access: RouteAccess): boolean => access.includes(":");

const isRaw = (x: unknown): x is RawContent => typeof x === "object" && x !== null && !(x instanceof z.ZodType) && "mediaType" in x;
const capitalised = (s: string) => s.charAt(0).toUpperCase() + s.slice(1);
const words = (s: string) => s.split(/[^A-Za-z0-9]+/).filter(Boolean);

/**
 * A stable, readable operationId from the method and the path: `GET /patients/:id/notes` →
 * `getPatientsNotesById`. It changes only when the route does, which is when generated clients should.
 */
export function operationIdOf(method: Method, path: string): string {
  const segments = path.split("/").filter(Boolean);
  const fixed = segments.filter((s) => !s.startsWith(":")).flatMap(words);
  const params = segments.filter((s) => s.startsWith(":")).map((s) => s.slice(1));
  const name = method + fixed.map(capitalised).join("") + (params.length ? "By" + params.map(capitalised).join("And") : "");
  return name;
}

const REASON: Record<number, string> = { 200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 303: "See Other" };

function documentOperation(
  spec: RouteSpec<ObjectSchema | undefined, ObjectSchema | undefined, Schema | RawContent | undefined, Schema | RawContent | undefined>,
  fullPath: string,
  operationId: string,
  status: number,
): void {
  const policy = isPolicyAction(spec.action);
  const changes = spec.method !== "get";
  // Browser sessions send the CSRF token with every change; API tokens need none.
  const session: Record<string, string[]> = changes ? { sessionCookie: [], csrfToken: [] } : { sessionCookie: [] };
  const security = spec.action === "public" ? [] : spec.action === "session" ? [session] : [session, { apiToken: [] }];
  const takesInput = spec.params !== undefined || spec.query !== undefined || (spec.body !== undefined && !isRaw(spec.body));
  const problems: Partial<Record<number, string>> = {
    ...(takesInput ? { 400: "Invalid input (unknown fields, wrong types or formats); nothing was changed" } : {}),
    ...(spec.action !== "public" ? { 401: "Not signed in, or the session ended" } : {}),
    ...(policy ? { 403: "The policy does not allow this to your role (audited), or a fresh second factor is needed" } : {}),
    ...(spec.params !== undefined ? { 404: "Nothing with this id in your tenant" } : {}),
    ...(spec.body !== undefined && !isRaw(spec.body) ? { 415: "The body is not application/json" } : {}),
    ...spec.problems,
  };
  const response = spec.response;
  const description = spec.responseDescription ?? REASON[status] ?? spec.summary;
  openApiRegistry.registerPath({
    method: spec.method,
    path: fullPath.replace(/:(\w+)/g, "{$1}"),
    operationId,
    summary: spec.summary,
    ...(spec.description ? { description: spec.description } : {}),
    tags: [spec.tag],
    security,
    ...(policy ? { "x-wardkeep-action": spec.action } : {}),
    request: {
      ...(spec.params ? { params: spec.params } : {}),
      ...(spec.query ? { query: spec.query } : {}),
      ...(spec.headers ? { headers: spec.headers } : {}),
      ...(spec.body
        ? isRaw(spec.body)
          ? { body: { required: true, description: spec.body.description, content: { [spec.body.mediaType]: { schema: z.string().meta({ format: "binary" }) } } } }
          : { body: { required: true, content: { "application/json": { schema: spec.body } } } }
        : {}),
    },
    responses: {
      [status]:
        response === undefined
          ? { description }
          : isRaw(response)
            ? { description: response.description, content: { [response.mediaType]: { schema: z.string().meta({ format: "binary" }) } } }
            : { description, content: { "application/json": { schema: response } } },
      ...Object.fromEntries(Object.entries(problems).map(([code, text]) => [code, problemResponse(text ?? "")])),
    },
  });
}

/**
 * Defines one route: registers it in the OpenAPI description (operationId, security, parameters,
 * body, its real success status and schema, problem responses) and returns what `mountRoutes`
 * mounts. The handler gets the parsed params, query and body (a ZodError is a 400) and returns
 * the response body, which is sent as JSON with the route's status; a handler that sends or
 * streams its own answer returns nothing.
 */
export function defineRoute<
  P extends ObjectSchema | undefined = undefined,
  Q extends ObjectSchema | undefined = undefined,
  B extends Schema | RawContent | undefined = undefined,
  R extends Schema | RawContent | undefined = undefined,
>(spec: RouteSpec<P, Q, B, R>, handler: RouteHandler<P, Q, B, R>): Route {
  const root = spec.root === true;
  const fullPath = `${root ? "" : API_BASE}${spec.path}`;
  const operationId = operationIdOf(spec.method, spec.path);
  const status = spec.status ?? (spec.response === undefined ? 204 : 200);
  if (defined.some((r) => r.method === spec.method && r.path === fullPath)) throw new Error(`route defined twice: ${spec.method.toUpperCase()} ${fullPath}`);
  documentOperation(spec, fullPath, operationId, status);

  const run = async (ctx: ApplianceContext, req: Request, res: Response) => {
    try {
      await answer(ctx, req, res);
    } catch (err) {
      // A refused request whose body was not read (a streamed upload) is not worth receiving: close after answering.
      if (!req.complete && !res.headersSent) res.setHeader("Connection", "close");
      throw err;
    }
  };
  const answer = async (ctx: ApplianceContext, req: Request, res: Response) => {
    const input = {
      ctx,
      req,
      res,
      params: spec.params ? parseInput(spec.params, wellFormed(req.params, "path")) : undefined,
      query: spec.query ? parseInput(spec.query, wellFormed(req.query, "query")) : undefined,
      body: spec.body && !isRaw(spec.body) ? parseInput(spec.body, wellFormed(req.body ?? {}, "body")) : undefined,
      get actor() {
        return currentActor(res);
      },
      get meta() {
        return requestMeta(req, res);
      },
    } as RouteInput<P, Q, B>;
    // The documented status is the default for a handler that streams its own answer too; a
    // success sent with another one is recorded (the document would lie to client generators).
    res.status(status);
    res.once("finish", () => {
      if (res.statusCode >= 200 && res.statusCode < 300 && res.statusCode !== status) {
        if (undocumented.length < 100) undocumented.push(`${spec.method.toUpperCase()} ${fullPath} sent ${res.statusCode}, documents ${status}`);
      }
    });
    const reply = await handler(input);
    if (res.headersSent || res.writableEnded) return;
    if (reply === undefined && spec.response !== undefined && !isRaw(spec.response)) throw new Error(`${spec.method.toUpperCase()} ${fullPath}: the handler sent no response`);
    if (reply === undefined) res.status(status).end();
    else res.status(status).json(reply);
  };

  const route: Route = {
    method: spec.method,
    path: fullPath,
    localPath: spec.path,
    root,
    action: spec.action,
    operationId,
    status,
    mount(ctx, router, binding) {
      const before = spec.use?.(ctx) ?? [];
      if (!isPolicyAction(spec.action)) {
        router[spec.method](spec.path, ...before, (req, res) => run(ctx, req, res));
        return;
      }
      if (!binding.knows(spec.action)) throw new Error(`${spec.method.toUpperCase()} ${fullPath}: the policy table has no action ${spec.action}`);
      router[spec.method](spec.path, ...before, binding.authorize(ctx, spec.action), async (req, res) => {
        try {
          await run(ctx, req, res);
        } catch (err) {
          await binding.refused(ctx, req, res, spec.action, err);
          throw err;
        }
      });
    },
  };
  defined.push(route);
  return route;
}

/** Mounts routes in the order given (a fixed path before a parameter at the same place). */
export function mountRoutes(ctx: ApplianceContext, routes: readonly Route[], binding: RouteBinding, router: Router = Router()): Router {
  for (const route of routes) route.mount(ctx, router, binding);
  return router;
}
