/**
 * The recovery kit (DESIGN "Keys"): the X25519 pair made at install. Its public half wraps every
 * snapshot key (the backup capability calls `wrapForRecovery`); its private half is handed to the
 * hospital exactly once — written to a file, optionally as k-of-n Shamir shares — and then
 * erased from the key store, so nobody can obtain it from the appliance afterwards.
 */
import fs from "node:fs";
import path from "node:path";
import type { KeyObject } from "node:crypto";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/sql.js";
import { Conflict, Invalid } from "../kernel/errors.js";
import { aad, LOCKS, unwrapSecret } from "./keystore.js";
import { zeroize } from "./primitives.js";
import { generateRecoveryKeyPair, rawPrivateKey, rawPublicKey, recoveryFingerprint, recoveryPrivateKeyFromRaw, recoveryPublicKeyFromRaw } from "./recovery-crypto.js";
import { recordKeyEvent, SYSTEM_OPERATOR, type KeyOperator } from "../audit/append.js";
import { loadKek } from "./seal.js";
import { combineShares, splitSecret } from "./shamir.js";

export { unwrapWithRecovery, wrapForRecovery, recoveryFingerprint } from "./recovery-crypto.js";

type RecoveryRow = {
  id: number;
  public_key: Buffer;
  wrapped_private: Buffer | null;
  kek_version: number | null;
  state: "active" | "retired";
  created_at: Date;
  issued_at: Date | null;
  issued_shares: number | null;
  issued_threshold: number | null;
};

/** The public half that wraps snapshot keys now (works sealed). */
export async function currentRecoveryPublicKey(ctx: ApplianceContext): Promise<{ id: number; publicKey: KeyObject; fingerprint: string; createdAt: Date; issued: boolean }> {
  const row = await inScope(ctx.db.app, { kind: "appliance" }, async (t) => (await t.rows<RecoveryRow>("SELECT * FROM keystore.recovery_keys WHERE state = 'active'"))[0]);
  if (!row) throw new Conflict("no recovery key pair exists: the key store is not initialised");
  return {
    id: row.id,
    publicKey: recoveryPublicKeyFromRaw(row.public_key),
    fingerprint: recoveryFingerprint(row.public_key),
    createdAt: row.created_at,
    issued: row.issued_at !== null,
  };
}

export type RecoveryKitOptions = { out: string; shares?: number; threshold?: number; reissue?: boolean };
export type RecoveryKitResult = { fingerprint: string; files: string[]; shares?: number; threshold?: number; reissued: boolean };

function writeSecretFile(file: string, text: string) {
  // wx: never overwrite an existing file (it may be the only copy of an earlier kit).
  fs.writeFileSync(file, text, { mode: 0o600, flag: "wx" });
  const fd = fs.openSync(file, "r");
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

function kitText(fingerprint: string, body: string[], when: Date): string {
  return [
    "WARDKEEP RECOVERY KIT",
    "=====================",
    `Recovery key fingerprint: ${fingerprint}`,
    `Issued: ${when.toISOString()}`,
    "",
    "This is the private half of the appliance's recovery key. With it, a new appliance can restore",
    "the off-site snapshots after this one is lost. The appliance has erased its copy: store this",
    "offline (printed, in a safe), never on the appliance or next to the snapshots.",
    "",
    ...body,
    "",
  ].join("\n");
}

/**
 * Writes the recovery private key once. A second call is refused unless `reissue`, which makes a
 * new pair (the old public half is retired: snapshots wrapped under it still need the old kit
 * until the backup capability rewraps their keys).
 */
export async function issueRecoveryKit(ctx: ApplianceContext, options: RecoveryKitOptions, by: KeyOperator = SYSTEM_OPERATOR): Promise<RecoveryKitResult> {
  ctx.rootKey.assertUnsealed();
  const split = options.shares !== undefined || options.threshold !== undefined;
  if (split && (!options.shares || !options.threshold)) throw new Invalid("give both --shares and --threshold to split the recovery key");
  const out = path.resolve(options.out);
  const shareFiles = split ? Array.from({ length: options.shares! }, (_, i) => `${out}.share-${i + 1}-of-${options.shares}.txt`) : [];
  for (const file of [out, ...shareFiles]) if (fs.existsSync(file)) throw new Invalid(`${file} already exists; choose another --out (a recovery kit is never overwritten)`);
  fs.mkdirSync(path.dirname(out), { recursive: true, mode: 0o700 });

  return inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    await t.exec("SELECT pg_advisory_xact_lock($1)", [LOCKS.recovery]);
    const [row] = await t.rows<RecoveryRow>("SELECT * FROM keystore.recovery_keys WHERE state = 'active' FOR UPDATE");
    let privateRaw: Buffer;
    let publicRaw: Buffer;
    let reissued = false;
    if (row && row.wrapped_private && row.kek_version !== null) {
      const kek = await loadKek(ctx, t, row.kek_version);
      privateRaw = unwrapSecret(kek, row.wrapped_private, aad.recoveryPrivate(row.id, row.kek_version));
      publicRaw = row.public_key;
    } else {
      if (row && !options.reissue) {
        throw new Conflict(
          `the recovery kit was already written on ${row.issued_at?.toISOString() ?? "an earlier date"} and the appliance no longer holds it; use --reissue to make a new recovery key pair`,
        );
      }
      const pair = generateRecoveryKeyPair();
      privateRaw = rawPrivateKey(pair.privateKey);
      publicRaw = rawPublicKey(pair.publicKey);
      reissued = true;
    }
    try {
      const fingerprint = recoveryFingerprint(publicRaw);
      const now = ctx.clock.now();
      const pem = recoveryPrivateKeyFromRaw(privateRaw).export({ format: "pem", type: "pkcs8" }).toString();
      if (!split) {
        writeSecretFile(out, kitText(fingerprint, ["Private key (PKCS#8, X25519; `openssl pkey -in FILE -text` reads it):", "", pem.trim()], now));
      } else {
        const shares = await splitSecret(privateRaw, options.shares!, options.threshold!);
        shares.forEach((share, i) =>
          writeSecretFile(
            shareFiles[i]!,
            kitText(fingerprint, [`Share ${i + 1} of ${options.shares} (any ${options.threshold} recover the key). Give each share to a different custodian.`, "", share], now),
          ),
        );
        writeSecretFile(
          out,
          kitText(
            fingerprint,
            [`The private key was split into ${options.shares} shares; any ${options.threshold} recover it. Share files:`, ...shareFiles.map((f) => `  ${f}`)],
            now,
          ),
        );
      }
      if (reissued) {
        await t.exec("UPDATE keystore.recovery_keys SET state = 'retired', retired_at = $1 WHERE state = 'active'", [now]);
        await t.exec("INSERT INTO keystore.recovery_keys (public_key, state, issued_at, issued_shares, issued_threshold) VALUES ($1, 'active', $2, $3, $4)", [
          publicRaw,
          now,
          options.shares ?? null,
          options.threshold ?? null,
        ]);
      } else {
        // The files are on disk (fsynced) before the appliance forgets its copy.
        await t.exec("UPDATE keystore.recovery_keys SET wrapped_private = NULL, kek_version = NULL, issued_at = $1, issued_shares = $2, issued_threshold = $3 WHERE id = $4", [
          now,
          options.shares ?? null,
          options.threshold ?? null,
          row!.id,
        ]);
      }
      await recordKeyEvent(ctx, t, by, {
        action: "keys.recovery_kit",
        resourceId: fingerprint,
        tenantId: null,
        outcome: "success",
        reason: reissued ? "new recovery key pair" : "first issue",
      });
      ctx.log.info("recovery kit written", { fingerprint, shares: options.shares ?? null, reissued });
      return { fingerprint, files: [out, ...shareFiles], shares: options.shares, threshold: options.threshold, reissued };
    } finally {
      zeroize(privateRaw);
    }
  });
}

/** Reads a recovery kit back (the PEM file, or at least k share texts) on a new appliance. */
export async function loadRecoveryPrivateKey(source: { pem: string } | { shares: string[] }): Promise<KeyObject> {
  if ("pem" in source) {
    const match = /-----BEGIN PRIVATE KEY-----[\s\S]+?-----END PRIVATE KEY-----/.exec(source.pem);
    if (!match) throw new Invalid("no PKCS#8 private key found in the recovery kit");
    const { createPrivateKey } = await import("node:crypto");
    const key = createPrivateKey(match[0]);
    if (key.asymmetricKeyType !== "x25519") throw new Invalid("the recovery kit does not hold an X25519 key");
    return key;
  }
  const shares = source.shares.map((s) => /wks1-[A-Za-z0-9-]+/.exec(s)?.[0] ?? s);
  const raw = await combineShares(shares);
  try {
    return recoveryPrivateKeyFromRaw(raw);
  } finally {
    zeroize(raw);
  }
}
