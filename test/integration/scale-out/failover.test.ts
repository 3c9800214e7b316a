import { randomBytes } from "node:crypto";
import fs from "node:fs";
import pg from "pg";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { APP_ROLE, OWNER_ROLE } from "../../../daemon/db/roles.js";
import { createTenant, signIn } from "../../helpers/actors.js";
import { startTestAppliance, tempDir, type TestAppliance } from "../../helpers/appliance.js";
import { freePort, postgresBalancerConfig, startHaproxy, type RunningHaproxy } from "../../helpers/haproxy.js";
import type { TestDatabase } from "../../helpers/postgres.js";
import { startReplicatedPostgres, type ReplicatedPostgres } from "../../helpers/replicated-postgres.js";

/**
 * The database's primary dies under write load: a PostgreSQL 18 primary with a synchronous
 * streaming standby, behind deploy/haproxy-postgres.cfg (routes to whichever server answers
 * pg_is_in_recovery() = false, checked by deploy/pg-is-primary.sh). The primary is SIGKILLed
 * while patients are being registered, the standby is promoted, and the daemon, never restarted,
 * carries on writing through the balancer. Every registration acknowledged with 201 — before the
 * kill and after — is read back with its audit event, and the audit chain verifies intact.
 */

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let cluster: ReplicatedPostgres;
let balancer: RunningHaproxy;
let app: TestAppliance;
const dirs: string[] = [];

beforeAll(async () => {
  const dir = tempDir("wardkeep-failover-");
  dirs.push(dir);
  cluster = await startReplicatedPostgres(dir);
  const ownerPassword = randomBytes(12).toString("hex");
  const appPassword = randomBytes(12).toString("hex");
  const probePassword = randomBytes(12).toString("hex");
  const su = new pg.Client({ connectionString: cluster.primary.superuserUrl });
  await su.connect();
  try {
    await su.query(`CREATE ROLE ${OWNER_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '${ownerPassword}'`);
    await su.query(`CREATE ROLE ${APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '${appPassword}'`);
    // The balancer's check logs in as a role that may do nothing but connect.
    await su.query(`CREATE ROLE wardkeep_probe LOGIN NOSUPERUSER NOINHERIT PASSWORD '${probePassword}'`);
    await su.query(`CREATE DATABASE wardkeep OWNER ${OWNER_ROLE}`);
    await su.query("REVOKE ALL ON DATABASE wardkeep FROM PUBLIC");
    await su.query(`GRANT CONNECT, TEMPORARY ON DATABASE wardkeep TO ${APP_ROLE}`);
  } finally {
    await su.end();
  }
  const port = await freePort();
  balancer = await startHaproxy(
    postgresBalancerConfig(
      port,
      [
        { name: "db-a", host: "127.0.0.1", port: cluster.primary.port },
        { name: "db-b", host: "127.0.0.1", port: cluster.standby.port },
      ],
      dir,
      { user: "wardkeep_probe", password: probePassword },
    ),
    port,
    dir,
  );
  // The balancer has found out which server is the standby before the daemon connects.
  const deadline = Date.now() + 30_000;
  while (!/db-b is DOWN/.test(balancer.output()) && Date.now() < deadline) await sleep(100);
  expect(balancer.output()).toMatch(/db-b is DOWN/);
  const url = (user: string, password: string) => `postgres://${user}:${password}@127.0.0.1:${port}/wardkeep`;
  const db: TestDatabase = {
    name: "wardkeep",
    ownerUrl: url(OWNER_ROLE, ownerPassword),
    appUrl: url(APP_ROLE, appPassword),
    superuserUrl: `postgres://postgres:${encodeURIComponent(cluster.password)}@127.0.0.1:${port}/wardkeep`,
    drop: async () => undefined,
  };
  // A patient heartbeat: on a busy shared machine a slow answer through the balancer is not an
  // outage (the test is about what survives the failover, not how fast the circuit opens).
  // On a saturated machine the balancer's first checks can flap (a psql check slower than its
  // timeout marks the primary down for a second): the daemon then refuses to start, as it should;
  // an operator (or systemd) starts it again.
  for (let attempt = 1; !app; attempt++) {
    try {
      app = await startTestAppliance({ db, env: { WARDKEEP_AUDIT_CHAIN_INTERVAL_MS: "100", WARDKEEP_DATABASE_PROBE_TIMEOUT_MS: "10000" } });
    } catch (err) {
      if (attempt >= 3) throw new Error(`${(err as Error).message}; balancer: ${balancer.output().slice(-1500)}`);
      await sleep(2_000);
    }
  }
}, 120_000);

afterAll(async () => {
  await app?.close();
  await balancer?.stop();
  await cluster?.stop();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

describe("failover to a promoted standby under write load", () => {
  it("keeps every acknowledged write and its audit event, and the daemon writes again without a restart", async () => {
    const tenant = await createTenant(app, "Failover General");
    const desk = await signIn(app, { role: "front_desk", tenantId: tenant.id, mfa: false });
    const acked: { id: string; name: string; at: number }[] = [];
    const statuses = new Map<number, number>();
    let stop = false;
    let n = 0;
    const worker = async () => {
      while (!stop) {
        const name = `Failover Patient ${++n}`;
        try {
          const res = await request(app.baseUrl).post("/api/v1/patients").ca(app.caPem).set(desk.headers).timeout(20_000).send({ name });
          statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
          if (res.status === 201) acked.push({ id: res.body.id as string, name, at: Date.now() });
          else await sleep(100);
        } catch {
          statuses.set(0, (statuses.get(0) ?? 0) + 1);
          await sleep(100);
        }
      }
    };
    const workers = Array.from({ length: 3 }, worker);
    const waitForAcks = async (count: number, timeoutMs: number) => {
      const deadline = Date.now() + timeoutMs;
      while (acked.length < count && Date.now() < deadline) await sleep(50);
      return acked.length >= count;
    };

    expect(await waitForAcks(30, 60_000)).toBe(true);
    cluster.killPrimary();
    const killedAt = Date.now();
    await cluster.promoteStandby();
    const promotedAt = Date.now();
    const beforeKill = acked.filter((a) => a.at < killedAt).length;
    // The daemon follows the balancer to the new primary on its own.
    const recovered = await waitForAcks(acked.length + 20, 90_000);
    stop = true;
    await Promise.all(workers);
    expect(recovered, `writes after the promotion (statuses ${JSON.stringify([...statuses])})`).toBe(true);
    expect(beforeKill).toBeGreaterThanOrEqual(30);
    expect(acked.filter((a) => a.at > promotedAt).length).toBeGreaterThanOrEqual(20);

    // Every acknowledged registration is there, read back through the API as the clinic sees it.
    for (const a of acked) {
      const res = await desk.agent.get(`/api/v1/patients/${a.id}`);
      expect(res.status, a.name).toBe(200);
      expect(res.body.name).toBe(a.name);
    }
    // ...each with its audit event, and the chain intact on the new primary.
    const su = new pg.Client({ connectionString: cluster.standby.superuserUrl.replace(/\/postgres$/, "/wardkeep") });
    await su.connect();
    try {
      const deadline = Date.now() + 20_000;
      while ((await su.query<{ n: number }>("SELECT count(*)::int AS n FROM audit_intake")).rows[0]!.n > 0 && Date.now() < deadline) await sleep(100);
      const audited = await su.query<{ id: string }>(
        `SELECT canonical::jsonb->>'resource_id' AS id FROM audit_events
          WHERE canonical::jsonb->>'action' = 'patient.create' AND canonical::jsonb->>'outcome' = 'success' AND canonical::jsonb->>'tenant_id' = $1`,
        [tenant.id],
      );
      const ids = new Set(audited.rows.map((r) => r.id));
      expect(acked.filter((a) => !ids.has(a.id)).map((a) => a.name)).toEqual([]);
    } finally {
      await su.end();
    }
    const auditor = await signIn(app, { role: "auditor", tenantId: tenant.id });
    // A 503 with Retry-After is the daemon's honest answer while it still finds its footing
    // after the failover (the database circuit); a client waits and asks again.
    let verify = await auditor.agent.get("/api/v1/audit/verify");
    for (let i = 0; verify.status === 503 && i < 10; i++) {
      await sleep(Number(verify.headers["retry-after"] ?? 1) * 1000);
      verify = await auditor.agent.get("/api/v1/audit/verify");
    }
    expect(verify.status, JSON.stringify(verify.body)).toBe(200);
    expect(verify.body.intact).toBe(true);
  }, 240_000);
});
