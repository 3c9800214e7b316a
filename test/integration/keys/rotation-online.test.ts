import { randomInt, randomUUID } from "node:crypto";
import pg from "pg";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { unregisterEncryptedColumn, type EncryptedColumn } from "../../../daemon/keys/columns.js";
import { dataKeyFor } from "../../../daemon/keys/keyring.js";
import { LOCKS } from "../../../daemon/keys/keystore.js";
import { zeroize } from "../../../daemon/keys/primitives.js";
import { reencryptPending, rewrapPending, rotateDataKey, rotateKek } from "../../../daemon/keys/index.js";
import { describeKeys } from "../../../daemon/keys/status.js";
import { unsealAtStart } from "../../../daemon/keys/unseal/index.js";
import { keysContext, type KeysContext } from "./context.js";
import { createEncryptedTable, inTenant, insertRow, readRow, storedVersions, updateRow } from "./fixtures.js";

let k: KeysContext;
let column: EncryptedColumn;
const tenantId = randomUUID();
const subject = { kind: "tenant" as const, tenantId };
const ids: string[] = [];

beforeAll(async () => {
  k = await keysContext({ env: { WARDKEEP_KEYS_REENCRYPT_BATCH_SIZE: "25" } });
  await unsealAtStart(k.ctx);
  column = await createEncryptedTable(k, "online_records");
  for (let batch = 0; batch < 8; batch++) {
    await inTenant(k.ctx, tenantId, async (t) => {
      for (let i = 0; i < 50; i++) ids.push(await insertRow(k.ctx, t, column, subject, `row:${batch * 50 + i}:0`));
    });
  }
});
afterAll(async () => {
  unregisterEncryptedColumn("online_records", "secret");
  await k?.close();
});

describe("rotation while the appliance keeps serving", () => {
  it("rotates the tenant key and the KEK under continuous reads and writes: none fails, every row ends on the new version", async () => {
    const expected = new Map(ids.map((id, i) => [id, `row:${i}:`]));
    const errors: string[] = [];
    let reads = 0;
    let writes = 0;
    let stop = false;

    const writer = async () => {
      let n = 0;
      while (!stop) {
        try {
          if (n % 5 === 4) {
            const id = randomUUID();
            await inTenant(k.ctx, tenantId, (t) => insertRow(k.ctx, t, column, subject, `row:new-${id}:0`, id));
            expected.set(id, `row:new-${id}:`);
            ids.push(id);
          } else {
            const id = ids[randomInt(ids.length)]!;
            await inTenant(k.ctx, tenantId, (t) => updateRow(k.ctx, t, column, subject, id, `${expected.get(id)}${++n}`));
          }
          writes++;
        } catch (err) {
          errors.push(`write: ${(err as Error).name}: ${(err as Error).message}`);
        }
        n++;
      }
    };
    const reader = async () => {
      while (!stop) {
        const id = ids[randomInt(ids.length)]!;
        try {
          const value = await inTenant(k.ctx, tenantId, (t) => readRow(k.ctx, t, column, tenantId, id));
          if (!value.startsWith(expected.get(id)!)) errors.push(`read: row ${id} decrypted to another row's value`);
          reads++;
        } catch (err) {
          errors.push(`read: ${(err as Error).name}: ${(err as Error).message}`);
        }
      }
    };
    const workers = [writer(), writer(), writer(), reader(), reader(), reader()];

    let progressSeen = false;
    let readsAtRotation = 0;
    let writesAtRotation = 0;
    let kek: { from: number; to: number };
    try {
      await sleep(300);
      const rotated = await rotateDataKey(k.ctx, `tenant/${tenantId}`);
      expect(rotated).toMatchObject({ from: 1, to: 2, rotated: true });
      kek = await rotateKek(k.ctx);
      readsAtRotation = reads;
      writesAtRotation = writes;

      const deadline = Date.now() + 40_000;
      for (;;) {
        const rewrap = await rewrapPending(k.ctx, { batchSize: 5, maxBatches: 1 });
        const reencrypt = await reencryptPending(k.ctx, { maxBatches: 2 });
        if (reencrypt.failed > 0) throw new Error(`${reencrypt.failed} value(s) did not decrypt during re-encryption`);
        if (!progressSeen && reencrypt.rewritten > 0) {
          // Mid-rotation, status shows the work: old and new versions side by side.
          const status = await describeKeys(k.ctx);
          const tenant = status.tenants.find((t) => t.tenantId === tenantId)!;
          expect(tenant.versions.map((v) => v.state)).toEqual(["retired", "active"]);
          expect(status.rotations.find((r) => r.keyId === `tenant/${tenantId}`)?.completedAt).toBeNull();
          progressSeen = true;
        }
        if (!rewrap.remaining && reencrypt.open === 0) break;
        if (Date.now() > deadline) throw new Error(`rotation did not finish within 40 s (rewrap remaining: ${rewrap.remaining}, open re-encryptions: ${reencrypt.open})`);
        await sleep(20);
      }
      await sleep(200);
    } finally {
      // Whatever happened, the workers stop: a failing rotation must not leave them running.
      stop = true;
      await Promise.all(workers);
    }

    expect(errors).toEqual([]);
    expect(progressSeen).toBe(true);
    expect(reads - readsAtRotation).toBeGreaterThan(50);
    expect(writes - writesAtRotation).toBeGreaterThan(20);

    expect([...(await storedVersions(k, "online_records")).keys()]).toEqual([2]);
    const [open] = await k.sql<{ n: string }>("SELECT count(*) AS n FROM keystore.rotations WHERE completed_at IS NULL");
    expect(Number(open!.n)).toBe(0);
    const keks = await k.sql<{ version: number }>("SELECT version FROM keystore.kek_versions");
    expect(keks.map((r) => r.version)).toEqual([kek!.to]);
    const values = await inTenant(k.ctx, tenantId, (t) => Promise.all(ids.map((id) => readRow(k.ctx, t, column, tenantId, id))));
    values.forEach((v, i) => expect(v.startsWith(expected.get(ids[i]!)!)).toBe(true));
  });

  it("gives a writer that waited behind a rotation the version that rotation made", async () => {
    const keyId = `tenant/${tenantId}`;
    const before = await inTenant(k.ctx, tenantId, async (t) => {
      const key = await dataKeyFor(k.ctx, t, subject);
      zeroize(key.key);
      return key.version;
    });
    // Hold the key's lock exclusively, queue a rotation behind it, then a writer behind that.
    const holder = new pg.Client({ connectionString: k.db.ownerUrl });
    await holder.connect();
    try {
      await holder.query("BEGIN");
      await holder.query("SELECT pg_advisory_xact_lock($1, hashtext($2))", [LOCKS.dataKey, keyId]);
      const rotation = rotateDataKey(k.ctx, keyId);
      await sleep(200);
      const writer = inTenant(k.ctx, tenantId, async (t) => {
        const key = await dataKeyFor(k.ctx, t, subject);
        zeroize(key.key);
        return key.version;
      });
      await sleep(200);
      await holder.query("COMMIT");
      // The writer's lookup started (and took its statement snapshot) before the rotation
      // committed; it must still see the new version, or it would write under a retired key.
      expect(await rotation).toMatchObject({ from: before, to: before + 1, rotated: true });
      expect(await writer).toBe(before + 1);
    } finally {
      await holder.end();
    }
  });
});
