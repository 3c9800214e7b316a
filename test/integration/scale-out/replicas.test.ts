import fs from "node:fs";
import pg from "pg";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { destroyDueKeys, scheduleShred } from "../../../daemon/keys/shred.js";
import { createTenant, signIn, type SignedIn } from "../../helpers/actors.js";
import { startTestAppliance, tempDir, testEnv, type TestAppliance } from "../../helpers/appliance.js";
import { spawnDaemon, type DaemonProcess } from "../../helpers/daemon-process.js";
import { daemonBalancerConfig, freePort, startHaproxy, type RunningHaproxy } from "../../helpers/haproxy.js";
import { createTestDatabase, type TestDatabase } from "../../helpers/postgres.js";

/**
 * Three `wardkeep start` processes behind HAProxy (deploy/haproxy.cfg: TCP passthrough, /readyz
 * checks) on one PostgreSQL behave as one appliance: a session begun on one replica works on all
 * and a sign-out on one ends it on all, failures counted on different replicas lock the account,
 * a revoked API token and a destroyed data key stop working on every replica at once although
 * each caches them far longer (LISTEN/NOTIFY invalidation, migration 0070), and the audit chain
 * written through all three verifies intact.
 *
 * A fourth, in-process appliance on the same database and data directory stands outside the
 * balancer: the test helpers use its service layer to create the first super-admin, tenants and
 * invites, as an operator would with the CLI.
 */

// Far longer than any wait below: a stale cache entry would still be alive when we look.
const CACHE_ENV = { WARDKEEP_AUTH_API_TOKEN_CACHE_SECONDS: "30", WARDKEEP_KEYS_DATA_KEY_CACHE_SECONDS: "600", WARDKEEP_AUDIT_CHAIN_INTERVAL_MS: "100" };

let db: TestDatabase;
let dataDir: string;
let setup: TestAppliance;
let lb: TestAppliance;
let haproxy: RunningHaproxy | undefined;
const daemons: DaemonProcess[] = [];
const replicaUrls: string[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
  dataDir = tempDir("wardkeep-scale-");
  // Creates the schema, key file and TLS material the replicas share (as the compose volume does).
  setup = await startTestAppliance({ db, dataDir, env: CACHE_ENV });
  for (let i = 0; i < 3; i++) daemons.push(spawnDaemon(testEnv(db, dataDir, CACHE_ENV)));
  const ports = await Promise.all(daemons.map((d) => d.port()));
  await Promise.all(daemons.map((d) => d.waitFor(/"message":"listening on/)));
  for (const p of ports) replicaUrls.push(`https://localhost:${p}`);
  const lbPort = await freePort();
  haproxy = await startHaproxy(
    daemonBalancerConfig(
      lbPort,
      ports.map((port, i) => ({ name: `replica${i + 1}`, host: "127.0.0.1", port })),
    ),
    lbPort,
    dataDir,
  );
  // The test helpers sign people in over HTTPS through the balancer.
  lb = { ...setup, baseUrl: `https://localhost:${lbPort}` };
}, 120_000);

afterAll(async () => {
  await haproxy?.stop();
  await Promise.all(daemons.map((d) => d.stop("SIGTERM").catch(() => undefined)));
  await setup?.close();
  fs.rmSync(dataDir, { recursive: true, force: true });
});

const at = (url: string) => ({
  get: (path: string) => request(url).get(path).ca(setup.caPem),
  post: (path: string) => request(url).post(path).ca(setup.caPem),
  delete: (path: string) => request(url).delete(path).ca(setup.caPem),
});

/** Which replica wrote the access-log line of a request id (-1: none of them). */
function servedBy(requestId: string): number {
  return daemons.findIndex((d) => d.logs().some((l) => l.message === "request" && l.requestId === requestId));
}

async function eventually<T>(probe: () => Promise<T>, accept: (v: T) => boolean, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last = await probe();
  while (!accept(last) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    last = await probe();
  }
  return last;
}

describe("three replicas behind HAProxy on one PostgreSQL", () => {
  it("spreads requests over all three replicas", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) {
      const res = await at(lb.baseUrl).get("/readyz");
      expect(res.status).toBe(200);
      ids.push(String(res.headers["x-request-id"]));
    }
    // Access lines are written on `finish`; give the last ones a moment to reach stdout.
    const served = await eventually(
      async () => ids.map(servedBy),
      (s) => !s.includes(-1),
      5_000,
    );
    expect(served).not.toContain(-1);
    expect(new Set(served)).toEqual(new Set([0, 1, 2]));
  });

  it("honours a session on every replica and ends it on all of them when it signs out on one", async () => {
    const tenant = await createTenant(lb, "Scale-out General");
    const nurse = await signIn(lb, { role: "front_desk", tenantId: tenant.id, mfa: false });
    for (const url of replicaUrls) {
      const res = await at(url).get("/api/v1/auth/session").set(nurse.headers);
      expect(res.status).toBe(200);
      expect(res.body.user.id).toBe(nurse.user.id);
    }
    expect((await at(replicaUrls[0]!).post("/api/v1/auth/logout").set(nurse.headers)).status).toBe(204);
    for (const url of replicaUrls.slice(1)) {
      const res = await at(url).get("/api/v1/auth/session").set(nurse.headers);
      expect(res.status).toBe(401);
      expect(res.headers["content-type"]).toMatch(/application\/problem\+json/);
    }
  });

  it("locks an account after failures counted on different replicas, on every replica", async () => {
    const tenant = await createTenant(lb, "Scale-out Lockout");
    const user = await signIn(lb, { role: "front_desk", tenantId: tenant.id, mfa: false });
    const max = setup.config.auth.lockoutMaxFailures;
    for (let i = 0; i < max; i++) {
      const res = await at(replicaUrls[i % 3]!)
        .post("/api/v1/auth/login")
        .send({ email: user.user.email, password: `wrong password ${i} abc` });
      expect(res.status, `attempt ${i + 1}`).toBe(i < max - 1 ? 401 : 429);
    }
    // The right password, on each replica: refused while locked, wherever the failures landed.
    for (const url of replicaUrls) {
      const res = await at(url).post("/api/v1/auth/login").send({ email: user.user.email, password: user.password });
      expect(res.status).toBe(429);
      expect(res.body.type).toBe("urn:wardkeep:problem:too-many-requests");
      expect(Number(res.headers["retry-after"])).toBeGreaterThan(0);
    }
  });

  it("stops a revoked API token on every replica at once, though each caches it for 30 s", async () => {
    const tenant = await createTenant(lb, "Scale-out Tokens");
    const admin = await signIn(lb, { role: "admin", tenantId: tenant.id });
    await admin.stepUp();
    const created = await admin.agent.post("/api/v1/api-tokens").send({ name: "EHR interface", role: "front_desk", scopes: ["*"] });
    expect(created.status).toBe(201);
    const bearer = { Authorization: `Bearer ${created.body.token as string}` };
    // Every replica resolves the token and keeps the answer.
    for (const url of replicaUrls) expect((await at(url).get("/api/v1/patients").set(bearer)).status).toBe(200);

    const revoked = await at(replicaUrls[0]!)
      .delete(`/api/v1/api-tokens/${created.body.apiToken.id as string}`)
      .set(admin.headers);
    expect(revoked.status).toBe(200);
    expect(revoked.body.revokedAt).not.toBeNull();
    const started = Date.now();
    for (const url of replicaUrls) {
      const res = await eventually(
        () => at(url).get("/api/v1/patients").set(bearer),
        (r) => r.status === 401,
        3_000,
      );
      expect(res.status).toBe(401);
    }
    expect(Date.now() - started).toBeLessThan(3_000);
  });

  it("stops serving a crypto-shredded patient on every replica at once, though each caches the key for 10 min", async () => {
    const tenant = await createTenant(lb, "Scale-out Shredding");
    const desk = await signIn(lb, { role: "front_desk", tenantId: tenant.id, mfa: false });
    const created = await desk.agent.post("/api/v1/patients").send({ name: "Shred Canary" });
    expect(created.status).toBe(201);
    const id = created.body.id as string;
    // Each replica reads the patient, so each holds the patient's data key in its cache.
    for (const url of replicaUrls) {
      const res = await at(url).get(`/api/v1/patients/${id}`).set(desk.headers);
      expect(res.status).toBe(200);
      expect(res.body.name).toBe("Shred Canary");
    }
    // The grace period over, the keys are destroyed (here by the setup replica's job).
    await scheduleShred(setup.ctx, { kind: "patient", tenantId: tenant.id, patientId: id }, { graceDays: 0 });
    expect((await destroyDueKeys(setup.ctx)).destroyed.map((d) => d.subject)).toContain(`patient/${id}`);
    for (const url of replicaUrls) {
      const res = await eventually(
        () => at(url).get(`/api/v1/patients/${id}`).set(desk.headers),
        (r) => r.status === 410,
        3_000,
      );
      expect(res.status).toBe(410);
      expect(JSON.stringify(res.body)).not.toContain("Shred Canary");
    }
  });

  it("keeps one intact audit chain while all three replicas write at once", async () => {
    const tenant = await createTenant(lb, "Scale-out Chain");
    const desks: SignedIn[] = [];
    for (let i = 0; i < 3; i++) desks.push(await signIn(lb, { role: "front_desk", tenantId: tenant.id, mfa: false }));
    // 3 replicas x 20 registrations, 5 in flight per replica, each straight to its replica.
    const ids = (
      await Promise.all(
        replicaUrls.map(async (url, r) => {
          const mine: string[] = [];
          for (let batch = 0; batch < 4; batch++) {
            const results = await Promise.all(
              Array.from({ length: 5 }, (_, j) =>
                at(url)
                  .post("/api/v1/patients")
                  .set(desks[r]!.headers)
                  .send({ name: `Chain Patient ${r}-${batch}-${j}` }),
              ),
            );
            for (const res of results) {
              expect(res.status).toBe(201);
              mine.push(res.body.id as string);
            }
          }
          return mine;
        }),
      )
    ).flat();
    expect(new Set(ids).size).toBe(60);

    // Every registration is there, read back through the balancer, with its audit event.
    const auditor = await signIn(lb, { role: "auditor", tenantId: tenant.id });
    const su = new pg.Client({ connectionString: db.superuserUrl });
    await su.connect();
    try {
      await eventually(
        async () => (await su.query<{ n: number }>("SELECT count(*)::int AS n FROM audit_intake")).rows[0]!.n,
        (n) => n === 0,
        20_000,
      );
      const creates = await su.query<{ resource_id: string }>(
        `SELECT canonical::jsonb->>'resource_id' AS resource_id FROM audit_events
          WHERE canonical::jsonb->>'action' = 'patient.create' AND canonical::jsonb->>'outcome' = 'success' AND canonical::jsonb->>'tenant_id' = $1`,
        [tenant.id],
      );
      expect(new Set(creates.rows.map((r) => r.resource_id))).toEqual(new Set(ids));
    } finally {
      await su.end();
    }
    const verify = await auditor.agent.get("/api/v1/audit/verify");
    expect(verify.status).toBe(200);
    expect(verify.body.intact).toBe(true);
    expect(verify.body.break ?? null).toBeNull();
    expect(Number(verify.body.verified)).toBeGreaterThanOrEqual(60);
  }, 60_000);
});
