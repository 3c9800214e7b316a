import { generateKeyPairSync, sign } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { appendAuditEvent } from "../../../daemon/audit/append.js";
import { chainHash } from "../../../daemon/audit/canonical.js";
import { chainPendingEvents, readChainHead } from "../../../daemon/audit/chainer.js";
import { checkpointMessage, periodicCheckpoint, signCheckpoint } from "../../../daemon/audit/checkpoints.js";
import { rotateDataKey } from "../../../daemon/keys/index.js";
import { RootKey } from "../../../daemon/keys/root-key.js";
import { auditKeyId, describeCheckpointKeys, pinAuditPublicKey, rawPublicKey } from "../../../daemon/audit/signing-key.js";
import { verifyAuditChain } from "../../../daemon/audit/verify.js";
import { inScope } from "../../../daemon/db/sql.js";
import { auditTestContext, legacyAuditSigningKey, type AuditTestContext } from "./context.js";

let t: AuditTestContext;
let su: pg.Client;

/** Tampering as an attacker with superuser rights does it: triggers off for the session. */
async function tamper(sql: string, params: unknown[] = []) {
  await su.query("SET session_replication_role = replica");
  try {
    await su.query(sql, params);
  } finally {
    await su.query("SET session_replication_role = DEFAULT");
  }
}

async function freshChain(events: number) {
  await tamper("TRUNCATE audit_events, audit_checkpoints, audit_segment_anchors, audit_intake");
  await tamper("UPDATE audit_chain_head SET seq = 0, hash = decode(repeat('00', 32), 'hex')");
  for (let i = 1; i <= events; i++) {
    await inScope(t.ctx.db.app, { kind: "appliance" }, (transaction) =>
      appendAuditEvent(t.ctx, transaction, {
        tenantId: null,
        actor: { userId: `user-${i % 3}`, role: "admin" },
        action: "record.read",
        resourceType: "record",
        resourceId: `r-${i}`,
        outcome: "success",
      }),
    );
    if (i % 7 === 0) await chainPendingEvents(t.ctx); // several chainer batches
  }
  await chainPendingEvents(t.ctx);
}

beforeAll(async () => {
  t = await auditTestContext();
  su = new pg.Client({ connectionString: t.db.superuserUrl });
  await su.connect();
});
afterAll(async () => {
  await su?.end();
  await t?.close();
});
beforeEach(async () => {
  await freshChain(40);
});

describe("verifying the chain", () => {
  it("reports an untouched chain as intact up to its head", async () => {
    await signCheckpoint(t.ctx, { seq: "20", hash: (await hashAt(20))! }, "manual");
    const head = await readChainHead(t.ctx);
    const report = await verifyAuditChain(t.ctx);
    expect(report.intact).toBe(true);
    expect(report.lastGoodSeq).toBe("40");
    expect(report.head).toBe(head.hash);
    expect(report.verified).toBe("40");
    expect(report.checkpoints).toMatchObject({ total: 1, verified: 1, lastSignedSeq: "20" });
    expect(report.summary).toBe(`intact up to seq 40, head ${head.hash}`);
  });

  it("names the seq of an event whose content was edited", async () => {
    await tamper(`UPDATE audit_events SET canonical = replace(canonical, '"outcome":"success"', '"outcome":"denied"') WHERE seq = 17`);
    const report = await verifyAuditChain(t.ctx);
    expect(report.intact).toBe(false);
    expect(report.break).toMatchObject({ seq: "17", reason: "changed" });
    expect(report.lastGoodSeq).toBe("16");
    expect(report.head).toBe(await hashAt(16));
  });

  it("names the seq of a deleted event as missing", async () => {
    await tamper("DELETE FROM audit_events WHERE seq = 23");
    const report = await verifyAuditChain(t.ctx);
    expect(report.break).toMatchObject({ seq: "23", reason: "missing" });
    expect(report.lastGoodSeq).toBe("22");
  });

  it("detects a deleted last event against the recorded chain head", async () => {
    await tamper("DELETE FROM audit_events WHERE seq = 40");
    const report = await verifyAuditChain(t.ctx);
    expect(report.break).toMatchObject({ seq: "40", reason: "missing" });
  });

  it("names the first of two swapped events as reordered", async () => {
    await tamper("UPDATE audit_events SET seq = 1000000 WHERE seq = 10");
    await tamper("UPDATE audit_events SET seq = 10 WHERE seq = 11");
    await tamper("UPDATE audit_events SET seq = 11 WHERE seq = 1000000");
    const report = await verifyAuditChain(t.ctx);
    expect(report.break).toMatchObject({ seq: "10", reason: "reordered" });
    expect(report.break!.detail).toContain("recorded as seq 11");
  });

  it("detects swapped events whose content was also renumbered to fit", async () => {
    type R = { canonical: string; prev_hash: Buffer; hash: Buffer };
    const [a, b] = (await su.query<R>("SELECT canonical, prev_hash, hash FROM audit_events WHERE seq IN (30, 31) ORDER BY seq")).rows;
    const renumber = (c: string, to: number) => c.replace(/^\{"v":1,"seq":\d+,/, `{"v":1,"seq":${to},`);
    const put = (r: R, seq: number) =>
      tamper("UPDATE audit_events SET canonical = $1, prev_hash = $2, hash = $3 WHERE seq = $4", [renumber(r.canonical, seq), r.prev_hash, r.hash, seq]);
    await put(b!, 30);
    await put(a!, 31);
    const report = await verifyAuditChain(t.ctx);
    expect(report.break).toMatchObject({ seq: "30", reason: "reordered" });
  });

  it("detects a tenant column changed behind the canonical event's back", async () => {
    await tamper("UPDATE audit_events SET tenant_id = gen_random_uuid() WHERE seq = 5");
    const report = await verifyAuditChain(t.ctx);
    expect(report.break).toMatchObject({ seq: "5", reason: "changed" });
  });

  it("detects a patient column changed so that searches would show the wrong patient", async () => {
    await tamper("UPDATE audit_events SET patient_id = 'someone-else' WHERE seq = 8");
    const report = await verifyAuditChain(t.ctx);
    expect(report.break).toMatchObject({ seq: "8", reason: "changed" });
  });

  it("detects an edit hidden by recomputing every later hash, at the signed checkpoint", async () => {
    await signCheckpoint(t.ctx, { seq: "25", hash: (await hashAt(25))! }, "periodic");
    // The attacker edits seq 12 and re-chains 12..40 so every link and hash is consistent again.
    const rows = (await su.query<{ seq: string; canonical: string }>("SELECT seq::text, canonical FROM audit_events WHERE seq >= 12 ORDER BY seq")).rows;
    let prev = (await hashAt(11))!;
    for (const r of rows) {
      const canonical = r.seq === "12" ? r.canonical.replace('"outcome":"success"', '"outcome":"failure"') : r.canonical;
      const hash = chainHash(prev, canonical);
      await tamper("UPDATE audit_events SET canonical = $1, prev_hash = decode($2, 'hex'), hash = decode($3, 'hex') WHERE seq = $4", [canonical, prev, hash, r.seq]);
      prev = hash;
    }
    await tamper("UPDATE audit_chain_head SET hash = decode($1, 'hex')", [prev]);
    const report = await verifyAuditChain(t.ctx);
    expect(report.break).toMatchObject({ seq: "25", reason: "checkpoint-mismatch" });
  });

  it("rejects a checkpoint forged with another key, at its seq", async () => {
    const { privateKey, publicKey } = generateKeyPairSync("ed25519");
    const raw = rawPublicKey(publicKey);
    const forged = { seq: "30", headHash: (await hashAt(30))!, signedAt: new Date().toISOString(), keyId: auditKeyId(raw) };
    const signature = sign(null, Buffer.from(checkpointMessage(forged)), privateKey);
    await su.query("INSERT INTO audit_checkpoints (seq, head_hash, signed_at, key_id, public_key, signature, purpose) VALUES ($1, decode($2, 'hex'), $3, $4, $5, $6, 'manual')", [
      forged.seq,
      forged.headHash,
      forged.signedAt,
      forged.keyId,
      raw,
      signature,
    ]);
    const report = await verifyAuditChain(t.ctx);
    expect(report.break).toMatchObject({ seq: "30", reason: "bad-checkpoint-signature" });
    expect(report.break!.detail).toContain("unknown key");
    expect(report.lastGoodSeq).toBe("29");
  });

  it("rejects a checkpoint whose signature was altered, at its seq", async () => {
    const cp = await signCheckpoint(t.ctx, { seq: "33", hash: (await hashAt(33))! }, "manual");
    await tamper("UPDATE audit_checkpoints SET signed_at = signed_at + interval '1 day' WHERE id = $1", [cp.id]);
    const report = await verifyAuditChain(t.ctx);
    expect(report.break).toMatchObject({ seq: "33", reason: "bad-checkpoint-signature" });
    expect(report.break!.detail).toContain("does not verify");
  });
});

describe("checkpoints and trusted keys", () => {
  it("signs the head periodically only when events arrived since the last checkpoint", async () => {
    const first = await periodicCheckpoint(t.ctx);
    expect(first).toMatchObject({ seq: "40", purpose: "periodic" });
    expect(await periodicCheckpoint(t.ctx)).toBeUndefined();
    await inScope(t.ctx.db.app, { kind: "appliance" }, (transaction) =>
      appendAuditEvent(t.ctx, transaction, { tenantId: null, actor: { userId: "u", role: "admin" }, action: "record.read", resourceType: "record", outcome: "success" }),
    );
    expect(await periodicCheckpoint(t.ctx)).toMatchObject({ seq: "41" });
    expect(await periodicCheckpoint({ ...t.ctx, rootKey: new RootKey("keyfile") })).toBeUndefined(); // sealed: no key, no checkpoint
  });

  it("checks signatures against the key pinned on disk while sealed, and catches a forgery with it", async () => {
    await pinAuditPublicKey(t.ctx);
    await signCheckpoint(t.ctx, { seq: "12", hash: (await hashAt(12))! }, "manual");
    const sealed = { ...t.ctx, rootKey: new RootKey("keyfile") };
    expect(await verifyAuditChain(sealed)).toMatchObject({ intact: true, keyTrust: "pinned", checkpoints: { total: 1, verified: 1 } });
    // A forger who also replaces the public key stored in the row is still caught by the pinned key.
    const { privateKey, publicKey } = generateKeyPairSync("ed25519");
    const own = (await su.query<{ key_id: string }>("SELECT key_id FROM audit_checkpoints LIMIT 1")).rows[0]!.key_id;
    const forged = { seq: "20", headHash: (await hashAt(20))!, signedAt: new Date().toISOString(), keyId: own };
    await su.query("INSERT INTO audit_checkpoints (seq, head_hash, signed_at, key_id, public_key, signature, purpose) VALUES ($1, decode($2, 'hex'), $3, $4, $5, $6, 'manual')", [
      forged.seq,
      forged.headHash,
      forged.signedAt,
      forged.keyId,
      rawPublicKey(publicKey),
      sign(null, Buffer.from(checkpointMessage(forged)), privateKey),
    ]);
    expect((await verifyAuditChain(sealed)).break).toMatchObject({ seq: "20", reason: "bad-checkpoint-signature" });
  });
});

describe("the keyring's audit signing key", () => {
  it("verifies checkpoints made before and after a rotation of the signing key, unsealed and sealed", async () => {
    await pinAuditPublicKey(t.ctx);
    const before = await signCheckpoint(t.ctx, { seq: "10", hash: (await hashAt(10))! }, "manual");
    const rotated = await rotateDataKey(t.ctx, "audit-signing");
    const after = await signCheckpoint(t.ctx, { seq: "30", hash: (await hashAt(30))! }, "manual");
    expect(after.keyId).not.toBe(before.keyId);
    const shown = await describeCheckpointKeys(t.ctx);
    expect(shown).toMatchObject({ keyId: after.keyId, keyringVersion: rotated.to, legacy: false });
    expect(shown.verificationKeys).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ keyId: before.keyId, keyringVersion: rotated.from, legacy: false, retiredAt: expect.any(String) }),
        expect.objectContaining({ keyId: after.keyId, keyringVersion: rotated.to, retiredAt: null }),
      ]),
    );

    const report = await verifyAuditChain(t.ctx);
    expect(report).toMatchObject({ intact: true, keyTrust: "keyring", checkpoints: { total: 2, verified: 2, lastSignedSeq: "30" } });
    expect(report.keyIds.sort()).toEqual([before.keyId, after.keyId].sort());
    // The new key was pinned before its first checkpoint was stored, with no daemon start between.
    const sealed = { ...t.ctx, rootKey: new RootKey("keyfile") };
    expect(await verifyAuditChain(sealed)).toMatchObject({ intact: true, keyTrust: "pinned", checkpoints: { total: 2, verified: 2 } });
  });

  it("still verifies checkpoints signed with the legacy key derived from the appliance secret", async () => {
    const legacy = legacyAuditSigningKey(t.ctx);
    const raw = rawPublicKey(legacy.publicKey);
    const old = { seq: "15", headHash: (await hashAt(15))!, signedAt: "2024-05-01T10:00:00.000Z", keyId: auditKeyId(raw) };
    await su.query("INSERT INTO audit_checkpoints (seq, head_hash, signed_at, key_id, public_key, signature, purpose) VALUES ($1, decode($2, 'hex'), $3, $4, $5, $6, 'periodic')", [
      old.seq,
      old.headHash,
      old.signedAt,
      old.keyId,
      raw,
      sign(null, Buffer.from(checkpointMessage(old)), legacy.privateKey),
    ]);
    const now = await signCheckpoint(t.ctx, { seq: "35", hash: (await hashAt(35))! }, "manual");
    expect(now.keyId).not.toBe(old.keyId); // new checkpoints use the keyring's key, never the legacy one
    expect(await verifyAuditChain(t.ctx)).toMatchObject({ intact: true, checkpoints: { total: 2, verified: 2 } });
    const shown = await describeCheckpointKeys(t.ctx);
    expect(shown.verificationKeys).toContainEqual(expect.objectContaining({ keyId: old.keyId, legacy: true, keyringVersion: null }));
    // Sealed: the legacy key is among the pinned ones (earlier versions pinned it; so does this one).
    await pinAuditPublicKey(t.ctx);
    expect(await verifyAuditChain({ ...t.ctx, rootKey: new RootKey("keyfile") })).toMatchObject({ intact: true, keyTrust: "pinned", checkpoints: { verified: 2 } });
  });

  it("does not trust a signing key version added to the key store by someone with database access", async () => {
    const { privateKey, publicKey } = generateKeyPairSync("ed25519");
    const [current] = (
      await su.query<{ version: number; wrapped: Buffer; kek_version: number }>(
        "SELECT version, wrapped, kek_version FROM keystore.data_keys WHERE key_id = 'audit-signing' ORDER BY version DESC LIMIT 1",
      )
    ).rows;
    // A plausible retired version: a real wrapped blob (bound to another version, so it cannot unwrap) and the attacker's public key.
    await su.query(
      "INSERT INTO keystore.data_keys (key_id, version, kind, wrapped, kek_version, public_key, state, retired_at) VALUES ('audit-signing', 1000, 'audit-signing', $1, $2, $3, 'retired', now())",
      [current!.wrapped, current!.kek_version, publicKey.export({ format: "der", type: "spki" })],
    );
    try {
      const raw = rawPublicKey(publicKey);
      const forged = { seq: "27", headHash: (await hashAt(27))!, signedAt: new Date().toISOString(), keyId: auditKeyId(raw) };
      await su.query("INSERT INTO audit_checkpoints (seq, head_hash, signed_at, key_id, public_key, signature, purpose) VALUES ($1, decode($2, 'hex'), $3, $4, $5, $6, 'manual')", [
        forged.seq,
        forged.headHash,
        forged.signedAt,
        forged.keyId,
        raw,
        sign(null, Buffer.from(checkpointMessage(forged)), privateKey),
      ]);
      const report = await verifyAuditChain(t.ctx);
      expect(report.break).toMatchObject({ seq: "27", reason: "bad-checkpoint-signature" });
      expect(report.break!.detail).toContain(`unknown key ${forged.keyId}`);
      expect(t.logLines.some((l) => l.includes("does not unwrap under the KEK"))).toBe(true);
    } finally {
      await tamper("DELETE FROM keystore.data_keys WHERE key_id = 'audit-signing' AND version = 1000");
    }
  });
});

async function hashAt(seq: number): Promise<string | undefined> {
  return (await su.query<{ h: string }>("SELECT encode(hash, 'hex') AS h FROM audit_events WHERE seq = $1", [seq])).rows[0]?.h;
}
