/**
 * Signed-in actors for route tests, of any role, built the way real users come to exist: a
 * super-admin (created through the setup service) creates tenants and invites through the
 * service layer; the person accepts the invite over HTTPS, enrols TOTP over HTTPS, and holds a
 * real session cookie. Nothing writes to the database behind the services' back.
 *
 *   import { createTenant, signIn } from "../../helpers/actors.js";
 *   const app = await startTestAppliance();                 // or ({ clock: new TestClock() })
 *   const tenant = await createTenant(app, "St. Mary's");   // { id, name, slug }
 *   const admin = await signIn(app, { role: "admin", tenantId: tenant.id });
 *   await admin.agent.get("/api/v1/users").expect(200);    // cookie + X-CSRF-Token + CA set
 *   await request(app.baseUrl).post("/api/v1/x").ca(app.caPem).set(admin.headers).send({...});
 *   await admin.stepUp();                                   // fresh TOTP before a sensitive action
 *
 * Stable API (other capabilities' tests rely on it):
 * - `createTenant(app, name, opts?)` → `{ id, name, slug }`
 * - `signIn(app, { role, tenantId?, mfa?, email?, password?, displayName? })` → `SignedIn`
 *   Tenant roles without `tenantId` get a fresh tenant. `mfa` defaults to true: the actor has
 *   TOTP enrolled and a fresh second factor (step-up satisfied for `auth.stepUpMaxAgeMinutes`
 *   of the app's clock). Appliance roles (super_admin, support) always enrol (config default).
 * - `signInWithPassword(app, { email, password, totpSecret? })` → `SignedIn` for an existing account.
 * - `rootSuperAdmin(app)` → the first super-admin's `{ id, email, password, actor }`, for service calls.
 * - `totpCode(secret, at)` → the six digits an authenticator shows at `at`.
 */
import { randomBytes } from "node:crypto";
import request from "supertest";
import speakeasy from "speakeasy";
import type { Actor, Role } from "../../daemon/kernel/actor.js";
import { createTenant as createTenantService } from "../../daemon/access/tenants.js";
import { SYSTEM_META } from "../../daemon/kernel/request-meta.js";
import { createInvite } from "../../daemon/auth/invites.js";
import { createFirstSuperAdmin } from "../../daemon/auth/setup.js";
import { SESSION_COOKIE } from "../../daemon/auth/tokens.js";
import type { TestAppliance } from "./appliance.js";

export type TenantRef = { id: string; name: string; slug: string };

type Method = "get" | "post" | "put" | "patch" | "delete";
/** supertest requests pre-set with the appliance's CA, the session cookie and the CSRF header. */
export type ActorAgent = Record<Method, (path: string) => request.Test>;

export type SignedIn = {
  user: { id: string; email: string; role: Role; tenantId: string | null };
  /** Requests as this actor. */
  agent: ActorAgent;
  /** `Cookie` and `X-CSRF-Token` headers, for `request(app.baseUrl)...set(headers)`. */
  headers: Record<string, string>;
  cookie: string;
  sessionToken: string;
  csrfToken: string;
  password: string;
  /** Base32 TOTP secret, or null when the actor has no authenticator. */
  totpSecret: string | null;
  recoveryCodes: string[];
  /** The code the actor's authenticator shows now (by the app's clock). */
  totp(): string;
  /** Proves a fresh second factor (TOTP, or a recovery code when this 30 s step is already used). */
  stepUp(): Promise<void>;
};

const PASSWORD_WORDS = ["amber", "basalt", "cobalt", "dune", "ember", "fjord", "garnet", "harbor", "indigo", "juniper"];

function strongPassword(): string {
  const pick = () => PASSWORD_WORDS[randomBytes(1)[0]! % PASSWORD_WORDS.length]!;
  return `${pick()}-${pick()}-${randomBytes(6).toString("hex")}`;
}

function uniqueEmail(role: string): string {
  return `${role.replace("_", "-")}.${randomBytes(5).toString("hex")}@hospital.example`;
}

export function totpCode(secret: string, at: Date): string {
  return speakeasy.totp({ secret, encoding: "base32", time: Math.floor(at.getTime() / 1000) });
}

function agentFor(app: TestAppliance, headers: Record<string, string>): ActorAgent {
  const make = (method: Method) => (path: string) => request(app.baseUrl)[method](path).ca(app.caPem).set(headers);
  return { get: make("get"), post: make("post"), put: make("put"), patch: make("patch"), delete: make("delete") };
}

function cookieFrom(res: request.Response): string {
  const setCookie = ([] as string[]).concat(res.headers["set-cookie"] ?? []);
  const line = setCookie.find((c) => c.startsWith(`${SESSION_COOKIE}=`) && !c.startsWith(`${SESSION_COOKIE}=;`));
  if (!line) throw new Error(`no session cookie in the response (status ${res.status}: ${JSON.stringify(res.body)})`);
  return line.split(";")[0]!;
}

export type RootSuperAdmin = { id: string; email: string; password: string; actor: Actor };
const roots = new WeakMap<TestAppliance, Promise<RootSuperAdmin>>();

/** The appliance's first super-admin, made once per appliance through the setup service. */
export function rootSuperAdmin(app: TestAppliance): Promise<RootSuperAdmin> {
  let root = roots.get(app);
  if (!root) {
    root = (async () => {
      const email = "root.admin@hospital.example";
      const password = strongPassword();
      const created = await createFirstSuperAdmin(app.ctx, { email, password });
      const actor: Actor = { userId: created.id, role: "super_admin", tenantId: null, via: "session", mfaVerifiedAt: app.ctx.clock.now() };
      return { id: created.id, email, password, actor };
    })();
    roots.set(app, root);
  }
  return root;
}

let tenantCounter = 0;

export async function createTenant(app: TestAppliance, name: string, opts: { slug?: string; mfaRequired?: boolean } = {}): Promise<TenantRef> {
  const root = await rootSuperAdmin(app);
  const slug = opts.slug ?? `t-${(++tenantCounter).toString(36)}-${randomBytes(4).toString("hex")}`;
  // New tenants enforce MFA for everyone by default (the API's default); tests that need it say so
  // with `signIn(..., { mfa: true })` or set the tenant's security policy.
  const tenant = await createTenantService(app.ctx, root.actor, { name, slug, mfaRequired: opts.mfaRequired ?? false }, SYSTEM_META);
  return { id: tenant.id, name: tenant.name, slug: tenant.slug };
}

const APPLIANCE_ROLES: Role[] = ["super_admin", "support"];

/** Completes a session that waits for MFA enrollment or a code; returns what the actor needs later. */
async function finishMfa(
  app: TestAppliance,
  headers: Record<string, string>,
  state: { enroll: boolean; verify: boolean; totpSecret: string | null },
): Promise<{ totpSecret: string | null; recoveryCodes: string[]; lastStep: number | null }> {
  const agent = agentFor(app, headers);
  const step = () => Math.floor(app.ctx.clock.now().getTime() / 30_000);
  if (state.enroll) {
    const enroll = await agent.post("/api/v1/auth/mfa/enroll");
    if (enroll.status !== 200) throw new Error(`MFA enrollment failed: ${enroll.status} ${JSON.stringify(enroll.body)}`);
    const secret = enroll.body.secret as string;
    const activate = await agent.post("/api/v1/auth/mfa/activate").send({ code: totpCode(secret, app.ctx.clock.now()) });
    if (activate.status !== 200) throw new Error(`MFA activation failed: ${activate.status} ${JSON.stringify(activate.body)}`);
    return { totpSecret: secret, recoveryCodes: activate.body.recoveryCodes as string[], lastStep: step() };
  }
  if (state.verify && state.totpSecret) {
    // A code is accepted once per 30 s step, and a test clock may not have moved since the
    // account last used one: then the next step's code (within the drift window) is used.
    let verify = await agent.post("/api/v1/auth/mfa").send({ code: totpCode(state.totpSecret, app.ctx.clock.now()) });
    if (verify.status === 401) verify = await agent.post("/api/v1/auth/mfa").send({ code: totpCode(state.totpSecret, new Date(app.ctx.clock.now().getTime() + 30_000)) });
    if (verify.status !== 200) throw new Error(`MFA verification failed: ${verify.status} ${JSON.stringify(verify.body)}`);
    return { totpSecret: state.totpSecret, recoveryCodes: [], lastStep: step() + 1 };
  }
  return { totpSecret: state.totpSecret, recoveryCodes: [], lastStep: null };
}

function signedIn(
  app: TestAppliance,
  user: SignedIn["user"],
  cookie: string,
  csrfToken: string,
  password: string,
  mfa: { totpSecret: string | null; recoveryCodes: string[]; lastStep: number | null },
): SignedIn {
  const headers = { Cookie: cookie, "X-CSRF-Token": csrfToken };
  const agent = agentFor(app, headers);
  let lastStep = mfa.lastStep;
  const recoveryCodes = [...mfa.recoveryCodes];
  return {
    user,
    agent,
    headers,
    cookie,
    sessionToken: cookie.slice(SESSION_COOKIE.length + 1),
    csrfToken,
    password,
    totpSecret: mfa.totpSecret,
    recoveryCodes: mfa.recoveryCodes,
    totp() {
      if (!mfa.totpSecret) throw new Error("this actor has no authenticator (signIn with mfa: true)");
      return totpCode(mfa.totpSecret, app.ctx.clock.now());
    },
    async stepUp() {
      const secret = mfa.totpSecret;
      if (!secret) throw new Error("this actor has no authenticator (signIn with mfa: true)");
      const now = app.ctx.clock.now();
      const step = Math.floor(now.getTime() / 30_000);
      // A TOTP code is accepted once (RFC 6238 §5.2) and the test clock may stand still: try this
      // step's code, then the next step's (within the drift window), then a recovery code.
      const attempts: [object, number | null][] = [];
      if (lastStep === null || step > lastStep) attempts.push([{ code: totpCode(secret, now) }, step]);
      if (lastStep === null || step + 1 > lastStep) attempts.push([{ code: totpCode(secret, new Date(now.getTime() + 30_000)) }, step + 1]);
      for (const [body, usedStep] of attempts) {
        const res = await agent.post("/api/v1/auth/mfa").send(body);
        if (res.status === 200) {
          lastStep = usedStep;
          return;
        }
      }
      const code = recoveryCodes.shift();
      if (!code) throw new Error("step-up failed: no unused TOTP step or recovery code left; advance the test clock by 30 s");
      const res = await agent.post("/api/v1/auth/mfa").send({ recoveryCode: code });
      if (res.status !== 200) throw new Error(`step-up failed: ${res.status} ${JSON.stringify(res.body)}`);
    },
  };
}

export type SignInOptions = {
  role: Role;
  /** Tenant for tenant roles; omitted, a fresh tenant is created. Ignored for appliance roles. */
  tenantId?: string;
  /** Enrol TOTP and finish with a fresh second factor (default true). */
  mfa?: boolean;
  email?: string;
  password?: string;
  displayName?: string;
};

/** A new account of the given role, invited by the root super-admin, signed in over HTTPS. */
export async function signIn(app: TestAppliance, opts: SignInOptions): Promise<SignedIn> {
  const root = await rootSuperAdmin(app);
  const applianceRole = APPLIANCE_ROLES.includes(opts.role);
  const tenantId = applianceRole ? undefined : (opts.tenantId ?? (await createTenant(app, `Test tenant ${randomBytes(3).toString("hex")}`)).id);
  const email = (opts.email ?? uniqueEmail(opts.role)).toLowerCase();
  const password = opts.password ?? strongPassword();
  const { token } = await createInvite(app.ctx, root.actor, { email, role: opts.role, ...(tenantId ? { tenantId } : {}) }, SYSTEM_META);
  const accepted = await request(app.baseUrl)
    .post("/api/v1/invites/accept")
    .ca(app.caPem)
    .send({ token, password, ...(opts.displayName ? { displayName: opts.displayName } : {}) });
  if (accepted.status !== 201) throw new Error(`invite acceptance failed: ${accepted.status} ${JSON.stringify(accepted.body)}`);
  const cookie = cookieFrom(accepted);
  const csrfToken = accepted.body.csrfToken as string;
  const wantMfa = opts.mfa ?? true;
  const mfa = await finishMfa(
    app,
    { Cookie: cookie, "X-CSRF-Token": csrfToken },
    { enroll: wantMfa || accepted.body.mfaEnrollmentRequired === true, verify: false, totpSecret: null },
  );
  return signedIn(app, { id: accepted.body.userId as string, email, role: opts.role, tenantId: tenantId ?? null }, cookie, csrfToken, password, mfa);
}

/** Signs an existing account in over HTTPS (password, then TOTP when it has an authenticator). */
export async function signInWithPassword(app: TestAppliance, creds: { email: string; password: string; totpSecret?: string | null }): Promise<SignedIn> {
  const res = await request(app.baseUrl).post("/api/v1/auth/login").ca(app.caPem).send({ email: creds.email, password: creds.password });
  if (res.status !== 200) throw new Error(`sign-in failed: ${res.status} ${JSON.stringify(res.body)}`);
  const cookie = cookieFrom(res);
  const csrfToken = res.body.csrfToken as string;
  const headers = { Cookie: cookie, "X-CSRF-Token": csrfToken };
  if (res.body.mfaRequired && !creds.totpSecret) throw new Error("the account has an authenticator: pass totpSecret");
  const mfa = await finishMfa(app, headers, { enroll: res.body.mfaEnrollmentRequired === true, verify: res.body.mfaRequired === true, totpSecret: creds.totpSecret ?? null });
  const session = await agentFor(app, headers).get("/api/v1/auth/session");
  if (session.status !== 200) throw new Error(`session check failed: ${session.status} ${JSON.stringify(session.body)}`);
  const u = session.body.user as { id: string; role: Role; tenantId: string | null };
  return signedIn(app, { id: u.id, email: creds.email, role: u.role, tenantId: u.tenantId }, cookie, csrfToken, creds.password, mfa);
}
