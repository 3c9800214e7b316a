import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DeliveryWorker } from "../../../daemon/webhooks/delivery.js";
import { inScope } from "../../../daemon/db/sql.js";
import { publishWebhookEvent, publishWebhookEventAlone } from "../../../daemon/webhooks/index.js";
import { createTenant, rootSuperAdmin } from "../../helpers/actors.js";
import { SYSTEM_META } from "../../../daemon/kernel/request-meta.js";
import { approveHost, createEndpoint } from "../../../daemon/webhooks/service.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { until } from "../../helpers/webhook-receiver.js";

let app: TestAppliance;

beforeAll(async () => {
  app = await startTestAppliance({ env: { WARDKEEP_WEBHOOKS_DELIVERY_ENABLED: "false", WARDKEEP_WEBHOOKS_ALLOW_PLAIN_HTTP: "true" } });
});
afterAll(async () => {
  await app?.close();
});

describe("publishWebhookEvent", () => {
  it("stores nothing when no endpoint subscribes to the event", async () => {
    const tenant = await createTenant(app, "Publish Clinic");
    const published = await inScope(app.ctx.db.app, { kind: "tenant", tenantId: tenant.id }, (tx) =>
      publishWebhookEvent(app.ctx, tx, { tenantId: tenant.id, type: "consent.revoked", data: { patientId: "00000000-0000-4000-8000-000000000001" } }),
    );
    expect(published).toEqual({ messageId: null, deliveries: 0 });
    // Appliance scope sees every tenant's rows (row-level security is forced on every role).
    const count = () =>
      inScope(app.ctx.db.app, { kind: "appliance" }, (tx) => tx.one<{ n: number }>("SELECT count(*)::int AS n FROM webhook_messages WHERE tenant_id = $1", [tenant.id]));
    expect((await count())?.n).toBe(0);
    // The same count sees a message once an endpoint subscribes (so the zero above is a real zero).
    const root = await rootSuperAdmin(app);
    await approveHost(app.ctx, root.actor, { host: "receiver.hospital.example", port: 443, allowPrivate: false }, SYSTEM_META);
    const owner = { userId: root.id, role: "owner" as const, tenantId: tenant.id, via: "session" as const };
    await createEndpoint(app.ctx, owner, { url: "https://receiver.hospital.example/hooks", eventTypes: ["consent.revoked"] }, SYSTEM_META);
    const again = await publishWebhookEventAlone(app.ctx, { tenantId: tenant.id, type: "consent.revoked", data: { patientId: "00000000-0000-4000-8000-000000000001" } });
    expect(again.deliveries).toBe(1);
    expect((await count())?.n).toBe(1);
  });

  it("refuses data that is not ids, counts and states (free text could carry PHI)", async () => {
    await expect(publishWebhookEventAlone(app.ctx, { tenantId: null, type: "snapshot.failed", data: { reason: "disk full on nas" } })).rejects.toThrow(
      "must hold ids, counts and states only",
    );
    await expect(publishWebhookEventAlone(app.ctx, { tenantId: null, type: "snapshot.failed", data: { patient_name: "x" } })).rejects.toThrow("ids, counts and states");
    // @ts-expect-error an event type the capability does not know
    await expect(publishWebhookEventAlone(app.ctx, { tenantId: null, type: "patient.read", data: {} })).rejects.toThrow("unknown event type");
  });

  // Last: it seals the appliance.
  it("signs nothing once the appliance is sealed, not even deliveries claimed before and waiting for a slot", async () => {
    // A receiver that holds its first request until told to answer.
    const requests: string[] = [];
    let release: () => void = () => {};
    const server = http.createServer((req, res) => {
      req.resume();
      req.on("end", () => {
        requests.push(String(req.headers["webhook-signature"]));
        if (requests.length === 1) release = () => res.writeHead(204).end();
        else res.writeHead(204).end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as AddressInfo).port;
    try {
      const tenant = await createTenant(app, "Sealed Clinic");
      const root = await rootSuperAdmin(app);
      await approveHost(app.ctx, root.actor, { host: "127.0.0.1", port, allowPrivate: true }, SYSTEM_META);
      const owner = { userId: root.id, role: "owner" as const, tenantId: tenant.id, via: "session" as const };
      const ep = await createEndpoint(app.ctx, owner, { url: `http://127.0.0.1:${port}/held`, eventTypes: ["erasure.completed"], signatureScheme: "v1a" }, SYSTEM_META);
      // Only this test's deliveries are due (the first test left one to a host that does not exist).
      await inScope(app.ctx.db.app, { kind: "appliance" }, (tx) => tx.exec("DELETE FROM webhook_deliveries WHERE endpoint_id <> $1", [ep.endpoint.id]));
      for (const id of ["d-1", "d-2", "d-3"])
        await publishWebhookEventAlone(app.ctx, { tenantId: tenant.id, type: "erasure.completed", data: { deletionRequestId: id, subject: "patient" } });

      // One slot: the first delivery is in flight (held), the other two are claimed and wait.
      const worker = new DeliveryWorker({ ...app.ctx, config: { ...app.ctx.config, webhooks: { ...app.ctx.config.webhooks, concurrency: 1 } } }).start();
      await until(
        () => requests.length,
        (n) => n === 1,
      );
      expect(worker.load()).toEqual({ inFlight: 1, waiting: 2 });
      app.ctx.rootKey.seal("test: sealed mid-delivery");
      release();
      await worker.stop();

      // The receiver got only the request signed before the seal.
      expect(requests).toHaveLength(1);
      expect(requests[0]).toMatch(/^v1a,/);
      const attempts = await inScope(app.ctx.db.app, { kind: "appliance" }, (tx) =>
        tx.rows<{ status: string; outcome: string; error: string | null; next: boolean }>(
          `SELECT d.status, a.outcome, a.error, a.next_attempt_at IS NOT NULL AS next FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id
            WHERE d.endpoint_id = $1 ORDER BY a.outcome, a.started_at`,
          [ep.endpoint.id],
        ),
      );
      // The two that waited are not lost: a failed attempt each, to be retried on the schedule once unsealed.
      expect(attempts).toEqual([
        { status: "delivered", outcome: "delivered", error: null, next: false },
        { status: "pending", outcome: "failed", error: "the appliance is sealed; deliveries are signed again once it is unsealed", next: true },
        { status: "pending", outcome: "failed", error: "the appliance is sealed; deliveries are signed again once it is unsealed", next: true },
      ]);
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});
