import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writePolicy } from "../../../daemon/backups/policy.js";
import { runSnapshot } from "../../../daemon/backups/service.js";
import { inScope } from "../../../daemon/db/sql.js";
import { issueRecoveryKit } from "../../../daemon/keys/recovery.js";
import { purgeDueDeletions } from "../../../daemon/records/data-rights/deletion.js";
import { startTestAppliance, testEnv, type TestAppliance } from "../../helpers/appliance.js";
import { signInWithPassword, type SignedIn } from "../../helpers/actors.js";
import { TestClock } from "../../helpers/clock.js";
import { runCli, spawnDaemon } from "../../helpers/daemon-process.js";
import { createTestDatabase, freePort, type TestDatabase } from "../../helpers/postgres.js";
import { systemClock } from "../../../daemon/clock.js";
import { assignCareTeam, binary, openClinic, registerPatient, tag, type Clinic } from "../records/helpers.js";
import { tempDir } from "./helpers.js";
import { startS3, startSshd, type S3Server, type Sshd } from "./servers.js";

/**
 * The user's disaster: appliance A (two tenants, patients, notes, consents, an attachment; one
 * patient erased and crypto-shredded after the first snapshot) loses its data directory and its
 * database. A brand-new appliance B is recovered from the off-site target with the recovery kit
 * alone, from the OLD snapshot, and serves the same values through its API; the shredded
 * patient stays gone. Once per kind of target: a directory, SFTP (OpenSSH) and S3 (s3rver).
 */
const DAY = 86_400_000;
// Debian's openssh-server provides the SFTP peer; without it the SFTP case is reported as skipped.
const HAVE_SSHD = fs.existsSync("/usr/sbin/sshd");
const clock = new TestClock();
let dir: string;
let sshd: Sshd;
let s3: S3Server;
let a: TestAppliance;
let kit: string;
let passphraseFile: string;
let north: Clinic;
let south: Clinic;
let snap1: string;
let snap2: string;
const targetFiles: Record<string, string> = {};

type Person = { email: string; password: string; totpSecret: string | null };
const person = (s: SignedIn): Person => ({ email: s.user.email, password: s.password, totpSecret: s.totpSecret });
let people: Record<"northDesk" | "northDoctor" | "northAuditor" | "southDesk" | "southDoctor", Person>;

type Expected = { patient: unknown; notes: unknown; consents: unknown; attachment?: { id: string; bytes: Buffer } };
const expected = new Map<string, Expected>();
let kept: { north: string; south: string };
let erased: string;
let late: string;
let northList: string[];

async function fullRecord(clinic: Clinic, name: string, withAttachment: boolean): Promise<string> {
  const p = await registerPatient(clinic, {
    name,
    mrn: `MRN-${randomBytes(3).toString("hex")}`,
    email: `${randomBytes(3).toString("hex")}@example.org`,
    birthDate: "1958-02-11",
    phone: "+1 555 0100",
  });
  await assignCareTeam(clinic, p.id);
  const note = await clinic.doctor.agent.post(`/api/v1/patients/${p.id}/notes`).send({ body: `Assessment of ${name}: stable.` });
  expect(note.status, JSON.stringify(note.body)).toBe(201);
  const edited = await clinic.doctor.agent
    .put(`/api/v1/patients/${p.id}/notes/${note.body.id}`)
    .set("If-Match", tag(note))
    .send({ body: `Assessment of ${name}: stable, afebrile.` });
  expect(edited.status, JSON.stringify(edited.body)).toBe(200);
  const consent = await clinic.frontDesk.agent
    .post(`/api/v1/patients/${p.id}/consents`)
    .send({ type: "treatment", textVersion: "7", scope: `Outpatient care for ${name}`, evidence: { method: "attestation", statement: "Signed paper form." } });
  expect(consent.status, JSON.stringify(consent.body)).toBe(201);
  if (withAttachment) {
    const file = await clinic.doctor.agent
      .post(`/api/v1/patients/${p.id}/attachments?kind=document`)
      .set("Content-Type", "application/pdf")
      .set("Content-Disposition", 'attachment; filename="referral.pdf"')
      .send(randomBytes(30_000));
    expect(file.status, JSON.stringify(file.body)).toBe(201);
  }
  return p.id;
}

/** What a clinic's staff read about one patient through the API. */
async function readBack(desk: SignedIn, doctor: SignedIn, patientId: string): Promise<Expected> {
  const patient = await desk.agent.get(`/api/v1/patients/${patientId}`);
  expect(patient.status, JSON.stringify(patient.body)).toBe(200);
  const notes = await doctor.agent.get(`/api/v1/patients/${patientId}/notes`);
  expect(notes.status, JSON.stringify(notes.body)).toBe(200);
  const consents = await desk.agent.get(`/api/v1/patients/${patientId}/consents`);
  expect(consents.status, JSON.stringify(consents.body)).toBe(200);
  const out: Expected = { patient: patient.body, notes: notes.body, consents: consents.body };
  const files = await doctor.agent.get(`/api/v1/patients/${patientId}/attachments`);
  if (files.status === 200 && files.body.items?.length) {
    const id = files.body.items[0].id as string;
    const content = await doctor.agent.get(`/api/v1/patients/${patientId}/attachments/${id}/content`).buffer(true).parse(binary);
    expect(content.status).toBe(200);
    out.attachment = { id, bytes: content.body as Buffer };
  }
  return out;
}

beforeAll(async () => {
  dir = tempDir("wardkeep-disaster-");
  s3 = await startS3();
  if (HAVE_SSHD) sshd = await startSshd();
  a = await startTestAppliance({
    clock,
    env: { WARDKEEP_BACKUP_SCHEDULER_ENABLED: "false", WARDKEEP_BACKUP_SEGMENT_KIB: "64", WARDKEEP_RECORDS_DELETION_GRACE_DAYS: "1" },
  });
  const targets = {
    fs: { kind: "fs" as const, name: "nas", path: path.join(dir, "nas") },
    sftp: HAVE_SSHD
      ? { kind: "sftp" as const, name: "offsite-sftp", host: "127.0.0.1", port: sshd.port, username: "root", path: sshd.root, hostKeySha256: sshd.hostKeySha256 }
      : undefined,
    s3: {
      kind: "s3" as const,
      name: "offsite-s3",
      bucket: s3.bucket,
      prefix: "wardkeep/",
      region: "us-east-1",
      endpoint: s3.endpoint,
      forcePathStyle: true,
      accessKeyId: "S3RVER",
      partSizeMiB: 5,
    },
  };
  await inScope(a.ctx.db.app, { kind: "appliance" }, (t) =>
    writePolicy(
      a.ctx,
      t,
      {
        targets: [targets.fs, targets.s3, ...(targets.sftp ? [targets.sftp] : [])],
        targetSecrets: { "offsite-s3": { secretAccessKey: "S3RVER" }, ...(HAVE_SSHD ? { "offsite-sftp": { privateKey: sshd.clientKey } } : {}) },
      },
      null,
    ),
  );
  // What the recovery team keeps off-site: the kit, and each target's connection details.
  kit = path.join(dir, "kit.pem");
  await issueRecoveryKit(a.ctx, { out: kit });
  targetFiles.fs = path.join(dir, "nas.json");
  fs.writeFileSync(targetFiles.fs, JSON.stringify(targets.fs));
  if (targets.sftp) {
    targetFiles.sftp = path.join(dir, "sftp.json");
    fs.writeFileSync(targetFiles.sftp, JSON.stringify({ ...targets.sftp, secrets: { privateKey: sshd.clientKey } }));
  }
  targetFiles.s3 = path.join(dir, "s3.json");
  fs.writeFileSync(targetFiles.s3, JSON.stringify({ ...targets.s3, secrets: { secretAccessKey: "S3RVER" } }));
  passphraseFile = path.join(dir, "new-passphrase");
  fs.writeFileSync(passphraseFile, "a brand new passphrase for appliance B\n", { mode: 0o600 });

  [north, south] = [await openClinic(a, "North Clinic"), await openClinic(a, "South Clinic")];
  people = {
    northDesk: person(north.frontDesk),
    northDoctor: person(north.doctor),
    northAuditor: person(north.auditor),
    southDesk: person(south.frontDesk),
    southDoctor: person(south.doctor),
  };
  kept = { north: await fullRecord(north, "Ada Lovelace", true), south: await fullRecord(south, "Grace Hopper", false) };
  erased = await fullRecord(north, "Mary Seacole", false);
  expected.set(kept.north, await readBack(north.frontDesk, north.doctor, kept.north));
  expected.set(kept.south, await readBack(south.frontDesk, south.doctor, kept.south));
  expect(expected.get(kept.north)!.attachment?.bytes.length).toBe(30_000);

  const first = await runSnapshot(a.ctx, { trigger: "manual" });
  expect(first.status, first.error ?? "").toBe("complete");
  snap1 = first.id;
  // Registered after the first run: only the second key-store backup holds this patient's key.
  late = (await registerPatient(south, { name: "Late Arrival" })).id;

  // Erased and crypto-shredded after the first snapshot: the old snapshot still holds the rows.
  const requested = await north.owner.agent.delete(`/api/v1/patients/${erased}`);
  expect(requested.status, JSON.stringify(requested.body)).toBe(202);
  clock.advance(2 * DAY);
  expect(await purgeDueDeletions(a.ctx)).toContainEqual(expect.objectContaining({ patientId: erased, result: "purged" }));
  const desk = await signInWithPassword(a, people.northDesk);
  northList = (await desk.agent.get("/api/v1/patients")).body.items.map((p: { id: string }) => p.id);
  expect(northList).toContain(kept.north);
  expect(northList).not.toContain(erased);

  const second = await runSnapshot(a.ctx, { trigger: "manual" });
  expect(second.status, second.error ?? "").toBe("complete");
  snap2 = second.id;

  // The disaster: A's database and data directory are gone for good.
  await a.close();
}, 300_000);

afterAll(async () => {
  await a?.close().catch(() => {});
  await Promise.allSettled([sshd?.stop(), s3?.stop()]);
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

async function recoverB(kind: string, extra: string[] = []): Promise<{ db: TestDatabase; dataDir: string; result: Awaited<ReturnType<typeof runCli>> }> {
  const db = await createTestDatabase();
  const dataDir = tempDir("wardkeep-appliance-b-");
  const result = await runCli(
    ["recover", "--json", "--target-file", targetFiles[kind]!, "--recovery-key", kit, "--unseal", "passphrase", "--passphrase-file", passphraseFile, ...extra],
    testEnv(db, dataDir),
  );
  return { db, dataDir, result };
}

describe.each(["fs", "sftp", "s3"])("recovery of the whole appliance from a %s target", (kind) => {
  it.skipIf(kind === "sftp" && !HAVE_SSHD)(
    "brings back every surviving value on a fresh appliance with the kit alone, and not the shredded patient",
    async () => {
      const { db, dataDir, result } = await recoverB(kind, ["--snapshot", snap1]);
      let b: TestAppliance | undefined;
      try {
        // Only runtime notices (the AWS SDK warns about Node versions) may reach stderr, never a failure line.
        expect(result.stderr).not.toMatch(/^wardkeep: /m);
        expect(result.code, result.stdout).toBe(0);
        const out = JSON.parse(result.stdout).recovery;
        expect(out).toMatchObject({
          snapshotId: snap1,
          keyStoreBackup: snap2,
          keyStore: { shreddedSubjects: 1, dataKeysLeftOut: expect.any(Number) },
          purged: { patients: 1 },
          attachments: { restored: 1 },
          unseal: { mode: "passphrase" },
          restore: { auditChain: { checked: true, intact: true } },
        });
        expect(out.keyStore.dataKeysLeftOut).toBe(0); // A destroyed the key itself; the backup never had it
        expect(result.stdout).not.toMatch(/Ada Lovelace|Mary Seacole|Grace Hopper/);

        b = await startTestAppliance({
          db,
          dataDir,
          clock,
          env: { WARDKEEP_BACKUP_SCHEDULER_ENABLED: "false", WARDKEEP_KEYS_UNSEAL: "passphrase", WARDKEEP_KEYS_PASSPHRASE_FILE: passphraseFile },
        });
        expect(b.ctx.rootKey.isSealed).toBe(false);
        const northDesk = await signInWithPassword(b, people.northDesk);
        const northDoctor = await signInWithPassword(b, people.northDoctor);
        const southDesk = await signInWithPassword(b, people.southDesk);
        const southDoctor = await signInWithPassword(b, people.southDoctor);

        const n = await readBack(northDesk, northDoctor, kept.north);
        const want = expected.get(kept.north)!;
        expect(n.patient).toEqual(want.patient);
        expect(n.notes).toEqual(want.notes);
        expect(n.consents).toEqual(want.consents);
        expect(n.attachment?.id).toBe(want.attachment!.id);
        expect(n.attachment!.bytes.equals(want.attachment!.bytes)).toBe(true);
        const s = await readBack(southDesk, southDoctor, kept.south);
        expect(s).toEqual(expected.get(kept.south));

        // The patient shredded after the snapshot is gone, and the list works without it.
        expect((await northDesk.agent.get(`/api/v1/patients/${erased}`)).status).toBe(404);
        const list = await northDesk.agent.get("/api/v1/patients");
        expect(list.status, JSON.stringify(list.body)).toBe(200);
        expect(list.body.items.map((p: { id: string }) => p.id).sort()).toEqual([...northList].sort());
        expect((await northDoctor.agent.get(`/api/v1/patients/${erased}/notes`)).status).toBe(404);

        // Tenant isolation came back with the data: South's staff cannot see North's patient.
        expect((await southDesk.agent.get(`/api/v1/patients/${kept.north}`)).status).toBe(404);

        const auditor = await signInWithPassword(b, people.northAuditor);
        const verify = await auditor.agent.get("/api/v1/audit/verify");
        expect(verify.status, JSON.stringify(verify.body)).toBe(200);
        expect(verify.body.intact).toBe(true);
        expect(b.logLines.join("\n")).not.toMatch(/Ada Lovelace|Mary Seacole|Grace Hopper/);
      } finally {
        await b?.close();
        await db.drop();
        fs.rmSync(dataDir, { recursive: true, force: true });
      }
    },
    240_000,
  );
});

describe("recovery into the embedded PostgreSQL", () => {
  it("recovers into a brand-new data directory with no database configured, and `wardkeep start` serves the patients", async () => {
    const dataDir = tempDir("wardkeep-embedded-b-");
    fs.chmodSync(dataDir, 0o711);
    const env = {
      WARDKEEP_DATA_DIR: dataDir,
      WARDKEEP_DATABASE_EMBEDDED_PORT: String(await freePort()),
      WARDKEEP_PORT: "0",
      WARDKEEP_SERVER_REDIRECT_PORT: "0",
      WARDKEEP_SERVER_HOST: "127.0.0.1",
      WARDKEEP_BACKUP_SCHEDULER_ENABLED: "false",
    };
    let daemon: ReturnType<typeof spawnDaemon> | undefined;
    try {
      const r = await runCli(["recover", "--json", "--target-file", targetFiles.fs!, "--recovery-key", kit, "--unseal", "keyfile"], env);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      const out = JSON.parse(r.stdout).recovery;
      expect(out).toMatchObject({ snapshotId: snap2, keyStoreBackup: snap2, unseal: { mode: "keyfile", keyFile: path.join(dataDir, "keys", "root.key") } });
      expect(fs.statSync(path.join(dataDir, "keys", "root.key")).mode & 0o777).toBe(0o600);

      daemon = spawnDaemon(env);
      const port = await daemon.port();
      const caPem = fs.readFileSync(path.join(dataDir, "tls", "ca.crt"), "utf8");
      // The daemon runs on the real clock (the one TOTP codes are computed with here).
      const b = { baseUrl: `https://localhost:${port}`, caPem, ctx: { clock: systemClock } } as unknown as TestAppliance;
      const desk = await signInWithPassword(b, people.southDesk);
      const patient = await desk.agent.get(`/api/v1/patients/${kept.south}`);
      expect(patient.status, JSON.stringify(patient.body)).toBe(200);
      expect(patient.body).toEqual(expected.get(kept.south)!.patient);
      expect(daemon.stdout() + daemon.stderr()).not.toMatch(/Setup token|Grace Hopper/);
    } finally {
      await daemon?.stop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  }, 240_000);
});

describe("recovery refusals (one line, non-zero exit, nothing written)", () => {
  it("refuses a wrong recovery kit before touching the new appliance", async () => {
    const wrong = path.join(dir, "wrong-kit.pem");
    const { generateRecoveryKeyPair } = await import("../../../daemon/keys/recovery-crypto.js");
    fs.writeFileSync(wrong, generateRecoveryKeyPair().privateKey.export({ format: "pem", type: "pkcs8" }) as string);
    const db = await createTestDatabase();
    const dataDir = tempDir("wardkeep-appliance-b-");
    try {
      const r = await runCli(
        ["recover", "--target-file", targetFiles.fs!, "--recovery-key", wrong, "--unseal", "passphrase", "--passphrase-file", passphraseFile],
        testEnv(db, dataDir),
      );
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^wardkeep: wrong recovery key: this snapshot is wrapped for recovery key [0-9a-f:]+, the key given is [0-9a-f:]+\n$/);
      const c = await import("pg").then((pg) => new pg.default.Client({ connectionString: db.ownerUrl }));
      await c.connect();
      expect((await c.query("SELECT count(*)::int AS n FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")).rows[0].n).toBe(0);
      await c.end();
    } finally {
      await db.drop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it("refuses backups signed by another key than the one pinned with --expect-signer", async () => {
    const db = await createTestDatabase();
    const dataDir = tempDir("wardkeep-appliance-b-");
    try {
      const r = await runCli(
        ["recover", "--target-file", targetFiles.fs!, "--recovery-key", kit, "--unseal", "keyfile", "--expect-signer", randomBytes(32).toString("hex")],
        testEnv(db, dataDir),
      );
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`^wardkeep: key-store backup ${snap2} was signed by [0-9a-f]{16}, which is not a trusted signer\n$`));
      expect(fs.existsSync(path.join(dataDir, "keys", "root.key"))).toBe(false);
    } finally {
      await db.drop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it("refuses a target without a key-store backup: the data alone would be ciphertext", async () => {
    const copy = path.join(dir, "nas-without-keystores");
    fs.cpSync(path.join(dir, "nas"), copy, { recursive: true });
    fs.rmSync(path.join(copy, "keystores"), { recursive: true });
    const tf = path.join(dir, "copy.json");
    fs.writeFileSync(tf, JSON.stringify({ kind: "fs", name: "nas-copy", path: copy }));
    const db = await createTestDatabase();
    const dataDir = tempDir("wardkeep-appliance-b-");
    try {
      const r = await runCli(["recover", "--json", "--target-file", tf, "--recovery-key", kit, "--unseal", "keyfile"], testEnv(db, dataDir));
      expect(r.code).toBe(1);
      expect(JSON.parse(r.stdout)).toEqual({ ok: false, error: expect.stringMatching(/^target nas-copy holds no key-store backup: without one, no encrypted value/) });
    } finally {
      await db.drop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it("refuses a snapshot newer than the newest key-store backup instead of restoring ciphertext", async () => {
    const copy = path.join(dir, "nas-older-keystore");
    fs.cpSync(path.join(dir, "nas"), copy, { recursive: true });
    fs.rmSync(path.join(copy, "keystores", snap2), { recursive: true });
    const tf = path.join(dir, "older.json");
    fs.writeFileSync(tf, JSON.stringify({ kind: "fs", name: "nas-older", path: copy }));
    const db = await createTestDatabase();
    const dataDir = tempDir("wardkeep-appliance-b-");
    try {
      const r = await runCli(["recover", "--target-file", tf, "--recovery-key", kit, "--snapshot", snap2, "--unseal", "keyfile"], testEnv(db, dataDir));
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(
        new RegExp(
          `^wardkeep: the snapshot cannot be read with the newest key-store backup \\(.*stored values name data keys that key-store backup ${snap1} does not hold: patients\\.name_enc: 1 value\\(s\\) under patient/${late} v1.*recover a --snapshot taken no later than ${snap1}\n$`,
        ),
      );
      const c = new pg.Client({ connectionString: db.ownerUrl });
      await c.connect();
      try {
        expect((await c.query("SELECT count(*)::int AS n FROM patients")).rows[0].n).toBe(0);
      } finally {
        await c.end();
      }
    } finally {
      await db.drop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it("refuses a database that is not empty", async () => {
    const { db, dataDir, result } = await recoverB("fs");
    try {
      expect(result.code, result.stderr).toBe(0);
      const again = await runCli(["recover", "--target-file", targetFiles.fs!, "--recovery-key", kit, "--unseal", "keyfile"], testEnv(db, dataDir));
      expect(again.code).toBe(1);
      expect(again.stderr).toMatch(/^wardkeep: the database .* is not empty \(\d+ relations, e\.g\. .+\); restore writes only into an empty database/);
      // The key file made for the refused attempt is removed again.
      expect(fs.existsSync(path.join(dataDir, "keys", "root.key"))).toBe(false);
    } finally {
      await db.drop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  }, 120_000);
});
