import { generateKeyPairSync, sign, type KeyObject } from "node:crypto";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Webhook } from "standardwebhooks";
import { createTenant, signIn, type SignedIn } from "../../helpers/actors.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";

/**
 * Inbound webhooks as a consent form service or an EHR would send them: signed with the Standard
 * Webhooks reference code (`standardwebhooks` Webhook.sign) and POSTed over HTTPS.
 */
let app: TestAppliance;
let admin: SignedIn;
let source: { id: string; path: string; secret: string };

beforeAll(async () => {
  app = await startTestAppliance({ env: { WARDKEEP_WEBHOOKS_INBOUND_BODY_LIMIT: "2kb", WARDKEEP_WEBHOOKS_DELIVERY_ENABLED: "false" } });
  const tenant = await createTenant(app, "Inbound Clinic");
  admin = await signIn(app, { role: "admin", tenantId: tenant.id });
  const res = await admin.agent.post("/api/v1/webhooks/sources").send({ name: "Consent forms", kind: "consent_forms", rateLimitPerMinute: 1000 });
  expect(res.status).toBe(201);
  expect(res.body.secret).toMatch(/^whsec_/);
  source = { id: res.body.source.id, path: res.body.source.path, secret: res.body.secret };
});
afterAll(async () => {
  await app?.close();
});

let n = 0;
function signed(secret: string, body: string, opts: { id?: string; at?: Date } = {}) {
  const id = opts.id ?? `evt_${Date.now()}_${++n}`;
  const at = opts.at ?? new Date();
  const signature = new Webhook(secret).sign(id, at, body);
  return { id, headers: { "webhook-id": id, "webhook-timestamp": String(Math.floor(at.getTime() / 1000)), "webhook-signature": signature } };
}

const post = (path: string, headers: Record<string, string>, body: string) =>
  request(app.baseUrl).post(path).ca(app.caPem).set("content-type", "application/json").set(headers).send(body);

const consentSigned = JSON.stringify({ type: "consent.signed", timestamp: new Date().toISOString(), data: { formId: "f-123" } });

function expectProblem(res: request.Response, status: number, type: string) {
  expect(res.status).toBe(status);
  expect(res.headers["content-type"]).toContain("application/problem+json");
  expect(res.body.type).toBe(`urn:wardkeep:problem:${type}`);
  // No internal detail: no secret, no expected signature, no stack.
  const text = JSON.stringify(res.body);
  expect(text).not.toContain(source.secret.slice(6, 20));
  expect(text).not.toMatch(/at .*\.ts:\d+|v1,[A-Za-z0-9+/]{20,}/);
}

describe("inbound webhooks", () => {
  it("accepts a correctly signed message and lists it (ids, type and size only)", async () => {
    const s = signed(source.secret, consentSigned);
    const res = await post(source.path, s.headers, consentSigned);
    expect(res.status).toBe(202);
    expect(res.body).toEqual({ messageId: s.id });
    const messages = (await admin.agent.get(`/api/v1/webhooks/sources/${source.id}/messages`)).body.messages as { messageId: string; eventType: string; bodyBytes: number }[];
    expect(messages[0]).toMatchObject({ messageId: s.id, eventType: "consent.signed", bodyBytes: Buffer.byteLength(consentSigned) });
    const listed = (await admin.agent.get("/api/v1/webhooks/sources")).body.sources as { id: string; received: number }[];
    expect(listed.find((x) => x.id === source.id)?.received).toBeGreaterThanOrEqual(1);
  });

  it("refuses a bad signature, and an unknown source with the same answer", async () => {
    const s = signed("whsec_" + Buffer.alloc(24, 9).toString("base64"), consentSigned);
    const bad = await post(source.path, s.headers, consentSigned);
    expectProblem(bad, 401, "webhook-unverified");
    // A body changed after signing fails the same way.
    const good = signed(source.secret, consentSigned);
    expectProblem(await post(source.path, good.headers, consentSigned.replace("f-123", "f-124")), 401, "webhook-unverified");
    const unknown = await post("/api/v1/webhooks/inbound/8d7f6b52-5d0e-4b1f-9a57-6a1f3e7b9c10", signed(source.secret, consentSigned).headers, consentSigned);
    expectProblem(unknown, 401, "webhook-unverified");
    expect(unknown.body.detail).toBe(bad.body.detail);
    expectProblem(await post("/api/v1/webhooks/inbound/not-a-uuid", good.headers, consentSigned), 401, "webhook-unverified");
    const missing = await post(source.path, { "webhook-id": "evt_x" }, consentSigned);
    expectProblem(missing, 401, "webhook-unverified");
    expect(missing.body.detail).toBe("the webhook-id, webhook-timestamp and webhook-signature headers are required");
  });

  it("refuses stale and future timestamps beyond five minutes, and accepts within them", async () => {
    const now = Date.now();
    const stale = await post(source.path, signed(source.secret, consentSigned, { at: new Date(now - 330_000) }).headers, consentSigned);
    expectProblem(stale, 401, "webhook-unverified");
    expect(stale.body.reason).toBe("timestamp_too_old");
    const future = await post(source.path, signed(source.secret, consentSigned, { at: new Date(now + 330_000) }).headers, consentSigned);
    expectProblem(future, 401, "webhook-unverified");
    expect(future.body.reason).toBe("timestamp_too_new");
    expect((await post(source.path, signed(source.secret, consentSigned, { at: new Date(now - 240_000) }).headers, consentSigned)).status).toBe(202);
  });

  it("refuses a replayed webhook-id", async () => {
    const s = signed(source.secret, consentSigned);
    expect((await post(source.path, s.headers, consentSigned)).status).toBe(202);
    const again = await post(source.path, s.headers, consentSigned);
    expectProblem(again, 409, "webhook-replayed");
    // Re-signed with a fresh timestamp, the same id is still a replay.
    expectProblem(await post(source.path, signed(source.secret, consentSigned, { id: s.id }).headers, consentSigned), 409, "webhook-replayed");
  });

  it("refuses an oversized body before reading the signature", async () => {
    const big = JSON.stringify({ type: "ehr.event", data: { pad: "x".repeat(4096) } });
    const res = await post(source.path, signed(source.secret, big).headers, big);
    expectProblem(res, 413, "payload-too-large");
  });

  it("rate-limits a source per minute and says when to retry", async () => {
    const limited = await admin.agent.post("/api/v1/webhooks/sources").send({ name: "EHR feed", kind: "ehr_events", rateLimitPerMinute: 3 });
    const path = limited.body.source.path as string;
    for (let i = 0; i < 3; i++) expect((await post(path, signed(limited.body.secret, consentSigned).headers, consentSigned)).status).toBe(202);
    const fourth = await post(path, signed(limited.body.secret, consentSigned).headers, consentSigned);
    expectProblem(fourth, 429, "too-many-requests");
    expect(Number(fourth.headers["retry-after"])).toBeGreaterThan(0);
    expect(Number(fourth.headers["retry-after"])).toBeLessThanOrEqual(60);
    // Another source has its own budget.
    expect((await post(source.path, signed(source.secret, consentSigned).headers, consentSigned)).status).toBe(202);
  });

  it("verifies with the previous secret during a rotation's overlap, and not after", async () => {
    const created = await admin.agent.post("/api/v1/webhooks/sources").send({ name: "Rotating", kind: "other" });
    const id = created.body.source.id as string;
    const path = created.body.source.path as string;
    const old = created.body.secret as string;
    const rotated = await admin.agent.post(`/api/v1/webhooks/sources/${id}/rotate-secret`).send({ overlapHours: 1 });
    expect(rotated.status).toBe(200);
    expect((await post(path, signed(old, consentSigned).headers, consentSigned)).status).toBe(202);
    expect((await post(path, signed(rotated.body.secret, consentSigned).headers, consentSigned)).status).toBe(202);
    const closed = await admin.agent.post(`/api/v1/webhooks/sources/${id}/rotate-secret`).send({ overlapHours: 0 });
    expectProblem(await post(path, signed(rotated.body.secret, consentSigned).headers, consentSigned), 401, "webhook-unverified");
    expect((await post(path, signed(closed.body.secret, consentSigned).headers, consentSigned)).status).toBe(202);
  });

  /** A sender's Ed25519 key pair: the `whpk_` public key it registers, and `v1a` signatures written from the spec with node:crypto. */
  function senderKeys() {
    const { privateKey, publicKey } = generateKeyPairSync("ed25519");
    const spki = publicKey.export({ format: "der", type: "spki" });
    return { privateKey, whpk: "whpk_" + spki.subarray(spki.length - 32).toString("base64") };
  }
  function signedV1a(key: KeyObject, body: string, opts: { id?: string; at?: Date } = {}) {
    const id = opts.id ?? `evt_${Date.now()}_${++n}`;
    const ts = Math.floor((opts.at ?? new Date()).getTime() / 1000);
    const sig = sign(null, Buffer.from(`${id}.${ts}.${body}`), key).toString("base64");
    return { id, headers: { "webhook-id": id, "webhook-timestamp": String(ts), "webhook-signature": `v1a,${sig}` } };
  }

  it("verifies v1a (Ed25519) signatures with a source's public key, refusing a wrong one as it refuses a bad v1", async () => {
    const sender = senderKeys();
    const created = await admin.agent.post("/api/v1/webhooks/sources").send({ name: "EHR events", kind: "ehr_events", publicKey: sender.whpk });
    expect(created.status).toBe(201);
    expect(created.body.source).toMatchObject({ signatureSchemes: ["v1", "v1a"], publicKey: sender.whpk, previousPublicKeyExpiresAt: null });
    expect(created.body.secret).toMatch(/^whsec_/);
    const path = created.body.source.path as string;
    const good = signedV1a(sender.privateKey, consentSigned);
    expect(await post(path, good.headers, consentSigned).then((r) => [r.status, r.body])).toEqual([202, { messageId: good.id }]);
    // Its whsec_ secret verifies v1 besides.
    expect((await post(path, signed(created.body.secret, consentSigned).headers, consentSigned)).status).toBe(202);
    // Another key's signature, a changed body, a signature of the wrong length: the generic answer of a bad v1.
    const bad = await post(path, signedV1a(senderKeys().privateKey, consentSigned).headers, consentSigned);
    expectProblem(bad, 401, "webhook-unverified");
    const v1Bad = await post(path, signed("whsec_" + Buffer.alloc(24, 9).toString("base64"), consentSigned).headers, consentSigned);
    const generic = (b: Record<string, unknown>) => ({ ...b, instance: undefined, requestId: undefined });
    expect(generic(bad.body)).toEqual(generic(v1Bad.body));
    expectProblem(await post(path, signedV1a(sender.privateKey, consentSigned).headers, consentSigned.replace("f-123", "f-124")), 401, "webhook-unverified");
    const short = signedV1a(sender.privateKey, consentSigned);
    expectProblem(await post(path, { ...short.headers, "webhook-signature": "v1a,AAAA" }, consentSigned), 401, "webhook-unverified");
    // A v1a signature is checked for replay and time like a v1 one.
    expectProblem(await post(path, good.headers, consentSigned), 409, "webhook-replayed");
    expect((await post(path, signedV1a(sender.privateKey, consentSigned, { at: new Date(Date.now() - 301_000) }).headers, consentSigned)).body.reason).toBe("timestamp_too_old");
  });

  it("a source with only a public key refuses v1 HMAC signatures; a replaced key verifies during the overlap", async () => {
    const sender = senderKeys();
    const noKey = await admin.agent.post("/api/v1/webhooks/sources").send({ name: "No key", kind: "other", hmacSecret: false });
    expectProblem(noKey, 400, "invalid-request");
    expect(noKey.body.detail).toBe("a source without a whsec_ secret (hmacSecret: false) needs a publicKey to verify v1a signatures with");
    expectProblem(await admin.agent.post("/api/v1/webhooks/sources").send({ name: "Bad key", kind: "other", publicKey: "whpk_abc" }), 400, "invalid-request");
    const created = await admin.agent.post("/api/v1/webhooks/sources").send({ name: "Consent kiosk", kind: "consent_forms", publicKey: sender.whpk, hmacSecret: false });
    expect(created.status).toBe(201);
    expect(created.body.secret).toBeNull();
    expect(created.body.source.signatureSchemes).toEqual(["v1a"]);
    const { id, path } = created.body.source as { id: string; path: string };
    // An HMAC signature, even one made with another source's real secret, is refused like any bad signature.
    const v1 = await post(path, signed(source.secret, consentSigned).headers, consentSigned);
    expectProblem(v1, 401, "webhook-unverified");
    expect(v1.body.detail).toBe("the webhook signature does not match, or the source does not accept webhooks");
    expect((await post(path, signedV1a(sender.privateKey, consentSigned).headers, consentSigned)).status).toBe(202);
    // Removing the only key would leave nothing to verify with.
    const bare = await admin.agent.patch(`/api/v1/webhooks/sources/${id}`).send({ publicKey: null });
    expectProblem(bare, 400, "invalid-request");
    expect(bare.body.detail).toBe("a source needs a whsec_ secret or a public key: this change would leave it with neither");

    const next = senderKeys();
    const replaced = await admin.agent.patch(`/api/v1/webhooks/sources/${id}`).send({ publicKey: next.whpk, overlapHours: 1 });
    expect(replaced.body).toMatchObject({ publicKey: next.whpk, signatureSchemes: ["v1a"] });
    expect(replaced.body.previousPublicKeyExpiresAt).not.toBeNull();
    expect((await post(path, signedV1a(sender.privateKey, consentSigned).headers, consentSigned)).status).toBe(202);
    expect((await post(path, signedV1a(next.privateKey, consentSigned).headers, consentSigned)).status).toBe(202);
    const third = senderKeys();
    await admin.agent.patch(`/api/v1/webhooks/sources/${id}`).send({ publicKey: third.whpk, overlapHours: 0 });
    expectProblem(await post(path, signedV1a(next.privateKey, consentSigned).headers, consentSigned), 401, "webhook-unverified");

    // A secret added by rotate-secret verifies v1 besides; hmacSecret: false withdraws it at once.
    const rotated = await admin.agent.post(`/api/v1/webhooks/sources/${id}/rotate-secret`).send({});
    expect(rotated.body.source).toMatchObject({ signatureSchemes: ["v1", "v1a"], previousSecretExpiresAt: null });
    expect((await post(path, signed(rotated.body.secret, consentSigned).headers, consentSigned)).status).toBe(202);
    expect((await admin.agent.patch(`/api/v1/webhooks/sources/${id}`).send({ hmacSecret: false })).body.signatureSchemes).toEqual(["v1a"]);
    expectProblem(await post(path, signed(rotated.body.secret, consentSigned).headers, consentSigned), 401, "webhook-unverified");
    expect((await post(path, signedV1a(third.privateKey, consentSigned).headers, consentSigned)).status).toBe(202);
  });

  it("refuses a disabled source like an unknown one", async () => {
    const created = await admin.agent.post("/api/v1/webhooks/sources").send({ name: "Retired", kind: "other" });
    expect((await admin.agent.patch(`/api/v1/webhooks/sources/${created.body.source.id}`).send({ enabled: false })).body.status).toBe("disabled");
    expectProblem(await post(created.body.source.path, signed(created.body.secret, consentSigned).headers, consentSigned), 401, "webhook-unverified");
  });
});
