import { OpenAPIRegistry } from "@asteasolutions/zod-to-openapi";
import type { NextFunction, Request, RequestHandler, Response } from "express";
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
 * `Route` that `mountRoutes` dispatches to behind the policy check of its action. The kernel
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
  /** What runs for a matched request, in order: the route's own middleware, the policy check, the handler. */
  handlers(ctx: ApplianceContext, binding: RouteBinding): RequestHandler[];
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

/**
 * Where defined routes land: their OpenAPI operations, the list `mountRoutes` is given and the
 * coverage test walks, and the successes sent with an undocumented status. The appliance has one
 * (`defineRoute`); a test of the kernel itself makes its own, so its routes never join the
 * appliance's (test files share a worker's modules).
 */
export type RouteBook = {
  readonly openApi: OpenAPIRegistry;
  readonly routes: Route[];
  readonly undocumented: string[];
  readonly define: DefineRoute;
};
type DefineRoute = <
  P extends ObjectSchema | undefined = undefined,
  Q extends ObjectSchema | undefined = undefined,
  B extends Schema | RawContent | undefined = undefined,
  R extends Schema | RawContent | undefined = undefined,
>(
  spec: RouteSpec<P, Q, B, R>,
  handler: RouteHandler<P, Q, B, R>,
) => Route;

export function createRouteBook(openApi: OpenAPIRegistry = new OpenAPIRegistry()): RouteBook {
  const book: RouteBook = { openApi, routes: [], undocumented: [], define: (spec, handler) => defineIn(book, spec, handler) };
  return book;
}

const APPLIANCE = createRouteBook(openApiRegistry);

/**
 * Successes a route sent with a status its OpenAPI operation does not declare ("POST /tenants
 * sent 200, documents 201"). Empty unless a handler that answers by itself picks its own status;
 * the test appliance fails its test when this is not empty.
 */
export function undocumentedSuccesses(): readonly string[] {
  return APPLIANCE.undocumented;
}

/** Every route defined so far (all of them once the capabilities' route modules are loaded). */
export function definedRoutes(): readonly Route[] {
  return APPLIANCE.routes;
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
  registry: OpenAPIRegistry,
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
  registry.registerPath({
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
export const defineRoute: DefineRoute = (spec, handler) => defineIn(APPLIANCE, spec, handler);

function defineIn<P extends ObjectSchema | undefined, Q extends ObjectSchema | undefined, B extends Schema | RawContent | undefined, R extends Schema | RawContent | undefined>(
  book: RouteBook,
  spec: RouteSpec<P, Q, B, R>,
  handler: RouteHandler<P, Q, B, R>,
): Route {
  const root = spec.root === true;
  const fullPath = `${root ? "" : API_BASE}${spec.path}`;
  const operationId = operationIdOf(spec.method, spec.path);
  const status = spec.status ?? (spec.response === undefined ? 204 : 200);
  if (book.routes.some((r) => r.method === spec.method && r.path === fullPath)) throw new Error(`route defined twice: ${spec.method.toUpperCase()} ${fullPath}`);
  documentOperation(book.openApi, spec, fullPath, operationId, status);

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
        if (book.undocumented.length < 100) book.undocumented.push(`${spec.method.toUpperCase()} ${fullPath} sent ${res.statusCode}, documents ${status}`);
      }
    });
    const reply = await handler(input);
    if (res.headersSent || res.writableEnded) return;
    if (reply === undefined && spec.response !== undefined && !isRaw(spec.response)) throw new Error(`${spec.method.toUpperCase()} ${fullPath}: the handler sent no response`);
    if (reply === undefined) res.status(status).end();
    else sendJson(req, res, status, reply);
  };

  const route: Route = {
    method: spec.method,
    path: fullPath,
    localPath: spec.path,
    root,
    action: spec.action,
    operationId,
    status,
    handlers(ctx, binding) {
      const before = spec.use?.(ctx) ?? [];
      if (!isPolicyAction(spec.action)) return [...before, (req, res) => run(ctx, req, res)];
      if (!binding.knows(spec.action)) throw new Error(`${spec.method.toUpperCase()} ${fullPath}: the policy table has no action ${spec.action}`);
      return [
        ...before,
        binding.authorize(ctx, spec.action),
        async (req, res) => {
          try {
            await run(ctx, req, res);
          } catch (err) {
            await binding.refused(ctx, req, res, spec.action, err);
            throw err;
          }
        },
      ];
    },
  };
  book.routes.push(route);
  return route;
}

/**
 * A JSON answer as Express's `res.json` writes it (the same body, `application/json;
 * charset=utf-8`, Content-Length), without its general machinery (settings look-ups, charset
 * parsing, the freshness check) on every answer. Where that machinery decides something, Express
 * answers: a Content-Type the handler chose, or a conditional GET or HEAD (`If-None-Match`,
 * `If-Modified-Since`), which may be answered 304.
 */
export function sendJson(req: Request, res: Response, status: number, reply: unknown): void {
  res.status(status);
  // Express answers 304 only to a GET or HEAD that asks whether the client's copy is current.
  const conditional = (req.method === "GET" || req.method === "HEAD") && (req.headers["if-none-match"] !== undefined || req.headers["if-modified-since"] !== undefined);
  if (conditional || res.hasHeader("content-type")) {
    res.json(reply);
    return;
  }
  const body = JSON.stringify(reply);
  res.setHeader("Content-Type", "application/json; charset=utf-8");
  res.setHeader("Content-Length", Buffer.byteLength(body));
  res.end(body);
}

// ---- dispatch --------------------------------------------------------------------------------

/** A path segment of a route: fixed text (lower case) or a parameter's name. */
type Segment = { text: string } | { param: string };
type Entry = { method: Method; segments: Segment[]; handlers: RequestHandler[]; label: { path: string } };

/** A request path's segments, `/a/b/` → [a, b]; undefined when it has an empty segment Express would not match. */
function segmentsOf(path: string): string[] | undefined {
  const parts = path.split("/");
  parts.shift();
  if (parts.length > 1 && parts.at(-1) === "") parts.pop(); // one trailing slash is allowed (non-strict routing)
  return parts.some((p) => p === "") && parts.length > 1 ? undefined : parts;
}

/** The decoded parameters if `entry` matches the segments, or undefined; a parameter that does not decode throws (a 400). */
function matchEntry(entry: Entry, parts: readonly string[]): Record<string, string> | undefined {
  const want = entry.segments;
  if (want.length !== parts.length) return undefined;
  let params: Record<string, string> | undefined;
  for (let i = 0; i < want.length; i++) {
    const w = want[i]!;
    const got = parts[i]!;
    if ("text" in w) {
      if (w.text !== got && w.text !== got.toLowerCase()) return undefined;
    } else {
      if (got === "") return undefined;
      params ??= {};
      params[w.param] = decodeParam(got);
    }
  }
  return params ?? {};
}

function decodeParam(value: string): string {
  if (!value.includes("%")) return value;
  try {
    return decodeURIComponent(value);
  } catch {
    throw Object.assign(new URIError(`a path parameter is not valid percent-encoding`), { status: 400 });
  }
}

/** Runs a route's handlers in order as Express would: `next(err)` and a rejected promise end the chain with the error. */
function runChain(handlers: readonly RequestHandler[], req: Request, res: Response, done: (err?: unknown) => void): void {
  let i = 0;
  const next: NextFunction = (err?: unknown) => {
    if (err) return done(err);
    const handler = handlers[i++];
    if (!handler) return done();
    try {
      const result = handler(req, res, next) as unknown;
      // Any thenable, as Express 5 treats one.
      if (typeof (result as PromiseLike<unknown> | undefined)?.then === "function")
        (result as PromiseLike<unknown>).then(undefined, (e: unknown) => next(e ?? new Error("a route handler rejected without a reason")));
    } catch (e) {
      next(e);
    }
  };
  next();
}

/**
 * Mounts routes as one middleware: a table built once, indexed by method and first path segment,
 * finds a request's route, in place of Express's router stack, which walks a layer per route and
 * matches a regular expression for each on every request (its cost: docs/records.md, "Levers,
 * sixth session"). Matching is Express's: fixed segments case-insensitively, a `:name` matches one
 * non-empty segment (percent-decoded into `req.params`), one trailing slash allowed, HEAD served
 * by a GET route, the first route in the order given wins (a fixed path before a parameter at the
 * same place). OPTIONS is answered with the methods the path has, as Express does. A request no
 * route matches goes on to the next middleware.
 */
export function mountRoutes(ctx: ApplianceContext, routes: readonly Route[], binding: RouteBinding): RequestHandler {
  const entries: Entry[] = routes.map((route) => ({
    method: route.method,
    segments: (segmentsOf(route.localPath) ?? []).map((s) => (s.startsWith(":") ? { param: s.slice(1) } : { text: s.toLowerCase() })),
    handlers: route.handlers(ctx, binding),
    // What the metrics and the access log read (`req.route.path`): the pattern, never the URL.
    label: { path: route.localPath },
  }));
  // By first segment: the entries that could match a path starting with it, in order (those with a parameter first fit every path).
  const firstText = (e: Entry) => {
    const first = e.segments[0];
    return first && "text" in first ? first.text : undefined;
  };
  const paramFirst = entries.filter((e) => firstText(e) === undefined);
  const byFirst = new Map<string, Entry[]>();
  for (const text of new Set(entries.map(firstText))) {
    if (text !== undefined)
      byFirst.set(
        text,
        entries.filter((e) => firstText(e) === text || firstText(e) === undefined),
      );
  }
  return (req, res, next) => {
    const parts = segmentsOf(req.path);
    if (!parts) return next();
    const candidates = byFirst.get((parts[0] ?? "").toLowerCase()) ?? paramFirst;
    if (candidates.length === 0) return next();
    const method = req.method === "HEAD" ? "get" : req.method.toLowerCase();
    if (method === "options") return answerOptions(candidates, parts, res, next);
    dispatchFrom(candidates, 0, method, parts, req, res, next);
  };
}

/** Runs the first of `candidates[start…]` that matches; a chain that ends without answering (or with `next("route")`) tries the rest. */
function dispatchFrom(candidates: readonly Entry[], start: number, method: string, parts: readonly string[], req: Request, res: Response, next: NextFunction): void {
  for (let i = start; i < candidates.length; i++) {
    const entry = candidates[i]!;
    if (entry.method !== method) continue;
    let params: Record<string, string> | undefined;
    try {
      params = matchEntry(entry, parts);
    } catch (decodeError) {
      return next(decodeError);
    }
    if (!params) continue;
    req.params = params;
    (req as { route?: unknown }).route = entry.label;
    return runChain(entry.handlers, req, res, (err) => {
      if (err === undefined || err === "route") dispatchFrom(candidates, i + 1, method, parts, req, res, next);
      else next(err === "router" ? undefined : err);
    });
  }
  next();
}

/** OPTIONS on a path routes have: `Allow` with their methods (HEAD where GET), as Express's router answers. */
function answerOptions(candidates: readonly Entry[], parts: readonly string[], res: Response, next: NextFunction): void {
  const methods = new Set<string>();
  for (const e of candidates) {
    try {
      if (!matchEntry(e, parts)) continue;
    } catch {
      continue;
    }
    methods.add(e.method.toUpperCase());
    if (e.method === "get") methods.add("HEAD");
  }
  if (methods.size === 0) return next();
  const allow = [...methods].sort().join(", ");
  res.setHeader("Allow", allow);
  res.setHeader("Content-Length", Buffer.byteLength(allow));
  res.setHeader("Content-Type", "text/plain");
  res.setHeader("X-Content-Type-Options", "nosniff");
  res.end(allow);
}
