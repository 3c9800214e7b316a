import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inScope } from "../../../daemon/db/sql.js";
import { publishWebhookEvent, publishWebhookEventAlone } from "../../../daemon/webhooks/index.js";
import { createTenant, rootSuperAdmin } from "../../helpers/actors.js";
import { SYSTEM_META } from "../../../daemon/kernel/request-meta.js";
import { approveHost, createEndpoint } from "../../../daemon/webhooks/service.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";

let app: TestAppliance;

beforeAll(async () => {
  app = await startTestAppliance({ env: { WARDKEEP_WEBHOOKS_DELIVERY_ENABLED: "false" } });
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
});
