import https from "node:https";
import net from "node:net";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEVICE_COOKIE, newDeviceToken, rememberDevice } from "../../../daemon/auth/known-devices.js";
import { argon2ParamsFrom, hashPassword } from "../../../daemon/auth/passwords.js";
import { sha256 } from "../../../daemon/auth/tokens.js";
import { inScope } from "../../../daemon/db/sql.js";
import { createTenant } from "../../helpers/actors.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { TestClock } from "../../helpers/clock.js";
import { daemonBalancerConfig, freePort, startHaproxy, type RunningHaproxy } from "../../helpers/haproxy.js";

/**
 * A hospital ward behind one address (a NAT, or HAProxy in TCP passthrough) signs in while an
 * attacker at the same address sprays passwords. Two replicas on one database; the ward reaches
 * them through HAProxy with `send-proxy-v2` (the daemons read the PROXY v2 header from the trusted
 * balancer) and through a trusted proxy's X-Forwarded-For. The ward's address is 127.0.0.3.
 */
const WARD = "127.0.0.3";
const USERS = 200;
/** Two more accounts whose browsers have never signed in. */
const NEWCOMERS = 2;
const PASSWORD = "correct horse battery staple 42";
const LIMITS = {
  WARDKEEP_SERVER_TRUSTED_PROXIES: "127.0.0.1",
  WARDKEEP_SERVER_PROXY_PROTOCOL: "true",
  WARDKEEP_AUTH_IP_MAX_ATTEMPTS: "10",
  WARDKEEP_AUTH_LOCKOUT_MAX_FAILURES: "3",
};

const clock = new TestClock();
let a: TestAppliance;
let b: TestAppliance;
let haproxy: RunningHaproxy | undefined;
let emails: string[] = [];
const devices: string[] = [];

type Via = { kind: "haproxy" } | { kind: "xff"; forwardedFor: string; from?: string };
type Answer = { status: number; retryAfter: number | null; device: string | undefined; session: string | undefined; body: Record<string, unknown> };

/** One HTTPS request on a fresh connection, from `localAddress`, as a browser with `cookies` would send it. */
function call(port: number, method: string, path: string, opts: { localAddress: string; cookies?: string[]; headers?: Record<string, string>; body?: unknown }): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const payload = opts.body === undefined ? undefined : JSON.stringify(opts.body);
    const req = https.request(
      {
        host: "127.0.0.1",
        port,
        method,
        path,
        ca: a.caPem,
        servername: "localhost",
        localAddress: opts.localAddress,
        agent: false,
        headers: {
          ...(payload ? { "Content-Type": "application/json" } : {}),
          ...(opts.cookies?.length ? { Cookie: opts.cookies.join("; ") } : {}),
          ...opts.headers,
        },
      },
      (res) => {
        let text = "";
        res.on("data", (d: Buffer) => (text += d.toString()));
        res.on("end", () => {
          const set = res.headers["set-cookie"] ?? [];
          const cookie = (name: string) => set.find((c) => c.startsWith(`${name}=`))?.split(";")[0];
          resolve({
            status: res.statusCode ?? 0,
            retryAfter: res.headers["retry-after"] ? Number(res.headers["retry-after"]) : null,
            device: cookie("__Host-wardkeep_device"),
            session: cookie("__Host-wardkeep_session"),
            body: text ? (JSON.parse(text) as Record<string, unknown>) : {},
          });
        });
      },
    );
    req.on("error", reject);
    req.end(payload);
  });
}

/** A sign-in from the ward (or `via.from`), through the balancer or a trusted proxy's X-Forwarded-For to replica b. */
function signIn(email: string, password: string, via: Via, device?: string): Promise<Answer> {
  const body = { email, password };
  const cookies = device ? [device] : [];
  if (via.kind === "haproxy") return call(haproxy!.port, "POST", "/api/v1/auth/login", { localAddress: WARD, cookies, body });
  return call(b.server.port, "POST", "/api/v1/auth/login", { localAddress: via.from ?? "127.0.0.1", cookies, body, headers: { "X-Forwarded-For": via.forwardedFor } });
}

/** The signed-in user's own sessions, as the account page lists them. */
async function ownSessionAddresses(session: string): Promise<string[]> {
  const res = await call(a.server.port, "GET", "/api/v1/sessions", { localAddress: "127.0.0.1", cookies: [session] });
  expect(res.status).toBe(200);
  return (res.body as unknown as { sourceIp: string | null }[]).map((s) => s.sourceIp ?? "none");
}

/** Runs `work` over `items`, `width` at a time. */
async function inParallel<T, R>(items: T[], width: number, work: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    [...Array(width)].map(async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await work(items[i]!, i);
      }
    }),
  );
  return out;
}

const viaFor = (i: number): Via => (i % 2 === 0 ? { kind: "haproxy" } : { kind: "xff", forwardedFor: WARD });

beforeAll(async () => {
  a = await startTestAppliance({ env: LIMITS, clock });
  b = await startTestAppliance({ env: LIMITS, clock, db: a.db, dataDir: a.dataDir });
  const lbPort = await freePort();
  const servers = [a, b].map((r, i) => ({ name: `replica${i + 1}`, host: "127.0.0.1", port: r.server.port }));
  haproxy = await startHaproxy(daemonBalancerConfig(lbPort, servers, "1s", { proxyProtocol: true }), lbPort, a.dataDir);
  // 200 accounts of one tenant sharing one argon2id hash: hashing 200 passwords would only slow the test.
  const tenant = await createTenant(a, "Ward 7");
  const hash = await hashPassword(PASSWORD, argon2ParamsFrom(a.config));
  emails = [...Array(USERS + NEWCOMERS)].map((_, i) => `nurse${i}@ward7.example`);
  // Each nurse's workstation browser signed in yesterday, so it carries a device cookie (the first
  // test shows a sign-in issuing one; 200 more sign-ins here would only slow the test).
  await inScope(a.ctx.db.app, { kind: "appliance" }, async (t) => {
    const ids = await t.rows<{ id: string }>(
      "INSERT INTO users (tenant_id, email, password_hash, role) SELECT $1, e, $3, 'practitioner' FROM unnest($2::text[]) WITH ORDINALITY AS x(e, n) ORDER BY n RETURNING id",
      [tenant.id, emails, hash],
    );
    for (const { id } of ids.slice(0, USERS)) {
      const token = newDeviceToken();
      await rememberDevice(a.ctx, t, sha256(token), { id, tenantId: tenant.id });
      devices.push(`${DEVICE_COOKIE}=${token}`);
    }
  });
  // Wait until the balancer's checks (which carry the PROXY header too) find both replicas up. The
  // checks run every second, not faster: both replicas share this test's busy event loop, and a
  // check that times out would take a replica out under the sign-in load.
  const deadline = Date.now() + 15_000;
  while (!/replica1.*UP|replica2.*UP/s.test(haproxy.output()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  let probe = await call(haproxy.port, "GET", "/readyz", { localAddress: WARD });
  while (probe.status !== 200 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 200));
    probe = await call(haproxy.port, "GET", "/readyz", { localAddress: WARD });
  }
  expect(probe.status).toBe(200);
}, 120_000);

afterAll(async () => {
  await haproxy?.stop();
  await b?.close();
  await a?.close();
});

describe("sign-in limits behind a proxy or NAT", () => {
  const victims = [0, 1];

  it("sees the ward's address through the balancer's PROXY header and a trusted X-Forwarded-For, and remembers each browser", async () => {
    const fresh = await Promise.all([200, 201].map((u, i) => signIn(emails[u]!, PASSWORD, viaFor(i))));
    for (const r of fresh) {
      expect(r.status).toBe(200);
      expect(r.device).toMatch(/^__Host-wardkeep_device=wkd_[A-Za-z0-9_-]{43}$/);
      // What each user sees in their own session list: the ward's address, whichever way they came.
      expect(await ownSessionAddresses(r.session!)).toEqual([WARD]);
    }
    // A remembered browser keeps its cookie (refreshed), a new one gets its own.
    const again = await signIn(emails[200]!, PASSWORD, { kind: "haproxy" }, fresh[0]!.device);
    expect(again.device).toBe(fresh[0]!.device);
    expect(fresh[1]!.device).not.toBe(fresh[0]!.device);
  }, 60_000);

  it("lets every user of the ward in while an attacker at the same address sprays, and refuses the attacker", async () => {
    // The attacker guesses the two victims' passwords (3 tries each), then sprays the rest.
    const targets = [...victims.flatMap((v) => [v, v, v]), ...Array.from({ length: 24 }, (_, i) => 10 + i)];
    const attack = (async () => {
      const answers: Answer[] = [];
      for (const [n, target] of targets.entries()) answers.push(await signIn(emails[target]!, `guess-${n}`, { kind: "haproxy" }));
      return answers;
    })();
    const ward = inParallel(emails.slice(0, USERS), 6, (email, i) => signIn(email, PASSWORD, viaFor(i), devices[i]));
    const [attacker, users] = await Promise.all([attack, ward]);

    // Every user got in, the victims included.
    expect(users.map((r) => r.status)).toEqual(users.map(() => 200));
    // The attacker had at most ipMaxAttempts (10) password checks; every later attempt was refused
    // with Retry-After and without a check.
    const checked = attacker.filter((r) => r.status === 401).length;
    expect(checked).toBeLessThanOrEqual(10);
    expect(attacker.slice(10).map((r) => r.status)).toEqual(attacker.slice(10).map(() => 429));
    for (const r of attacker.filter((x) => x.status === 429)) {
      expect(r.body.type).toBe("urn:wardkeep:problem:too-many-requests");
      expect(r.retryAfter).toBeGreaterThanOrEqual(1);
    }
    // The address's first refusal is ipLockSeconds (60).
    expect(attacker.slice(10).every((r) => r.retryAfter! <= 60)).toBe(true);
    expect(attacker.some((r) => r.device)).toBe(false);
    // Both replicas answered the attacker: the limit is counted in PostgreSQL, not per process.
    const served = [a, b].map((r) => r.logLines.filter((l) => l.includes("/api/v1/auth/login")).length);
    expect(served.every((n) => n > 0)).toBe(true);
  }, 120_000);

  it("keeps the lockout and the address limit for browsers the accounts do not know", async () => {
    // A victim's account is locked to strangers (its owner just signed in above with their browser),
    // from any address.
    const stranger = await signIn(emails[victims[0]!]!, PASSWORD, { kind: "xff", forwardedFor: "127.0.0.7" });
    expect(stranger.status).toBe(429);
    expect(stranger.body.type).toBe("urn:wardkeep:problem:too-many-requests");
    // A browser new to a healthy account is refused at the ward's address while it is refused...
    const newcomer = await signIn(emails[150]!, PASSWORD, { kind: "xff", forwardedFor: WARD });
    expect(newcomer.status).toBe(429);
    // ...but from another address the same account signs in and sees that address.
    const elsewhere = await signIn(emails[150]!, PASSWORD, { kind: "xff", forwardedFor: "127.0.0.5" });
    expect(elsewhere.status).toBe(200);
    expect(await ownSessionAddresses(elsewhere.session!)).toContain("127.0.0.5");
    // A recognised browser's own wrong passwords lock that browser only, not the account.
    const own = devices[3]!;
    const wrong = [];
    for (let i = 0; i < 3; i++) wrong.push((await signIn(emails[3]!, "typo", { kind: "haproxy" }, own)).status);
    expect(wrong).toEqual([401, 401, 429]);
    expect((await signIn(emails[3]!, PASSWORD, { kind: "haproxy" }, own)).status).toBe(429);
    expect((await signIn(emails[3]!, PASSWORD, { kind: "xff", forwardedFor: "127.0.0.6" })).status).toBe(200);
  }, 60_000);

  it("refuses a spraying address longer each time it trips again (adaptive)", async () => {
    clock.advance(61_000);
    const answers: Answer[] = [];
    for (let i = 0; i < 11; i++) answers.push(await signIn(emails[40 + i]!, `again-${i}`, { kind: "haproxy" }));
    // The tenth failure trips the address again: refused, now for twice as long.
    expect(answers.slice(0, 9).map((r) => r.status)).toEqual(Array(9).fill(401));
    expect(answers[9]!.status).toBe(429);
    expect(answers[9]!.retryAfter).toBe(120);
    expect(answers[10]!.status).toBe(429);
  }, 60_000);

  it("believes X-Forwarded-For and PROXY headers only from trusted proxies", async () => {
    // 127.0.0.4 is not a trusted proxy: its X-Forwarded-For is ignored, the session shows 127.0.0.4.
    const spoofed = await signIn(emails[60]!, PASSWORD, { kind: "xff", forwardedFor: "10.1.2.3", from: "127.0.0.4" });
    expect(spoofed.status).toBe(200);
    expect(await ownSessionAddresses(spoofed.session!)).toContain("127.0.0.4");
    expect(await ownSessionAddresses(spoofed.session!)).not.toContain("10.1.2.3");

    // A PROXY header from an untrusted address is not read: the TLS handshake fails on it.
    const header = Buffer.concat([Buffer.from("0d0a0d0a000d0a515549540a2111000c", "hex"), Buffer.from([10, 9, 8, 7, 127, 0, 0, 1, 0x30, 0x39, 0x20, 0xfb])]);
    const handshake = (from: string, preamble: Buffer) =>
      new Promise<string>((resolve) => {
        const tcp = net.connect({ host: "127.0.0.1", port: a.server.port, localAddress: from }, () => {
          tcp.write(preamble);
          const s = tls.connect({ socket: tcp, ca: a.caPem, servername: "localhost" }, () => {
            s.destroy();
            resolve("established");
          });
          s.on("error", () => resolve("failed"));
        });
        tcp.on("error", () => resolve("failed"));
      });
    expect(await handshake("127.0.0.4", header)).toBe("failed");
    // From the trusted proxy the same header is read and the handshake succeeds.
    expect(await handshake("127.0.0.1", header)).toBe("established");
    // A malformed header (version 1 in a v2 frame) from the trusted proxy ends the connection.
    const malformed = Buffer.from(header);
    malformed[12] = 0x11;
    expect(await handshake("127.0.0.1", malformed)).toBe("failed");
  }, 30_000);
});
