import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InvalidationBus } from "../../../daemon/db/invalidation.js";
import { createTenant } from "../../helpers/actors.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";

/**
 * The database announces changes that make a replica's cached answers wrong (migration 0070), and
 * each daemon's listener (daemon/db/invalidation.ts) survives losing its connection: it comes back
 * on its own and tells every cache to drop everything, since it cannot know what it missed.
 */

let app: TestAppliance;
let bus: InvalidationBus;
let su: pg.Client;
const received: { topic: string; ids: string[] }[] = [];
const logged: string[] = [];

beforeAll(async () => {
  app = await startTestAppliance();
  bus = new InvalidationBus(app.db.appUrl);
  bus.subscribe("api-tokens", (ids) => received.push({ topic: "api-tokens", ids }));
  bus.subscribe("data-keys", (ids) => received.push({ topic: "data-keys", ids }));
  bus.start({ info: (m) => logged.push(`info ${m}`), warn: (m) => logged.push(`warn ${m}`) });
  su = new pg.Client({ connectionString: app.db.superuserUrl });
  await su.connect();
  await until(() => bus.listening);
}, 60_000);

afterAll(async () => {
  await bus?.close();
  await su?.end();
  await app?.close();
});

async function until(done: () => boolean, timeoutMs = 5_000) {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("cache invalidation across replicas", () => {
  it("announces a tenant suspension when it commits, and nothing for a rolled-back one", async () => {
    const tenant = await createTenant(app, "Invalidation Clinic");
    received.length = 0;
    await su.query("BEGIN");
    await su.query("UPDATE tenants SET status = 'suspended' WHERE id = $1", [tenant.id]);
    await su.query("ROLLBACK");
    // A renamed tenant changes nothing a cache holds: no announcement either.
    await su.query("UPDATE tenants SET name = 'Renamed Clinic' WHERE id = $1", [tenant.id]);
    await su.query("UPDATE tenants SET status = 'suspended' WHERE id = $1", [tenant.id]);
    await until(() => received.length > 0);
    await new Promise((r) => setTimeout(r, 200));
    expect(received).toEqual([{ topic: "api-tokens", ids: [] }]);
  });

  it("names the destroyed data keys, in chunks that fit a notification", async () => {
    received.length = 0;
    const ids = Array.from({ length: 230 }, (_, i) => `index/00000000-0000-4000-8000-${String(i).padStart(12, "0")}`);
    await su.query("BEGIN");
    await su.query(
      `INSERT INTO keystore.data_keys (key_id, version, kind, tenant_id, wrapped, kek_version)
       SELECT k, 1, 'index', (SELECT id FROM tenants LIMIT 1), '\\x00', (SELECT max(version) FROM keystore.kek_versions) FROM unnest($1::text[]) k`,
      [ids],
    );
    await su.query("DELETE FROM keystore.data_keys WHERE key_id = ANY($1)", [ids]);
    await su.query("COMMIT");
    await until(() => received.flatMap((r) => r.ids).length >= 230);
    expect(received.every((r) => r.topic === "data-keys")).toBe(true);
    expect(received.length).toBe(3);
    expect(received.flatMap((r) => r.ids).sort()).toEqual([...ids].sort());
  });

  it("reconnects after losing its connection and has every cache drop everything", async () => {
    received.length = 0;
    const killed = await su.query("SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = 'wardkeep-invalidation' AND datname = current_database()");
    expect(killed.rows.length).toBeGreaterThan(0);
    await until(() => logged.some((l) => l.startsWith("warn cache invalidation listener lost")));
    await until(() => bus.listening && received.length >= 2);
    expect(received).toEqual(
      expect.arrayContaining([
        { topic: "api-tokens", ids: [] },
        { topic: "data-keys", ids: [] },
      ]),
    );
    expect(logged.some((l) => l.startsWith("info cache invalidation listener reconnected"))).toBe(true);
    // And it listens again: the next change arrives.
    received.length = 0;
    await su.query("UPDATE users SET role = role WHERE false");
    await su.query("UPDATE tenants SET status = 'active' WHERE status = 'suspended'");
    await until(() => received.length > 0);
    expect(received[0]).toEqual({ topic: "api-tokens", ids: [] });
  });
});
