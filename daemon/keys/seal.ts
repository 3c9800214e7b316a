/**
 * The seal: creating the key store's root (initialise), recovering it (open), changing how it
 * is unsealed (rekey), and loading KEK versions. docs/keys.md has the hierarchy.
 */
import { randomBytes } from "node:crypto";
import type { Tx } from "../db/sql.js";
import { inDataDir } from "../config/load.js";
import type { Config } from "../config/schema.js";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/sql.js";
import { Conflict } from "../kernel/errors.js";
import { DecryptionError, zeroize } from "./primitives.js";
import { recordKeyEvent, SYSTEM_OPERATOR, type KeyOperator } from "../audit/append.js";
import { generateRecoveryKeyPair, rawPrivateKey, rawPublicKey } from "./recovery-crypto.js";
import type { UnsealMode } from "./root-key.js";
import { aad, kekCheckValue, LOCKS, readSeal, sameCheckValue, unsealCheckValue, unwrapSecret, wrapSecret, type DataKeyRow, type KekRow, type SealRow } from "./keystore.js";
import { KeyFileUnseal } from "./unseal/keyfile.js";
import { PassphraseUnseal } from "./unseal/passphrase.js";
import { Pkcs11Unseal } from "./unseal/pkcs11.js";
import { ShamirUnseal } from "./unseal/shamir.js";
import { UnsealError, type CreateSealInput, type SealCreation, type UnsealInput, type UnsealSource } from "./unseal/source.js";

export const INTERNAL_KEY_ID = "appliance-internal";

export function unsealSourceFor(config: Config, mode: UnsealMode): UnsealSource {
  switch (mode) {
    case "keyfile":
      return new KeyFileUnseal(inDataDir(config, config.keys.keyFile));
    case "passphrase":
      return new PassphraseUnseal(config.keys.passphraseKdf);
    case "shamir":
      return new ShamirUnseal();
    case "pkcs11":
      return new Pkcs11Unseal(config.keys.pkcs11);
  }
}

/** The seal record, or undefined before `keys init` / the first keyfile start. */
export async function readSealRecord(ctx: ApplianceContext): Promise<SealRow | undefined> {
  return inScope(ctx.db.app, { kind: "appliance" }, (t) => readSeal(ctx, t));
}

export type InitialiseResult = { mode: UnsealMode; shares?: string[]; createdFile?: string };

/**
 * Creates the key store's root: the seal record, KEK version 1, the appliance-internal key and
 * the recovery key pair, then opens the barrier. Refuses when a seal exists (`keys rekey`
 * changes one): initialising twice would orphan every wrapped key.
 */
export async function initialiseKeyStore(ctx: ApplianceContext, mode: UnsealMode, input: CreateSealInput, by: KeyOperator = SYSTEM_OPERATOR): Promise<InitialiseResult> {
  const existing = await readSealRecord(ctx);
  if (existing) throw new Conflict(`the key store is already initialised (unseal mode ${existing.mode}); use \`wardkeep keys rekey\` to change how it is unsealed`);
  const creation = await unsealSourceFor(ctx.config, mode).create(input);
  const kek = randomBytes(32);
  const internalKey = randomBytes(32);
  try {
    await inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
      await t.exec("SELECT pg_advisory_xact_lock($1)", [LOCKS.initialise]);
      if (await readSeal(ctx, t)) throw new Conflict("the key store was initialised by another replica at the same time; restart to unseal with it");
      await t.exec("INSERT INTO keystore.seal (mode, params, check_value) VALUES ($1, $2, $3)", [mode, JSON.stringify(creation.params), unsealCheckValue(creation.unsealKey)]);
      await t.exec("INSERT INTO keystore.kek_versions (version, wrapped, check_value, state) VALUES (1, $1, $2, 'active')", [
        wrapSecret(creation.unsealKey, kek, aad.kek(1)),
        kekCheckValue(kek, 1),
      ]);
      await t.exec("INSERT INTO keystore.data_keys (key_id, version, kind, wrapped, kek_version) VALUES ($1, 1, 'appliance-internal', $2, 1)", [
        INTERNAL_KEY_ID,
        wrapSecret(kek, internalKey, aad.dataKey(INTERNAL_KEY_ID, 1, 1)),
      ]);
      await insertRecoveryKeyPair(ctx, t, kek, 1);
      await recordKeyEvent(ctx, t, by, { action: "keys.initialise", resourceId: "kek", tenantId: null, outcome: "success", reason: `unseal mode ${mode}` });
    });
    ctx.rootKey.open({ mode, unsealKey: creation.unsealKey, generation: 1, keks: new Map([[1, kek]]), internalKey }, ctx.clock.now());
    return { mode, shares: creation.shares, createdFile: creation.createdFile };
  } finally {
    zeroize(kek);
    zeroize(internalKey);
    zeroize(creation.unsealKey);
  }
}

/** Made at install (DESIGN "Keys"): the private half waits wrapped under the KEK until the kit is written. */
export async function insertRecoveryKeyPair(ctx: ApplianceContext, t: Tx, kek: Buffer, kekVersion: number): Promise<void> {
  const pair = generateRecoveryKeyPair();
  const privateRaw = rawPrivateKey(pair.privateKey);
  const [row] = await t.rows<{ id: number }>("INSERT INTO keystore.recovery_keys (public_key, state) VALUES ($1, 'active') RETURNING id", [rawPublicKey(pair.publicKey)]);
  await t.exec("UPDATE keystore.recovery_keys SET wrapped_private = $1, kek_version = $2 WHERE id = $3", [
    wrapSecret(kek, privateRaw, aad.recoveryPrivate(row!.id, kekVersion)),
    kekVersion,
    row!.id,
  ]);
  zeroize(privateRaw);
}

/**
 * Recovers the unseal key from `input` with the key store's own mode, checks it against the
 * stored check value, unwraps every KEK version and opens the barrier. A wrong passphrase, share,
 * key file or HSM key ends here with one line, before anything is unwrapped with it.
 */
export async function openKeyStore(ctx: ApplianceContext, input: UnsealInput, seal?: SealRow): Promise<{ mode: UnsealMode }> {
  const record = seal ?? (await readSealRecord(ctx));
  if (!record) throw new UnsealError("the key store is not initialised: run `wardkeep keys init`", "not-initialised");
  const source = unsealSourceFor(ctx.config, record.mode);
  const unsealKey = await source.open(record.params, input);
  try {
    if (!sameCheckValue(unsealCheckValue(unsealKey), record.check_value)) throw new UnsealError(source.wrongKeyMessage, "wrong-secret");
    await openWithUnsealKey(ctx, record.mode, unsealKey, record.generation);
    return { mode: record.mode };
  } finally {
    zeroize(unsealKey);
  }
}

/** Opens the barrier with a verified unseal key (also used after initialise/rekey by the CLI). */
export async function openWithUnsealKey(ctx: ApplianceContext, mode: UnsealMode, unsealKey: Buffer, generation: number): Promise<void> {
  const keks = new Map<number, Buffer>();
  let internalKey: Buffer | undefined;
  try {
    await inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
      const rows = await t.rows<KekRow>("SELECT version, wrapped, wrapped_by_previous, check_value, state FROM keystore.kek_versions ORDER BY version");
      for (const row of rows) keks.set(row.version, unwrapKekRow(row, unsealKey));
      const [internal] = await t.rows<DataKeyRow>("SELECT key_id, version, wrapped, kek_version FROM keystore.data_keys WHERE key_id = $1 AND state = 'active'", [INTERNAL_KEY_ID]);
      if (!internal) throw new UnsealError("the key store is damaged: the appliance-internal key is missing", "unavailable");
      const kek = keks.get(internal.kek_version);
      if (!kek) throw new UnsealError(`the key store is damaged: KEK version ${internal.kek_version} is missing`, "unavailable");
      internalKey = unwrapSecret(kek, internal.wrapped, aad.dataKey(internal.key_id, internal.version, internal.kek_version));
    });
    ctx.rootKey.open({ mode, unsealKey, generation, keks, internalKey: internalKey! }, ctx.clock.now());
  } catch (err) {
    if (err instanceof DecryptionError) throw new UnsealError("the key store is damaged: a key does not unwrap with the correct unseal key", "unavailable");
    throw err;
  } finally {
    for (const kek of keks.values()) zeroize(kek);
    if (internalKey) zeroize(internalKey);
  }
}

function unwrapKekRow(row: KekRow, unsealKey: Buffer): Buffer {
  const kek = unwrapSecret(unsealKey, row.wrapped, aad.kek(row.version));
  if (!sameCheckValue(kekCheckValue(kek, row.version), row.check_value)) {
    zeroize(kek);
    throw new UnsealError(`the key store is damaged: KEK version ${row.version} does not match its check value`, "unavailable");
  }
  return kek;
}

/**
 * A KEK version, from memory or the key store. A replica that was unsealed before a rekey holds
 * an outdated unseal key; it follows the chain (each version is also wrapped under the previous
 * one) from a version it already holds.
 */
export async function loadKek(ctx: ApplianceContext, t: Tx, version: number): Promise<Buffer> {
  const held = ctx.rootKey.kek(version);
  if (held) return held;
  const [row] = await t.rows<KekRow>("SELECT version, wrapped, wrapped_by_previous, check_value, state FROM keystore.kek_versions WHERE version = $1", [version]);
  if (!row) throw new Conflict(`KEK version ${version} no longer exists (it was retired after a rotation); retry the request`);
  let kek: Buffer | undefined;
  try {
    kek = unwrapKekRow(row, ctx.rootKey.unsealKeyMaterial());
  } catch {
    const previous = row.wrapped_by_previous && ctx.rootKey.kek(version - 1);
    if (previous && row.wrapped_by_previous) {
      kek = unwrapSecret(previous, row.wrapped_by_previous, aad.kekChain(version));
      if (!sameCheckValue(kekCheckValue(kek, version), row.check_value)) throw new DecryptionError();
    }
  }
  if (!kek) {
    ctx.rootKey.seal("the unseal key was changed (rekey) on another replica; unseal this replica again");
    ctx.rootKey.assertUnsealed();
  }
  ctx.rootKey.rememberKek(version, kek!);
  zeroize(kek!);
  return ctx.rootKey.kek(version)!;
}

export async function activeKekVersion(ctx: ApplianceContext, t: Tx): Promise<number> {
  const [row] = await t.rows<{ version: number }>("SELECT version FROM keystore.kek_versions WHERE state = 'active'");
  if (!row) throw new Conflict("the key store has no active KEK; it is not initialised");
  return row.version;
}

/**
 * Changes how the key store is unsealed (new mode, passphrase, shares or HSM key): a new unseal
 * key rewraps every KEK version; data keys are untouched. Runs on an unsealed barrier whose unseal
 * key is current, so it cannot be started from a stale replica.
 */
export async function rekeyKeyStore(
  ctx: ApplianceContext,
  mode: UnsealMode,
  input: CreateSealInput,
  by: KeyOperator = SYSTEM_OPERATOR,
): Promise<SealCreation & { generation: number }> {
  ctx.rootKey.assertUnsealed();
  const creation = await unsealSourceFor(ctx.config, mode).create(input);
  try {
    const generation = await inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
      await t.exec("SELECT pg_advisory_xact_lock($1)", [LOCKS.kekRotation]);
      const seal = await readSeal(ctx, t, true);
      if (!seal) throw new Conflict("the key store is not initialised: run `wardkeep keys init`");
      const current = ctx.rootKey.unsealKeyMaterial();
      if (!sameCheckValue(unsealCheckValue(current), seal.check_value)) {
        throw new Conflict("this process holds an outdated unseal key (the key store was rekeyed since it was unsealed); unseal it again first");
      }
      const rows = await t.rows<KekRow>("SELECT version, wrapped, wrapped_by_previous, check_value, state FROM keystore.kek_versions ORDER BY version FOR UPDATE");
      for (const row of rows) {
        const kek = unwrapKekRow(row, current);
        await t.exec("UPDATE keystore.kek_versions SET wrapped = $1 WHERE version = $2", [wrapSecret(creation.unsealKey, kek, aad.kek(row.version)), row.version]);
        zeroize(kek);
      }
      await t.exec("UPDATE keystore.seal SET mode = $1, params = $2, check_value = $3, generation = generation + 1, updated_at = now()", [
        mode,
        JSON.stringify(creation.params),
        unsealCheckValue(creation.unsealKey),
      ]);
      await recordKeyEvent(ctx, t, by, { action: "keys.rekey", resourceId: "unseal-key", tenantId: null, outcome: "success", reason: `unseal mode ${seal.mode} to ${mode}` });
      return seal.generation + 1;
    });
    ctx.rootKey.replaceUnsealKey(mode, creation.unsealKey, generation);
    return { ...creation, generation };
  } finally {
    zeroize(creation.unsealKey);
  }
}
