import { createPrivateKey, createSign, generateKeyPairSync, type KeyObject } from "node:crypto";
import http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import Provider, { type Configuration } from "oidc-provider";
import type { Page } from "playwright-core";

/**
 * A real OpenID Connect provider (`oidc-provider`) on loopback, started by a test: discovery,
 * authorization code + PKCE, signed ID tokens, userinfo, RP-initiated logout. Its sign-in page is
 * a small form of our own (username, "used a second factor", assurance level) so a test chooses
 * who signs in and which `amr` and `acr` the IdP asserts. `tamper` rewrites the next ID token the token endpoint sends,
 * re-signed with the IdP's own key (or unsigned for `alg: none`): the attacks a test plays.
 */
export type IdpAccount = { sub: string; preferred_username: string; email?: string; name?: string; groups?: string[] };
export type Tamper = "alg-none" | "wrong-nonce" | "expired" | "wrong-audience" | "stale-auth-time" | null;

export type TestIdp = {
  issuer: string;
  clientId: string;
  clientSecret: string;
  accounts: Map<string, IdpAccount>;
  /** Rewrites the next ID token sent by the token endpoint. */
  tamper: Tamper;
  /** Lets the appliance's redirect URIs in (known once providers exist); a callback also names the back-channel logout URI beside it. */
  allowRedirect(uri: string): void;
  /** A logout token signed with the IdP's key (or `otherKey`), with the claims a real one has unless overridden (undefined removes one). */
  logoutToken(overrides?: Record<string, unknown>, opts?: { otherKey?: boolean; typ?: string }): string;
  close(): Promise<void>;
};

const b64 = (v: object | Buffer) => (Buffer.isBuffer(v) ? v : Buffer.from(JSON.stringify(v))).toString("base64url");

function sign(header: Record<string, unknown>, payload: Record<string, unknown>, key: KeyObject | null): string {
  const input = `${b64(header)}.${b64(payload)}`;
  if (!key) return `${input}.`;
  const signer = createSign("RSA-SHA256");
  signer.update(input);
  return `${input}.${signer.sign(key).toString("base64url")}`;
}

function rewrite(idToken: string, mode: Exclude<Tamper, null>, key: KeyObject): string {
  const [h, p] = idToken.split(".") as [string, string];
  const header = JSON.parse(Buffer.from(h, "base64url").toString()) as Record<string, unknown>;
  const payload = JSON.parse(Buffer.from(p, "base64url").toString()) as Record<string, unknown>;
  const now = Math.floor(Date.now() / 1000);
  switch (mode) {
    case "alg-none":
      return sign({ alg: "none", typ: "JWT" }, payload, null);
    case "wrong-nonce":
      return sign(header, { ...payload, nonce: "not-the-nonce-the-appliance-sent" }, key);
    case "expired":
      return sign(header, { ...payload, iat: now - 7200, exp: now - 3600 }, key);
    case "wrong-audience":
      return sign(header, { ...payload, aud: "some-other-client" }, key);
    case "stale-auth-time":
      // An IdP that ignored prompt=login / max_age=0 and answered with its sign-in of an hour ago.
      return sign(header, { ...payload, auth_time: now - 3600 }, key);
  }
}

async function formBody(req: http.IncomingMessage): Promise<URLSearchParams> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return new URLSearchParams(Buffer.concat(chunks).toString());
}

/**
 * oidc-provider's outgoing requests (back-channel logout) go through this: the appliance's
 * internal CA is trusted, and the provider's SSRF guard (which refuses loopback) is not used, since
 * the appliance under test is on loopback. oidc-provider reads only the status of the answer.
 */
function fetchTrusting(ca: string | undefined) {
  return (url: string | URL, options: { method?: string; headers?: Headers; body?: URLSearchParams }) =>
    new Promise<{ status: number }>((resolve, reject) => {
      const body = options.body?.toString() ?? "";
      const req = https.request(
        new URL(url),
        { method: options.method ?? "GET", ca, headers: { ...Object.fromEntries(options.headers?.entries() ?? []), "content-length": Buffer.byteLength(body) }, timeout: 5000 },
        (res) => {
          res.resume();
          res.on("end", () => resolve({ status: res.statusCode ?? 0 }));
        },
      );
      req.on("error", reject);
      req.end(body);
    });
}

export async function startTestIdp(opts: { clientId?: string; accounts?: IdpAccount[]; applianceCa?: string } = {}): Promise<TestIdp> {
  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: "jwk" }), kid: "test-key", use: "sig", alg: "RS256" };
  const signingKey = createPrivateKey({ key: privateKey.export({ format: "jwk" }), format: "jwk" });
  const server = http.createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const clientId = opts.clientId ?? "wardkeep";
  const clientSecret = `secret-${Math.random().toString(36).slice(2)}-${Date.now()}`;
  const redirectUris: string[] = [];
  const postLogoutUris: string[] = [];
  const accounts = new Map((opts.accounts ?? []).map((a) => [a.preferred_username, a]));
  const bySub = () => new Map([...accounts.values()].map((a) => [a.sub, a]));

  const configuration: Configuration = {
    clients: [
      {
        client_id: clientId,
        client_secret: clientSecret,
        redirect_uris: redirectUris,
        post_logout_redirect_uris: postLogoutUris,
        grant_types: ["authorization_code"],
        response_types: ["code"],
        token_endpoint_auth_method: "client_secret_basic",
        // ID tokens carry sid, and logout tokens too (Back-Channel Logout 1.0 §2.2).
        backchannel_logout_session_required: true,
      },
    ],
    jwks: { keys: [jwk] },
    cookies: { keys: ["test-cookie-key-0123456789"] },
    // amr, acr and auth_time in every ID token (as Entra ID and Okta send them), not only when asked for by name.
    claims: { amr: null, acr: null, auth_time: null, openid: ["sub", "amr", "acr", "auth_time"], email: ["email"], profile: ["name", "preferred_username"], groups: ["groups"] },
    scopes: ["openid", "email", "profile", "groups"],
    features: { devInteractions: { enabled: false }, rpInitiatedLogout: { enabled: true }, backchannelLogout: { enabled: true } },
    fetch: fetchTrusting(opts.applianceCa),
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    async findAccount(_ctx, sub) {
      const a = bySub().get(sub);
      if (!a) return undefined;
      return { accountId: sub, claims: () => ({ ...a }) };
    },
    // No consent screen: the hospital's IdP has pre-approved the appliance.
    async loadExistingGrant(ctx) {
      const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client!.clientId, accountId: ctx.oidc.session!.accountId! });
      grant.addOIDCScope("openid email profile groups");
      await grant.save();
      return grant;
    },
  };
  // Built at the first request: oidc-provider reads its static clients once, and the appliance's
  // redirect URIs (which name provider ids) are known only after the test created its providers.
  let provider: Provider | undefined;
  // RFC 9207 `iss` in the authorization response is on by default in oidc-provider; it is what the appliance checks against mix-up.
  const idp: TestIdp = {
    issuer,
    clientId,
    clientSecret,
    accounts,
    tamper: null,
    allowRedirect(uri: string) {
      if (uri.endsWith("/callback")) {
        redirectUris.push(uri);
        (configuration.clients![0] as Record<string, unknown>).backchannel_logout_uri = uri.replace(/\/callback$/, "/backchannel-logout");
      } else postLogoutUris.push(uri);
    },
    logoutToken(overrides = {}, o = {}) {
      const now = Math.floor(Date.now() / 1000);
      const claims: Record<string, unknown> = {
        iss: issuer,
        aud: clientId,
        iat: now,
        exp: now + 120,
        jti: `jti-${Math.random().toString(36).slice(2)}`,
        sub: "u-grey",
        events: { "http://schemas.openid.net/event/backchannel-logout": {} },
        ...overrides,
      };
      for (const [k, v] of Object.entries(claims)) if (v === undefined) delete claims[k];
      const key = o.otherKey ? generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey : signingKey;
      return sign({ alg: "RS256", typ: o.typ ?? "logout+jwt", kid: "test-key" }, claims, key);
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
  const build = () => {
    const p = new Provider(issuer, configuration);
    p.use(async (ctx, next) => {
      await next();
      if (ctx.path === "/token" && idp.tamper && ctx.body && typeof ctx.body === "object" && "id_token" in ctx.body) {
        const body = ctx.body as { id_token: string };
        ctx.body = { ...body, id_token: rewrite(body.id_token, idp.tamper, signingKey) };
        idp.tamper = null;
      }
    });
    return p;
  };

  server.on("request", (req, res) => {
    provider ??= build();
    const url = new URL(req.url ?? "/", issuer);
    if (!url.pathname.startsWith("/interaction/")) return provider.callback()(req, res);
    void (async () => {
      try {
        const details = await provider!.interactionDetails(req, res);
        if (req.method === "GET") {
          res.setHeader("content-type", "text/html; charset=utf-8");
          res.end(`<!doctype html><html><head><title>Test IdP</title></head><body><h1>Hospital IdP sign-in</h1>
<form method="post" action="/interaction/${details.uid}"><label>Username <input name="username" autofocus></label>
<label><input type="checkbox" name="mfa" value="1"> Used a second factor</label>
<label>Assurance level <input name="acr"></label><button type="submit">Sign in at the IdP</button></form></body></html>`);
          return;
        }
        const form = await formBody(req);
        const account = accounts.get(form.get("username") ?? "");
        if (!account) {
          await provider!.interactionFinished(req, res, { error: "access_denied", error_description: "unknown user" }, { mergeWithLastSubmission: false });
          return;
        }
        // As Entra ID says it: amr ["pwd", "mfa"] when a second factor was used.
        const amr = form.get("mfa") ? ["pwd", "mfa"] : ["pwd"];
        const acr = form.get("acr") || undefined;
        await provider!.interactionFinished(req, res, { login: { accountId: account.sub, amr, ...(acr ? { acr } : {}) } }, { mergeWithLastSubmission: false });
      } catch (err) {
        res.statusCode = 500;
        res.end(String(err));
      }
    })();
  });
  return idp;
}

/** Signs in at the test IdP's own form in the browser (as the hospital's IdP would show it). */
export async function signInAtIdp(page: Page, username: string, opts: { mfa?: boolean } = {}): Promise<void> {
  await page
    .getByRole("heading", { name: "Hospital IdP sign-in" })
    .waitFor({ timeout: 10_000 })
    .catch(async (err: Error) => {
      throw new Error(`not at the IdP's form: ${page.url()} ${(await page.content()).slice(0, 600)}`, { cause: err });
    });
  await page.getByLabel("Username").fill(username);
  if (opts.mfa) await page.getByLabel("Used a second factor").check();
  await page.getByRole("button", { name: "Sign in at the IdP" }).click();
}
