import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tempDir, testEnv } from "../../helpers/appliance.js";
import { runCli } from "../../helpers/daemon-process.js";
import { createTestDatabase, type TestDatabase } from "../../helpers/postgres.js";
import { keysContext } from "./context.js";

const json = (stdout: string) => JSON.parse(stdout.trim().split("\n").at(-1)!) as Record<string, unknown>;

describe("wardkeep keys", () => {
  let db: TestDatabase;
  let dataDir: string;
  let env: Record<string, string>;
  let work: string;
  const passphrase = "custodians keep this offline";

  beforeAll(async () => {
    db = await createTestDatabase();
    dataDir = tempDir("wardkeep-cli-");
    work = tempDir("wardkeep-cli-work-");
    env = { ...testEnv(db, dataDir), WARDKEEP_KEYS_UNSEAL: "passphrase", WARDKEEP_KEYS_PASSPHRASE_KDF_MEMORY_KIB: "19456", WARDKEEP_KEYS_PASSPHRASE_KDF_ITERATIONS: "2" };
    const migrated = await keysContext({ db, dataDir });
    await migrated.close();
    fs.writeFileSync(path.join(work, "passphrase"), passphrase + "\n", { mode: 0o600 });
    fs.writeFileSync(path.join(work, "wrong"), "not the passphrase at all\n", { mode: 0o600 });
  });
  afterAll(async () => {
    await db?.drop();
    fs.rmSync(dataDir, { recursive: true, force: true });
    fs.rmSync(work, { recursive: true, force: true });
  });

  it("init seals a new key store with a passphrase from a file", async () => {
    const first = await runCli(["--json", "keys", "init", "--unseal", "passphrase", "--passphrase-file", path.join(work, "passphrase")], env);
    expect(first.code, first.stderr).toBe(0);
    expect(json(first.stdout)).toMatchObject({ ok: true, mode: "passphrase" });
  });

  it("rotate --kek rewraps every key with the current passphrase, and refuses a wrong one in one line", async () => {
    const wrong = await runCli(["keys", "rotate", "--kek", "--current-passphrase-file", path.join(work, "wrong")], env);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toBe("wardkeep: wrong passphrase\n");
    const ok = await runCli(["--json", "keys", "rotate", "--kek", "--current-passphrase-file", path.join(work, "passphrase")], env);
    expect(ok.code, ok.stderr).toBe(0);
    expect(json(ok.stdout)).toMatchObject({ ok: true, from: 1, to: 2, retired: [1] });
  });

  it("split turns the passphrase into custodian share files, which then unlock the next command", async () => {
    const out = path.join(work, "shares");
    const split = await runCli(["--json", "keys", "split", "--shares", "3", "--threshold", "2", "--out-dir", out, "--current-passphrase-file", path.join(work, "passphrase")], env);
    expect(split.code, split.stderr).toBe(0);
    const files = json(split.stdout).shareFiles as string[];
    expect(files).toHaveLength(3);
    for (const f of files) expect(fs.statSync(f).mode & 0o777).toBe(0o600);
    expect(split.stdout).not.toMatch(/wks1-/);

    const kit = path.join(work, "recovery-kit.txt");
    const issue = await runCli(["--json", "keys", "recovery-kit", "--out", kit, "--share-file", files[0]!, "--share-file", files[2]!], env);
    expect(issue.code, issue.stderr).toBe(0);
    expect(fs.readFileSync(kit, "utf8")).toMatch(/-----BEGIN PRIVATE KEY-----/);
  });

  it("status reports the key store without any secret", async () => {
    const status = await runCli(["--json", "keys", "status"], env);
    expect(status.code, status.stderr).toBe(0);
    const body = json(status.stdout).status as {
      seal: { mode: string; initialised: boolean; sealed: unknown };
      kek: { versions: Array<{ version: number }> };
      recovery: { issuedAt: string };
    };
    expect(body.seal).toMatchObject({ mode: "shamir", initialised: true, sealed: null, reason: "daemon not reachable" });
    expect(body.kek.versions.map((v) => v.version)).toEqual([2]);
    expect(body.recovery.issuedAt).toBeTruthy();
  });
});
