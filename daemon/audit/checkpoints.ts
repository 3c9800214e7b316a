import type { ApplianceContext } from "../context.js";
import { chainPendingEvents, readChainHead } from "./chainer.js";
import { checkpointSigningKey, pinSigningKey, signMessage } from "./signing-key.js";

/**
 * Signed checkpoints: the chain head (seq, hash) signed with Ed25519, so that rewriting the
 * chain — even recomputing every hash after an edit — is detectable by anyone holding the public
 * key. The signed message is plain text (docs/audit-format.md) so `openssl pkeyutl -verify
 * -rawin` checks it. Signed with the keyring's current audit key (./signing-key.ts).
 */
export type CheckpointPurpose = "periodic" | "export" | "retention" | "manual";

export type Checkpoint = {
  id: string;
  seq: string;
  headHash: string;
  signedAt: string;
  /** Fingerprint of the signing key (`auditKeyId`). */
  keyId: string;
  publicKey: string; // base64 raw Ed25519
  signature: string; // base64
  purpose: CheckpointPurpose;
};

export function checkpointMessage(c: { seq: string; headHash: string; signedAt: string; keyId: string }): string {
  return `wardkeep-audit-checkpoint v1\nseq=${c.seq}\nhash=${c.headHash}\nsigned_at=${c.signedAt}\nkey_id=${c.keyId}\n`;
}

/** Signs a given link of the chain (seq and its hash) — the head, or a segment's last event. */
export async function signCheckpoint(ctx: ApplianceContext, at: { seq: string; hash: string }, purpose: CheckpointPurpose): Promise<Checkpoint> {
  const key = await checkpointSigningKey(ctx);
  pinSigningKey(ctx, key);
  const signedAt = ctx.clock.now().toISOString();
  const message = checkpointMessage({ seq: at.seq, headHash: at.hash, signedAt, keyId: key.keyId });
  const signature = signMessage(key, message);
  const rows = await ctx.db.app.rows<{ id: string }>(
    `INSERT INTO audit_checkpoints (seq, head_hash, signed_at, key_id, public_key, signature, purpose)
     VALUES ($1, decode($2, 'hex'), $3, $4, $5, $6, $7) RETURNING id::text AS id`,
    [at.seq, at.hash, signedAt, key.keyId, key.publicKeyRaw, signature, purpose],
  );
  return {
    id: rows[0]!.id,
    seq: at.seq,
    headHash: at.hash,
    signedAt,
    keyId: key.keyId,
    publicKey: key.publicKeyRaw.toString("base64"),
    signature: signature.toString("base64"),
    purpose,
  };
}

/** Chains what is pending, then signs the head. */
export async function checkpointHead(ctx: ApplianceContext, purpose: CheckpointPurpose): Promise<Checkpoint> {
  await chainPendingEvents(ctx, { wait: true });
  const head = await readChainHead(ctx);
  return signCheckpoint(ctx, { seq: head.seq, hash: head.hash }, purpose);
}

const CHECKPOINT_COLUMNS = `id::text AS id, seq::text AS seq, encode(head_hash, 'hex') AS "headHash",
  to_char(signed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS "signedAt", key_id AS "keyId",
  encode(public_key, 'base64') AS "publicKey", replace(encode(signature, 'base64'), E'\n', '') AS signature, purpose`;

export async function listCheckpoints(ctx: ApplianceContext, range: { fromSeq?: string; toSeq?: string } = {}): Promise<Checkpoint[]> {
  return ctx.db.app.rows<Checkpoint>(
    `SELECT ${CHECKPOINT_COLUMNS} FROM audit_checkpoints
      WHERE ($1::bigint IS NULL OR seq >= $1) AND ($2::bigint IS NULL OR seq <= $2) ORDER BY audit_checkpoints.seq, audit_checkpoints.id`,
    [range.fromSeq ?? null, range.toSeq ?? null],
  );
}

const CHECKPOINT_LOCK = 7_305_001;

/**
 * The periodic checkpoint: one replica (advisory lock) signs the head when events arrived since
 * the last checkpoint. Sealed appliances skip it (the key is unavailable) and try next time.
 */
export async function periodicCheckpoint(ctx: ApplianceContext): Promise<Checkpoint | undefined> {
  if (ctx.rootKey.isSealed) return undefined;
  return ctx.db.app.transaction(async (transaction) => {
    const [lock] = await transaction.rows<{ ok: boolean }>("SELECT pg_try_advisory_xact_lock($1) AS ok", [CHECKPOINT_LOCK]);
    if (!lock?.ok) return undefined;
    await chainPendingEvents(ctx, { wait: true });
    const head = await readChainHead(ctx);
    const [last] = await transaction.rows<{ seq: string | null }>("SELECT max(seq)::text AS seq FROM audit_checkpoints");
    if (head.seq === "0" || (last?.seq !== null && last?.seq !== undefined && BigInt(last.seq) >= BigInt(head.seq))) return undefined;
    return signCheckpoint(ctx, { seq: head.seq, hash: head.hash }, "periodic");
  });
}
