import { OpenAPIRegistry, OpenApiGeneratorV31 } from "@asteasolutions/zod-to-openapi";
import { z } from "zod";

/**
 * The API description is generated from the same zod schemas that validate requests and type
 * responses, so it cannot drift from what the daemon accepts and sends. Routes land here only
 * through `defineRoute` (./define-route.ts), when their module is loaded.
 */
export const openApiRegistry = new OpenAPIRegistry();

/** The base path of the JSON API; health and metrics sit at the root. */
export const API_BASE = "/api/v1";

export const problemSchema = z
  .object({
    /** Stable URN naming the kind of problem. */
    type: z.string().describe("Stable URN naming the kind of problem, e.g. urn:wardkeep:problem:not-found"),
    /** Short summary of the kind of problem. */
    title: z.string().describe("Short summary of the kind of problem"),
    /** The HTTP status code. */
    status: z.number().int().describe("The HTTP status code"),
    /** A sentence for people; never carries PHI. */
    detail: z.string().describe("A sentence for people; never carries PHI"),
    /** The request path the problem occurred on. */
    instance: z.string().optional().describe("The request path"),
    /** The X-Request-Id of the request, to find it in the logs. */
    requestId: z.string().optional().describe("The request's X-Request-Id, to find it in the logs"),
  })
  .passthrough()
  .describe("RFC 9457 problem details; some problems add fields (errors, reason, retryAfterSeconds)")
  .meta({ id: "Problem" });

export const problemResponse = (description: string) => ({
  description,
  content: { "application/problem+json": { schema: problemSchema } },
});

/** How callers authenticate (see docs/identity-and-access.md); operations name the ones they accept. */
export const SECURITY_SCHEMES = {
  sessionCookie: {
    type: "apiKey",
    in: "cookie",
    name: "__Host-wardkeep_session",
    description: "The session cookie set by POST /api/v1/auth/login (HttpOnly, Secure, SameSite=Strict)",
  },
  csrfToken: {
    type: "apiKey",
    in: "header",
    name: "X-CSRF-Token",
    description: "Sent with the session cookie on every request that changes something; the value comes from GET /api/v1/auth/session",
  },
  apiToken: {
    type: "http",
    scheme: "bearer",
    description: "API token of a service account (`wkt_…`), limited to its scopes",
  },
} as const;

for (const [name, scheme] of Object.entries(SECURITY_SCHEMES)) openApiRegistry.registerComponent("securitySchemes", name, { ...scheme });

/** The capabilities, as OpenAPI tags (client generators group operations by them). */
export const TAGS = [
  { name: "health", description: "Liveness, readiness and metrics for monitoring" },
  { name: "setup", description: "First-run setup of the appliance" },
  { name: "identity", description: "Sign-in, MFA, sessions, invites and API tokens" },
  { name: "access", description: "Tenants, users, security settings, support access, break-glass and care teams" },
  { name: "keys", description: "Seal state, unseal, key status, rotation and crypto-shredding" },
  { name: "backups", description: "Snapshots, restores, recovery drills and the backup policy" },
  { name: "records", description: "Patients, schedule, notes, consents, attachments and data rights (PHI)" },
  { name: "audit", description: "The hash-chained audit trail, its verification and evidence packs" },
  { name: "alerts", description: "The alerts centre: open alerts, their history and acknowledgement, and the channels they are sent to" },
  { name: "webhooks", description: "Outbound Standard Webhooks (subscriptions, allow-list, deliveries, dead letters) and inbound webhook sources" },
  { name: "jobs", description: "Recurring jobs: schedules, run history and run now" },
  { name: "retention", description: "The retention register: rules, legal holds, purge preview and disposition certificates" },
  { name: "sso", description: "Hospital sign-in: identity providers per tenant (OpenID Connect, SAML, LDAP), claim/group rules, IdP MFA policy" },
  { name: "scim", description: "SCIM 2.0 provisioning (/scim/v2, application/scim+json) and the tenant's SCIM tokens" },
] as const;
export type Tag = (typeof TAGS)[number]["name"];

export function buildOpenApiDocument(version: string, registry: OpenAPIRegistry = openApiRegistry) {
  return new OpenApiGeneratorV31(registry.definitions).generateDocument({
    openapi: "3.1.0",
    info: {
      title: "Wardkeep API",
      version,
      description: "On-premise PHI appliance. Errors are RFC 9457 application/problem+json with a stable `type` URN. All endpoints are HTTPS only.",
      license: { name: "Proprietary", identifier: "LicenseRef-Proprietary" },
    },
    servers: [{ url: "/" }],
    tags: TAGS.map((t) => ({ ...t })),
  });
}
