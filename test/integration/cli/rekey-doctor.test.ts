import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initialiseKeyStore } from "../../../daemon/keys/seal.js";
import { tempDir, testEnv } from "../../helpers/appliance.js";
import { runCli } from "../../helpers/daemon-process.js";
import { createTestDatabase, type TestDatabase } from "../../helpers/postgres.js";
import { keysContext } from "../keys/context.js";

/**
 * After `keys rekey` away from the evaluation key file: the old file is shredded when asked,
 * and `wardkeep doctor` reads the key store's real unseal mode (not the configuration's), says
 * the configuration disagrees, and warns about an old key file left on disk with the fix.
 */
const json = (stdout: string) => JSON.parse(stdout.trim().split("\n").at(-1)!) as Record<string, unknown>;

describe("rekey away from a key file, then doctor", () => {
  let db: TestDatabase;
  let dataDir: string;
  let env: Record<string, string>;
  let keyFile: string;
  let work: string;

  beforeAll(async () => {
    db = await createTestDatabase();
    dataDir = tempDir("wardkeep-rekey-");
    work = tempDir("wardkeep-rekey-work-");
    env = { ...testEnv(db, dataDir), WARDKEEP_KEYS_PASSPHRASE_KDF_MEMORY_KIB: "19456", WARDKEEP_KEYS_PASSPHRASE_KDF_ITERATIONS: "2" };
    const k = await keysContext({ db, dataDir });
    const created = await initialiseKeyStore(k.ctx, "keyfile", {});
    keyFile = created.createdFile!;
    await k.close();
    fs.writeFileSync(path.join(work, "passphrase"), "ward seven night shift keeps this\n", { mode: 0o600 });
  });
  afterAll(async () => {
    await db?.drop();
    fs.rmSync(dataDir, { recursive: true, force: true });
    fs.rmSync(work, { recursive: true, force: true });
  });

  it("--shred-old-keyfile overwrites and deletes the old root key file", async () => {
    expect(fs.existsSync(keyFile)).toBe(true);
    fs.copyFileSync(keyFile, path.join(work, "root.key.copy"));
    const rekey = await runCli(["keys", "rekey", "--unseal", "passphrase", "--passphrase-file", path.join(work, "passphrase"), "--shred-old-keyfile"], env);
    expect(rekey.code, rekey.stderr).toBe(0);
    expect(rekey.stdout).toContain(`the old key file ${keyFile} was overwritten and deleted`);
    expect(rekey.stdout).toContain("set keys.unseal: passphrase in the configuration (or WARDKEEP_KEYS_UNSEAL=passphrase)");
    expect(fs.existsSync(keyFile)).toBe(false);
  });

  it("doctor reports the key store's passphrase mode, the configuration that disagrees, and an old key file left behind", async () => {
    // An operator who rekeyed without shredding (or restored the data directory from a backup).
    fs.copyFileSync(path.join(work, "root.key.copy"), keyFile);
    fs.chmodSync(keyFile, 0o600);
    const doctor = await runCli(["--json", "doctor"], env);
    const findings = json(doctor.stdout).findings as Array<{ check: string; status: string; detail: string; fix?: string }>;
    const keys = findings.filter((f) => f.check.startsWith("keys"));
    expect(keys).toEqual([
      { check: "keys", status: "ok", detail: "unseal mode passphrase: an operator unseals after start (`wardkeep unseal`)" },
      {
        check: "keys-config",
        status: "warn",
        detail: "keys.unseal is keyfile but the key store is sealed with passphrase",
        fix: "set keys.unseal: passphrase in the configuration (or WARDKEEP_KEYS_UNSEAL=passphrase) so new replicas agree",
      },
      {
        check: "keys-old-keyfile",
        status: "warn",
        detail: `the old root key file ${keyFile} is still on disk: it no longer unseals the key store, but it unseals key-store backups taken before the rekey`,
        fix: `overwrite and delete it: shred -u ${keyFile} (or rekey with --shred-old-keyfile)`,
      },
    ]);
    expect(JSON.stringify(findings)).not.toContain("unsealing from a key file");
  });
});
