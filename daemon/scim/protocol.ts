/**
 * The SCIM 2.0 wire protocol (RFC 7643/7644) independent of what is stored: the media type, the
 * error schema, list responses, the small filter language we accept, and PATCH operations in the
 * forms Entra ID and Okta send them. docs/scim.md lists what is and is not supported.
 */

export const SCIM_MEDIA_TYPE = "application/scim+json";
export const SCHEMA_USER = "urn:ietf:params:scim:schemas:core:2.0:User";
export const SCHEMA_ENTERPRISE_USER = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
export const SCHEMA_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group";
export const SCHEMA_LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
export const SCHEMA_PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
export const SCHEMA_ERROR = "urn:ietf:params:scim:api:messages:2.0:Error";

/** RFC 7644 §3.12 scimType values we answer with. */
export type ScimType = "invalidFilter" | "invalidSyntax" | "invalidPath" | "invalidValue" | "uniqueness" | "mutability" | "noTarget" | "tooMany";

/**
 * A SCIM error: answered in SCIM's error schema (not problem+json), because provisioning clients
 * parse `scimType` and `detail`. The detail never carries the rejected value (it may be a name).
 */
export class ScimError extends Error {
  constructor(
    readonly status: number,
    readonly detail: string,
    readonly scimType?: ScimType,
  ) {
    super(detail);
  }
  body() {
    return { schemas: [SCHEMA_ERROR], status: String(this.status), ...(this.scimType ? { scimType: this.scimType } : {}), detail: this.detail };
  }
}

export const invalid = (detail: string, scimType: ScimType = "invalidValue") => new ScimError(400, detail, scimType);

export function listResponse<T>(resources: T[], totalResults: number, startIndex: number) {
  return { schemas: [SCHEMA_LIST], totalResults, startIndex, itemsPerPage: resources.length, Resources: resources };
}

/** startIndex (1-based) and count (RFC 7644 §3.4.2.4); a count above the maximum is clipped, as the RFC allows. */
export function pageOf(query: Record<string, unknown>, max = 200): { startIndex: number; count: number } {
  const num = (v: unknown, fallback: number) => {
    if (v === undefined) return fallback;
    if (typeof v !== "string" || !/^-?\d{1,9}$/.test(v)) throw invalid("startIndex and count must be integers");
    return Number(v);
  };
  const startIndex = Math.max(1, num(query.startIndex, 1));
  const count = Math.min(max, Math.max(0, num(query.count, 100)));
  return { startIndex, count };
}

export type EqFilter = { attribute: string; value: string };

/**
 * `attribute eq "value"` for one of the allowed attributes (names and operator are
 * case-insensitive, RFC 7644 §3.4.2.2); anything else is a 400 invalidFilter rather than a filter
 * silently ignored, which would hand an IdP the whole directory when it asked for one account.
 */
export function parseEqFilter(filter: unknown, allowed: readonly string[]): EqFilter | undefined {
  if (filter === undefined) return undefined;
  if (typeof filter !== "string") throw invalid("the filter must be a single string", "invalidFilter");
  const m = /^\s*([A-Za-z][A-Za-z0-9._:-]*)\s+eq\s+"((?:[^"\\]|\\.)*)"\s*$/i.exec(filter);
  const attribute = m ? allowed.find((a) => a.toLowerCase() === m[1]!.toLowerCase()) : undefined;
  if (!m || !attribute) {
    throw invalid(`only these filters are supported: ${allowed.map((a) => `${a} eq "…"`).join(", ")}`, "invalidFilter");
  }
  return { attribute, value: m[2]!.replace(/\\(.)/g, "$1") };
}

// ---- PATCH ---------------------------------------------------------------------------------

export type PatchOperation = { op: "add" | "replace" | "remove"; path?: string; value?: unknown };

/** The PatchOp message (RFC 7644 §3.5.2); op names in any case ("Replace" from Entra ID). */
export function patchOperationsOf(body: unknown): PatchOperation[] {
  const msg = body as { schemas?: unknown; Operations?: unknown } | null;
  if (!msg || typeof msg !== "object" || !Array.isArray(msg.schemas) || !msg.schemas.includes(SCHEMA_PATCH)) {
    throw invalid(`a PATCH body is a ${SCHEMA_PATCH} message`, "invalidSyntax");
  }
  if (!Array.isArray(msg.Operations) || msg.Operations.length === 0) throw invalid("Operations must be a non-empty array", "invalidSyntax");
  if (msg.Operations.length > 1000) throw new ScimError(400, "at most 1000 operations per request", "tooMany");
  return msg.Operations.map((raw: unknown) => {
    const o = raw as { op?: unknown; path?: unknown; value?: unknown } | null;
    const op = typeof o?.op === "string" ? o.op.toLowerCase() : "";
    if (op !== "add" && op !== "replace" && op !== "remove") throw invalid("op must be add, replace or remove", "invalidSyntax");
    if (o!.path !== undefined && typeof o!.path !== "string") throw invalid("path must be a string", "invalidPath");
    if (op === "remove" && o!.path === undefined) throw invalid("remove needs a path", "noTarget");
    return { op, ...(o!.path !== undefined ? { path: o!.path as string } : {}), ...("value" in o! ? { value: o!.value } : {}) };
  });
}

type Json = Record<string, unknown>;

/** Finds a key case-insensitively (SCIM attribute names are case-insensitive, RFC 7643 §2.1). */
function keyOf(obj: Json, name: string): string {
  return Object.keys(obj).find((k) => k.toLowerCase() === name.toLowerCase()) ?? name;
}

type ParsedPath = { urn?: string; attribute: string; filter?: EqFilter; sub?: string };

/**
 * `attr`, `attr.sub`, `attr[sub eq "v"]`, `attr[sub eq "v"].sub`, each optionally prefixed with a
 * schema URN (`urn:…:enterprise:2.0:User:department`).
 */
export function parsePath(path: string): ParsedPath {
  let rest = path.trim();
  let urn: string | undefined;
  const urnMatch = /^(urn:[A-Za-z0-9.:-]+):([A-Za-z][A-Za-z0-9]*(?:[.[].*)?)$/.exec(rest);
  if (urnMatch && urnMatch[1]!.toLowerCase() !== SCHEMA_USER.toLowerCase() && urnMatch[1]!.toLowerCase() !== SCHEMA_GROUP.toLowerCase()) {
    urn = urnMatch[1];
    rest = urnMatch[2]!;
  } else if (urnMatch) {
    rest = urnMatch[2]!;
  }
  const m = /^([A-Za-z][A-Za-z0-9$_-]*)(?:\[\s*([A-Za-z][A-Za-z0-9._-]*)\s+eq\s+"((?:[^"\\]|\\.)*)"\s*\])?(?:\.([A-Za-z][A-Za-z0-9$_-]*))?$/i.exec(rest);
  if (!m) throw invalid('the path is not one this server understands (attr, attr.sub, attr[sub eq "v"].sub)', "invalidPath");
  return {
    ...(urn ? { urn } : {}),
    attribute: m[1]!,
    ...(m[2] ? { filter: { attribute: m[2], value: m[3]!.replace(/\\(.)/g, "$1") } } : {}),
    ...(m[4] ? { sub: m[4] } : {}),
  };
}

const matches = (item: unknown, f: EqFilter) =>
  typeof item === "object" && item !== null && String((item as Json)[keyOf(item as Json, f.attribute)] ?? "").toLowerCase() === f.value.toLowerCase();

/** Applies one operation to a resource's JSON representation, in place. */
function applyAt(resource: Json, op: PatchOperation["op"], path: ParsedPath, value: unknown): void {
  let container = resource;
  if (path.urn) {
    const k = keyOf(resource, path.urn);
    if (typeof resource[k] !== "object" || resource[k] === null) resource[k] = {};
    container = resource[k] as Json;
  }
  const attr = keyOf(container, path.attribute);
  if (path.filter) {
    const list = Array.isArray(container[attr]) ? (container[attr] as unknown[]) : [];
    const hits = list.filter((i) => matches(i, path.filter!));
    if (op === "remove") {
      container[attr] = path.sub ? list : list.filter((i) => !hits.includes(i));
      if (path.sub) for (const h of hits) delete (h as Json)[keyOf(h as Json, path.sub)];
      return;
    }
    if (hits.length === 0) {
      // Entra ID sets `emails[type eq "work"].value` on an account that has no work address yet.
      const created: Json = { [path.filter.attribute]: path.filter.value };
      if (path.sub) created[path.sub] = value;
      else if (typeof value === "object" && value !== null) Object.assign(created, value);
      container[attr] = [...list, created];
      return;
    }
    for (const h of hits) {
      if (path.sub) (h as Json)[keyOf(h as Json, path.sub)] = value;
      else if (typeof value === "object" && value !== null) Object.assign(h as Json, value);
    }
    return;
  }
  if (path.sub) {
    if (op === "remove") {
      if (typeof container[attr] === "object" && container[attr] !== null) delete (container[attr] as Json)[keyOf(container[attr] as Json, path.sub)];
      return;
    }
    if (typeof container[attr] !== "object" || container[attr] === null || Array.isArray(container[attr])) container[attr] = {};
    const inner = container[attr] as Json;
    inner[keyOf(inner, path.sub)] = value;
    return;
  }
  if (op === "remove") {
    // `remove members` with a value lists which members go (Entra ID); without one, all of them.
    if (Array.isArray(container[attr]) && Array.isArray(value)) {
      const gone = new Set(value.map((v) => String((v as Json)?.value ?? v).toLowerCase()));
      container[attr] = (container[attr] as unknown[]).filter((i) => !gone.has(String((i as Json)?.value ?? i).toLowerCase()));
    } else delete container[attr];
    return;
  }
  // `add` to a multi-valued attribute appends (RFC 7644 §3.5.2.1); `replace` sets it.
  if (op === "add" && Array.isArray(container[attr])) {
    const incoming = Array.isArray(value) ? value : [value];
    const existing = container[attr] as unknown[];
    const key = (i: unknown) => JSON.stringify((i as Json)?.value ?? i).toLowerCase();
    container[attr] = [...existing, ...incoming.filter((i) => !existing.some((e) => key(e) === key(i)))];
    return;
  }
  if (op === "add" && typeof container[attr] === "object" && container[attr] !== null && typeof value === "object" && value !== null && !Array.isArray(value)) {
    Object.assign(container[attr] as Json, value);
    return;
  }
  container[attr] = value;
}

/**
 * Applies a PATCH to a resource's JSON representation. Without a path the value is an object of
 * attributes (Okta: `{"op":"replace","value":{"active":false}}`), whose keys may themselves be
 * paths (`"name.givenName"`).
 */
export function applyPatch(resource: Json, operations: PatchOperation[]): Json {
  for (const o of operations) {
    if (o.path !== undefined) {
      applyAt(resource, o.op, parsePath(o.path), o.value);
      continue;
    }
    if (typeof o.value !== "object" || o.value === null || Array.isArray(o.value)) throw invalid("an operation without a path needs an object value", "invalidValue");
    for (const [k, v] of Object.entries(o.value as Json)) {
      if (k.toLowerCase().startsWith("urn:") && typeof v === "object" && v !== null && !Array.isArray(v)) {
        for (const [sk, sv] of Object.entries(v as Json)) applyAt(resource, o.op, { urn: k, attribute: sk }, sv);
      } else applyAt(resource, o.op, parsePath(k), v);
    }
  }
  return resource;
}

/** Entra ID has sent booleans as the strings "True" and "False". */
export function scimBoolean(value: unknown, name: string): boolean {
  if (typeof value === "boolean") return value;
  if (typeof value === "string" && /^(true|false)$/i.test(value)) return value.toLowerCase() === "true";
  throw invalid(`${name} must be a boolean`);
}
