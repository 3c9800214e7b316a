import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rootSuperAdmin, signIn } from "../../helpers/actors.js";
import { startTestAppliance, testEnv, type TestAppliance } from "../../helpers/appliance.js";
import { runCli, type CliResult } from "../../helpers/daemon-process.js";
import { auditEvents } from "../auth/identity-helpers.js";

/**
 * `wardkeep tenant|token|user ...` against a running appliance's database: the same services as the console,
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

describe("wardkeep token", () => {
  it(
    "creates a tenant's API token that works as a bearer, lists it, and revokes it at once",
    async () => {
      const created = json(
        await runCli(
          ["--json", "token", "create", "--tenant", "harbor-dialysis", "--name", "Lab feed", "--role", "front_desk", "--scope", "patient:read", "--expires-in-days", "30"],
          env,
        ),
      );
      expect(created.apiToken).toMatchObject({ name: "Lab feed", role: "front_desk", scopes: ["patient:read"], revokedAt: null });
      expect(created.token.startsWith(created.apiToken.prefix)).toBe(true);
      const bearer = () => request(app.baseUrl).get("/api/v1/auth/session").ca(app.caPem).set("Authorization", `Bearer ${created.token}`);
      expect((await bearer()).body).toMatchObject({ via: "api-token", scopes: ["patient:read"], user: { role: "front_desk" } });

      const [listed, badScope, adminRole] = await Promise.all([
        runCli(["token", "list", "--tenant", "harbor-dialysis"], env),
        runCli(["token", "create", "--tenant", "harbor-dialysis", "--name", "x", "--role", "front_desk", "--scope", "everything:read"], env),
        runCli(["token", "create", "--tenant", "harbor-dialysis", "--name", "x", "--role", "admin", "--scope", "*"], env),
      ]);
      const listedLine = listed.stdout.split("\n").find((l) => l.startsWith(created.apiToken.id));
      expect(listedLine?.split(/\s+/)).toEqual([
        created.apiToken.id,
        "active",
        `${created.apiToken.prefix}…`,
        "front_desk",
        "expires",
        expect.stringMatching(/^\d{4}-\d{2}-\d{2}$/),
        "Lab",
        "feed",
        "[patient:read]",
      ]);
      expect(badScope.code).toBe(1);
      expect(badScope.stderr).toBe("wardkeep: --scope: a scope is `*` or `<resource>:read|write` with a resource from the policy table\n");
      expect(adminRole.code).toBe(1);
      expect(adminRole.stderr).toBe('wardkeep: --role: Invalid option: expected one of "practitioner"|"front_desk"|"auditor"\n');

      const revoked = await runCli(["token", "revoke", created.apiToken.id, "--tenant", "harbor-dialysis"], env);
      expect(revoked.stdout.trim()).toBe('API token "Lab feed" revoked; its service account is deactivated');
      expect((await bearer()).status).toBe(401);
    },
    SLOW,
  );
});

describe("wardkeep user", () => {
  it(
    "invites into a tenant by slug, and deactivates and reactivates the account by email",
    async () => {
      const invited = json(await runCli(["--json", "user", "invite", "--email", "Nurse.Ola@harbor.example", "--role", "practitioner", "--tenant", "harbor-dialysis"], env));
      expect(invited.invite).toMatchObject({ email: "nurse.ola@harbor.example", role: "practitioner", status: "pending" });
      expect(invited.link).toBe(`https://wardkeep.hospital.example:8443/#/invite/${invited.token}`);
      const nurse = { email: "nurse.ola@harbor.example", password: "cobalt-dune-amber-5150" };
      await request(app.baseUrl).post("/api/v1/invites/accept").ca(app.caPem).send({ token: invited.token, password: nurse.password }).expect(201);
      const nurseLogin = () => request(app.baseUrl).post("/api/v1/auth/login").ca(app.caPem).send(nurse);

      const [deactivated, unknown, badRole] = await Promise.all([
        runCli(["user", "deactivate", "nurse.ola@harbor.example"], env),
        runCli(["user", "deactivate", "nobody@harbor.example"], env),
        runCli(["user", "invite", "--email", "x@harbor.example", "--role", "janitor", "--tenant", "harbor-dialysis"], env),
      ]);
      expect(deactivated.stdout.trim()).toBe("nurse.ola@harbor.example is deactivated and signed out everywhere");
      expect((await nurseLogin()).status).toBe(401);
      expect(unknown.code).toBe(1);
      expect(unknown.stderr).toBe("wardkeep: no account with the email or id nobody@harbor.example (wardkeep user list [--tenant T] shows them)\n");
      expect(badRole.code).toBe(1);
      expect(badRole.stderr).toMatch(/^wardkeep: --role: Invalid option: expected one of /);

      const [reactivated, listed] = await Promise.all([
        runCli(["user", "reactivate", "nurse.ola@harbor.example", "--tenant", "harbor-dialysis"], env),
        runCli(["--json", "user", "list", "--tenant", "harbor-dialysis"], env),
      ]);
      expect(reactivated.stdout.trim()).toBe("nurse.ola@harbor.example is active again");
      expect((await nurseLogin()).status).toBe(200);
      const emails = (json(listed).users as { email: string | null; role: string }[]).map((u) => `${u.email ?? "service"}:${u.role}`);
      expect(emails).toEqual(expect.arrayContaining(["lead@harbor.example:owner", "nurse.ola@harbor.example:practitioner"]));
    },
    SLOW,
  );
});

describe("wardkeep session", () => {
  it(
    "lists a tenant's live sessions and signs one account out, then everyone, with the reason in the audit trail",
    async () => {
      const owner = await request(app.baseUrl).post("/api/v1/auth/login").ca(app.caPem).set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0 Safari/537.36").send(OWNER);
      expect(owner.status).toBe(200);
      const nurse = { email: "nurse.ola@harbor.example", password: "cobalt-dune-amber-5150" };
      const nurseLogin = await request(app.baseUrl).post("/api/v1/auth/login").ca(app.caPem).send(nurse);
      expect(nurseLogin.status).toBe(200);
      const cookieOf = (r: request.Response) => String(r.headers["set-cookie"]![0]).split(";")[0]!;
      const sessionOf = (r: request.Response) => request(app.baseUrl).get("/api/v1/auth/session").ca(app.caPem).set("Cookie", cookieOf(r));

      const [listed, human, mine] = await Promise.all([
        runCli(["--json", "session", "list", "--tenant", "harbor-dialysis"], env),
        runCli(["session", "list", "--tenant", "harbor-dialysis"], env),
        runCli(["--json", "session", "list", "--user", "nurse.ola@harbor.example"], env),
      ]);
      const sessions = json(listed).sessions as { userEmail: string; device: string; sourceIp: string }[];
      expect(sessions.map((s) => `${s.userEmail} ${s.device}`).sort()).toEqual(
        expect.arrayContaining(["lead@harbor.example Chrome on Linux", "nurse.ola@harbor.example Unknown client"]),
      );
      expect(human.stdout).toMatch(/^lead@harbor\.example\s+Chrome on Linux\s+\S+\s+last seen \S+\s+signed in \S+\s+[0-9a-f-]{36}$/m);
      expect((json(mine).sessions as { userEmail: string }[]).every((s) => s.userEmail === "nurse.ola@harbor.example")).toBe(true);

      // The refused commands end nothing; the one for the nurse, run beside them, ends only the nurse's.
      const [neither, noReason, blankReason, unknown, one] = await Promise.all([
        runCli(["session", "revoke", "--tenant", "harbor-dialysis", "--reason", "x"], env),
        runCli(["session", "revoke", "--all", "--tenant", "harbor-dialysis"], env),
        runCli(["session", "revoke", "--all", "--tenant", "harbor-dialysis", "--reason", "  "], env),
        runCli(["session", "revoke", "--user", "nobody@harbor.example", "--reason", "x"], env),
        runCli(["session", "revoke", "--user", "nurse.ola@harbor.example", "--reason", "lost badge INC-77"], env),
      ]);
      expect([neither.code, neither.stderr]).toEqual([2, "wardkeep: give either --user or --all\n"]);
      expect(noReason.code).toBe(2);
      expect(noReason.stderr).toMatch(/required option '--reason <text>' not specified/);
      expect([blankReason.code, blankReason.stderr]).toEqual([1, "wardkeep: --reason: Too small: expected string to have >=1 characters\n"]);
      expect([unknown.code, unknown.stderr]).toEqual([1, "wardkeep: no account with the email or id nobody@harbor.example (wardkeep user list [--tenant T] shows them)\n"]);
      expect(one.stdout.trim()).toMatch(/^[1-9]\d* sessions? of nurse\.ola@harbor\.example ended$/);
      expect((await sessionOf(nurseLogin)).status).toBe(401);
      expect((await sessionOf(owner)).status).toBe(200);

      const all = json(await runCli(["--json", "session", "revoke", "--all", "--tenant", "harbor-dialysis", "--reason", "suspected phishing INC-78"], env));
      expect(all.revoked).toBeGreaterThanOrEqual(1);
      expect((await sessionOf(owner)).status).toBe(401);
      const everyone = (await auditEvents(app, { action: "auth.session.revoke_everyone" })).at(-1);
      expect(everyone).toMatchObject({ actor_role: "host_operator", actor_user_id: null, reason: `${all.revoked} session(s); suspected phishing INC-78` });
      const user = (await auditEvents(app, { action: "auth.session.revoke_all" })).at(-1);
      expect(user?.reason).toMatch(/^\d+ session\(s\); lost badge INC-77$/);
    },
    SLOW,
  );
});
