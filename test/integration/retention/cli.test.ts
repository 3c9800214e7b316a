import { createPublicKey, verify } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTenant, signIn, type SignedIn, type TenantRef } from "../../helpers/actors.js";
import { startTestAppliance, testEnv, type TestAppliance } from "../../helpers/appliance.js";
import { runCli } from "../../helpers/daemon-process.js";
import { auditEvents } from "../auth/identity-helpers.js";
import { asSuperuser } from "../records/helpers.js";

/**
 * `wardkeep retention rules|preview|holds|run` against a running appliance's database, as the
 * host operator: what it prints is what the console's API answers, and `run` purges as the
 * retention-purge job (its row on the Jobs page) with a certificate that verifies.
 */
let app: TestAppliance;
let env: Record<string, string>;
let tenant: TenantRef;
let owner: SignedIn;
let root: SignedIn;
let expiredInvite = "";
const SLOW = 150_000;

beforeAll(async () => {
  app = await startTestAppliance({ env: { WARDKEEP_BACKUP_SCHEDULER_ENABLED: "false", WARDKEEP_RETENTION_BATCH_SIZE: "1" } });
  env = testEnv(app.db, app.dataDir, { WARDKEEP_RETENTION_BATCH_SIZE: "1" });
  tenant = await createTenant(app, "CLI Retention");
  owner = await signIn(app, { role: "owner", tenantId: tenant.id });
  root = await signIn(app, { role: "super_admin" });
  // Past their rules (30 days after expiry): two invites nobody accepted and a colleague's session, expired 40 days ago.
  for (const who of ["locum.a", "locum.b"]) {
    const res = await owner.agent.post("/api/v1/invites").send({ email: `${who}@hospital.example`, role: "auditor" });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    expiredInvite = res.body.id ?? res.body.invite?.id;
  }
  await asSuperuser(app, "UPDATE invites SET created_at = now() - interval '50 days', expires_at = now() - interval '40 days' WHERE tenant_id = $1", [tenant.id]);
  const colleague = await signIn(app, { role: "auditor", tenantId: tenant.id });
  await asSuperuser(
    app,
    "UPDATE sessions SET created_at = now() - interval '41 days', last_seen_at = now() - interval '41 days', expires_at = now() - interval '40 days' WHERE user_id = $1",
    [colleague.user.id],
  );
});
afterAll(async () => {
  await app?.close();
});

const json = (r: { stdout: string }) => JSON.parse(r.stdout);

describe("wardkeep retention", () => {
  it(
    "prints the rules and the next run's counts as the API gives them, and refuses bad options in one line",
    async () => {
      // Each CLI start costs seconds on a loaded machine: independent commands run side by side.
      const [rules, preview, dry, noPeriod] = await Promise.all([
        runCli(["retention", "rules", "--tenant", tenant.slug, "--json"], env),
        runCli(["retention", "preview", "--tenant", tenant.slug, "--json"], env),
        runCli(["retention", "preview", "--tenant", tenant.id, "--class", "session", "--period-days", "60", "--json"], env),
        runCli(["retention", "preview", "--tenant", "no-such-clinic", "--class", "note"], env),
      ]);
      expect(rules.code, rules.stderr).toBe(0);
      expect(json(rules).rules).toEqual((await owner.agent.get("/api/v1/retention/rules")).body.rules);
      expect(json(rules).rules.find((r: { recordClass: string }) => r.recordClass === "invite")).toMatchObject({ periodDays: 30, trigger: "expiry", source: "default" });
      expect(preview.code, preview.stderr).toBe(0);
      const counts = Object.fromEntries(json(preview).preview.classes.map((c: { recordClass: string; wouldPurge: number }) => [c.recordClass, c.wouldPurge]));
      expect(counts).toMatchObject({ invite: 2, session: 1, note: 0 });
      // The same counts the console's API gives (cutoffs differ by the milliseconds between the two).
      const withoutCutoff = (p: { classes: { cutoff: string }[]; total: number }) => ({ ...p, classes: p.classes.map(({ cutoff: _, ...c }) => c) });
      expect(withoutCutoff(json(preview).preview)).toEqual(withoutCutoff((await owner.agent.get("/api/v1/retention/preview")).body));
      // Dry run: with sessions kept 60 days after expiry, the 40-day-old one stays.
      expect(json(dry).preview.classes.find((c: { recordClass: string }) => c.recordClass === "session").wouldPurge).toBe(0);
      expect(json(dry).preview.total).toBe(2);
      expect([noPeriod.code, noPeriod.stderr]).toEqual([1, "wardkeep: --class and --period-days go together: the period proposed for that class\n"]);
    },
    SLOW,
  );

  it(
    "lists holds, and purges as the retention-purge job: the counts match the certificate and the audit events, held classes stay",
    async () => {
      const hold = await owner.agent.post("/api/v1/retention/holds").send({ recordClass: "session", reason: "Access review 2026-Q4" });
      expect(hold.status, JSON.stringify(hold.body)).toBe(201);
      const [holds, preview] = await Promise.all([runCli(["retention", "holds", "--tenant", tenant.slug], env), runCli(["retention", "preview", "--tenant", tenant.slug], env)]);
      expect(holds.code, holds.stderr).toBe(0);
      expect(holds.stdout).toBe(`${hold.body.id}  session      in force       Access review 2026-Q4\n`);
      expect(preview.stdout).toMatch(/^invite\s+older than \d{4}-\d\d-\d\d\s+would purge\s+2\s+held back\s+0$/m);
      expect(preview.stdout).toMatch(/^session\s+older than \d{4}-\d\d-\d\d\s+would purge\s+0\s+held back\s+1$/m);
      expect(preview.stdout.trim().split("\n").pop()).toBe("total: 2 record(s) on the next run");

      const run = await runCli(["retention", "run", "--tenant", tenant.slug, "--json"], env);
      expect(run.code, run.stderr).toBe(0);
      const out = json(run);
      expect(out.tenants).toHaveLength(1);
      const [t] = out.tenants;
      expect(t).toMatchObject({ tenantId: tenant.id, destroyed: 2, run: { status: "finished", certified: true } });
      // Batch size 1: two batches of one invite each; the held session is not touched.
      expect(t.run.counts.invite).toMatchObject({ count: 2, batches: 2 });
      expect(t.run.counts.session).toBeUndefined();
      expect((await asSuperuser(app, "SELECT count(*)::int AS n FROM invites WHERE tenant_id = $1 AND email LIKE 'locum.%'", [tenant.id]))[0]).toEqual({ n: 0 });
      expect((await owner.agent.get("/api/v1/invites")).body.map((i: { id: string }) => i.id)).not.toContain(expiredInvite);

      // The Jobs page shows it as a manual run of retention-purge with its counts.
      const jobRuns = (await root.agent.get("/api/v1/jobs/retention-purge/runs")).body.runs;
      expect(jobRuns[0]).toMatchObject({ id: out.jobRunId, trigger: "manual", outcome: "succeeded", counts: { tenants: 1, destroyed: 2 } });

      // The certificate verifies and its counts equal the sum of the run's batch audit events.
      const cert = (await owner.agent.get(`/api/v1/retention/runs/${t.run.id}/certificate`)).body;
      const key = createPublicKey({ key: Buffer.from(cert.publicKeySpki, "base64"), format: "der", type: "spki" });
      expect(verify(null, Buffer.from(cert.certificate, "utf8"), key, Buffer.from(cert.signature, "base64"))).toBe(true);
      const events = (await auditEvents(app, { action: "retention.purge.batch" })).filter((e) => e.resource_id === t.run.id);
      const audited = events.map((e) => JSON.parse(e.reason!) as { class: string; count: number });
      expect(audited.map((e) => [e.class, e.count])).toEqual([
        ["invite", 1],
        ["invite", 1],
      ]);
      expect(audited.reduce((s, e) => s + e.count, 0)).toBe(JSON.parse(cert.certificate).destroyed.invite.count);
      expect(JSON.parse(cert.certificate).destroyed.session.count).toBe(0);

      // Human output of a second run: nothing left past its rule but the held session.
      const again = await runCli(["retention", "run", "--tenant", tenant.slug], env);
      expect(again.code, again.stderr).toBe(0);
      expect(again.stdout).toMatch(
        new RegExp(`^${tenant.id}: destroyed 0 \\(nothing past its rule\\); run [0-9a-f-]{36}, certificate signed\\njob run \\d+: 0 record\\(s\\) destroyed\\n$`),
      );
    },
    SLOW,
  );
});
