import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rootSuperAdmin, signIn } from "../../helpers/actors.js";
import { startTestAppliance, testEnv, type TestAppliance } from "../../helpers/appliance.js";
import { runCli, type CliResult } from "../../helpers/daemon-process.js";
import { auditEvents } from "../auth/identity-helpers.js";

/**
 * `wardkeep tenant ...` against a running appliance's database: the same services as the console,
 * as the host operator. Each CLI start costs seconds on a loaded machine, so independent commands
 * run side by side and the tests share one tenant.
 */
let app: TestAppliance;
let env: Record<string, string>;
const OWNER = { email: "lead@harbor.example", password: "garnet-fjord-basalt-12" };
const SLOW = 150_000;

beforeAll(async () => {
  app = await startTestAppliance();
  env = testEnv(app.db, app.dataDir, { WARDKEEP_SERVER_PUBLIC_HOSTNAME: "wardkeep.hospital.example", WARDKEEP_PORT: "8443" });
  await rootSuperAdmin(app);
});
afterAll(async () => {
  await app?.close();
});

function json(r: CliResult): Record<string, any> /* eslint-disable-line @typescript-eslint/no-explicit-any */ {
  expect(r.stderr).toBe("");
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout);
}

const login = () => request(app.baseUrl).post("/api/v1/auth/login").ca(app.caPem).send(OWNER);

describe("wardkeep tenant", () => {
  it(
    "creates a tenant and prints its owner's invite link, which the owner accepts over HTTPS",
    async () => {
      const human = await runCli(["tenant", "create", "--name", "Harbor Dialysis", "--owner-email", OWNER.email], env);
      expect(human.stderr).toBe("");
      const lines = human.stdout.trim().split("\n");
      expect(lines[0]).toMatch(/^tenant "Harbor Dialysis" created \(slug harbor-dialysis, id [0-9a-f-]{36}\)$/);
      expect(lines[1]).toMatch(/^owner invite for lead@harbor\.example, valid until \S+; send this link \(shown once\):$/);
      const link = /^ {2}https:\/\/wardkeep\.hospital\.example:8443\/#\/invite\/(wki_\S+)$/.exec(lines[2]!);
      expect(link).not.toBeNull();

      const accepted = await request(app.baseUrl).post("/api/v1/invites/accept").ca(app.caPem).send({ token: link![1], password: OWNER.password });
      expect(accepted.status).toBe(201);
      expect(accepted.body.role).toBe("owner");
      // Recorded as the host operator, with no account id, as the other CLI commands are.
      const created = (await auditEvents(app, { action: "tenant.create" })).find((e) => e.tenant_id === accepted.body.tenantId);
      expect(created).toMatchObject({ actor_user_id: null, actor_role: "host_operator" });
    },
    SLOW,
  );

  it(
    "renames, suspends and resumes by slug or id, and the suspended tenant's owner cannot sign in",
    async () => {
      const [renamed, suspended] = await Promise.all([
        runCli(["--json", "tenant", "rename", "harbor-dialysis", "--name", "Harbor Kidney Care"], env),
        runCli(["tenant", "suspend", "harbor-dialysis"], env),
      ]);
      const tenant = json(renamed).tenant as { id: string; slug: string; name: string };
      expect(tenant).toMatchObject({ slug: "harbor-dialysis", name: "Harbor Kidney Care" });
      expect(suspended.stdout.trim()).toBe("tenant harbor-dialysis suspended: its people cannot sign in, their sessions ended and its API tokens are refused");
      expect((await login()).status).toBe(401);

      const [listed, resumed] = await Promise.all([runCli(["tenant", "list"], env), runCli(["tenant", "resume", tenant.id], env)]);
      // The list may be read before or after the resume commits.
      expect(listed.stdout).toMatch(/^harbor-dialysis\s+(suspended|active)\s+[0-9a-f-]{36}\s+Harbor Kidney Care$/m);
      expect(resumed.stdout.trim()).toBe("tenant harbor-dialysis is active again: its people can sign in");
      expect((await login()).status).toBe(200);
    },
    SLOW,
  );

  it(
    "fails in one line, creating nothing, on an unknown tenant, a taken owner email or a bad slug",
    async () => {
      const [unknown, taken, badSlug] = await Promise.all([
        runCli(["tenant", "suspend", "no-such-clinic"], env),
        runCli(["--json", "tenant", "create", "--name", "Duplicate Owner Clinic", "--owner-email", OWNER.email], env),
        runCli(["tenant", "create", "--name", "Bad", "--slug", "Bad Slug"], env),
      ]);
      expect(unknown.code).toBe(1);
      expect(unknown.stderr).toBe("wardkeep: no tenant with the id or slug no-such-clinic (wardkeep tenant list shows them)\n");
      expect(taken.code).toBe(1);
      expect(JSON.parse(taken.stdout)).toEqual({ ok: false, error: "an account with this email address already exists" });
      expect(badSlug.code).toBe(1);
      expect(badSlug.stderr).toBe("wardkeep: --slug: lowercase letters, digits and dashes, 2 to 63 long\n");
      const root = await signIn(app, { role: "super_admin" });
      const names = (await root.agent.get("/api/v1/tenants").expect(200)).body.map((t: { name: string }) => t.name);
      expect(names).toEqual(["Harbor Kidney Care"]);
    },
    SLOW,
  );
});
