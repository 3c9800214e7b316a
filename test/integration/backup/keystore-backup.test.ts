import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { openKeyStoreBackup, scanKeyStoreBackups } from "../../../backup/keystore-backup.js";
import { writePolicy } from "../../../daemon/backups/policy.js";
import { runDrill, runSnapshot } from "../../../daemon/backups/service.js";
import { inScope } from "../../../daemon/db/sql.js";
import { decryptField } from "../../../daemon/keys/field-cipher.js";
import { issueRecoveryKit, loadRecoveryPrivateKey } from "../../../daemon/keys/recovery.js";
import { unwrapBackupKeks } from "../../../daemon/keys/recovery-backup.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { createTenant } from "../../helpers/actors.js";
import { TestClock } from "../../helpers/clock.js";
import { createPatient } from "../../helpers/records.js";
import { asSuperuser } from "../records/helpers.js";
import { fsTarget, tempDir } from "./helpers.js";

/** Key-store backups on a running appliance: written with every snapshot, pruned within the grace period, and proved by drills. */
const DAY = 86_400_000;
const clock = new TestClock();
let app: TestAppliance;
let dir: string;
let nas: string;
let kit: string;
const tenants: string[] = [];
const patients: string[] = [];

beforeAll(async () => {
  dir = tempDir();
  nas = path.join(dir, "nas");
  app = await startTestAppliance({
    clock,
    env: {
      WARDKEEP_BACKUP_SCHEDULER_ENABLED: "false",
      WARDKEEP_BACKUP_DRILL_ADMIN_URL: inject("pgCluster").superuserUrl,
      WARDKEEP_BACKUP_SEGMENT_KIB: "64",
      WARDKEEP_KEYS_SHRED_GRACE_DAYS: "3",
    },
  });
  await inScope(app.ctx.db.app, { kind: "appliance" }, (t) => writePolicy(app.ctx, t, { targets: [{ kind: "fs", name: "nas", path: nas }], objectLockDays: 30 }, null));
  kit = path.join(dir, "kit.pem");
  await issueRecoveryKit(app.ctx, { out: kit });
  for (const name of ["East Wing", "West Wing"]) {
    const t = await createTenant(app, name);
    tenants.push(t.id);
    patients.push(await createPatient(app, t.id, { name: `Canary ${name}`, mrn: `MRN-${name.length}`, email: "canary@example.org" }));
  }
});
afterAll(async () => {
  await app?.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const keystoreDir = (id: string) => path.join(nas, "keystores", id);
/** A run a minute after the last: snapshot ids sort by time, and retention keeps the newest. */
async function snapshot() {
  clock.advance(60_000);
  return runSnapshot(app.ctx, { trigger: "manual" });
}

describe("key-store backups", () => {
  let first: string;

  it("every snapshot run writes the key store beside the snapshot, signed, openable with the kit, expiring within keys.shredGraceDays", async () => {
    const run = await snapshot();
    expect(run.status).toBe("complete");
    first = run.id;
    expect(fs.readdirSync(keystoreDir(run.id)).sort()).toEqual(["keystore.wkd", "manifest.json"]);
    const opened = await openKeyStoreBackup(fsTarget(nas), run.id, { applianceSecret: app.ctx.rootKey.material() });
    // Retention (and any WORM lock) ends after keys.shredGraceDays even though the policy asks 30 days of Object Lock.
    expect(Date.parse(opened.manifest.expiresAt) - Date.parse(opened.manifest.createdAt)).toBe(3 * DAY);
    expect(opened.contents.dataKeys.map((d) => d.keyId)).toEqual(expect.arrayContaining(patients.map((p) => `patient/${p}`)));
    expect(opened.contents.kekVersions.length).toBeGreaterThan(0);
    // The recovery kit alone opens every KEK version (each is checked against its check value).
    const privateKey = await loadRecoveryPrivateKey({ pem: fs.readFileSync(kit, "utf8") });
    const keks = unwrapBackupKeks(opened.contents, { recoveryPrivateKey: privateKey });
    expect([...keks.keys()]).toEqual(opened.contents.kekVersions.map((k) => k.version));
    // What is on the target is ciphertext: no key id, tenant id or patient id in the clear.
    const stored = fs.readFileSync(path.join(keystoreDir(run.id), "keystore.wkd"));
    expect(stored.includes(Buffer.from(patients[0]!))).toBe(false);
    expect(stored.includes(Buffer.from("patient/"))).toBe(false);
  });

  it("the standalone script (no Wardkeep) opens the key-store backup with the kit and its data keys decrypt the stored fields", async () => {
    const out = tempDir();
    const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
      execFile(
        process.execPath,
        [path.resolve("backup/recover-standalone.mjs"), "--snapshot", path.join(nas, "snapshots", first), "--recovery-key", kit, "--out", out, "--keystore", keystoreDir(first)],
        { timeout: 60_000 },
        (err, stdout, stderr) => resolve({ code: err ? 1 : 0, stdout, stderr }),
      ),
    );
    expect(r.stderr).toBe("");
    expect(r.stdout).toMatch(new RegExp(`key-store backup ${first}: \\d+ KEK version\\(s\\), \\d+ data key\\(s\\) .*signer derived from its appliance key: matches`));
    const file = JSON.parse(fs.readFileSync(path.join(out, "data-keys.json"), "utf8")) as { keys: Record<string, string> };
    const [row] = await asSuperuser<{ name_enc: Buffer }>(app, "SELECT name_enc FROM patients WHERE id = $1", [patients[0]]);
    const lookup = (keyId: string, version: number) =>
      file.keys[`${keyId}#${version}`] ? { id: keyId, version, key: Buffer.from(file.keys[`${keyId}#${version}`]!, "hex") } : undefined;
    const plain = decryptField(lookup, { tenantId: tenants[0]!, table: "patients", column: "name_enc", rowId: patients[0]! }, row!.name_enc);
    expect(plain.toString("utf8")).toBe("Canary East Wing");
    fs.rmSync(out, { recursive: true, force: true });

    // A tampered key-store object stops the script with one line and exit 1.
    const copy = path.join(tempDir(), first);
    fs.cpSync(keystoreDir(first), copy, { recursive: true });
    const bytes = fs.readFileSync(path.join(copy, "keystore.wkd"));
    bytes[100]! ^= 0x01;
    fs.writeFileSync(path.join(copy, "keystore.wkd"), bytes);
    const bad = await new Promise<{ code: number; stderr: string }>((resolve) =>
      execFile(
        process.execPath,
        [path.resolve("backup/recover-standalone.mjs"), "--snapshot", path.join(nas, "snapshots", first), "--recovery-key", kit, "--out", tempDir(), "--keystore", copy],
        { timeout: 60_000 },
        (err, _stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stderr }),
      ),
    );
    expect(bad.code).toBe(1);
    expect(bad.stderr).toBe("recover-standalone: keystore.wkd: the stored bytes do not match the manifest digest\n");
  });

  it("a drill decrypts a sample of every encrypted column of every tenant with the run's key-store backup", async () => {
    const drill = await runDrill(app.ctx, { trigger: "manual", snapshotId: first });
    expect(drill.error).toBeNull();
    expect(drill.status).toBe("passed");
    const byName = Object.fromEntries(drill.checks.map((c) => [c.name, c]));
    expect(byName["key-store backup"]).toMatchObject({ ok: true, detail: expect.stringMatching(new RegExp(`^${first} authenticated: \\d+ KEK version`)) });
    expect(byName["encrypted columns decrypt"]).toMatchObject({
      ok: true,
      detail: expect.stringMatching(/^\d+ value\(s\) of \d+ encrypted column\(s\) across 2 tenant\(s\) decrypted/),
    });
  });

  it("a drill of a snapshot whose key-store backup is missing fails with a named check", async () => {
    const run = await snapshot();
    fs.rmSync(keystoreDir(run.id), { recursive: true });
    const drill = await runDrill(app.ctx, { trigger: "manual", snapshotId: run.id });
    expect(drill.status).toBe("failed");
    const byName = Object.fromEntries(drill.checks.map((c) => [c.name, c]));
    expect(byName["key-store backup"]).toMatchObject({ ok: false, detail: expect.stringMatching(/is not on target nas/) });
    expect(byName["encrypted columns decrypt"]).toMatchObject({ ok: false, detail: expect.stringMatching(/^not checked/) });
    // The other checks still ran: the data itself restored fine.
    expect(byName["digests, tags and row counts"]?.ok).toBe(true);
    expect(drill.error).toMatch(/key-store backup: /);
  });

  it("a drill of a snapshot whose key-store backup is corrupted fails with a named check", async () => {
    const run = await snapshot();
    const file = path.join(keystoreDir(run.id), "keystore.wkd");
    const bytes = fs.readFileSync(file);
    bytes[bytes.length - 20]! ^= 0x01;
    fs.chmodSync(file, 0o600);
    fs.writeFileSync(file, bytes);
    const drill = await runDrill(app.ctx, { trigger: "manual", snapshotId: run.id });
    expect(drill.status).toBe("failed");
    expect(drill.checks.find((c) => c.name === "key-store backup")).toMatchObject({ ok: false, detail: expect.stringMatching(/do not match the manifest digest/) });
  });

  it("a drill fails 'encrypted columns decrypt' when a stored value does not decrypt, naming table, column and row", async () => {
    const [a, b] = await Promise.all(patients.map(async (id) => (await asSuperuser<{ name_enc: Buffer }>(app, "SELECT name_enc FROM patients WHERE id = $1", [id]))[0]!.name_enc));
    // A ciphertext moved to another row (and tenant) fails its associated-data check.
    await asSuperuser(app, "UPDATE patients SET name_enc = $2 WHERE id = $1", [patients[0], b]);
    try {
      const run = await snapshot();
      const drill = await runDrill(app.ctx, { trigger: "manual", snapshotId: run.id });
      expect(drill.status).toBe("failed");
      const check = drill.checks.find((c) => c.name === "encrypted columns decrypt")!;
      expect(check.ok).toBe(false);
      expect(check.detail).toMatch(
        new RegExp(
          `^1 of \\d+ sampled value\\(s\\) did not decrypt with key-store backup ${run.id}: patients\\.name_enc \\(tenant ${tenants[0]}, row ${patients[0]}: authentication failed\\)`,
        ),
      );
      expect(check.detail).not.toMatch(/Canary/);
    } finally {
      await asSuperuser(app, "UPDATE patients SET name_enc = $2 WHERE id = $1", [patients[0], a]);
    }
  });

  it("prunes key-store backups older than keys.shredGraceDays on the next run, keeping the new one", async () => {
    const before = (await scanKeyStoreBackups(fsTarget(nas))).complete;
    expect(before).toContain(first);
    clock.advance(3 * DAY + 60_000);
    const run = await snapshot();
    expect(run.status).toBe("complete");
    const after = (await scanKeyStoreBackups(fsTarget(nas))).complete;
    expect(after).toEqual([run.id]);
    expect(fs.existsSync(keystoreDir(first))).toBe(false);
    // Data snapshots follow their own (grandfather-father-son) retention: older ones stay restorable.
    expect(fs.readdirSync(path.join(nas, "snapshots")).length).toBeGreaterThan(1);
  });
  it("a target that takes the snapshot but not the key-store backup is marked failed: the run is partial, not green", async () => {
    const broken = path.join(dir, "broken");
    fs.mkdirSync(broken);
    // A file where the key-store directory must go: the data snapshot fits, the key store cannot be written.
    fs.writeFileSync(path.join(broken, "keystores"), "not a directory");
    await inScope(app.ctx.db.app, { kind: "appliance" }, (t) =>
      writePolicy(
        app.ctx,
        t,
        {
          targets: [
            { kind: "fs", name: "nas", path: nas },
            { kind: "fs", name: "broken", path: broken },
          ],
        },
        null,
      ),
    );
    const run = await snapshot();
    expect(run.status).toBe("partial");
    expect(run.targets).toEqual([
      expect.objectContaining({ target: "nas", ok: true }),
      expect.objectContaining({ target: "broken", ok: false, error: expect.stringMatching(/key-store backup: /) }),
    ]);
    expect(fs.existsSync(path.join(broken, "snapshots", run.id, "manifest.json"))).toBe(true);
    expect(app.logLines.some((l) => l.includes(`key-store backup ${run.id} failed on target broken`))).toBe(true);
  });
});
