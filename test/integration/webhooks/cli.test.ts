import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { publishWebhookEventAlone } from "../../../daemon/webhooks/index.js";
import { createTenant, signIn, type SignedIn } from "../../helpers/actors.js";
import { startTestAppliance, testEnv, type TestAppliance } from "../../helpers/appliance.js";
import { runCli } from "../../helpers/daemon-process.js";
import { until, WebhookReceiver } from "../../helpers/webhook-receiver.js";

/** `wardkeep webhook ...` on a running appliance's database, as the host operator. */
let app: TestAppliance;
let env: Record<string, string>;
let admin: SignedIn;
let tenantId: string;
const receiver = new WebhookReceiver();
const SLOW = 150_000;

beforeAll(async () => {
  app = await startTestAppliance({ env: { WARDKEEP_WEBHOOKS_ALLOW_PLAIN_HTTP: "true", WARDKEEP_WEBHOOKS_POLL_INTERVAL_MS: "50", WARDKEEP_WEBHOOKS_MAX_ATTEMPTS: "1" } });
  env = testEnv(app.db, app.dataDir);
  tenantId = (await createTenant(app, "CLI Hooks")).id;
  admin = await signIn(app, { role: "owner", tenantId });
  await receiver.listen();
});
afterAll(async () => {
  await receiver.close();
  await app?.close();
});

describe("wardkeep webhook", () => {
  it(
    "approves a destination, lists dead letters and replays one to the receiver",
    async () => {
      // A dead letter to start from, made through the console's API.
      const root = await signIn(app, { role: "super_admin" });
      expect((await root.agent.post("/api/v1/webhooks/allowed-hosts").send({ host: "127.0.0.1", port: receiver.port, allowPrivate: true })).status).toBe(201);
      const ep = await admin.agent.post("/api/v1/webhooks").send({ url: `http://127.0.0.1:${receiver.port}/cli`, eventTypes: ["erasure.completed"] });
      expect(ep.status).toBe(201);
      receiver.secrets = [ep.body.secret];
      receiver.answer = (_r, n) => ({ status: n === 1 ? 500 : 204 });
      const published = await publishWebhookEventAlone(app.ctx, { tenantId, type: "erasure.completed", data: { deletionRequestId: "d-1", subject: "patient" } });
      await until(
        async () => (await admin.agent.get("/api/v1/webhooks/deliveries?status=dead")).body.deliveries.length,
        (n) => n === 1,
      );

      // Each CLI start costs seconds on a loaded machine: independent commands run side by side.
      const [allowed, bad, dead] = await Promise.all([
        runCli(["webhook", "allow", "ehr-gateway.hospital.example", "8443", "--note", "INC-42 receiver", "--json"], env),
        runCli(["webhook", "allow", "127.0.0.1", "70000"], env),
        runCli(["webhook", "deliveries", "--status", "dead", "--json"], env),
      ]);
      expect(allowed.code).toBe(0);
      const entry = JSON.parse(allowed.stdout).host;
      expect(entry).toMatchObject({ host: "ehr-gateway.hospital.example", port: 8443, allowPrivate: false, note: "INC-42 receiver" });
      expect(bad.code).toBe(1);
      expect(bad.stderr.trim()).toBe("wardkeep: <port>: Too big: expected number to be <=65535");
      // The console sees what the CLI approved.
      expect((await admin.agent.get("/api/v1/webhooks/allowed-hosts")).body.hosts.map((h: { id: string }) => h.id)).toContain(entry.id);
      expect(dead.code).toBe(0);
      const [letter] = JSON.parse(dead.stdout).deliveries;
      expect(letter).toMatchObject({ messageId: published.messageId, status: "dead", deadReason: "exhausted", lastError: "HTTP 500", eventType: "erasure.completed" });

      const [replayed, notAnId] = await Promise.all([runCli(["webhook", "replay", letter.id], env), runCli(["webhook", "replay", "not-an-id"], env)]);
      expect(replayed.code).toBe(0);
      expect(replayed.stdout).toMatch(/^replay queued as delivery [0-9a-f-]{36} \(message msg_[0-9a-f]{32}\)\n$/);
      expect(notAnId.code).toBe(1);
      expect(notAnId.stderr.trim()).toBe("wardkeep: <delivery-id>: Invalid UUID");
      await until(
        () => receiver.received.length,
        (n) => n === 2,
      );
      expect(receiver.received.map((r) => [r.id, r.verifiedBy])).toEqual([
        [published.messageId, [0]],
        [published.messageId, [0]],
      ]);
    },
    SLOW,
  );

  it(
    "shows a v1a endpoint's public key, which verifies what the endpoint receives, and says when an endpoint has none",
    async () => {
      const v1a = await admin.agent.post("/api/v1/webhooks").send({ url: `http://127.0.0.1:${receiver.port}/v1a`, eventTypes: ["consent.revoked"], signatureScheme: "v1a" });
      expect(v1a.status).toBe(201);
      const v1 = await admin.agent.post("/api/v1/webhooks").send({ url: `http://127.0.0.1:${receiver.port}/v1`, eventTypes: ["consent.revoked"] });
      const [shown, json, none, missing, endpoints] = await Promise.all([
        runCli(["webhook", "public-key", v1a.body.endpoint.id], env),
        runCli(["webhook", "public-key", v1a.body.endpoint.id, "--json"], env),
        runCli(["webhook", "public-key", v1.body.endpoint.id], env),
        runCli(["webhook", "public-key", "5b0c4f62-1d9a-4c1e-9f51-3c1b8e0a7d21"], env),
        runCli(["webhook", "endpoints"], env),
      ]);
      expect(shown.code).toBe(0);
      expect(shown.stdout).toBe(`${v1a.body.endpoint.publicKey}\n`);
      expect(JSON.parse(json.stdout)).toEqual({
        ok: true,
        endpointId: v1a.body.endpoint.id,
        signatureScheme: "v1a",
        publicKey: v1a.body.endpoint.publicKey,
        previousPublicKey: null,
        previousUntil: null,
      });
      expect(none.code).toBe(1);
      expect(none.stderr.trim()).toBe(`wardkeep: endpoint ${v1.body.endpoint.id} signs with v1 (a shared whsec_ secret, shown once when it was made); it has no public key`);
      expect(missing.code).toBe(1);
      expect(missing.stderr.trim()).toBe("wardkeep: no webhook endpoint 5b0c4f62-1d9a-4c1e-9f51-3c1b8e0a7d21");
      const line = endpoints.stdout.split("\n").find((l) => l.startsWith(v1a.body.endpoint.id));
      expect(line).toContain(" v1a ");
      expect(line).toContain(`http://127.0.0.1:${receiver.port}/v1a`);

      // The key the CLI printed verifies what the receiver gets.
      receiver.publicKeys = [shown.stdout.trim()];
      const before = receiver.received.length;
      receiver.answer = () => ({ status: 204 });
      await publishWebhookEventAlone(app.ctx, { tenantId, type: "consent.revoked", data: { patientId: "p-1", consentId: "c-1" } });
      const got = await until(
        () => receiver.received.slice(before),
        (r) => r.length === 2,
      );
      expect(got.map((r) => [r.path, r.verifiedByKey.length]).sort()).toEqual([
        ["/v1", 0],
        ["/v1a", 1],
      ]);
    },
    SLOW,
  );
});
