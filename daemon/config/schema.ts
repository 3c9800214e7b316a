import { z } from "zod";
import { accessSchema } from "../access/config.js";
import { alertsSchema } from "../alerts/config.js";
import { auditSchema } from "../audit/config.js";
import { backupSchema } from "../backups/config.js";
import { authSchema } from "../auth/config.js";
import { jobsSchema } from "../jobs/config.js";
import { retentionSchema } from "../retention/config.js";
import { ssoSchema } from "../sso/config.js";
import { keysSchema } from "../keys/config.js";
import { recordsSchema } from "../records/config.js";
import { webhooksSchema } from "../webhooks/config.js";

/**
 * The one configuration schema. It is the single source for defaults, validation, the
 * documented `config/default.yaml` (generated from it by `wardkeep config defaults`, and a
 * test fails when the file drifts) and the error messages a bad value produces.
 *
 * Every field carries a one-line description; it becomes the comment in default.yaml.
 */

const port = z.number().int().min(1).max(65535);

/** An IPv4 or IPv6 address with an optional prefix length (what Express's `trust proxy` accepts). */
const PROXY_ADDRESS = /^(?:\d{1,3}(?:\.\d{1,3}){3}(?:\/\d{1,2})?|[0-9a-fA-F:]*:[0-9a-fA-F:.]*(?:\/\d{1,3})?)$/;

export const serverSchema = z
  .object({
    host: z.string().min(1).default("0.0.0.0").describe("Address the HTTPS listener binds to."),
    port: z.number().int().min(0).max(65535).default(8443).describe("HTTPS port (also WARDKEEP_PORT); 0 picks a free port."),
    redirectPort: z.number().int().min(0).max(65535).default(8080).describe("Plain HTTP port that only redirects to HTTPS; 0 disables it."),
    publicHostname: z.string().default("localhost").describe("Host name clients use; it goes into the internal TLS certificate and redirects."),
    publicUrl: z
      .url()
      .refine(
        (u) => {
          const url = new URL(u);
          return url.protocol === "https:" && (url.pathname === "/" || url.pathname === "") && !url.search && !url.hash && !url.username;
        },
        { message: "an https:// origin without path, query or credentials (https://wardkeep.hospital.example)" },
      )
      .transform((u) => new URL(u).origin)
      .optional()
      .describe(
        "The appliance's address as browsers reach it, for example https://wardkeep.hospital.example behind a proxy on 443. Redirects, invite links, the SCIM base URL and the URLs registered at identity providers (OIDC redirect URIs, SAML SP URLs) are made from it, never from a request's Host. Unset: https://<publicHostname>:<port>.",
      ),
    bodyLimit: z
      .string()
      .regex(/^\d+(b|kb|mb)$/i, "a size such as 512kb or 1mb")
      .default("1mb")
      .describe("Largest JSON request body accepted; larger bodies get 413."),
    trustedProxies: z
      .array(z.string().regex(PROXY_ADDRESS, "an IPv4 or IPv6 address, optionally with a /prefix"))
      .default([])
      .describe(
        "Addresses (or CIDR ranges) of the proxies in front, comma-separated in env: only connections from them may name the client with X-Forwarded-For or a PROXY protocol v2 header. Empty: the TCP peer is the client.",
      ),
    proxyProtocol: z
      .boolean()
      .default(false)
      .describe(
        "Accept a PROXY protocol v2 header (HAProxy send-proxy-v2) on connections from trustedProxies; the client address it names is used for limits, logs and the audit trail.",
      ),
    shutdownTimeoutMs: z.number().int().min(0).max(600_000).default(30_000).describe("On SIGTERM, how long in-flight requests may take before connections are cut."),
    maxConnections: z.number().int().min(1).max(100_000).default(2048).describe("Open connections this process accepts at once; more are closed on arrival."),
    maxConnectionsPerAddress: z
      .number()
      .int()
      .min(1)
      .max(100_000)
      .default(256)
      .describe("Open connections one client address may hold; more are closed on arrival (a proxy or NAT in front counts as one address: raise it there)."),
    handshakeTimeoutMs: z.number().int().min(1_000).max(120_000).default(10_000).describe("Longest TLS handshake; a LAN client finishes in milliseconds."),
    headersTimeoutMs: z.number().int().min(1_000).max(120_000).default(10_000).describe("Longest wait for a request's headers (slow-header clients are cut)."),
    requestTimeoutMs: z
      .number()
      .int()
      .min(1_000)
      .max(3_600_000)
      .default(120_000)
      .describe("Longest wait for a whole request, body included (an attachment upload of records.attachmentMaxBytes must fit)."),
    idleTimeoutMs: z.number().int().min(1_000).max(600_000).default(30_000).describe("A connection with no bytes either way for this long is closed."),
    workers: z
      .number()
      .int()
      .min(1)
      .max(64)
      .default(1)
      .describe(
        "Daemon processes serving the HTTPS port (node:cluster). Above 1, `wardkeep start` keeps the embedded PostgreSQL and forks this many workers, each a replica (docs/scale-out.md); needs an unseal that needs no person (keyfile, pkcs11, passphraseFile).",
      ),
  })
  .strict();

export const tlsSchema = z
  .object({
    minVersion: z.enum(["TLSv1.2", "TLSv1.3"]).default("TLSv1.2").describe("Lowest TLS version accepted. TLS 1.0 and 1.1 are never accepted."),
    certFile: z.string().optional().describe("PEM certificate (chain) issued by the hospital's CA; unset uses the internal CA."),
    keyFile: z.string().optional().describe("PEM private key for certFile."),
    hostnames: z.array(z.string().min(1)).default([]).describe("Extra DNS names or IP addresses for the internal certificate (comma-separated in env)."),
    certValidityDays: z.number().int().min(1).max(397).default(397).describe("Lifetime of a certificate issued by the internal CA (CA/Browser Forum maximum 397)."),
  })
  .strict()
  .refine((t) => Boolean(t.certFile) === Boolean(t.keyFile), {
    path: ["keyFile"],
    message: "certFile and keyFile set together (both or neither)",
  });

export const databaseSchema = z
  .object({
    url: z
      .string()
      .regex(/^postgres(ql)?:\/\//, "a postgres:// URL")
      .optional()
      .describe("Owner connection (runs migrations) to an external PostgreSQL; unset runs the embedded one. Also WARDKEEP_DATABASE_URL."),
    passwordFile: z.string().optional().describe("File holding the password for the url's user, so no password sits in the URL or the environment."),
    appUrl: z
      .string()
      .regex(/^postgres(ql)?:\/\//, "a postgres:// URL")
      .optional()
      .describe("Connection for requests, as a role without BYPASSRLS; unset derives it (role wardkeep_app)."),
    appPasswordFile: z.string().optional().describe("File holding the app role's password when appUrl is unset; unset generates one under dataDir."),
    serverDataDir: z
      .string()
      .min(1)
      .optional()
      .describe(
        "The external PostgreSQL's data directory as this daemon sees it (mounted read-only, group-readable): base backups for point-in-time recovery read it. Unset: no base backups with database.url.",
      ),
    poolMax: z.number().int().min(1).max(200).default(10).describe("Largest connection pool per role."),
    statementTimeoutMs: z.number().int().min(0).default(30_000).describe("Longest single SQL statement a request may run."),
    acquireTimeoutMs: z.number().int().min(100).max(60_000).default(5_000).describe("How long a request waits to open or borrow a connection before it is answered 503."),
    commitTimeoutMs: z
      .number()
      .int()
      .min(500)
      .max(120_000)
      .default(10_000)
      .describe("Client-side deadline of a COMMIT; past it the request is answered 503 (outcome unknown) and the connection dropped."),
    groupCommitMembers: z
      .number()
      .int()
      .min(1)
      .max(64)
      .default(16)
      .describe("Group commit: most concurrent patient reads and note writes sharing one transaction and one WAL flush, each still answered after its own commit (1: each alone)."),
    groupCommitInFlight: z
      .number()
      .int()
      .min(1)
      .max(200)
      .default(2)
      .describe("Group commit: transactions of grouped statements in flight at once; a request that finds fewer goes out at once, alone."),
    groupCommitBusyThreshold: z
      .number()
      .min(0)
      .max(1)
      .default(0.5)
      .describe(
        "Group commit: a request waits to join a group only while the daemon's event loop is at least this busy (0–1); below it, it goes out at once, alone (0: always wait).",
      ),
    heartbeatMs: z.number().int().min(100).max(60_000).default(1_000).describe("How often the daemon checks that PostgreSQL answers (SELECT 1 on a connection of its own)."),
    probeTimeoutMs: z
      .number()
      .int()
      .min(100)
      .max(60_000)
      .default(3_000)
      .describe("A heartbeat unanswered this long, twice in a row, opens the circuit: requests get 503 at once until PostgreSQL answers again."),
    retryAfterSeconds: z.number().int().min(1).max(3600).default(5).describe("Retry-After sent with 503 while the database is unreachable."),
    migrateOnStart: z.boolean().default(true).describe("Apply pending migrations at start; false leaves /readyz not ready until `wardkeep migrate`."),
    embeddedPort: port.default(54329).describe("Loopback port of the embedded PostgreSQL."),
  })
  .strict();

export const logSchema = z
  .object({
    level: z.enum(["error", "warn", "info", "http", "debug"]).default("info").describe("Lowest level written. PHI is redacted at every level."),
  })
  .strict();

export const setupSchema = z
  .object({
    tokenTtlHours: z.number().int().min(1).max(720).default(24).describe("How long the one-time setup token printed at first start stays valid."),
  })
  .strict();

export const configSchema = z
  .object({
    dataDir: z.string().min(1).default("var").describe("Where state lives: embedded PostgreSQL, TLS, keys, generated secrets."),
    server: serverSchema.prefault({}),
    tls: tlsSchema.prefault({}),
    database: databaseSchema.prefault({}),
    keys: keysSchema.prefault({}),
    log: logSchema.prefault({}),
    setup: setupSchema.prefault({}),
    auth: authSchema.prefault({}),
    access: accessSchema.prefault({}),
    audit: auditSchema.prefault({}),
    backup: backupSchema.prefault({}),
    records: recordsSchema.prefault({}),
    webhooks: webhooksSchema.prefault({}),
    alerts: alertsSchema.prefault({}),
    jobs: jobsSchema.prefault({}),
    retention: retentionSchema.prefault({}),
    sso: ssoSchema.prefault({}),
  })
  .strict();

export type Config = z.infer<typeof configSchema>;

/** Environment variables that are not the mechanical WARDKEEP_<SECTION>_<KEY> form. */
export const envAliases: Record<string, string[]> = {
  WARDKEEP_PORT: ["server", "port"],
};
