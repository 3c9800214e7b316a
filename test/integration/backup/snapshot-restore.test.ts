import { execFile, execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readManifest, removeIncompleteSnapshots, scanTarget } from "../../../backup/catalog.js";
import { RestoreRefused, SnapshotIntegrityError, SnapshotKeyError } from "../../../backup/errors.js";
import { manifestSigner } from "../../../backup/keys.js";
import { restoreSnapshot, verifySnapshot } from "../../../backup/restore.js";
import { takeSnapshot, type SnapshotResult } from "../../../backup/snapshot.js";
import { HEADER_BYTES, TAG_BYTES } from "../../../backup/stream-aead.js";
import { APP_ROLE } from "../../../daemon/db/roles.js";
import { createTestDatabase } from "../../helpers/postgres.js";
import { applianceSecret, auditVerifier, fsTarget, recoveryPair, seededDatabase, snapshotOptions, tableCounts, tempDir, withClient, type Seeded } from "./helpers.js";

let seeded: Seeded;
const secret = applianceSecret();
const recovery = recoveryPair();
let dir: string;
let first: SnapshotResult;
let second: SnapshotResult;
const SEG = 64 * 1024;

beforeAll(async () => {
  seeded = await seededDatabase({ chain: false });
  dir = tempDir();
  first = await takeSnapshot(snapshotOptions(seeded.db, { targets: [fsTarget(dir)], applianceSecret: secret, recoveryPublicKey: recovery.publicRaw }));
  await withClient(seeded.db.ownerUrl, (c) => c.query("INSERT INTO tenants (name, slug) VALUES ('Later', 'later')"));
  second = await takeSnapshot(snapshotOptions(seeded.db, { targets: [fsTarget(dir)], applianceSecret: secret, recoveryPublicKey: recovery.publicRaw }));
});
afterAll(async () => {
  await seeded?.db.drop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/** A copy of the target holding `first`, for one tamper experiment. */
function copyTarget(): { target: ReturnType<typeof fsTarget>; root: string; objectFile: (name: string) => string } {
  const root = tempDir();
  fs.cpSync(dir, root, { recursive: true });
  return { target: fsTarget(root), root, objectFile: (p) => path.join(root, "snapshots", first.snapshotId, p) };
}

function largestObject() {
  return [...first.manifest!.objects].sort((a, b) => b.storedBytes - a.storedBytes)[0]!;
}

async function restoreInto(target: ReturnType<typeof fsTarget>, snapshotId: string, opener: Parameters<typeof restoreSnapshot>[0]["opener"], extra = {}) {
  const into = await createTestDatabase();
  try {
    return await restoreSnapshot({ target, snapshotId, intoUrl: into.ownerUrl, appRole: APP_ROLE, opener, verifyAuditChain: auditVerifier(), ...extra });
  } finally {
    await into.drop();
  }
}

describe("snapshot and restore on a directory target", () => {
  it("restores every row into an empty database, with row counts, sequences and the audit head checked", async () => {
    expect(first.ok).toBe(true);
    expect(largestObject().storedBytes).toBeGreaterThan(3 * SEG);
    expect((await scanTarget(fsTarget(dir))).complete).toEqual([first.snapshotId, second.snapshotId].sort());
    const verified = await verifySnapshot({ target: fsTarget(dir), snapshotId: first.snapshotId, opener: { applianceSecret: secret } });
    expect(verified.rows).toBe(first.rows);

    const into = await createTestDatabase();
    try {
      const restored = await restoreSnapshot({
        target: fsTarget(dir),
        snapshotId: second.snapshotId,
        intoUrl: into.ownerUrl,
        appRole: APP_ROLE,
        opener: { applianceSecret: secret },
        verifyAuditChain: auditVerifier(),
      });
      expect(restored.rows).toBe(second.rows);
      expect(restored.auditChain).toMatchObject({ checked: true, intact: true });
      expect(restored.phases.loadMs).toBeGreaterThan(0);
      expect(await tableCounts(into.ownerUrl)).toEqual(await tableCounts(seeded.db.ownerUrl));
      // Identity sequences continue after the restored rows instead of colliding with them.
      await withClient(into.ownerUrl, async (c) => {
        const before = Number((await c.query("SELECT max(id) AS m FROM audit_intake")).rows[0].m);
        const r = await c.query(
          "INSERT INTO audit_intake (event_id, occurred_at, action, resource_type, outcome) VALUES (gen_random_uuid(), now(), 'backup.check', 'user', 'success') RETURNING id",
        );
        expect(Number(r.rows[0].id)).toBeGreaterThan(before);
        // Row-level security is forced again after the load.
        const forced = await c.query("SELECT relforcerowsecurity AS f FROM pg_class WHERE relname = 'users'");
        expect(forced.rows[0].f).toBe(true);
      });
    } finally {
      await into.drop();
    }
  });

  it("restores on a brand-new appliance with only the target and the recovery private key", async () => {
    const restored = await restoreInto(fsTarget(dir), first.snapshotId, { recoveryPrivateKey: recovery.privateKey }, { trustedSigners: [manifestSigner(secret).publicKeyRaw] });
    expect(restored.rows).toBe(first.rows);
    expect(restored.signer.signerMatches).toBe(true);
  });

  it("refuses to restore into a database that is not empty", async () => {
    const err = await restoreSnapshot({
      target: fsTarget(dir),
      snapshotId: first.snapshotId,
      intoUrl: seeded.db.ownerUrl,
      appRole: APP_ROLE,
      opener: { applianceSecret: secret },
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RestoreRefused);
    expect((err as Error).message).toMatch(/is not empty \(\d+ relations, e\.g\. .+\); restore writes only into an empty database/);
    expect((err as Error).message).not.toContain(new URL(seeded.db.ownerUrl).password);
  });

  it("fails clearly with another appliance's key or the wrong recovery key", async () => {
    await expect(verifySnapshot({ target: fsTarget(dir), snapshotId: first.snapshotId, opener: { applianceSecret: applianceSecret() } })).rejects.toThrow(
      /made by another appliance \(key [0-9a-f]{16}, this appliance is [0-9a-f]{16}\); restore it with the recovery key/,
    );
    const wrong = recoveryPair();
    const err = await verifySnapshot({ target: fsTarget(dir), snapshotId: first.snapshotId, opener: { recoveryPrivateKey: wrong.privateKey } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SnapshotKeyError);
    expect((err as Error).message).toMatch(/wrong recovery key: this snapshot is wrapped for recovery key [0-9a-f:]+, the key given is [0-9a-f:]+/);
  });

  it("refuses a snapshot signed by someone else when the signer is pinned", async () => {
    await expect(
      verifySnapshot({
        target: fsTarget(dir),
        snapshotId: first.snapshotId,
        opener: { recoveryPrivateKey: recovery.privateKey },
        trustedSigners: [manifestSigner(applianceSecret()).publicKeyRaw],
      }),
    ).rejects.toThrow(/not a trusted signer/);
  });

  it("refuses a snapshot whose rows break a reference the schema keeps by triggers (a note version without its note)", async () => {
    // Made as the superuser in replication mode, the one way past the triggers; removed again after the snapshot.
    const orphan = (sql: string) =>
      withClient(seeded.db.superuserUrl, async (c) => {
        await c.query("SET session_replication_role = replica");
        return c.query(sql);
      });
    await orphan(`WITH p AS (INSERT INTO patients (id, tenant_id, status, created_at, updated_at, purged_at)
                    SELECT 'a0000000-0000-4000-8000-000000000001', id, 'purged', now(), now(), now() FROM tenants ORDER BY id LIMIT 1 RETURNING id, tenant_id)
                  INSERT INTO note_versions (tenant_id, patient_id, note_id, version, change, body_enc, created_at, created_by)
                  SELECT p.tenant_id, p.id, gen_random_uuid(), 1, 'original', '\\x00', now(), (SELECT id FROM users ORDER BY id LIMIT 1) FROM p`);
    const t = tempDir();
    try {
      const broken = await takeSnapshot(snapshotOptions(seeded.db, { targets: [fsTarget(t)], applianceSecret: secret, recoveryPublicKey: recovery.publicRaw }));
      await orphan("DELETE FROM note_versions WHERE patient_id = 'a0000000-0000-4000-8000-000000000001'; DELETE FROM patients WHERE id = 'a0000000-0000-4000-8000-000000000001'");
      const err = await restoreInto(fsTarget(t), broken.snapshotId, { applianceSecret: secret }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(SnapshotIntegrityError);
      expect((err as Error).message).toBe("rows that break a reference: note_versions -> notes (1)");
    } finally {
      fs.rmSync(t, { recursive: true, force: true });
    }
  });
});

describe("tampering is detected", () => {
  it("a flipped byte inside a segment", async () => {
    const t = copyTarget();
    const file = t.objectFile(largestObject().path);
    const bytes = fs.readFileSync(file);
    bytes[HEADER_BYTES + SEG + TAG_BYTES + 100]! ^= 0x40;
    fs.writeFileSync(file, bytes);
    const err = await verifySnapshot({ target: t.target, snapshotId: first.snapshotId, opener: { applianceSecret: secret } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SnapshotIntegrityError);
    expect((err as Error).message).toMatch(/segment 1 failed authentication/);
    // Restore stops before committing anything it could not authenticate.
    await expect(restoreInto(t.target, first.snapshotId, { applianceSecret: secret })).rejects.toThrow(/segment 1 failed authentication/);
  });

  it("an object truncated at a segment boundary", async () => {
    const t = copyTarget();
    const file = t.objectFile(largestObject().path);
    fs.truncateSync(file, HEADER_BYTES + 2 * (SEG + TAG_BYTES));
    await expect(verifySnapshot({ target: t.target, snapshotId: first.snapshotId, opener: { applianceSecret: secret } })).rejects.toThrow(/truncated/);
  });

  it("segments reordered inside an object", async () => {
    const t = copyTarget();
    const file = t.objectFile(largestObject().path);
    const b = fs.readFileSync(file);
    const s = (i: number) => b.subarray(HEADER_BYTES + i * (SEG + TAG_BYTES), HEADER_BYTES + (i + 1) * (SEG + TAG_BYTES));
    fs.writeFileSync(file, Buffer.concat([b.subarray(0, HEADER_BYTES), s(1), s(0), b.subarray(HEADER_BYTES + 2 * (SEG + TAG_BYTES))]));
    await expect(verifySnapshot({ target: t.target, snapshotId: first.snapshotId, opener: { applianceSecret: secret } })).rejects.toThrow(/segment 0 failed authentication/);
  });

  it("a manifest swapped in from another snapshot", async () => {
    const t = copyTarget();
    const a = path.join(t.root, "snapshots", first.snapshotId, "manifest.json");
    const b = path.join(t.root, "snapshots", second.snapshotId, "manifest.json");
    fs.copyFileSync(b, a);
    await expect(verifySnapshot({ target: t.target, snapshotId: first.snapshotId, opener: { applianceSecret: secret } })).rejects.toThrow(
      new RegExp(`manifest stored as ${first.snapshotId} belongs to snapshot ${second.snapshotId}`),
    );
  });

  it("objects swapped in from another snapshot", async () => {
    const t = copyTarget();
    const obj = largestObject();
    fs.copyFileSync(path.join(t.root, "snapshots", second.snapshotId, obj.path), t.objectFile(obj.path));
    await expect(verifySnapshot({ target: t.target, snapshotId: first.snapshotId, opener: { applianceSecret: secret } })).rejects.toThrow(/belongs to another snapshot/);
  });

  it("an edited manifest (a row count changed)", async () => {
    const t = copyTarget();
    const file = path.join(t.root, "snapshots", first.snapshotId, "manifest.json");
    const m = JSON.parse(fs.readFileSync(file, "utf8"));
    m.body.objects[0].rows += 1;
    fs.writeFileSync(file, JSON.stringify(m));
    await expect(verifySnapshot({ target: t.target, snapshotId: first.snapshotId, opener: { applianceSecret: secret } })).rejects.toThrow(/failed its MAC check/);
  });
});

describe("interrupted snapshots", () => {
  it("a directory without a manifest is invisible to list and restore, and swept by cleanup", async () => {
    const t = copyTarget();
    const ghost = "20200101T000000Z-deadbeef";
    fs.mkdirSync(path.join(t.root, "snapshots", ghost, "objects"), { recursive: true });
    fs.writeFileSync(path.join(t.root, "snapshots", ghost, "objects", "0001.wkd"), "partial");
    const scan = await scanTarget(t.target);
    expect(scan.complete).not.toContain(ghost);
    expect(scan.incomplete.map((d) => d.id)).toEqual([ghost]);
    await expect(readManifest(t.target, ghost)).rejects.toThrow(/is not on target nas \(no manifest/);
    expect((await removeIncompleteSnapshots(t.target)).removed).toEqual([ghost]);
    expect(fs.existsSync(path.join(t.root, "snapshots", ghost))).toBe(false);
    expect((await scanTarget(t.target)).complete).toEqual([first.snapshotId, second.snapshotId].sort());
  });
});

describe("recovery without Wardkeep (backup/recover-standalone.mjs)", () => {
  const script = path.resolve("backup/recover-standalone.mjs");
  const run = (args: string[]) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, [script, ...args], { timeout: 30_000 }, (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
    });

  it("decrypts with the recovery key alone and loads into PostgreSQL with psql", async () => {
    const kit = path.join(tempDir(), "kit.pem");
    fs.writeFileSync(kit, recovery.privateKey.export({ format: "pem", type: "pkcs8" }) as string);
    const out = tempDir();
    const r = await run([
      "--snapshot",
      path.join(dir, "snapshots", first.snapshotId),
      "--recovery-key",
      kit,
      "--out",
      out,
      "--expect-signer",
      manifestSigner(secret).publicKeyRaw.toString("hex"),
    ]);
    expect(r.stderr).toBe("");
    expect(r.stdout).toMatch(new RegExp(`snapshot ${first.snapshotId} verified and decrypted: \\d+ tables, ${first.rows} rows`));
    const into = await createTestDatabase();
    try {
      execFileSync("psql", [into.superuserUrl, "-q", "-f", "load.sql"], { cwd: out, stdio: "pipe" });
      const users = first.manifest!.objects.find((o) => o.table === "users")!;
      await withClient(into.superuserUrl, async (c) => {
        const n = await c.query(`SELECT count(*)::int AS n FROM wardkeep_recovered."public.users"`);
        expect(n.rows[0].n).toBe(users.rows);
        const typed = await c.query(`SELECT pg_typeof(created_at)::text AS t FROM wardkeep_recovered."public.users" LIMIT 1`);
        expect(typed.rows[0].t).toBe("timestamp with time zone");
      });
    } finally {
      await into.drop();
      fs.rmSync(out, { recursive: true, force: true });
    }
  });

  it("stops with one line and exit 1 on a tampered object or the wrong key", async () => {
    const t = copyTarget();
    const file = t.objectFile(largestObject().path);
    const bytes = fs.readFileSync(file);
    bytes[HEADER_BYTES + 10]! ^= 1;
    fs.writeFileSync(file, bytes);
    const kit = path.join(tempDir(), "kit.pem");
    fs.writeFileSync(kit, recovery.privateKey.export({ format: "pem", type: "pkcs8" }) as string);
    const tampered = await run(["--snapshot", path.join(t.root, "snapshots", first.snapshotId), "--recovery-key", kit, "--out", tempDir()]);
    expect(tampered.code).toBe(1);
    expect(tampered.stderr).toMatch(/^recover-standalone: .*the stored bytes do not match the manifest digest\n$/);
    const wrong = path.join(tempDir(), "wrong.pem");
    fs.writeFileSync(wrong, recoveryPair().privateKey.export({ format: "pem", type: "pkcs8" }) as string);
    const r = await run(["--snapshot", path.join(dir, "snapshots", first.snapshotId), "--recovery-key", wrong, "--out", tempDir()]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/wrong recovery key/);
  });
});
