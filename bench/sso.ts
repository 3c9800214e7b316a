import fs from "node:fs";
import http from "node:http";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import * as oidc from "openid-client";
import { startAppliance, type Appliance } from "../daemon/appliance.js";
import { createApiToken } from "../daemon/auth/api-tokens.js";
import { loadConfig } from "../daemon/config/load.js";
import { startEmbeddedPostgres, type EmbeddedPostgres } from "../daemon/db/embedded.js";
import { createBenchDatabase } from "./cluster.js";
import { hostOperatorIn } from "../daemon/kernel/actor.js";
import { SYSTEM_META } from "../daemon/kernel/request-meta.js";
import { silentLogger } from "../daemon/log/logger.js";
import { createScimToken } from "../daemon/scim/tokens.js";
import { createProvider, updateProvider } from "../daemon/sso/providers.js";
import { saveRules } from "../daemon/sso/rules.js";
import { createTenant, signIn } from "../test/helpers/actors.js";
import type { TestAppliance } from "../test/helpers/appliance.js";
import { spawnDaemon, type DaemonProcess } from "../test/helpers/daemon-process.js";
import { startTestIdp, type TestIdp } from "../test/helpers/oidc-idp.js";
import type { BenchRow } from "./run.js";

/**
 * Hospital sign-in (issue 18), on three `wardkeep start` processes sharing one PostgreSQL:
 *
 * - **Sign-ins per second through OpenID Connect** against the in-process oidc-provider: the
 *   whole browser round trip without a browser (the appliance's /start, the IdP's authorization
 *   and sign-in form, the appliance's callback, which exchanges the code, validates the ID token,
 *   reads userinfo, applies the rules and makes the session), SIGNIN_CONCURRENCY at a time, on one
 *   replica. Baseline, in alternating rounds: the same IdP round trip finished by a bare
 *   openid-client relying party in this process (PKCE, code exchange, ID token, userinfo; no
 *   database, no session), so the ratio is what the appliance's own work costs.
 * - **Deprovision-to-revocation latency**: a person with a session and an API token, both used on
 *   all three replicas first (so each replica has the token in its cache); SCIM `active: false` on
 *   one replica (rotating); then, from the moment the PATCH is sent, how long until both the
 *   session and the token are refused on every replica (probes every PROBE_MS). p50 / p99 over
 *   DEPROVISIONS people; target p99 < 1 s. Baseline: a SCIM PATCH of the display name of the same
 *   person on the same replica just before (what any SCIM change costs).
 */
const SIGNINS = Number(process.env.BENCH_SSO_SIGNINS ?? 60);
const SIGNIN_CONCURRENCY = Number(process.env.BENCH_SSO_CONCURRENCY ?? 8);
const ROUNDS = Number(process.env.BENCH_SSO_ROUNDS ?? 2);
const DEPROVISIONS = Number(process.env.BENCH_SSO_DEPROVISIONS ?? 50);
const REPLICAS = 3;
const PROBE_MS = 10;
const TARGET_P99_MS = 1000;

type Res = { status: number; headers: http.IncomingHttpHeaders; body: string };

const agents = { http: new http.Agent({ keepAlive: true, maxSockets: 64 }), https: new Map<string, https.Agent>() };

function send(url: string, opts: { method?: string; headers?: Record<string, string>; body?: string; ca?: string } = {}): Promise<Res> {
  const u = new URL(url);
  const secure = u.protocol === "https:";
  let agent: http.Agent = agents.http;
  if (secure) {
    agent = agents.https.get(u.host) ?? new https.Agent({ keepAlive: true, maxSockets: 64, ca: opts.ca });
    agents.https.set(u.host, agent as https.Agent);
  }
  return new Promise((resolve, reject) => {
    const req = (secure ? https : http).request(
      u,
      { method: opts.method ?? "GET", agent, headers: { ...(opts.body ? { "content-length": String(Buffer.byteLength(opts.body)) } : {}), ...opts.headers } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") }));
      },
    );
    req.on("error", reject);
    req.end(opts.body);
  });
}

/** A cookie jar that ignores paths: enough for one browser's walk through the IdP. */
class Jar {
  private readonly cookies = new Map<string, string>();
  take(res: Res): Res {
    for (const line of (res.headers["set-cookie"] as string[] | undefined) ?? []) {
      const [pair] = line.split(";");
      const [name, ...value] = pair!.split("=");
      if (/max-age=0|expires=thu, 01 jan 1970/i.test(line)) this.cookies.delete(name!.trim());
      else this.cookies.set(name!.trim(), value.join("="));
    }
    return res;
  }
  get(name: string): string | undefined {
    return this.cookies.get(name);
  }
  header(): string {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join("; ");
  }
}

const locationOf = (res: Res, from: string): string => {
  const to = res.headers.location;
  if (res.status < 300 || res.status >= 400 || !to) throw new Error(`expected a redirect from ${from.split("?")[0]}, got ${res.status} ${res.body.slice(0, 200)}`);
  return new URL(to, from).href;
};

/** The person's part at the IdP: the authorization request, the sign-in form, the resumed authorization; returns the callback URL with the code. */
async function atIdp(authorizationUrl: string, username: string): Promise<string> {
  const jar = new Jar();
  const interaction = locationOf(jar.take(await send(authorizationUrl)), authorizationUrl);
  const resume = locationOf(
    jar.take(
      await send(interaction, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded", cookie: jar.header() },
        body: new URLSearchParams({ username, mfa: "1" }).toString(),
      }),
    ),
    interaction,
  );
  return locationOf(jar.take(await send(resume, { headers: { cookie: jar.header() } })), resume);
}

/** One sign-in through the appliance, checked as the browser would see it: the console, and a session cookie. */
async function applianceSignIn(base: string, providerId: string, ca: string): Promise<void> {
  const jar = new Jar();
  const startUrl = `${base}/api/v1/sso/oidc/${providerId}/start`;
  const authorization = locationOf(jar.take(await send(startUrl, { ca })), startUrl);
  const callback = await atIdp(authorization, "mgrey");
  const done = jar.take(await send(callback, { ca, headers: { cookie: jar.header() } }));
  if (done.status !== 303 || done.headers.location !== "/#/" || !jar.get("__Host-wardkeep_session"))
    throw new Error(`sign-in through the appliance failed: ${done.status} ${String(done.headers.location)}`);
}

const BARE_REDIRECT = "https://bare-rp.invalid/callback";

async function bareSignIn(config: oidc.Configuration): Promise<void> {
  const verifier = oidc.randomPKCECodeVerifier();
  const state = oidc.randomState();
  const nonce = oidc.randomNonce();
  const url = oidc.buildAuthorizationUrl(config, {
    redirect_uri: BARE_REDIRECT,
    scope: "openid profile email groups",
    state,
    nonce,
    code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
    code_challenge_method: "S256",
  });
  const callback = await atIdp(url.href, "mgrey");
  const tokens = await oidc.authorizationCodeGrant(config, new URL(callback), { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce, idTokenExpected: true });
  await oidc.fetchUserInfo(config, tokens.access_token, tokens.claims()!.sub);
}

async function rate(n: number, concurrency: number, once: () => Promise<void>): Promise<number> {
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) {
        next++;
        await once();
      }
    }),
  );
  return n / ((performance.now() - started) / 1000);
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

const median = (values: number[]) => percentile(values, 50);

type Started = { embedded?: EmbeddedPostgres; operator?: Appliance; daemons: DaemonProcess[] };

/** Starts PostgreSQL, the operator's appliance and the replicas, registering each in `started` as it comes up (so a failure stops what started). */
async function setUp(dir: string, started: Started) {
  const pgDir = path.join(dir, "pg");
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  const embedded = await startEmbeddedPostgres({ dataDir: pgDir, port, passwordFile: path.join(dir, "su-password") });
  started.embedded = embedded;
  const { ownerUrl, appUrl } = await createBenchDatabase(embedded, "wk_sso");
  const env = {
    WARDKEEP_DATA_DIR: path.join(dir, "data"),
    WARDKEEP_DATABASE_URL: ownerUrl,
    WARDKEEP_DATABASE_APP_URL: appUrl,
    WARDKEEP_PORT: "0",
    WARDKEEP_SERVER_REDIRECT_PORT: "0",
    WARDKEEP_SERVER_HOST: "127.0.0.1",
    WARDKEEP_LOG_LEVEL: "warn",
    WARDKEEP_BACKUP_SCHEDULER_ENABLED: "false",
    // Every sign-in comes from this one address: the per-address limit is for attackers.
    WARDKEEP_AUTH_IP_MAX_ATTEMPTS: "10000",
  };
  // The operator's in-process appliance sets things up through the service layer; the replicas under test are processes.
  const operator = await startAppliance(loadConfig({ env }), { log: silentLogger(), announce: () => undefined });
  started.operator = operator;
  const daemons = Array.from({ length: REPLICAS }, () => spawnDaemon({ ...env, WARDKEEP_LOG_LEVEL: "info" }));
  started.daemons = daemons;
  const ports = await Promise.all(daemons.map((d) => d.port()));
  const caPem = fs.readFileSync(path.join(dir, "data", "tls", "ca.crt"), "utf8");
  return { operator, caPem, replicas: ports.map((p) => `https://localhost:${p}`) };
}

async function measureSignIns(operator: Appliance, replica: string, caPem: string, tenantId: string, idp: TestIdp): Promise<BenchRow[]> {
  const host = hostOperatorIn(tenantId);
  const created = await createProvider(
    operator.ctx,
    host,
    {
      kind: "oidc",
      name: "Bench IdP",
      config: { issuer: idp.issuer, clientId: idp.clientId, scopes: ["openid", "profile", "email", "groups"] },
      secrets: { clientSecret: idp.clientSecret },
    },
    SYSTEM_META,
    replica,
  );
  idp.allowRedirect(created.redirectUri!);
  idp.allowRedirect(BARE_REDIRECT);
  await saveRules(operator.ctx, host, [{ source: "group", match: "equals", value: "wardkeep-practitioners", role: "practitioner" }], SYSTEM_META);
  await updateProvider(operator.ctx, host, created.id, { enabled: true }, SYSTEM_META, replica);
  const config = await oidc.discovery(new URL(idp.issuer), idp.clientId, idp.clientSecret, undefined, { execute: [oidc.allowInsecureRequests] });
  // One of each first: warm caches (discovery, keys, connections), and a failure shows before any timing.
  await applianceSignIn(replica, created.id, caPem);
  await bareSignIn(config);
  const appliance: number[] = [];
  const bare: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    bare.push(await rate(SIGNINS, SIGNIN_CONCURRENCY, () => bareSignIn(config)));
    appliance.push(await rate(SIGNINS, SIGNIN_CONCURRENCY, () => applianceSignIn(replica, created.id, caPem)));
    process.stderr.write(`  round ${round + 1}: appliance ${appliance.at(-1)!.toFixed(1)}/s, bare RP ${bare.at(-1)!.toFixed(1)}/s\n`);
  }
  const a = median(appliance);
  const b = median(bare);
  return [{ name: `OIDC sign-ins/s through one replica (${SIGNIN_CONCURRENCY} at a time)`, value: a, unit: "sign-ins/s", baseline: b, ratio: a / b }];
}

/** `app`: the operator's appliance as the test helpers take it, with the first replica's address (people sign up there). */
async function measureDeprovisions(app: TestAppliance, replicas: string[], caPem: string, tenantId: string): Promise<BenchRow[]> {
  const operator = app;
  const admin = await signIn(app, { role: "admin", tenantId });
  const adminActor = { userId: admin.user.id, role: "admin" as const, tenantId, via: "session" as const, mfaVerifiedAt: new Date() };
  const { token: scimToken } = await createScimToken(operator.ctx, adminActor, { name: "Bench Entra ID", defaultRole: "front_desk" }, SYSTEM_META);
  const scim = (base: string, userId: string, operations: unknown[]) =>
    send(`${base}/scim/v2/Users/${userId}`, {
      method: "PATCH",
      ca: caPem,
      headers: { authorization: `Bearer ${scimToken}`, "content-type": "application/scim+json" },
      body: JSON.stringify({ schemas: ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], Operations: operations }),
    });

  // The people first (sign-up is argon2 work that must not fall in the measured windows).
  const people: { userId: string; cookie: string; token: string }[] = [];
  for (let i = 0; i < DEPROVISIONS; i += 5) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(5, DEPROVISIONS - i) }, async () => {
        const person = await signIn(app, { role: "admin", tenantId });
        const actor = { userId: person.user.id, role: "admin" as const, tenantId, via: "session" as const, mfaVerifiedAt: new Date() };
        const { token } = await createApiToken(operator.ctx, actor, { name: "Lab interface", role: "front_desk", scopes: ["*"], expiresInDays: 1 }, SYSTEM_META);
        return { userId: person.user.id, cookie: person.cookie, token };
      }),
    );
    people.push(...batch);
  }
  process.stderr.write(`  ${people.length} people with a session and an API token\n`);

  type Probe = { replica: string; headers: Record<string, string>; what: "session" | "token" };
  const probe = async (p: Probe) => (await send(`${p.replica}/api/v1/auth/session`, { ca: caPem, headers: p.headers })).status;
  const untilAllRevoked: number[] = [];
  const sessionMs: number[] = [];
  const tokenMs: number[] = [];
  const plainPatch: number[] = [];
  const deprovisionPatch: number[] = [];
  const probeRounds: number[] = [];
  /** Requests still accepted after the PATCH had answered. */
  const late = { session: 0, token: 0 };
  for (const [i, person] of people.entries()) {
    const at = replicas[i % replicas.length]!;
    const probes = replicas.flatMap((replica): Probe[] => [
      { replica, headers: { cookie: person.cookie }, what: "session" },
      { replica, headers: { authorization: `Bearer ${person.token}` }, what: "token" },
    ]);
    // Both credentials in use on every replica (each replica now caches the token).
    for (const p of probes) if ((await probe(p)) !== 200) throw new Error(`the ${p.what} does not work on ${p.replica} before the deprovision`);
    let t = performance.now();
    const renamed = await scim(at, person.userId, [{ op: "replace", path: "displayName", value: `Renamed ${i}` }]);
    plainPatch.push(performance.now() - t);
    if (renamed.status !== 200) throw new Error(`SCIM PATCH displayName: ${renamed.status} ${renamed.body.slice(0, 200)}`);

    t = performance.now();
    const disabled = await scim(at, person.userId, [{ op: "replace", path: "active", value: false }]);
    if (disabled.status !== 200) throw new Error(`SCIM PATCH active=false: ${disabled.status} ${disabled.body.slice(0, 200)}`);
    deprovisionPatch.push(performance.now() - t);
    const refusedAt = new Map<Probe, number>();
    let rounds = 0;
    while (refusedAt.size < probes.length) {
      rounds++;
      if (performance.now() - t > 10_000)
        throw new Error(`still accepted 10 s after the deprovision: ${probes.filter((p) => !refusedAt.has(p)).map((p) => `${p.what}@${p.replica}`)}`);
      await Promise.all(
        probes
          .filter((p) => !refusedAt.has(p))
          .map(async (p) => {
            if ((await probe(p)) === 401) refusedAt.set(p, performance.now() - t);
            else late[p.what]++;
          }),
      );
      if (refusedAt.size < probes.length) await new Promise((r) => setTimeout(r, PROBE_MS));
    }
    untilAllRevoked.push(Math.max(...refusedAt.values()));
    probeRounds.push(rounds);
    for (const [p, ms] of refusedAt) (p.what === "session" ? sessionMs : tokenMs).push(ms);
  }
  const p99 = percentile(untilAllRevoked, 99);
  const basePatch99 = percentile(plainPatch, 99);
  return [
    {
      name: `deprovision → session and token refused on all ${replicas.length} replicas, p50 (${people.length} people)`,
      value: median(untilAllRevoked),
      unit: "ms",
      baseline: median(plainPatch),
      ratio: median(untilAllRevoked) / median(plainPatch),
    },
    {
      name: `deprovision → session and token refused on all ${replicas.length} replicas, p99`,
      value: p99,
      unit: "ms",
      baseline: basePatch99,
      ratio: p99 / basePatch99,
      target: `< ${TARGET_P99_MS} ms`,
      met: p99 < TARGET_P99_MS,
    },
    {
      name: "  the SCIM PATCH active=false itself (until its answer), p99",
      value: percentile(deprovisionPatch, 99),
      unit: "ms",
      baseline: basePatch99,
      ratio: percentile(deprovisionPatch, 99) / basePatch99,
    },
    { name: "  probe rounds after the PATCH answered until all were refused, max", value: Math.max(...probeRounds), unit: "rounds" },
    { name: "  requests still accepted after the PATCH answered: sessions", value: late.session, unit: "requests" },
    { name: "  requests still accepted after the PATCH answered: API tokens", value: late.token, unit: "requests" },
    { name: "  of which: session refused on a replica, p99", value: percentile(sessionMs, 99), unit: "ms" },
    { name: "  of which: API token refused on a replica, p99", value: percentile(tokenMs, 99), unit: "ms" },
  ];
}

export async function run(): Promise<BenchRow[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "wardkeep-bench-sso-"));
  fs.chmodSync(dir, 0o711);
  const started: Started = { daemons: [] };
  let idp: TestIdp | undefined;
  try {
    const env = await setUp(dir, started);
    const operator = env.operator;
    const app = { ctx: operator.ctx, baseUrl: env.replicas[0]!, caPem: env.caPem } as unknown as TestAppliance;
    const tenant = await createTenant(app, "Bench General");
    idp = await startTestIdp({
      accounts: [{ sub: "u-grey", preferred_username: "mgrey", email: "meredith.grey@bench.example", name: "Meredith Grey", groups: ["wardkeep-practitioners"] }],
      applianceCa: env.caPem,
    });
    const rows = await measureSignIns(operator, env.replicas[0]!, env.caPem, tenant.id, idp);
    rows.push(...(await measureDeprovisions(app, env.replicas, env.caPem, tenant.id)));
    return rows;
  } finally {
    agents.http.destroy();
    for (const a of agents.https.values()) a.destroy();
    await idp?.close();
    await Promise.all(started.daemons.map((d) => d.stop("SIGTERM").catch(() => undefined)));
    await started.operator?.stop().catch(() => undefined);
    await started.embedded?.stop().catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
