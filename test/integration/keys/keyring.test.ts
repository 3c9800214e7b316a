import { randomUUID, sign, verify } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Sealed } from "../../../daemon/kernel/errors.js";
import { getAuditSigningKey, listAuditVerificationKeys } from "../../../daemon/keys/audit-signing.js";
import { unregisterEncryptedColumn, type EncryptedColumn } from "../../../daemon/keys/columns.js";
import { DecryptionError, readFieldHeader, UnknownKeyVersionError } from "../../../daemon/keys/field-cipher.js";
import { blindIndexFor, dataKeyFor, encryptFieldValue, flushNonceCounts, KeyDestroyed } from "../../../daemon/keys/keyring.js";
import { SNAPSHOT_EXCLUDED_SCHEMAS } from "../../../daemon/keys/keystore.js";
import { currentRecoveryPublicKey, issueRecoveryKit, loadRecoveryPrivateKey, unwrapWithRecovery, wrapForRecovery } from "../../../daemon/keys/recovery.js";
import { rewrapPending, rotateDataKey, rotateKek } from "../../../daemon/keys/index.js";
import { cancelShred, destroyDueKeys, listShredSchedule, reapplyShredList, scheduleShred } from "../../../daemon/keys/shred.js";
import { describeKeys } from "../../../daemon/keys/status.js";
import { unsealAtStart } from "../../../daemon/keys/unseal/index.js";
import { TestClock } from "../../helpers/clock.js";
import { tempDir } from "../../helpers/appliance.js";
import { keysContext, type KeysContext } from "./context.js";
import { createEncryptedTable, fieldOf, inTenant, insertRow, readRow, storedVersions } from "./fixtures.js";

const clock = new TestClock();
let k: KeysContext;
let column: EncryptedColumn;
const tenantA = randomUUID();
const tenantB = randomUUID();

beforeAll(async () => {
  k = await keysContext({ clock, env: { WARDKEEP_KEYS_NONCE_BUDGET: "25", WARDKEEP_KEYS_DATA_KEY_CACHE_SIZE: "16" } });
  await unsealAtStart(k.ctx);
  column = await createEncryptedTable(k, "kr_records");
});
afterAll(async () => {
  unregisterEncryptedColumn("kr_records", "secret");
  await k?.close();
});

async function expectRejects(p: Promise<unknown>): Promise<Error> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, "expected a rejection").toBeInstanceOf(Error);
  return err as Error;
}

describe("field encryption through the keyring", () => {
  it("encrypts under the tenant's key with the version in the header, and reads it back", async () => {
    const id = await inTenant(k.ctx, tenantA, (t) => insertRow(k.ctx, t, column, { kind: "tenant", tenantId: tenantA }, "Ada Lovelace"));
    const [row] = await k.sql<{ secret: Buffer }>("SELECT secret FROM kr_records WHERE id = $1", [id]);
    expect(readFieldHeader(row!.secret)).toEqual({ formatVersion: 1, keyId: `tenant/${tenantA}`, keyVersion: 1 });
    expect(row!.secret.includes(Buffer.from("Ada"))).toBe(false);
    expect(await inTenant(k.ctx, tenantA, (t) => readRow(k.ctx, t, column, tenantA, id))).toBe("Ada Lovelace");
  });

  it("fails to decrypt a ciphertext moved to another row or another tenant", async () => {
    const subject = { kind: "tenant" as const, tenantId: tenantA };
    const [a, b] = await inTenant(k.ctx, tenantA, async (t) => [await insertRow(k.ctx, t, column, subject, "row a"), await insertRow(k.ctx, t, column, subject, "row b")]);
    await k.sql("UPDATE kr_records SET secret = (SELECT secret FROM kr_records WHERE id = $1) WHERE id = $2", [a, b]);
    expect(await expectRejects(inTenant(k.ctx, tenantA, (t) => readRow(k.ctx, t, column, tenantA, b)))).toBeInstanceOf(DecryptionError);

    // Moved to tenant B: under B's row-level security A's key does not even exist.
    await k.sql("UPDATE kr_records SET tenant_id = $1 WHERE id = $2", [tenantB, a]);
    k.ctx.rootKey.evictDataKeys(() => true);
    expect(await expectRejects(inTenant(k.ctx, tenantB, (t) => readRow(k.ctx, t, column, tenantB, a)))).toBeInstanceOf(UnknownKeyVersionError);
  });

  it("gives racing first writes for a new patient one and the same key", async () => {
    const patient = { kind: "patient" as const, tenantId: tenantA, patientId: randomUUID() };
    const ids = await Promise.all(Array.from({ length: 5 }, (_, i) => inTenant(k.ctx, tenantA, (t) => insertRow(k.ctx, t, column, patient, `visit ${i}`))));
    const [count] = await k.sql<{ n: string }>("SELECT count(*) AS n FROM keystore.data_keys WHERE key_id = $1", [`patient/${patient.patientId}`]);
    expect(Number(count!.n)).toBe(1);
    k.ctx.rootKey.evictDataKeys(() => true);
    const back = await inTenant(k.ctx, tenantA, (t) => Promise.all(ids.map((id) => readRow(k.ctx, t, column, tenantA, id))));
    expect(back.sort()).toEqual(["visit 0", "visit 1", "visit 2", "visit 3", "visit 4"]);
  });

  it("never caches a key whose creating transaction rolled back", async () => {
    const patient = { kind: "patient" as const, tenantId: tenantA, patientId: randomUUID() };
    await expect(
      inTenant(k.ctx, tenantA, async (t) => {
        await insertRow(k.ctx, t, column, patient, "rolled back");
        throw new Error("abort");
      }),
    ).rejects.toThrow("abort");
    const id = await inTenant(k.ctx, tenantA, (t) => insertRow(k.ctx, t, column, patient, "committed"));
    expect(await inTenant(k.ctx, tenantA, (t) => readRow(k.ctx, t, column, tenantA, id))).toBe("committed");
  });

  it("makes blind indexes that match within a tenant and column, differ across tenants, and survive rotation", async () => {
    const at = (tenantId: string, value: string, col = "mrn") => inTenant(k.ctx, tenantId, (t) => blindIndexFor(k.ctx, t, { tenantId, table: "patients", column: col }, value));
    const first = await at(tenantA, "MRN-00042");
    expect(first).toMatch(/^[0-9a-f]{64}$/);
    expect(await at(tenantA, " MRN-00042 ")).toBe(first);
    expect(await at(tenantB, "MRN-00042")).not.toBe(first);
    expect(await at(tenantA, "MRN-00042", "email")).not.toBe(first);
    await rotateDataKey(k.ctx, `tenant/${tenantA}`);
    expect(await at(tenantA, "MRN-00042")).toBe(first);
    await expect(rotateDataKey(k.ctx, `index/${tenantA}`)).rejects.toThrow(/blind-index keys are not rotated/);
  });

  it("rotates a data key by itself before its nonce budget is spent, and persists the counts", async () => {
    const tenant = randomUUID();
    const subject = { kind: "tenant" as const, tenantId: tenant };
    const keyId = `tenant/${tenant}`;
    for (let i = 0; i < 6; i++) {
      await inTenant(k.ctx, tenant, async (t) => {
        for (let j = 0; j < 5; j++) await insertRow(k.ctx, t, column, subject, `n${i}.${j}`);
      });
    }
    // Rotation runs after the commit that spent the budget (25): wait for it.
    await expect.poll(async () => (await dataKeyVersions(keyId)).active, { timeout: 5000 }).toBe(2);
    await flushNonceCounts(k.ctx);
    const versions = await dataKeyVersions(keyId);
    expect(versions.counts[1]).toBeGreaterThanOrEqual(25);
    const [rotation] = await k.sql<{ reason: string }>("SELECT reason FROM keystore.rotations WHERE key_id = $1", [keyId]);
    expect(rotation?.reason).toBe("nonce-budget");
    const written = await inTenant(k.ctx, tenant, (t) => dataKeyFor(k.ctx, t, subject));
    expect(written.version).toBe(2);
  });
});

async function dataKeyVersions(keyId: string) {
  const rows = await k.sql<{ version: number; state: string; nonce_count: string }>("SELECT version, state, nonce_count FROM keystore.data_keys WHERE key_id = $1", [keyId]);
  return { active: rows.find((r) => r.state === "active")?.version, counts: Object.fromEntries(rows.map((r) => [r.version, Number(r.nonce_count)])) as Record<number, number> };
}

describe("KEK rotation", () => {
  it("rewraps every data key under the new KEK, retires the old one, and keeps old data readable", async () => {
    const subject = { kind: "tenant" as const, tenantId: tenantA };
    const id = await inTenant(k.ctx, tenantA, (t) => insertRow(k.ctx, t, column, subject, "before KEK rotation"));
    const { from, to } = await rotateKek(k.ctx);
    expect(to).toBe(from + 1);
    const newPatient = { kind: "patient" as const, tenantId: tenantA, patientId: randomUUID() };
    await inTenant(k.ctx, tenantA, (t) => insertRow(k.ctx, t, column, newPatient, "after"));
    const [wrappedNew] = await k.sql<{ kek_version: number }>("SELECT kek_version FROM keystore.data_keys WHERE key_id = $1", [`patient/${newPatient.patientId}`]);
    expect(wrappedNew!.kek_version).toBe(to);

    const result = await rewrapPending(k.ctx, { batchSize: 7 });
    expect(result.remaining).toBe(false);
    expect(result.retired).toEqual([from]);
    const [left] = await k.sql<{ n: string }>("SELECT count(*) AS n FROM keystore.data_keys WHERE kek_version <> $1", [to]);
    expect(Number(left!.n)).toBe(0);
    expect(k.ctx.rootKey.kek(from)).toBeUndefined();

    // A replica unsealed afterwards knows only the new KEK and reads everything.
    const replica = await keysContext({ db: k.db, dataDir: k.dataDir });
    try {
      await unsealAtStart(replica.ctx);
      expect(replica.ctx.rootKey.kekVersions()).toEqual([to]);
      expect(await inTenant(replica.ctx, tenantA, (t) => readRow(replica.ctx, t, column, tenantA, id))).toBe("before KEK rotation");
    } finally {
      await replica.close();
    }
  });
});

describe("the barrier", () => {
  it("keeps at most keys.dataKeyCacheSize unwrapped data keys and zeroes the ones it drops", async () => {
    const first = { kind: "patient" as const, tenantId: tenantA, patientId: randomUUID() };
    await inTenant(k.ctx, tenantA, (t) => insertRow(k.ctx, t, column, first, "x"));
    const held = k.ctx.rootKey.cachedDataKey(`patient/${first.patientId}#1`)!;
    expect(held.equals(Buffer.alloc(32))).toBe(false);
    for (let i = 0; i < 30; i++) await inTenant(k.ctx, tenantA, (t) => insertRow(k.ctx, t, column, { kind: "patient", tenantId: tenantA, patientId: randomUUID() }, "y"));
    expect(k.ctx.rootKey.cachedDataKeyCount).toBeLessThanOrEqual(16);
    expect(held.equals(Buffer.alloc(32))).toBe(true);
  });

  it("zeroes every key on seal and answers 503 Sealed until unsealed again", async () => {
    const held =
      k.ctx.rootKey.cachedDataKey(`tenant/${tenantA}#2`) ??
      (await inTenant(k.ctx, tenantA, (t) => dataKeyFor(k.ctx, t, { kind: "tenant", tenantId: tenantA })), k.ctx.rootKey.cachedDataKey(`tenant/${tenantA}#2`)!);
    const kek = k.ctx.rootKey.kek(k.ctx.rootKey.kekVersions()[0]!)!;
    const internal = k.ctx.rootKey.material();
    k.ctx.rootKey.seal("test");
    for (const b of [held, kek, internal]) expect(b.equals(Buffer.alloc(b.length))).toBe(true);
    expect(k.ctx.rootKey.cachedDataKeyCount).toBe(0);
    const err = await expectRejects(
      inTenant(k.ctx, tenantA, (t) => encryptFieldValue(k.ctx, t, { kind: "tenant", tenantId: tenantA }, fieldOf(column, tenantA, randomUUID()), "x")),
    );
    expect(err).toBeInstanceOf(Sealed);
    expect(() => k.ctx.rootKey.material()).toThrow(Sealed);
    await unsealAtStart(k.ctx);
    expect(k.ctx.rootKey.isSealed).toBe(false);
  });
});

describe("audit checkpoint signing key", () => {
  it("is an Ed25519 pair made on first use, rotatable, with old public halves kept for verification", async () => {
    const key = await getAuditSigningKey(k.ctx);
    expect(key.privateKey.asymmetricKeyType).toBe("ed25519");
    const signature = sign(null, Buffer.from("checkpoint"), key.privateKey);
    expect(verify(null, Buffer.from("checkpoint"), key.publicKey, signature)).toBe(true);
    expect((await getAuditSigningKey(k.ctx)).publicKeyDer).toBe(key.publicKeyDer);
    await rotateDataKey(k.ctx, "audit-signing");
    const next = await getAuditSigningKey(k.ctx);
    expect(next.version).toBe(key.version + 1);
    expect(next.publicKeyDer).not.toBe(key.publicKeyDer);
    const listed = await listAuditVerificationKeys(k.ctx);
    expect(listed.map((l) => l.publicKeyDer)).toEqual([key.publicKeyDer, next.publicKeyDer]);
    expect(listed.map((l) => l.authenticated)).toEqual([true, true]); // proven by their unwrapped private halves
    expect(verify(null, Buffer.from("checkpoint"), listed[0]!.publicKey, signature)).toBe(true);
  });
});

describe("recovery key pair", () => {
  it("wraps a snapshot key with the public half that only the kit's private half unwraps", async () => {
    const { publicKey, fingerprint } = await currentRecoveryPublicKey(k.ctx);
    expect(fingerprint).toMatch(/^([0-9a-f]{4}:){7}[0-9a-f]{4}$/);
    const snapshotKey = Buffer.alloc(32, 7);
    const blob = wrapForRecovery(publicKey, snapshotKey);

    const dir = tempDir("wardkeep-kit-");
    const kit = await issueRecoveryKit(k.ctx, { out: path.join(dir, "recovery-kit.txt") });
    expect(kit.fingerprint).toBe(fingerprint);
    expect(fs.statSync(kit.files[0]!).mode & 0o777).toBe(0o600);
    const privateKey = await loadRecoveryPrivateKey({ pem: fs.readFileSync(kit.files[0]!, "utf8") });
    expect(unwrapWithRecovery(privateKey, blob)).toEqual(snapshotKey);
    const [row] = await k.sql<{ wrapped_private: Buffer | null }>("SELECT wrapped_private FROM keystore.recovery_keys WHERE state = 'active'");
    expect(row!.wrapped_private).toBeNull();

    await expect(issueRecoveryKit(k.ctx, { out: path.join(dir, "again.txt") })).rejects.toThrow(/already written .* --reissue/);
    expect(fs.existsSync(path.join(dir, "again.txt"))).toBe(false);
  });

  it("reissues a new pair on request, Shamir-split, and the old kit no longer matches new wraps", async () => {
    const dir = tempDir("wardkeep-kit-");
    const before = await currentRecoveryPublicKey(k.ctx);
    const kit = await issueRecoveryKit(k.ctx, { out: path.join(dir, "kit.txt"), reissue: true, shares: 3, threshold: 2 });
    expect(kit.reissued).toBe(true);
    expect(kit.fingerprint).not.toBe(before.fingerprint);
    expect(kit.files).toHaveLength(4);
    const after = await currentRecoveryPublicKey(k.ctx);
    expect(after.fingerprint).toBe(kit.fingerprint);
    const blob = wrapForRecovery(after.publicKey, Buffer.from("snapshot key 2"));
    const twoShares = [kit.files[1]!, kit.files[3]!].map((f) => fs.readFileSync(f, "utf8"));
    const privateKey = await loadRecoveryPrivateKey({ shares: twoShares });
    expect(unwrapWithRecovery(privateKey, blob).toString()).toBe("snapshot key 2");
    await expect(loadRecoveryPrivateKey({ shares: twoShares.slice(0, 1) })).rejects.toThrow(/need 2 shares/);
  });
});

describe("crypto-shredding", () => {
  it("destroys a deleted patient's keys after the grace period; decryption then fails with a clear error", async () => {
    const patient = { kind: "patient" as const, tenantId: tenantA, patientId: randomUUID() };
    const id = await inTenant(k.ctx, tenantA, (t) => insertRow(k.ctx, t, column, patient, "to be erased"));
    const schedule = await scheduleShred(k.ctx, patient);
    expect(schedule.destroyAfter.getTime() - clock.now().getTime()).toBe(30 * 86_400_000);
    expect((await destroyDueKeys(k.ctx)).destroyed).toEqual([]);
    expect(await inTenant(k.ctx, tenantA, (t) => readRow(k.ctx, t, column, tenantA, id))).toBe("to be erased");

    clock.advance(30 * 86_400_000 + 1000);
    expect((await destroyDueKeys(k.ctx)).destroyed).toEqual([{ subject: `patient/${patient.patientId}`, keyVersions: 1 }]);
    const err = await expectRejects(inTenant(k.ctx, tenantA, (t) => readRow(k.ctx, t, column, tenantA, id)));
    expect(err).toBeInstanceOf(KeyDestroyed);
    expect(err.message).toMatch(/was destroyed \(crypto-shredded\) on \d{4}-\d{2}-\d{2}; data encrypted with it can no longer be decrypted by anyone/);
    // A write for the shredded patient does not quietly make a fresh key.
    expect(await expectRejects(inTenant(k.ctx, tenantA, (t) => insertRow(k.ctx, t, column, patient, "new data")))).toBeInstanceOf(KeyDestroyed);
    await expect(cancelShred(k.ctx, patient)).rejects.toThrow(/too late/);
  });

  it("can be cancelled while the grace period runs", async () => {
    const patient = { kind: "patient" as const, tenantId: tenantA, patientId: randomUUID() };
    const id = await inTenant(k.ctx, tenantA, (t) => insertRow(k.ctx, t, column, patient, "kept after all"));
    await scheduleShred(k.ctx, patient);
    expect((await listShredSchedule(k.ctx)).map((s) => s.subject)).toContain(`patient/${patient.patientId}`);
    await cancelShred(k.ctx, patient);
    clock.advance(31 * 86_400_000);
    await destroyDueKeys(k.ctx);
    expect(await inTenant(k.ctx, tenantA, (t) => readRow(k.ctx, t, column, tenantA, id))).toBe("kept after all");
    await expect(cancelShred(k.ctx, patient)).rejects.toThrow(/no crypto-shredding is scheduled/);
  });

  it("destroys a tenant's keys with its patients' keys, and a restored key store gets them destroyed again", async () => {
    const tenant = randomUUID();
    const patient = { kind: "patient" as const, tenantId: tenant, patientId: randomUUID() };
    const [tid, pid] = await inTenant(k.ctx, tenant, async (t) => [
      await insertRow(k.ctx, t, column, { kind: "tenant", tenantId: tenant }, "tenant data"),
      await insertRow(k.ctx, t, column, patient, "patient data"),
    ]);
    const [saved] = await k.sql<{ rows: unknown }>("SELECT json_agg(d) AS rows FROM keystore.data_keys d WHERE tenant_id = $1", [tenant]);
    await scheduleShred(k.ctx, { kind: "tenant", tenantId: tenant });
    clock.advance(30 * 86_400_000 + 1000);
    const { destroyed } = await destroyDueKeys(k.ctx);
    expect(destroyed).toEqual([{ subject: `tenant/${tenant}`, keyVersions: 2 }]);
    for (const id of [tid!, pid!]) expect(await expectRejects(inTenant(k.ctx, tenant, (t) => readRow(k.ctx, t, column, tenant, id)))).toBeInstanceOf(KeyDestroyed);

    // An old key store backup restored: the destroyed keys are back until the list is re-applied.
    await k.sql("INSERT INTO keystore.data_keys SELECT * FROM json_populate_recordset(NULL::keystore.data_keys, $1::json)", [JSON.stringify(saved!.rows)]);
    const outcome = await reapplyShredList(k.ctx);
    expect(outcome.reapplied).toBe(2);
    expect(outcome.subjects.map((s) => s.subject)).toEqual(expect.arrayContaining([`tenant/${tenant}`, `patient/${patient.patientId}`]));
    const [left] = await k.sql<{ n: string }>("SELECT count(*) AS n FROM keystore.data_keys WHERE tenant_id = $1", [tenant]);
    expect(Number(left!.n)).toBe(0);
  });

  it("keeps the key store out of data snapshots by schema name", () => {
    expect(SNAPSHOT_EXCLUDED_SCHEMAS).toEqual(["keystore"]);
    expect(Object.isFrozen(SNAPSHOT_EXCLUDED_SCHEMAS)).toBe(true);
  });
});

describe("status", () => {
  it("reports versions, what each key protects and rotation progress, never key material", async () => {
    await flushNonceCounts(k.ctx);
    const status = await describeKeys(k.ctx);
    expect(status.seal).toMatchObject({ sealed: false, mode: "keyfile", initialised: true });
    expect(status.kek.versions).toEqual([expect.objectContaining({ version: 2, state: "active" })]);
    const a = status.tenants.find((t) => t.tenantId === tenantA)!;
    expect(a.versions.map((v) => [v.version, v.state])).toEqual([
      [1, "retired"],
      [2, "active"],
    ]);
    const counted = await storedVersions(k, "kr_records");
    expect(a.versions[0]!.values).toBeGreaterThan(0);
    expect(a.patientKeys).toBeGreaterThan(10);
    expect([...counted.values()].reduce((x, y) => x + y, 0)).toBeGreaterThan(0);
    expect(status.applianceKeys.map((x) => x.keyId)).toEqual(expect.arrayContaining(["appliance-internal", "audit-signing"]));
    expect(status.rotations.some((r) => r.target === "kek" && r.completedAt)).toBe(true);
    expect(status.recovery?.issuedAt).toBeTruthy();
    expect(status.encryptedColumns).toContainEqual({ table: "kr_records", column: "secret", subject: "tenant" });
    const text = JSON.stringify(status);
    for (const v of k.ctx.rootKey.kekVersions()) expect(text).not.toContain(k.ctx.rootKey.kek(v)!.toString("hex"));
    expect(text).not.toContain(k.ctx.rootKey.material().toString("base64"));
  });
});
