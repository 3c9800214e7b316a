import { generateKeyPairSync } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Webhook } from "standardwebhooks";
import { inScope } from "../../../daemon/db/sql.js";
import { DeliveryWorker } from "../../../daemon/webhooks/delivery.js";
import { publishWebhookEventAlone } from "../../../daemon/webhooks/index.js";
import { createTenant, signIn, type SignedIn, type TenantRef } from "../../helpers/actors.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { freePort, until, verifyV1a, WebhookReceiver } from "../../helpers/webhook-receiver.js";
import { createPatient } from "../../helpers/records.js";

/**
 * Outbound webhooks against real HTTP receivers on this host, each request checked with the
 * Standard Webhooks reference verifier. Retries are fast here (base 100 ms, ×4), the schedule's
 * shape is the production one.
 */
let app: TestAppliance;
let root: SignedIn;
let tenant: TenantRef;
let admin: SignedIn;
const receivers: WebhookReceiver[] = [];

const PATIENT = "3f0c1d9e-8a51-4a52-9a0f-0b8f3b2b7c11";

beforeAll(async () => {
  app = await startTestAppliance({
    env: {
      WARDKEEP_WEBHOOKS_ALLOW_PLAIN_HTTP: "true",
      WARDKEEP_WEBHOOKS_POLL_INTERVAL_MS: "50",
      WARDKEEP_WEBHOOKS_RETRY_BASE_MS: "100",
      WARDKEEP_WEBHOOKS_MAX_ATTEMPTS: "3",
      WARDKEEP_WEBHOOKS_TIMEOUT_MS: "10000",
      WARDKEEP_WEBHOOKS_PER_ENDPOINT_CONCURRENCY: "3",
    },
  });
  root = await signIn(app, { role: "super_admin" });
  tenant = await createTenant(app, "Webhook General");
  admin = await signIn(app, { role: "admin", tenantId: tenant.id });
});
// One endpoint per test: each publish reaches only the endpoint the test made.
afterEach(async () => {
  for (const e of (await admin.agent.get("/api/v1/webhooks")).body.endpoints as { id: string }[]) expect((await admin.agent.delete(`/api/v1/webhooks/${e.id}`)).status).toBe(204);
});
afterAll(async () => {
  for (const r of receivers) await r.close();
  await app?.close();
});

async function receiver(): Promise<WebhookReceiver> {
  const r = await new WebhookReceiver().listen();
  receivers.push(r);
  return r;
}

async function allow(host: string, port: number, allowPrivate = true): Promise<string> {
  const res = await root.agent.post("/api/v1/webhooks/allowed-hosts").send({ host, port, allowPrivate, note: "test receiver" });
  expect(res.status).toBe(201);
  return res.body.id as string;
}

async function subscribe(url: string, eventTypes = ["consent.revoked"], signatureScheme?: "v1" | "v1a"): Promise<{ id: string; secret: string; publicKey: string | null }> {
  const res = await admin.agent.post("/api/v1/webhooks").send({ url, eventTypes, description: "records system", ...(signatureScheme ? { signatureScheme } : {}) });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return { id: res.body.endpoint.id, secret: res.body.secret, publicKey: res.body.endpoint.publicKey };
}

/** An Ed25519 public key the appliance never saw, in the spec's `whpk_` form. */
function strangerKey(): string {
  const spki = generateKeyPairSync("ed25519").publicKey.export({ format: "der", type: "spki" });
  return "whpk_" + spki.subarray(spki.length - 32).toString("base64");
}

const revoke = (consentId: string) => publishWebhookEventAlone(app.ctx, { tenantId: tenant.id, type: "consent.revoked", data: { patientId: PATIENT, consentId } });

async function deliveryOf(messageId: string) {
  const list = await admin.agent.get("/api/v1/webhooks/deliveries?limit=500");
  const d = (list.body.deliveries as { id: string; messageId: string; status: string }[]).filter((x) => x.messageId === messageId);
  return d;
}

async function finished(messageId: string) {
  const [d] = await until(
    () => deliveryOf(messageId),
    (ds) => ds.length > 0 && ds.every((x) => x.status !== "pending"),
  );
  return (await admin.agent.get(`/api/v1/webhooks/deliveries/${d!.id}`)).body as {
    delivery: { id: string; status: string; deadReason: string | null; attempts: number; lastError: string | null };
    attempts: { attempt: number; startedAt: string; outcome: string; statusCode: number | null; error: string | null; nextAttemptAt: string | null }[];
    payload: { type: string; data: Record<string, unknown> };
  };
}

describe("outbound webhooks", () => {
  it("delivers a signed event that the Standard Webhooks reference verifier accepts, with ids only", async () => {
    const r = await receiver();
    await allow("127.0.0.1", r.port);
    const ep = await subscribe(`http://127.0.0.1:${r.port}/hooks/wardkeep`);
    expect(ep.secret).toMatch(/^whsec_[A-Za-z0-9+/]{32}$/);
    r.secrets = [ep.secret];
    const published = await revoke("c-1");
    expect(published.deliveries).toBe(1);
    await until(
      () => r.received.length,
      (n) => n === 1,
    );
    const got = r.received[0]!;
    expect(got.path).toBe("/hooks/wardkeep");
    expect(got.id).toBe(published.messageId);
    expect(got.verifiedBy).toEqual([0]);
    expect(got.signature).toMatch(/^v1,[A-Za-z0-9+/=]+$/);
    // The reference code parses what it verified: exactly the event, ids only.
    const body = new Webhook(ep.secret).verify(got.body, { "webhook-id": got.id, "webhook-timestamp": got.timestamp, "webhook-signature": got.signature }) as Record<
      string,
      unknown
    >;
    expect(body).toEqual({ type: "consent.revoked", timestamp: expect.any(String), data: { patientId: PATIENT, consentId: "c-1" } });
    const detail = await finished(published.messageId!);
    expect(detail.delivery.status).toBe("delivered");
    expect(detail.attempts.map((a) => [a.attempt, a.outcome, a.statusCode])).toEqual([[1, "delivered", 204]]);
    // Another secret does not verify it.
    expect(() =>
      new Webhook("whsec_" + Buffer.alloc(24, 7).toString("base64")).verify(got.body, {
        "webhook-id": got.id,
        "webhook-timestamp": got.timestamp,
        "webhook-signature": got.signature,
      }),
    ).toThrow();
  });

  it("refuses a destination that is not on the allow-list, and lets only super-admins change the list", async () => {
    const res = await admin.agent.post("/api/v1/webhooks").send({ url: "http://10.1.2.3:8080/hook", eventTypes: ["consent.revoked"] });
    expect(res.status).toBe(400);
    expect(res.headers["content-type"]).toContain("application/problem+json");
    expect(res.body.reason).toBe("not_allow_listed");
    expect(res.body.detail).toBe("10.1.2.3:8080 is not on the webhook allow-list; an appliance operator approves destinations");
    const self = await admin.agent.post("/api/v1/webhooks/allowed-hosts").send({ host: "10.1.2.3", port: 8080 });
    expect(self.status).toBe(403);
    // An allow-listed host on another port is still refused: the entry pins the port.
    const r = await receiver();
    await allow("127.0.0.1", r.port);
    const otherPort = await admin.agent.post("/api/v1/webhooks").send({ url: `http://127.0.0.1:${r.port + 1}/`, eventTypes: ["consent.revoked"] });
    expect(otherPort.status).toBe(400);
    // Credentials in the URL are refused.
    const creds = await admin.agent.post("/api/v1/webhooks").send({ url: `http://user:pw@127.0.0.1:${r.port}/`, eventTypes: ["consent.revoked"] });
    expect(creds.status).toBe(400);
    expect(creds.body.detail).toContain("must not carry credentials");
  });

  it("refuses private and loopback addresses unless the allow-list entry permits them, at delivery time too", async () => {
    const r = await receiver();
    // "localhost" approved without allowPrivate: it resolves to loopback, so nothing is sent.
    await allow("localhost", r.port, false);
    const ep = await subscribe(`http://localhost:${r.port}/private`);
    const published = await revoke("c-private");
    const detail = await finished(published.messageId!);
    expect(detail.delivery.status).toBe("dead");
    expect(detail.delivery.deadReason).toBe("destination_refused");
    expect(detail.attempts).toHaveLength(1);
    expect(detail.attempts[0]!.error).toBe("refused: the host resolves only to addresses the allow-list entry does not permit (private)");
    expect(r.received).toHaveLength(0);
    // An IP literal is checked the same way, when the endpoint is saved.
    await allow("127.0.0.2", r.port, false);
    const literal = await admin.agent.post("/api/v1/webhooks").send({ url: `http://127.0.0.2:${r.port}/`, eventTypes: ["consent.revoked"] });
    expect(literal.status).toBe(400);
    expect(literal.body.reason).toBe("address_not_allowed");
    // Link-local (cloud metadata) is never allowed, whatever the entry says.
    await allow("169.254.169.254", 80, true);
    const metadata = await admin.agent.post("/api/v1/webhooks").send({ url: "http://169.254.169.254/latest/meta-data", eventTypes: ["consent.revoked"] });
    expect(metadata.status).toBe(400);
    expect(metadata.body.detail).toContain("forbidden address");
    expect((await admin.agent.delete(`/api/v1/webhooks/${ep.id}`)).status).toBe(204);
  });

  it("does not follow a redirect", async () => {
    const r = await receiver();
    r.answer = (req) => (req.path === "/moved" ? { status: 302, headers: { location: `http://127.0.0.1:${r.port}/elsewhere` } } : { status: 204 });
    await allow("127.0.0.1", r.port);
    const ep = await subscribe(`http://127.0.0.1:${r.port}/moved`);
    const published = await revoke("c-redirect");
    const detail = await finished(published.messageId!);
    expect(detail.delivery.status).toBe("dead");
    expect(detail.delivery.deadReason).toBe("exhausted");
    expect(detail.attempts.map((a) => [a.outcome, a.statusCode, a.error])).toEqual(Array.from({ length: 3 }, () => ["failed", 302, "redirect (HTTP 302) not followed"]));
    expect(r.received.map((x) => x.path)).toEqual(["/moved", "/moved", "/moved"]);
    await admin.agent.delete(`/api/v1/webhooks/${ep.id}`);
  });

  it("retries an endpoint that is down and delivers once it is up, attempts logged in order with growing waits", async () => {
    const port = await freePort();
    await allow("127.0.0.1", port);
    const ep = await subscribe(`http://127.0.0.1:${port}/late`);
    const published = await revoke("c-down");
    // Two attempts fail (nothing listens), then the receiver comes up on that port.
    const [d] = await until(
      () => deliveryOf(published.messageId!),
      (ds) => (ds[0] as { attempts?: number } | undefined)?.attempts === 2,
    );
    const r = new WebhookReceiver();
    r.secrets = [ep.secret];
    await r.listen(port);
    receivers.push(r);
    const detail = await finished(published.messageId!);
    expect(detail.delivery.id).toBe(d!.id);
    expect(detail.delivery.status).toBe("delivered");
    expect(detail.attempts.map((a) => [a.attempt, a.outcome])).toEqual([
      [1, "failed"],
      [2, "failed"],
      [3, "delivered"],
    ]);
    expect(detail.attempts[0]!.error).toBe("connection failed (ECONNREFUSED)");
    const starts = detail.attempts.map((a) => Date.parse(a.startedAt));
    expect(starts[1]! - starts[0]!).toBeGreaterThanOrEqual(100); // retryBaseMs
    expect(starts[2]! - starts[1]!).toBeGreaterThanOrEqual(400); // ×4
    expect(r.received).toHaveLength(1);
    expect(r.received[0]!.id).toBe(published.messageId);
    expect(r.received[0]!.verifiedBy).toEqual([0]);
  });

  it("waits as long as Retry-After asks", async () => {
    const r = await receiver();
    r.answer = (_req, n) => (n === 1 ? { status: 503, headers: { "retry-after": "2" } } : { status: 200 });
    await allow("127.0.0.1", r.port);
    await subscribe(`http://127.0.0.1:${r.port}/busy`);
    const published = await revoke("c-busy");
    const detail = await finished(published.messageId!);
    expect(detail.delivery.status).toBe("delivered");
    expect(detail.attempts.map((a) => [a.outcome, a.statusCode])).toEqual([
      ["failed", 503],
      ["delivered", 200],
    ]);
    const first = detail.attempts[0]!;
    expect(Date.parse(first.nextAttemptAt!) - Date.parse(first.startedAt)).toBeGreaterThanOrEqual(2000);
    expect(r.received[1]!.at - r.received[0]!.at).toBeGreaterThanOrEqual(1900);
  });

  it("disables the endpoint on 410 Gone and puts the delivery in the dead-letter list", async () => {
    const r = await receiver();
    r.answer = () => ({ status: 410 });
    await allow("127.0.0.1", r.port);
    const ep = await subscribe(`http://127.0.0.1:${r.port}/gone`);
    const published = await revoke("c-gone");
    const detail = await finished(published.messageId!);
    expect(detail.delivery.status).toBe("dead");
    expect(detail.delivery.deadReason).toBe("gone");
    expect(detail.attempts).toHaveLength(1);
    expect(r.received).toHaveLength(1);
    const endpoints = (await admin.agent.get("/api/v1/webhooks")).body.endpoints as { id: string; status: string; disabledReason: string; dead: number }[];
    expect(endpoints.find((e) => e.id === ep.id)).toMatchObject({ status: "disabled", disabledReason: "gone", dead: 1 });
    const dead = (await admin.agent.get("/api/v1/webhooks/deliveries?status=dead")).body.deliveries as { id: string }[];
    expect(dead.map((d) => d.id)).toContain(detail.delivery.id);
    // A disabled endpoint gets nothing new, and a dead letter cannot be replayed to it until it is enabled.
    expect((await revoke("c-gone-2")).deliveries).toBe(0);
    const replay = await admin.agent.post(`/api/v1/webhooks/deliveries/${detail.delivery.id}/replay`);
    expect(replay.status).toBe(409);
    expect(replay.body.detail).toBe("the endpoint is disabled; enable it before replaying");
  });

  it("dead-letters a delivery after the last attempt and replays it with the same webhook-id", async () => {
    const r = await receiver();
    let up = false;
    r.answer = () => ({ status: up ? 200 : 500 });
    await allow("127.0.0.1", r.port);
    const ep = await subscribe(`http://127.0.0.1:${r.port}/flaky`);
    r.secrets = [ep.secret];
    const published = await revoke("c-dead");
    const detail = await finished(published.messageId!);
    expect(detail.delivery).toMatchObject({ status: "dead", deadReason: "exhausted", attempts: 3, lastError: "HTTP 500" });
    expect(detail.attempts.at(-1)!.nextAttemptAt).toBeNull();
    up = true;
    const replay = await admin.agent.post(`/api/v1/webhooks/deliveries/${detail.delivery.id}/replay`);
    expect(replay.status).toBe(201);
    expect(replay.body).toMatchObject({ messageId: published.messageId, replayOf: detail.delivery.id, status: "pending" });
    await until(
      async () => (await admin.agent.get(`/api/v1/webhooks/deliveries/${replay.body.id}`)).body.delivery.status,
      (s) => s === "delivered",
    );
    expect((await admin.agent.get(`/api/v1/webhooks/deliveries/${detail.delivery.id}`)).body.delivery.status).toBe("replayed");
    const last = r.received.at(-1)!;
    expect(last.id).toBe(published.messageId);
    expect(last.verifiedBy).toEqual([0]);
    // Replaying twice is refused: the dead letter was used.
    expect((await admin.agent.post(`/api/v1/webhooks/deliveries/${detail.delivery.id}/replay`)).status).toBe(409);
  });

  it("signs with both secrets during a rotation's overlap, then with the new one only", async () => {
    const r = await receiver();
    await allow("127.0.0.1", r.port);
    const ep = await subscribe(`http://127.0.0.1:${r.port}/rotating`);
    const rotated = await admin.agent.post(`/api/v1/webhooks/${ep.id}/rotate-secret`).send({ overlapHours: 1 });
    expect(rotated.status).toBe(200);
    expect(rotated.body.secret).not.toBe(ep.secret);
    expect(rotated.body.endpoint.secretVersion).toBe(2);
    expect(rotated.body.endpoint.previousSecretExpiresAt).not.toBeNull();
    r.secrets = [ep.secret, rotated.body.secret];
    await revoke("c-overlap");
    await until(
      () => r.received.length,
      (n) => n === 1,
    );
    expect(r.received[0]!.signature.split(" ")).toHaveLength(2);
    expect(r.received[0]!.verifiedBy).toEqual([0, 1]);
    // A rotation without overlap: only the newest secret signs.
    const again = await admin.agent.post(`/api/v1/webhooks/${ep.id}/rotate-secret`).send({ overlapHours: 0 });
    r.secrets = [ep.secret, rotated.body.secret, again.body.secret];
    await revoke("c-after");
    await until(
      () => r.received.length,
      (n) => n === 2,
    );
    expect(r.received[1]!.verifiedBy).toEqual([2]);
    expect(r.received[1]!.signature.split(" ")).toHaveLength(1);
  });

  it("delivers every attempt to an endpoint that answers 503 until it is back, in order of attempt, same webhook-id, each verified", async () => {
    const r = await receiver();
    r.answer = (_req, n) => (n <= 2 ? { status: 503 } : { status: 204 });
    await allow("127.0.0.1", r.port);
    const ep = await subscribe(`http://127.0.0.1:${r.port}/recovering`);
    r.secrets = [ep.secret];
    const published = await revoke("c-recovering");
    const detail = await finished(published.messageId!);
    expect(detail.attempts.map((a) => [a.attempt, a.outcome, a.statusCode])).toEqual([
      [1, "failed", 503],
      [2, "failed", 503],
      [3, "delivered", 204],
    ]);
    // The receiver saw the three attempts, in the order the log gives them, all the same message.
    expect(r.received.map((x) => [x.id, x.verifiedBy])).toEqual([
      [published.messageId, [0]],
      [published.messageId, [0]],
      [published.messageId, [0]],
    ]);
    const arrivals = r.received.map((x) => x.at);
    expect(arrivals[1]! - arrivals[0]!).toBeGreaterThanOrEqual(90); // retryBaseMs, less the clocks' rounding
    expect(arrivals[2]! - arrivals[1]!).toBeGreaterThanOrEqual(390); // ×4
    const starts = detail.attempts.map((a) => Date.parse(a.startedAt));
    expect([...starts].sort((a, b) => a - b)).toEqual(starts);
    // One body, byte for byte, on every attempt.
    expect(new Set(r.received.map((x) => x.body)).size).toBe(1);
  });

  it("holds a slow endpoint to perEndpointConcurrency requests at once over two replicas' workers, the rest in order, without delaying a fast one", async () => {
    // A second replica's delivery worker on the same database: the limit holds over both.
    const replica = new DeliveryWorker(app.ctx).start();
    const slow = await receiver();
    const fast = await receiver();
    await allow("127.0.0.1", slow.port);
    await allow("127.0.0.1", fast.port);
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    // The slow receiver answers nothing until the test lets it.
    slow.answer = () => ({ status: 204, after: released });
    slow.secrets = [(await subscribe(`http://127.0.0.1:${slow.port}/slow`)).secret];
    fast.secrets = [(await subscribe(`http://127.0.0.1:${fast.port}/fast`)).secret];
    const published: string[] = [];
    for (let i = 0; i < 9; i++) published.push((await revoke(`c-limit-${i}`)).messageId!);

    // Every delivery to the fast endpoint arrives, verified, while the slow one holds three requests and gets no fourth.
    await until(
      () => fast.received.length,
      (n) => n === 9,
    );
    expect(fast.received.map((r) => r.id).sort()).toEqual([...published].sort());
    expect(fast.received.every((r) => r.verifiedBy[0] === 0)).toBe(true);
    await new Promise((r) => setTimeout(r, 300));
    expect([slow.received.length, slow.inFlight]).toEqual([3, 3]);
    expect(new Set(slow.received.map((r) => r.id))).toEqual(new Set(published.slice(0, 3)));
    // The claims behind it: one worker alone may hold perEndpointClaimAhead (4) more (7); split between workers, 3 in all.
    const claims = await inScope(app.ctx.db.app, { kind: "appliance" }, (tx) =>
      tx.rows<{ worker: string; n: number }>(
        `SELECT d.claimed_by::text AS worker, count(*)::int AS n FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
          WHERE e.url LIKE $1 AND d.status = 'pending' AND d.claimed_until > now() GROUP BY d.claimed_by`,
        [`%:${slow.port}/slow`],
      ),
    );
    const held = claims.reduce((sum, c) => sum + c.n, 0);
    const { perEndpointConcurrency, perEndpointClaimAhead } = app.ctx.config.webhooks;
    expect([perEndpointConcurrency, perEndpointClaimAhead]).toEqual([3, 4]);
    expect(claims.length === 1 ? held <= 7 && held >= 3 : held === 3, JSON.stringify(claims)).toBe(true);

    release();
    await until(
      () => slow.received.length,
      (n) => n === 9,
    );
    // Never more than three at once; the waiting ones went oldest first (each arrived within three places of its turn).
    expect(slow.peakInFlight).toBe(3);
    expect(slow.received.map((r, i) => Math.abs(published.indexOf(r.id) - i) < 3)).toEqual(published.map(() => true));
    const statuses = await until(
      async () =>
        ((await admin.agent.get("/api/v1/webhooks/deliveries?limit=500")).body.deliveries as { messageId: string; status: string }[])
          .filter((d) => published.includes(d.messageId))
          .map((d) => d.status),
      (s) => s.length === 18 && s.every((x) => x !== "pending"),
    );
    expect(statuses).toEqual(Array(18).fill("delivered"));
    await replica.stop();
  });

  it("signs a v1a endpoint's deliveries with Ed25519, verified with its whpk_ public key alone", async () => {
    const r = await receiver();
    await allow("127.0.0.1", r.port);
    const ep = await subscribe(`http://127.0.0.1:${r.port}/ed25519`, ["consent.revoked"], "v1a");
    // No shared secret exists: the receiver gets only the public key, which stays listed.
    expect(ep.secret).toBeNull();
    expect(ep.publicKey).toMatch(/^whpk_[A-Za-z0-9+/]{43}=$/);
    const listed = ((await admin.agent.get("/api/v1/webhooks")).body.endpoints as { id: string; signatureScheme: string; publicKey: string }[]).find((e) => e.id === ep.id);
    expect(listed).toMatchObject({ signatureScheme: "v1a", publicKey: ep.publicKey });
    r.publicKeys = [strangerKey(), ep.publicKey!];
    const published = await revoke("c-v1a");
    await until(
      () => r.received.length,
      (n) => n === 1,
    );
    const got = r.received[0]!;
    expect(got.id).toBe(published.messageId);
    expect(got.signature).toMatch(/^v1a,[A-Za-z0-9+/]{86}==$/);
    expect(got.verifiedByKey).toEqual([1]);
    expect(JSON.parse(got.body)).toEqual({ type: "consent.revoked", timestamp: expect.any(String), data: { patientId: PATIENT, consentId: "c-v1a" } });
    // The signature covers the id, the timestamp and the body: changing any one fails it.
    const headers = { id: got.id, timestamp: got.timestamp, signature: got.signature };
    expect(verifyV1a(ep.publicKey!, headers, got.body)).toBe(true);
    expect(verifyV1a(ep.publicKey!, headers, got.body.replace("c-v1a", "c-v1b"))).toBe(false);
    expect(verifyV1a(ep.publicKey!, { ...headers, timestamp: String(Number(got.timestamp) + 1) }, got.body)).toBe(false);
    expect(verifyV1a(ep.publicKey!, { ...headers, id: `${got.id}x` }, got.body)).toBe(false);
    // An HMAC verifier with any secret finds nothing it accepts.
    expect(() =>
      new Webhook("whsec_" + Buffer.alloc(24, 3).toString("base64")).verify(got.body, {
        "webhook-id": got.id,
        "webhook-timestamp": got.timestamp,
        "webhook-signature": got.signature,
      }),
    ).toThrow();
    const detail = await finished(published.messageId!);
    expect(detail.delivery.status).toBe("delivered");
  });

  it("rotates from v1 to v1a and between Ed25519 keys with an overlap in which both signatures are sent", async () => {
    const r = await receiver();
    await allow("127.0.0.1", r.port);
    const ep = await subscribe(`http://127.0.0.1:${r.port}/switching`);
    // v1 -> v1a with a one-hour overlap: the header carries the new Ed25519 and the old HMAC signature.
    const toV1a = await admin.agent.post(`/api/v1/webhooks/${ep.id}/rotate-secret`).send({ overlapHours: 1, signatureScheme: "v1a" });
    expect(toV1a.status, JSON.stringify(toV1a.body)).toBe(200);
    expect(toV1a.body.secret).toBeNull();
    expect(toV1a.body.endpoint).toMatchObject({ signatureScheme: "v1a", secretVersion: 2, previousSignatureScheme: "v1", previousPublicKey: null });
    const key2 = toV1a.body.endpoint.publicKey as string;
    expect(key2).toMatch(/^whpk_/);
    r.secrets = [ep.secret];
    r.publicKeys = [key2];
    await revoke("c-switch-1");
    await until(
      () => r.received.length,
      (n) => n === 1,
    );
    expect(r.received[0]!.signature.split(" ").map((x) => x.split(",")[0])).toEqual(["v1a", "v1"]);
    expect([r.received[0]!.verifiedBy, r.received[0]!.verifiedByKey]).toEqual([[0], [0]]);

    // v1a -> a new v1a key, overlapping: two v1a signatures, each verified by its own public key.
    const key3Res = await admin.agent.post(`/api/v1/webhooks/${ep.id}/rotate-secret`).send({ overlapHours: 1 });
    expect(key3Res.body.endpoint).toMatchObject({ signatureScheme: "v1a", secretVersion: 3, previousSignatureScheme: "v1a", previousPublicKey: key2 });
    const key3 = key3Res.body.endpoint.publicKey as string;
    expect(key3).not.toBe(key2);
    r.publicKeys = [key2, key3];
    await revoke("c-switch-2");
    await until(
      () => r.received.length,
      (n) => n === 2,
    );
    expect(r.received[1]!.signature.split(" ").map((x) => x.split(",")[0])).toEqual(["v1a", "v1a"]);
    expect([r.received[1]!.verifiedBy, r.received[1]!.verifiedByKey]).toEqual([[], [0, 1]]);

    // Back to v1 with no overlap: only the new secret signs; the Ed25519 keys verify nothing.
    const back = await admin.agent.post(`/api/v1/webhooks/${ep.id}/rotate-secret`).send({ overlapHours: 0, signatureScheme: "v1" });
    expect(back.body.secret).toMatch(/^whsec_/);
    expect(back.body.endpoint).toMatchObject({ signatureScheme: "v1", publicKey: null, previousSignatureScheme: null, previousPublicKey: null });
    r.secrets = [ep.secret, back.body.secret];
    await revoke("c-switch-3");
    await until(
      () => r.received.length,
      (n) => n === 3,
    );
    expect(r.received[2]!.signature.split(" ")).toHaveLength(1);
    expect([r.received[2]!.verifiedBy, r.received[2]!.verifiedByKey]).toEqual([[1], []]);
    // A scheme the spec does not define is refused.
    const bad = await admin.agent.post(`/api/v1/webhooks/${ep.id}/rotate-secret`).send({ signatureScheme: "v2" });
    expect(bad.status).toBe(400);
    expect(bad.headers["content-type"]).toContain("application/problem+json");
  });

  it("keeps endpoints and deliveries inside their tenant, and out of reach of clinical roles", async () => {
    const r = await receiver();
    await allow("127.0.0.1", r.port);
    await subscribe(`http://127.0.0.1:${r.port}/mine`);
    const other = await signIn(app, { role: "admin", tenantId: (await createTenant(app, "Other Clinic")).id });
    const mine = (await admin.agent.get("/api/v1/webhooks")).body.endpoints as { id: string }[];
    expect(mine.length).toBeGreaterThan(0);
    expect((await other.agent.get("/api/v1/webhooks")).body.endpoints).toEqual([]);
    expect((await other.agent.get("/api/v1/webhooks/deliveries")).body.deliveries).toEqual([]);
    expect((await other.agent.patch(`/api/v1/webhooks/${mine[0]!.id}`).send({ enabled: false })).status).toBe(404);
    const practitioner = await signIn(app, { role: "practitioner", tenantId: tenant.id });
    expect((await practitioner.agent.get("/api/v1/webhooks")).status).toBe(403);
    // The appliance's own endpoints are the super-admin's, apart from every tenant's.
    expect((await root.agent.get("/api/v1/webhooks")).body.endpoints).toEqual([]);
  });

  it("tells the tenant's endpoint when break-glass is used and when a user is deprovisioned, with ids and never the stated reason", async () => {
    const r = await receiver();
    await allow("127.0.0.1", r.port);
    const ep = await subscribe(`http://127.0.0.1:${r.port}/events`, ["break_glass.used", "user.deprovisioned"]);
    r.secrets = [ep.secret];
    const doctor = await signIn(app, { role: "practitioner", tenantId: tenant.id });
    const patientId = await createPatient(app, tenant.id);
    const opened = await doctor.agent.post(`/api/v1/patients/${patientId}/break-glass`).send({ reason: "unconscious patient in ED, physician unreachable" });
    expect(opened.status).toBe(201);
    expect((await admin.agent.patch(`/api/v1/users/${doctor.user.id}`).send({ status: "deactivated" })).status).toBe(200);
    await until(
      () => r.received.length,
      (n) => n === 2,
    );
    const bodies = r.received.map((x) => JSON.parse(x.body) as { type: string; data: Record<string, unknown> });
    expect(bodies.map((b) => [b.type, b.data])).toEqual([
      ["break_glass.used", { grantId: opened.body.id, patientId, userId: doctor.user.id, expiresAt: opened.body.expiresAt }],
      ["user.deprovisioned", { userId: doctor.user.id, reason: "administrator" }],
    ]);
    expect(r.received.every((x) => x.verifiedBy.length === 1)).toBe(true);
    expect(r.received.map((x) => x.body).join("")).not.toContain("unconscious");
  });
});
