import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initialiseKeyStore, openKeyStore, readSealRecord, rekeyKeyStore } from "../../../daemon/keys/seal.js";
import { sealProgress, submitUnseal, unsealAtStart } from "../../../daemon/keys/unseal/index.js";
import { UnsealError } from "../../../daemon/keys/unseal/source.js";
import { encryptFieldValue, decryptFieldValue } from "../../../daemon/keys/keyring.js";
import { inScope } from "../../../daemon/db/sql.js";
import { tempDir } from "../../helpers/appliance.js";
import { createTestDatabase, type TestDatabase } from "../../helpers/postgres.js";
import { expectNoSecretIn, keysContext, type KeysContext } from "./context.js";

const open: KeysContext[] = [];
async function replica(opts: Parameters<typeof keysContext>[0] = {}) {
  const k = await keysContext(opts);
  open.push(k);
  return k;
}
afterAll(async () => {
  for (const k of open.reverse()) await k.close();
});

async function expectUnsealError(p: Promise<unknown>, kind: UnsealError["kind"], message: RegExp) {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, "expected an UnsealError").toBeInstanceOf(UnsealError);
  expect((err as UnsealError).kind).toBe(kind);
  expect((err as UnsealError).message).toMatch(message);
  return err as UnsealError;
}

const TENANT = "7a1c5a36-0d5e-4c8e-9a57-6f1f3b1c2d01";
/** The cheapest argon2id costs the configuration allows: the tests are about behaviour, not cost. */
const FAST_KDF = { WARDKEEP_KEYS_PASSPHRASE_KDF_MEMORY_KIB: "19456", WARDKEEP_KEYS_PASSPHRASE_KDF_ITERATIONS: "2", WARDKEEP_KEYS_PASSPHRASE_KDF_PARALLELISM: "1" };
const field = { tenantId: TENANT, table: "probe", column: "value", rowId: "1" };

/** Proves the barrier is really open: a value encrypts under the tenant key and decrypts again. */
async function roundTrip(k: KeysContext, plaintext = "probe value") {
  return inScope(k.ctx.db.app, { kind: "tenant", tenantId: TENANT }, async (t) => {
    const ct = await encryptFieldValue(k.ctx, t, { kind: "tenant", tenantId: TENANT }, field, plaintext);
    return (await decryptFieldValue(k.ctx, t, field, ct)).toString();
  });
}

describe("keyfile unseal", () => {
  let db: TestDatabase;
  let first: KeysContext;
  beforeAll(async () => {
    db = await createTestDatabase();
    first = await replica({ db });
    await unsealAtStart(first.ctx);
  });
  afterAll(async () => {
    for (const k of open.splice(0)) await k.close();
    await db.drop();
  });

  it("initialises the key store on first start and warns that key files are for evaluation", async () => {
    expect(first.ctx.rootKey.isSealed).toBe(false);
    expect((await readSealRecord(first.ctx))?.mode).toBe("keyfile");
    const file = path.join(first.dataDir, "keys/root.key");
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(first.logLines.join("\n")).toMatch(/EVALUATION ONLY/);
    expect(await roundTrip(first)).toBe("probe value");
  });

  it("unseals a second replica that has a copy of the same key file", async () => {
    const dataDir = tempDir("wardkeep-keys-");
    fs.mkdirSync(path.join(dataDir, "keys"), { mode: 0o700 });
    fs.copyFileSync(path.join(first.dataDir, "keys/root.key"), path.join(dataDir, "keys/root.key"));
    const second = await replica({ db, dataDir });
    await unsealAtStart(second.ctx);
    expect(second.ctx.rootKey.isSealed).toBe(false);
    expect(await roundTrip(second, "from replica two")).toBe("from replica two");
  });

  it("stays sealed with a clear reason when a replica's key file is another install's", async () => {
    const other = await replica({ db });
    fs.mkdirSync(path.join(other.dataDir, "keys"), { mode: 0o700 });
    fs.writeFileSync(path.join(other.dataDir, "keys/root.key"), "ab".repeat(32) + "\n", { mode: 0o600 });
    await unsealAtStart(other.ctx);
    expect(other.ctx.rootKey.state).toMatchObject({ sealed: true, reason: expect.stringMatching(/does not belong to this key store/) });
  });

  it("stays sealed, without creating a new key, when a replica has no key file", async () => {
    const bare = await replica({ db });
    await unsealAtStart(bare.ctx);
    expect(bare.ctx.rootKey.state).toMatchObject({ sealed: true, reason: expect.stringMatching(/key file .* not found/) });
    expect(fs.existsSync(path.join(bare.dataDir, "keys/root.key"))).toBe(false);
  });

  it("refuses a key file readable by other users", async () => {
    const loose = await replica({ db });
    fs.mkdirSync(path.join(loose.dataDir, "keys"), { mode: 0o700 });
    fs.copyFileSync(path.join(first.dataDir, "keys/root.key"), path.join(loose.dataDir, "keys/root.key"));
    fs.chmodSync(path.join(loose.dataDir, "keys/root.key"), 0o644);
    await unsealAtStart(loose.ctx);
    expect(loose.ctx.rootKey.state).toMatchObject({ sealed: true, reason: expect.stringMatching(/chmod 600/) });
  });

  it("never writes the KEK to logs, errors, the data directory or the database in the clear", async () => {
    const kek = Buffer.from(first.ctx.rootKey.kek(1)!);
    const internal = Buffer.from(first.ctx.rootKey.material());
    const lines = open.flatMap((k) => k.logLines);
    expect(expectNoSecretIn(lines, [kek, internal])).toBeUndefined();
    const sealed = open.filter((k) => k.ctx.rootKey.isSealed).map((k) => (k.ctx.rootKey.state as { reason: string }).reason);
    expect(expectNoSecretIn(sealed, [kek, internal])).toBeUndefined();
    for (const k of open) {
      for (const file of fs.readdirSync(k.dataDir, { recursive: true }) as string[]) {
        const full = path.join(k.dataDir, file);
        if (!fs.statSync(full).isFile()) continue;
        const content = fs.readFileSync(full);
        expect(content.includes(kek), file).toBe(false);
        expect(content.toString("latin1").includes(kek.toString("hex")), file).toBe(false);
      }
    }
    // The whole key store as a database dump would show it: wrapped keys and check values only.
    const [dump] = await first.sql<{ k: string }>(
      "SELECT (SELECT string_agg(encode(wrapped, 'hex') || encode(check_value, 'hex'), '') FROM keystore.kek_versions) || (SELECT string_agg(encode(wrapped, 'hex'), '') FROM keystore.data_keys) AS k",
    );
    expect(dump!.k.length).toBeGreaterThan(200);
    for (const secret of [kek, internal]) expect(dump!.k).not.toContain(secret.toString("hex"));
  });
});

describe("passphrase unseal", () => {
  let db: TestDatabase;
  let k: KeysContext;
  const passphrase = "correct horse battery staple";
  beforeAll(async () => {
    db = await createTestDatabase();
    k = await replica({ db, env: { WARDKEEP_KEYS_UNSEAL: "passphrase", ...FAST_KDF } });
  });
  afterAll(async () => {
    for (const r of open.splice(0)) await r.close();
    await db.drop();
  });

  it("starts sealed and says how to initialise when no key store exists yet", async () => {
    await unsealAtStart(k.ctx);
    expect(k.ctx.rootKey.state).toMatchObject({ sealed: true, reason: expect.stringMatching(/not initialised: run `wardkeep keys init --unseal passphrase`/) });
  });

  it("refuses a passphrase shorter than 12 characters for a new seal", async () => {
    await expectUnsealError(initialiseKeyStore(k.ctx, "passphrase", { passphrase: "short" }), "malformed", /at least 12 characters/);
    expect(await readSealRecord(k.ctx)).toBeUndefined();
  });

  it("rejects a wrong passphrase with a clear error and stays sealed", async () => {
    await initialiseKeyStore(k.ctx, "passphrase", { passphrase });
    k.ctx.rootKey.seal("test");
    const err = await expectUnsealError(submitUnseal(k.ctx, { passphrase: "wrong horse battery staple" }), "wrong-secret", /^wrong passphrase$/);
    expect(err.message).not.toContain("horse");
    expect(k.ctx.rootKey.isSealed).toBe(true);
  });

  it("unseals with the right passphrase through the operator path", async () => {
    const state = await submitUnseal(k.ctx, { passphrase });
    expect(state).toMatchObject({ sealed: false, mode: "passphrase", initialised: true });
    expect(await roundTrip(k)).toBe("probe value");
  });

  it("asks for a passphrase when a share is sent instead", async () => {
    k.ctx.rootKey.seal("test");
    await expectUnsealError(submitUnseal(k.ctx, { share: "wks1-3-1-AAAA-AAAA-0000" }), "malformed", /send `passphrase`/);
  });

  it("unseals at start from a passphrase file (a container secret or /dev/fd/N)", async () => {
    const file = path.join(tempDir(), "passphrase");
    fs.writeFileSync(file, passphrase + "\n", { mode: 0o600 });
    const other = await replica({ db, env: { WARDKEEP_KEYS_UNSEAL: "passphrase", WARDKEEP_KEYS_PASSPHRASE_FILE: file } });
    await unsealAtStart(other.ctx);
    expect(other.ctx.rootKey.isSealed).toBe(false);
    expect(await roundTrip(other, "via file")).toBe("via file");
  });

  it("stays sealed with the reason when the passphrase file holds a wrong passphrase", async () => {
    const file = path.join(tempDir(), "passphrase");
    fs.writeFileSync(file, "not the passphrase at all\n", { mode: 0o600 });
    const other = await replica({ db, env: { WARDKEEP_KEYS_UNSEAL: "passphrase", WARDKEEP_KEYS_PASSPHRASE_FILE: file } });
    await unsealAtStart(other.ctx);
    expect(other.ctx.rootKey.state).toMatchObject({ sealed: true, reason: "wrong passphrase" });
  });
});

/** A share of the right split with altered bytes and a recomputed checksum: it passes every format check. */
function forgeShare(share: string): string {
  const parts = share.split("-");
  const header = parts.slice(0, 4).join("-");
  const body = parts.slice(4, -1).join("");
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  // Flip one base32 character of the first byte (not the trailing x coordinate).
  const first = alphabet[(alphabet.indexOf(body[0]!) + 1) % 32]!;
  const altered = first + body.slice(1);
  let bits = 0;
  let value = 0;
  const bytes: number[] = [];
  for (const ch of altered) {
    value = (value << 5) | alphabet.indexOf(ch);
    bits += 5;
    if (bits >= 8) {
      bytes.push((value >> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  const checksum = createHash("sha256").update(`${header}-`).update(Buffer.from(bytes)).digest("hex").slice(0, 4).toUpperCase();
  return `${header}-${altered.match(/.{1,4}/g)!.join("-")}-${checksum}`;
}

describe("shamir unseal", () => {
  let db: TestDatabase;
  let k: KeysContext;
  let shares: string[];
  beforeAll(async () => {
    db = await createTestDatabase();
    k = await replica({ db, env: { WARDKEEP_KEYS_UNSEAL: "shamir" } });
    const result = await initialiseKeyStore(k.ctx, "shamir", { shareCount: 5, threshold: 3 });
    shares = result.shares!;
    k.ctx.rootKey.seal("test");
  });
  afterAll(async () => {
    for (const r of open.splice(0)) await r.close();
    await db.drop();
  });

  it("makes 5 printable shares and starts sealed, waiting for 3 custodians", async () => {
    expect(shares).toHaveLength(5);
    for (const s of shares) expect(s).toMatch(/^wks1-3-\d-[A-Z2-7]{4}-/);
    await unsealAtStart(k.ctx);
    expect(k.ctx.rootKey.state).toMatchObject({ sealed: true, reason: expect.stringMatching(/waiting for 3 of 5 custodian shares/) });
  });

  it("takes shares one at a time with progress and unseals at the threshold", async () => {
    expect(await submitUnseal(k.ctx, { share: shares[0]! })).toMatchObject({ sealed: true, progress: { provided: 1, threshold: 3, shares: 5 } });
    expect(await submitUnseal(k.ctx, { share: shares[3]!.toLowerCase() })).toMatchObject({ sealed: true, progress: { provided: 2, threshold: 3 } });
    expect(await submitUnseal(k.ctx, { share: shares[4]! })).toMatchObject({ sealed: false });
    expect(await roundTrip(k)).toBe("probe value");
  });

  it("with too few shares stays sealed and says how many are needed", async () => {
    await expectUnsealError(openKeyStore(k.ctx, { shares: shares.slice(0, 2) }), "malformed", /need 3 shares, got 2/);
  });

  it("refuses the same share entered twice", async () => {
    k.ctx.rootKey.seal("test");
    await submitUnseal(k.ctx, { share: shares[1]! });
    await expectUnsealError(submitUnseal(k.ctx, { share: shares[1]! }), "malformed", /already entered/);
    expect((await sealProgress(k.ctx)).progress?.provided).toBe(1);
    await submitUnseal(k.ctx, { reset: true });
    expect((await sealProgress(k.ctx)).progress?.provided).toBe(0);
  });

  it("names a mistyped share by its label when it is entered, without revealing it", async () => {
    const typo = shares[2]!.slice(0, -6) + (shares[2]!.at(-6) === "A" ? "B" : "A") + shares[2]!.slice(-5);
    const err = await expectUnsealError(submitUnseal(k.ctx, { share: typo }), "malformed", /share wks1-3-3-[A-Z2-7]{4}.* (wrong checksum|not valid base32|malformed)/);
    expect(err.message).not.toContain(typo.slice(15, 40));
  });

  it("refuses a share of another split (an old ceremony or another install)", async () => {
    const other = await replica({ env: { WARDKEEP_KEYS_UNSEAL: "shamir" } });
    const foreign = (await initialiseKeyStore(other.ctx, "shamir", { shareCount: 3, threshold: 3 })).shares!;
    await expectUnsealError(submitUnseal(k.ctx, { share: foreign[0]! }), "wrong-secret", /belongs to split .* this key store was split as/);
  });

  it("detects a wrong share that passes every format check, and resets the progress", async () => {
    await submitUnseal(k.ctx, { reset: true });
    await submitUnseal(k.ctx, { share: shares[0]! });
    await submitUnseal(k.ctx, { share: shares[1]! });
    const err = await expectUnsealError(submitUnseal(k.ctx, { share: forgeShare(shares[2]!) }), "wrong-secret", /do not reconstruct .* progress was reset/);
    expect(err.message).not.toMatch(/wks1-\d+-\d+-[A-Z2-7]{4}-[A-Z2-7]{4}/);
    expect(k.ctx.rootKey.isSealed).toBe(true);
    expect((await sealProgress(k.ctx)).progress?.provided).toBe(0);
  });
});

describe("pkcs11 unseal (SoftHSM2)", () => {
  let db: TestDatabase;
  let hsmDir: string;
  let env: Record<string, string>;
  beforeAll(async () => {
    db = await createTestDatabase();
    hsmDir = tempDir("wardkeep-hsm-");
    fs.mkdirSync(path.join(hsmDir, "tokens"));
    fs.writeFileSync(path.join(hsmDir, "softhsm2.conf"), `directories.tokendir = ${hsmDir}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n`);
    process.env.SOFTHSM2_CONF = path.join(hsmDir, "softhsm2.conf");
    execFileSync("softhsm2-util", ["--init-token", "--free", "--label", "wardkeep-test", "--so-pin", "87654321", "--pin", "123456"], { stdio: "ignore" });
    fs.writeFileSync(path.join(hsmDir, "pin"), "123456\n", { mode: 0o600 });
    env = {
      WARDKEEP_KEYS_UNSEAL: "pkcs11",
      WARDKEEP_KEYS_PKCS11_MODULE: "/usr/lib/softhsm/libsofthsm2.so",
      WARDKEEP_KEYS_PKCS11_TOKEN_LABEL: "wardkeep-test",
      WARDKEEP_KEYS_PKCS11_PIN_FILE: path.join(hsmDir, "pin"),
    };
  });
  afterAll(async () => {
    for (const r of open.splice(0)) await r.close();
    await db.drop();
    fs.rmSync(hsmDir, { recursive: true, force: true });
  });

  it("says the HSM key is missing unless init is asked to create it", async () => {
    const k = await replica({ db, env });
    await expectUnsealError(initialiseKeyStore(k.ctx, "pkcs11", {}), "unavailable", /token "wardkeep-test" has no AES key labelled "wardkeep-unseal"/);
  });

  it("initialises with a non-extractable key made in the HSM, and unseals at start on another replica", async () => {
    const k = await replica({ db, env });
    await initialiseKeyStore(k.ctx, "pkcs11", { createHsmKey: true });
    const params = (await readSealRecord(k.ctx))!.params;
    expect(params).toMatchObject({ tokenLabel: "wardkeep-test", keyLabel: "wardkeep-unseal" });
    const second = await replica({ db, env });
    await unsealAtStart(second.ctx);
    expect(second.ctx.rootKey.isSealed).toBe(false);
    expect(await roundTrip(second, "hsm")).toBe("hsm");
  });

  it("stays sealed with a clear error when the token is missing", async () => {
    const k = await replica({ db, env: { ...env, WARDKEEP_KEYS_PKCS11_TOKEN_LABEL: "not-plugged-in" } });
    await unsealAtStart(k.ctx);
    expect(k.ctx.rootKey.state).toMatchObject({ sealed: true, reason: expect.stringMatching(/no HSM token labelled "not-plugged-in" is present/) });
  });

  it("stays sealed with a clear error for a wrong PIN", async () => {
    const pin = path.join(hsmDir, "wrong-pin");
    fs.writeFileSync(pin, "000000\n", { mode: 0o600 });
    const k = await replica({ db, env: { ...env, WARDKEEP_KEYS_PKCS11_PIN_FILE: pin } });
    await unsealAtStart(k.ctx);
    expect(k.ctx.rootKey.state).toMatchObject({ sealed: true, reason: expect.stringMatching(/HSM login to token "wardkeep-test" failed: wrong PIN/) });
  });

  it("stays sealed with a clear error when the PKCS#11 library is missing", async () => {
    const k = await replica({ db, env: { ...env, WARDKEEP_KEYS_PKCS11_MODULE: "/nonexistent/libpkcs11.so" } });
    await unsealAtStart(k.ctx);
    expect(k.ctx.rootKey.state).toMatchObject({ sealed: true, reason: "cannot load the PKCS#11 library /nonexistent/libpkcs11.so" });
  });
});

describe("rekey", () => {
  it("moves a key file install to a passphrase: the data stays readable, the old key file stops working", async () => {
    const db = await createTestDatabase();
    const k = await replica({ db, env: FAST_KDF });
    await unsealAtStart(k.ctx);
    const ct = await inScope(k.ctx.db.app, { kind: "tenant", tenantId: TENANT }, (t) => encryptFieldValue(k.ctx, t, { kind: "tenant", tenantId: TENANT }, field, "kept"));
    const result = await rekeyKeyStore(k.ctx, "passphrase", { passphrase: "a much better passphrase" });
    expect(result.generation).toBe(2);
    expect((await readSealRecord(k.ctx))?.mode).toBe("passphrase");

    const copy = await replica({ db, dataDir: k.dataDir });
    await unsealAtStart(copy.ctx);
    expect(copy.ctx.rootKey.state).toMatchObject({ sealed: true, reason: expect.stringMatching(/waiting for the unseal passphrase/) });
    await expectUnsealError(openKeyStore(copy.ctx, { passphrase: "wrong passphrase here" }), "wrong-secret", /wrong passphrase/);
    await submitUnseal(copy.ctx, { passphrase: "a much better passphrase" });
    const back = await inScope(copy.ctx.db.app, { kind: "tenant", tenantId: TENANT }, (t) => decryptFieldValue(copy.ctx, t, field, ct));
    expect(back.toString()).toBe("kept");
    await expect(initialiseKeyStore(copy.ctx, "keyfile", {})).rejects.toThrow(/already initialised/);
    for (const r of open.splice(0)) await r.close();
    await db.drop();
  });
});
