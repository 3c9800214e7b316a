import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inScope } from "../../../daemon/db/sql.js";
import { publishWebhookEvent, publishWebhookEventAlone } from "../../../daemon/webhooks/index.js";
import { createTenant } from "../../helpers/actors.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";

let app: TestAppliance;

beforeAll(async () => {
  app = await startTestAppliance();
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
    const messages = await app.ctx.db.owner.one<{ n: number }>("SELECT count(*)::int AS n FROM webhook_messages");
    expect(messages?.n).toBe(0);
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
