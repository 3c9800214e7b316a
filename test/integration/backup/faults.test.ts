import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { removeIncompleteSnapshots, scanTarget } from "../../../backup/catalog.js";
import { verifySnapshot } from "../../../backup/restore.js";
import { takeSnapshot } from "../../../backup/snapshot.js";
import { SftpTarget } from "../../../backup/targets/sftp.js";
import { applianceSecret, fsTarget, recoveryPair, seededDatabase, snapshotOptions, tempDir, type Seeded } from "./helpers.js";
import { startSshd, type Sshd } from "./servers.js";

let seeded: Seeded;
let sshd: Sshd;
const dirs: string[] = [];
const secret = applianceSecret();
const recovery = recoveryPair();
const opener = { applianceSecret: secret };

beforeAll(async () => {
  // About 6 MB of incompressible-looking rows: several MiB per object, so a run can be cut mid-object.
  [seeded, sshd] = await Promise.all([seededDatabase({ chain: false, users: 2500, payloadBytes: 2400 }), startSshd()]);
});
afterAll(async () => {
  await Promise.allSettled([seeded?.db.drop(), sshd?.stop()]);
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function dir(): string {
  const d = tempDir();
  dirs.push(d);
  return d;
}

const snap = (targets: Parameters<typeof snapshotOptions>[1]["targets"], extra = {}) =>
  takeSnapshot(snapshotOptions(seeded.db, { targets, applianceSecret: secret, recoveryPublicKey: recovery.publicRaw, ...extra }));

describe("a snapshot cut short leaves the previous snapshots valid and the next run succeeds", () => {
  it("when the process is killed mid-object", async () => {
    const root = dir();
    const before = await snap([fsTarget(root)]);
    const child = spawn(process.execPath, ["--import", "tsx", path.join(import.meta.dirname, "fixtures", "snapshot-child.ts")], {
      env: {
        ...process.env,
        CHILD_DB_URL: seeded.db.ownerUrl,
        CHILD_TARGET_DIR: root,
        CHILD_SECRET: secret.toString("hex"),
        CHILD_RECOVERY_PUB: recovery.publicRaw.toString("hex"),
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const killed = await new Promise<string>((resolve, reject) => {
      child.stdout.on("data", (d: Buffer) => {
        const text = d.toString();
        if (text.includes("finished")) reject(new Error("the child finished before it could be killed"));
        const m = /progress (\d+)/.exec(text);
        if (m && Number(m[1]) >= 1 << 20) {
          child.kill("SIGKILL");
          resolve(m[1]!);
        }
      });
      child.on("exit", (code) => code !== null && reject(new Error(`child exited ${code}: ${stderr}`)));
    });
    await new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r(null) : child.once("exit", r)));
    expect(Number(killed)).toBeGreaterThanOrEqual(1 << 20);

    const target = fsTarget(root);
    const scan = await scanTarget(target);
    expect(scan.complete).toEqual([before.snapshotId]);
    expect(scan.incomplete).toHaveLength(1);
    expect(scan.incomplete[0]!.bytes).toBeGreaterThan(0);
    await verifySnapshot({ target, snapshotId: before.snapshotId, opener });

    expect((await removeIncompleteSnapshots(target)).removed).toEqual([scan.incomplete[0]!.id]);
    const next = await snap([target]);
    expect(next.ok).toBe(true);
    expect((await scanTarget(target)).complete).toEqual([before.snapshotId, next.snapshotId]);
    await verifySnapshot({ target, snapshotId: next.snapshotId, opener });
  });

  it("when the target fills up (ENOSPC)", async () => {
    const root = dir();
    const first = await snap([fsTarget(root, "nas", 1 << 30)]);
    const used = (await fsTarget(root).list("")).reduce((n, e) => n + e.size, 0);
    // Room for half of another snapshot: the second run runs out of space mid-way.
    const full = fsTarget(root, "nas", used + Math.floor(used / 2));
    const failed = await snap([full]);
    expect(failed.ok).toBe(false);
    expect(failed.targets[0]).toMatchObject({ target: "nas", ok: false, error: expect.stringMatching(/ENOSPC \(the target is full\)/) });
    const scan = await scanTarget(full);
    expect(scan.complete).toEqual([first.snapshotId]);
    await verifySnapshot({ target: full, snapshotId: first.snapshotId, opener });

    // Space is freed (the partial run swept, the share grown): the next run succeeds.
    const roomy = fsTarget(root, "nas", used * 3);
    await removeIncompleteSnapshots(roomy);
    const next = await snap([roomy]);
    expect(next.ok).toBe(true);
    expect((await scanTarget(roomy)).complete).toEqual([first.snapshotId, next.snapshotId]);
  });

  it("when the SFTP server stops mid-upload (the NAS copy still completes)", async () => {
    const sftp = () =>
      new SftpTarget({ name: "offsite", host: "127.0.0.1", port: sshd.port, username: "root", path: sshd.root, hostKeySha256: sshd.hostKeySha256, privateKey: sshd.clientKey });
    const nasRoot = dir();
    const first = await snap([sftp()]);
    expect(first.ok).toBe(true);

    let killing: Promise<void> | undefined;
    const target = sftp();
    const cut = await snap([target, fsTarget(nasRoot)], {
      onProgress: (p: { plainBytes: number }) => {
        if (!killing && p.plainBytes >= 1 << 20) killing = sshd.kill();
      },
    });
    await killing;
    await target.close();
    expect(killing).toBeDefined();
    expect(cut.ok).toBe(true); // the NAS holds it
    expect(cut.targets).toEqual([
      expect.objectContaining({ target: "offsite", ok: false, error: expect.stringMatching(/target offsite: .*failed/) }),
      expect.objectContaining({ target: "nas", ok: true }),
    ]);
    await verifySnapshot({ target: fsTarget(nasRoot), snapshotId: cut.snapshotId, opener });

    await sshd.restart();
    const back = sftp();
    try {
      const scan = await scanTarget(back);
      expect(scan.complete).toEqual([first.snapshotId]);
      expect(scan.incomplete.map((d) => d.id)).toEqual([cut.snapshotId]);
      await verifySnapshot({ target: back, snapshotId: first.snapshotId, opener });
      await removeIncompleteSnapshots(back);
      const next = await snap([back]);
      expect(next.ok).toBe(true);
      expect((await scanTarget(back)).complete).toEqual([first.snapshotId, next.snapshotId]);
    } finally {
      await back.close();
    }
  });
});
