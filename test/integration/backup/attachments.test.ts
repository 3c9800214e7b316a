/**
 * Attachments are part of every snapshot: their ciphertext is copied to each target once
 * (content-addressed, referenced by later snapshots), listed with digests in the manifest, and
 * restorable into an empty attachments directory with every digest checked.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { attachmentDigestCheck, restoreAttachments, type AttachmentEntry } from "../../../backup/attachments.js";
import { readManifest } from "../../../backup/catalog.js";
import { SnapshotIntegrityError } from "../../../backup/errors.js";
import { S3Target } from "../../../backup/targets/s3.js";
import { writePolicy } from "../../../daemon/backups/policy.js";
import { openAlerts, runDrill, runSnapshot, verifySnapshotById } from "../../../daemon/backups/service.js";
import { inScope } from "../../../daemon/db/sql.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { asSuperuser, assignCareTeam, openClinic, registerPatient, type Clinic } from "../records/helpers.js";
import { fsTarget, tempDir } from "./helpers.js";
import { startS3, startSshd, type S3Server, type Sshd } from "./servers.js";

let app: TestAppliance;
let clinic: Clinic;
let patientId: string;
let s3: S3Server;
let sshd: Sshd;
let dir: string;
const uploaded: { id: string; content: Buffer }[] = [];

const nas = () => fsTarget(path.join(dir, "nas"), "nas");
const offsite = () =>
  new S3Target({
    name: "offsite",
    bucket: s3.bucket,
    prefix: "wk/",
    endpoint: s3.endpoint,
    forcePathStyle: true,
    accessKeyId: "S3RVER",
    secretAccessKey: "S3RVER",
    partSizeMiB: 5,
  });

beforeAll(async () => {
  dir = tempDir();
  [s3, sshd] = await Promise.all([startS3(), startSshd()]);
  app = await startTestAppliance({
    env: {
      WARDKEEP_BACKUP_SCHEDULER_ENABLED: "false",
      WARDKEEP_BACKUP_SEGMENT_KIB: "64",
      WARDKEEP_RECORDS_ATTACHMENT_SEGMENT_KIB: "64",
      WARDKEEP_BACKUP_DRILL_ADMIN_URL: inject("pgCluster").superuserUrl,
    },
  });
  await inScope(app.ctx.db.app, { kind: "appliance" }, (t) =>
    writePolicy(
      app.ctx,
      t,
      {
        targets: [
          { kind: "fs", name: "nas", path: path.join(dir, "nas") },
          {
            kind: "s3",
            name: "offsite",
            bucket: s3.bucket,
            prefix: "wk/",
            endpoint: s3.endpoint,
            forcePathStyle: true,
            accessKeyId: "S3RVER",
            region: "us-east-1",
            partSizeMiB: 5,
          },
          { kind: "sftp", name: "vault", host: "127.0.0.1", port: sshd.port, username: "root", path: sshd.root, hostKeySha256: sshd.hostKeySha256 },
        ],
        targetSecrets: { offsite: { secretAccessKey: "S3RVER" }, vault: { privateKey: sshd.clientKey } },
      },
      null,
    ),
  );
  clinic = await openClinic(app, "Harbour Clinic");
  patientId = (await registerPatient(clinic, { name: "Ada Lovelace" })).id;
  await assignCareTeam(clinic, patientId);
});
afterAll(async () => {
  await app?.close();
  await s3?.stop();
  await sshd?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

async function upload(name: string, bytes = 200_000): Promise<{ id: string; content: Buffer }> {
  const content = Buffer.concat([Buffer.from(`%PDF-1.7 discharge letter for ${name} `), randomBytes(bytes)]);
  const res = await clinic.doctor.agent.post(`/api/v1/patients/${patientId}/attachments?kind=document`).set("Content-Type", "application/pdf").send(content);
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  const a = { id: res.body.id as string, content };
  uploaded.push(a);
  return a;
}

async function storedRow(id: string) {
  const [row] = await asSuperuser<{ storage_path: string; cipher_sha256: Buffer; stored_bytes: string }>(
    app,
    "SELECT storage_path, cipher_sha256, stored_bytes FROM attachments WHERE id = $1",
    [id],
  );
  return { ...row!, file: path.join(app.dataDir, "attachments", row!.storage_path) };
}

async function entriesOf(snapshotId: string): Promise<AttachmentEntry[]> {
  const target = nas();
  try {
    return (await readManifest(target, snapshotId)).body.attachments?.entries ?? [];
  } finally {
    await target.close();
  }
}

describe("attachments in snapshots", () => {
  it("copies every attachment's ciphertext to each target, with its digest in the manifest", async () => {
    const a = await upload("first");
    const b = await upload("second");
    // More files than are copied at once, so uploads overlap (and folders are created on a fresh target).
    const more = [await upload("x", 20_000), await upload("y", 20_000), await upload("z", 20_000), await upload("w", 20_000)];
    const run = await runSnapshot(app.ctx, { trigger: "manual" });
    expect(run.status, run.error ?? "").toBe("complete");
    expect(run.attachments).toMatchObject({
      total: 6,
      missing: [],
      targets: expect.arrayContaining([
        { target: "nas", uploaded: 6, referenced: 0, uploadedBytes: expect.any(Number) },
        { target: "offsite", uploaded: 6, referenced: 0, uploadedBytes: expect.any(Number) },
        { target: "vault", uploaded: 6, referenced: 0, uploadedBytes: expect.any(Number) },
      ]),
    });
    const entries = await entriesOf(run.id);
    expect(entries.map((e) => e.id).sort()).toEqual([a.id, b.id, ...more.map((m) => m.id)].sort());
    for (const e of entries) {
      const row = await storedRow(e.id);
      expect(e.sha256).toBe(row.cipher_sha256.toString("hex"));
      expect(e.storedBytes).toBe(Number(row.stored_bytes));
      expect(e.storagePath).toBe(row.storage_path);
      // The object on the target is the appliance's own encrypted file, byte for byte: no plaintext.
      const onNas = fs.readFileSync(path.join(dir, "nas", e.key));
      expect(onNas.equals(fs.readFileSync(row.file))).toBe(true);
      expect(onNas.includes(Buffer.from("%PDF-1.7 discharge letter"))).toBe(false);
    }
    const s3Keys = (await offsite().list("attachments/")).map((e) => e.key).sort();
    expect(s3Keys).toEqual(entries.map((e) => e.key).sort());
  });

  it("references attachments already on a target and uploads only the new one", async () => {
    const c = await upload("third");
    const run = await runSnapshot(app.ctx, { trigger: "manual" });
    expect(run.status).toBe("complete");
    expect(run.attachments?.total).toBe(7);
    expect(run.attachments?.targets).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ target: "nas", uploaded: 1, referenced: 6 }),
        expect.objectContaining({ target: "offsite", uploaded: 1, referenced: 6 }),
        expect.objectContaining({ target: "vault", uploaded: 1, referenced: 6 }),
      ]),
    );
    const sha = (await storedRow(c.id)).cipher_sha256.toString("hex");
    expect((await entriesOf(run.id)).find((e) => e.id === c.id)?.key).toBe(`attachments/${sha.slice(0, 2)}/${sha}.wka`);
    // Seven objects for seven attachments across two snapshots: nothing was stored twice.
    expect((await offsite().list("attachments/")).length).toBe(7);
    expect(fs.readdirSync(path.join(sshd.root, "attachments")).flatMap((d) => fs.readdirSync(path.join(sshd.root, "attachments", d))).length).toBe(7);
  });

  it("restores every attachment from S3 into an empty attachments directory, digests verified, and keeps files already there", async () => {
    const [latest] = (await offsite().list("snapshots/"))
      .filter((e) => e.key.endsWith("manifest.json"))
      .map((e) => e.key.split("/")[1]!)
      .sort()
      .reverse();
    const target = offsite();
    const into = tempDir("wardkeep-restored-attachments-");
    try {
      const entries = (await readManifest(target, latest!)).body.attachments!.entries;
      const r = await restoreAttachments({ target, entries, root: into });
      expect(r).toMatchObject({ restored: 7, alreadyPresent: 0, failures: [] });
      for (const e of entries) {
        const restored = path.join(into, e.storagePath);
        expect(fs.readFileSync(restored).equals(fs.readFileSync((await storedRow(e.id)).file))).toBe(true);
        expect(fs.statSync(restored).mode & 0o777).toBe(0o600);
        expect(fs.statSync(path.dirname(restored)).mode & 0o777).toBe(0o700);
      }
      expect(fs.readdirSync(path.join(into, entries[0]!.storagePath, "..")).filter((f) => f.endsWith(".part"))).toEqual([]);
      expect(await restoreAttachments({ target, entries, root: into })).toMatchObject({ restored: 0, alreadyPresent: 7 });
      const check = await attachmentDigestCheck(target, entries[0]!);
      expect(check).toMatchObject({ id: entries[0]!.id, ok: true, bytes: entries[0]!.storedBytes });
    } finally {
      await target.close();
      fs.rmSync(into, { recursive: true, force: true });
    }
  });

  it("refuses a damaged or missing object by attachment id, and still restores the others", async () => {
    const [latest] = fs
      .readdirSync(path.join(dir, "nas", "snapshots"))
      .sort()
      .reverse();
    const target = nas();
    const into = tempDir("wardkeep-restored-attachments-");
    const entries = await entriesOf(latest!);
    const [damaged, gone, intact] = entries;
    const damagedFile = path.join(dir, "nas", damaged!.key);
    const original = fs.readFileSync(damagedFile);
    const goneFile = path.join(dir, "nas", gone!.key);
    const goneBytes = fs.readFileSync(goneFile);
    try {
      const flipped = Buffer.from(original);
      flipped[100]! ^= 1;
      fs.writeFileSync(damagedFile, flipped);
      fs.rmSync(goneFile);
      expect(await attachmentDigestCheck(target, damaged!)).toMatchObject({ ok: false, detail: expect.stringMatching(/does not match its SHA-256/) });
      expect(await attachmentDigestCheck(target, gone!)).toMatchObject({ ok: false, detail: expect.stringMatching(/not readable on target nas/) });
      const err = await restoreAttachments({ target, entries, root: into }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(SnapshotIntegrityError);
      expect((err as Error).message).toMatch(/2 of 7 attachment\(s\) could not be restored/);
      expect((err as Error).message).toContain(damaged!.id);
      expect((err as Error).message).toContain(gone!.id);
      expect(fs.existsSync(path.join(into, damaged!.storagePath))).toBe(false);
      expect(fs.existsSync(path.join(into, gone!.storagePath))).toBe(false);
      expect(fs.readFileSync(path.join(into, intact!.storagePath)).length).toBe(intact!.storedBytes);
      // A truncated object is named as such.
      fs.writeFileSync(damagedFile, original.subarray(0, 1000));
      expect(await attachmentDigestCheck(target, damaged!)).toMatchObject({ ok: false, detail: expect.stringMatching(/truncated/) });
    } finally {
      fs.writeFileSync(damagedFile, original);
      fs.writeFileSync(goneFile, goneBytes);
      await target.close();
      fs.rmSync(into, { recursive: true, force: true });
    }
  });

  it("leaves out an attachment whose file is gone, unreadable or altered on the appliance, lists it by id and raises attachment_missing", async () => {
    const lost = await upload("lost");
    const altered = await upload("altered");
    const unreadable = await upload("unreadable");
    fs.rmSync((await storedRow(lost.id)).file);
    // A name that fails mid-read (EISDIR), like a disk error under the file.
    const unreadableFile = (await storedRow(unreadable.id)).file;
    fs.rmSync(unreadableFile);
    fs.mkdirSync(unreadableFile);
    const alteredFile = (await storedRow(altered.id)).file;
    const bytes = fs.readFileSync(alteredFile);
    bytes[bytes.length - 5]! ^= 1;
    fs.writeFileSync(alteredFile, bytes);
    const alteredSha = (await storedRow(altered.id)).cipher_sha256.toString("hex");

    const run = await runSnapshot(app.ctx, { trigger: "manual" });
    expect(run.status).toBe("complete");
    expect(run.attachments?.missing).toEqual(
      expect.arrayContaining([
        { id: lost.id, reason: "the file is not in the attachments directory" },
        { id: altered.id, reason: "the file does not match its recorded digest" },
        { id: unreadable.id, reason: "the file could not be read" },
      ]),
    );
    expect(run.targets.every((t) => t.ok)).toBe(true);
    const entries = await entriesOf(run.id);
    expect(entries.map((e) => e.id)).not.toContain(lost.id);
    expect(entries.map((e) => e.id)).not.toContain(altered.id);
    // Nothing is published under a digest it does not have.
    expect(fs.existsSync(path.join(dir, "nas", "attachments", alteredSha.slice(0, 2), `${alteredSha}.wka`))).toBe(false);
    expect((await offsite().list("attachments/")).map((e) => e.key)).not.toContain(`attachments/${alteredSha.slice(0, 2)}/${alteredSha}.wka`);
    const alert = (await openAlerts(app.ctx)).find((a) => a.kind === "attachment_missing");
    expect(alert?.detail).toContain(lost.id);
    expect(alert?.detail).not.toMatch(/lost|altered|discharge/);
    expect(app.logLines.some((l) => /backup alert raised: attachment_missing/.test(l))).toBe(true);

    // Once the files are whole again (here: the rows go), the next snapshot clears the alert.
    await asSuperuser(app, "DELETE FROM attachments WHERE id = ANY($1::uuid[])", [[lost.id, altered.id, unreadable.id]]);
    const next = await runSnapshot(app.ctx, { trigger: "manual" });
    expect(next.attachments?.missing).toEqual([]);
    expect((await openAlerts(app.ctx)).map((a) => a.kind)).not.toContain("attachment_missing");
  });

  it("drops a target that fails while taking attachments from the snapshot (partial), and the other target completes it", async () => {
    await upload("during an outage");
    const attachmentsDir = path.join(dir, "nas", "attachments");
    const aside = path.join(dir, "nas-attachments-aside");
    fs.renameSync(attachmentsDir, aside);
    fs.writeFileSync(attachmentsDir, "not a directory"); // the share's folder is broken
    try {
      const run = await runSnapshot(app.ctx, { trigger: "manual" });
      expect(run.status).toBe("partial");
      expect(run.targets).toEqual(
        expect.arrayContaining([
          expect.objectContaining({ target: "nas", ok: false, error: expect.stringMatching(/target nas: list attachments\/ failed: ENOTDIR/) }),
          expect.objectContaining({ target: "offsite", ok: true }),
        ]),
      );
      // No manifest on the failed target: nothing there claims attachments it lacks.
      expect(fs.existsSync(path.join(dir, "nas", "snapshots", run.id, "manifest.json"))).toBe(false);
      const s3 = offsite();
      try {
        expect((await readManifest(s3, run.id)).body.attachments?.entries.length).toBe(run.attachments?.total);
      } finally {
        await s3.close();
      }
      expect(run.attachments?.targets.map((t) => t.target).sort()).toEqual(["offsite", "vault"]);
      expect((await openAlerts(app.ctx)).find((a) => a.kind === "target_failed" && a.subject === "nas")).toBeDefined();
    } finally {
      fs.rmSync(attachmentsDir);
      fs.renameSync(aside, attachmentsDir);
    }
    const next = await runSnapshot(app.ctx, { trigger: "manual" });
    expect(next.status).toBe("complete");
    expect(next.attachments?.targets.find((t) => t.target === "nas")).toMatchObject({ uploaded: 1 });
  });

  it("keeps the manifest's attachment list under its MAC: the list is part of the signed body", async () => {
    const [latest] = fs
      .readdirSync(path.join(dir, "nas", "snapshots"))
      .sort()
      .reverse();
    const manifest = JSON.parse(fs.readFileSync(path.join(dir, "nas", "snapshots", latest!, "manifest.json"), "utf8"));
    expect(manifest.body.attachments.entries.length).toBeGreaterThan(0);
    const file = path.join(dir, "nas", "snapshots", latest!, "manifest.json");
    const original = fs.readFileSync(file);
    try {
      manifest.body.attachments.entries[0].sha256 = "0".repeat(64);
      fs.chmodSync(file, 0o600);
      fs.writeFileSync(file, JSON.stringify(manifest));
      await expect(verifySnapshotById(app.ctx, latest!, { target: "nas" })).rejects.toThrow(/MAC/);
    } finally {
      fs.writeFileSync(file, original);
    }
  });

  it("a drill reads one attachment back from the target against the manifest's digest, and fails by name when the target's copy was altered", async () => {
    const run = await runSnapshot(app.ctx, { trigger: "manual" });
    const good = await runDrill(app.ctx, { trigger: "manual", snapshotId: run.id, target: "nas" });
    expect(good.checks.find((c) => c.name === "attachment bytes")).toMatchObject({ ok: true, detail: expect.stringMatching(/SHA-256 as in the manifest/) });
    // Every attachment object on the target altered, so whichever the drill samples is damaged.
    const objects = fs.readdirSync(path.join(dir, "nas", "attachments"), { recursive: true, withFileTypes: true }).filter((e) => e.isFile());
    const saved = objects.map((e) => {
      const file = path.join(e.parentPath, e.name);
      const bytes = fs.readFileSync(file);
      const altered = Buffer.from(bytes);
      altered[altered.length - 1]! ^= 0x01;
      fs.chmodSync(file, 0o600);
      fs.writeFileSync(file, altered);
      return { file, bytes };
    });
    try {
      const bad = await runDrill(app.ctx, { trigger: "manual", snapshotId: run.id, target: "nas" });
      expect(bad.status).toBe("failed");
      expect(bad.checks.find((c) => c.name === "attachment bytes")).toMatchObject({ ok: false });
      expect(bad.error).toMatch(/attachment bytes: /);
    } finally {
      for (const { file, bytes } of saved) fs.writeFileSync(file, bytes);
    }
  });
});
