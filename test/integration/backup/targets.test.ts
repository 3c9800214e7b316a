import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { Readable } from "node:stream";
import { buffer } from "node:stream/consumers";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { scanTarget } from "../../../backup/catalog.js";
import { TargetError } from "../../../backup/errors.js";
import { restoreSnapshot, verifySnapshot } from "../../../backup/restore.js";
import { takeSnapshot } from "../../../backup/snapshot.js";
import { S3Target } from "../../../backup/targets/s3.js";
import { SftpTarget } from "../../../backup/targets/sftp.js";
import type { SnapshotTarget } from "../../../backup/targets/target.js";
import { runWormSelfTest } from "../../../backup/worm.js";
import { APP_ROLE } from "../../../daemon/db/roles.js";
import { createTestDatabase } from "../../helpers/postgres.js";
import { applianceSecret, auditVerifier, fsTarget, recoveryPair, seededDatabase, snapshotOptions, tableCounts, tempDir, type Seeded } from "./helpers.js";
import { startS3, startSshd, type S3Server, type Sshd } from "./servers.js";

let seeded: Seeded;
let sshd: Sshd;
let s3: S3Server;
let dir: string;
const secret = applianceSecret();
const recovery = recoveryPair();

beforeAll(async () => {
  [seeded, sshd, s3] = await Promise.all([seededDatabase({ chain: false, users: 300 }), startSshd(), startS3()]);
  dir = tempDir();
});
afterAll(async () => {
  await Promise.allSettled([seeded?.db.drop(), sshd?.stop(), s3?.stop()]);
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const sftp = (name = "offsite-sftp", hostKeySha256 = sshd.hostKeySha256) =>
  new SftpTarget({ name, host: "127.0.0.1", port: sshd.port, username: "root", path: sshd.root, hostKeySha256, privateKey: sshd.clientKey });
const s3Target = (name = "offsite-s3") =>
  new S3Target({ name, bucket: s3.bucket, prefix: "wardkeep/", endpoint: s3.endpoint, forcePathStyle: true, accessKeyId: "S3RVER", secretAccessKey: "S3RVER", partSizeMiB: 5 });

const kinds: [string, () => SnapshotTarget][] = [
  ["a directory", () => fsTarget(path.join(dir, "fs"))],
  ["SFTP (OpenSSH)", () => sftp()],
  ["S3 (s3rver)", () => s3Target()],
];

describe.each(kinds)("target contract on %s", (_label, make) => {
  it("streams a multi-part object, reads it back, lists and deletes it", async () => {
    const target = make();
    try {
      const data = randomBytes(11 * 1024 * 1024 + 123);
      const chunks = Array.from({ length: Math.ceil(data.length / 65536) }, (_, i) => data.subarray(i * 65536, (i + 1) * 65536));
      expect(await target.putStream("contract/big.bin", Readable.from(chunks))).toBe(data.length);
      expect((await buffer(await target.get("contract/big.bin"))).equals(data)).toBe(true);
      expect(await target.list("contract/")).toEqual([{ key: "contract/big.bin", size: data.length }]);
      await target.delete("contract/big.bin");
      expect(await target.list("contract/")).toEqual([]);
    } finally {
      await target.close();
    }
  });

  it("writes catalog files once and refuses to replace them", async () => {
    const target = make();
    try {
      await target.putOnce("contract/once.json", Buffer.from("{}"));
      await expect(target.putOnce("contract/once.json", Buffer.from('{"x":1}'))).rejects.toBeInstanceOf(TargetError);
      expect((await buffer(await target.get("contract/once.json"))).toString()).toBe("{}");
      await target.delete("contract/once.json");
    } finally {
      await target.close();
    }
  });
});

describe("snapshots on every target at once", () => {
  it("writes one snapshot to the directory, SFTP and S3 in one pass and restores it from each", async () => {
    const targets = kinds.map(([, make]) => make());
    try {
      const snap = await takeSnapshot(snapshotOptions(seeded.db, { targets, applianceSecret: secret, recoveryPublicKey: recovery.publicRaw }));
      expect(snap.ok).toBe(true);
      expect(snap.targets.map((t) => t.ok)).toEqual([true, true, true]);
      for (const target of targets) {
        expect((await scanTarget(target)).complete).toEqual([snap.snapshotId]);
        await verifySnapshot({ target, snapshotId: snap.snapshotId, opener: { applianceSecret: secret } });
        const into = await createTestDatabase();
        try {
          const restored = await restoreSnapshot({
            target,
            snapshotId: snap.snapshotId,
            intoUrl: into.ownerUrl,
            appRole: APP_ROLE,
            opener: { recoveryPrivateKey: recovery.privateKey },
            verifyAuditChain: auditVerifier(),
          });
          expect(restored.rows).toBe(snap.rows);
          expect(await tableCounts(into.ownerUrl)).toEqual(await tableCounts(seeded.db.ownerUrl));
        } finally {
          await into.drop();
        }
      }
    } finally {
      await Promise.all(targets.map((t) => t.close()));
    }
  });

  it("refuses an SFTP server that presents another host key", async () => {
    const target = sftp("mitm", "SHA256:" + "A".repeat(43));
    await expect(target.list("snapshots/")).rejects.toThrow(/presented host key SHA256:\S+, not the pinned SHA256:A+; refusing to connect/);
    await target.close();
  });
});

describe("WORM self-test", () => {
  it("passes on a directory that refuses deletes (append-only) and fails on ordinary storage", async () => {
    const worm = path.join(dir, "worm");
    fs.mkdirSync(worm);
    const plain = fsTarget(path.join(dir, "plain"), "plain");
    fs.mkdirSync(path.join(worm, "selftest"));
    // chattr +a: files can be created in the directory but never removed, like a SnapLock share.
    execFileSync("chattr", ["+a", path.join(worm, "selftest")]);
    try {
      const ok = await runWormSelfTest(fsTarget(worm, "worm"));
      expect(ok).toMatchObject({ target: "worm", enforced: true });
      expect(ok.detail).toMatch(/delete refused \(EPERM\)/);
    } finally {
      execFileSync("chattr", ["-a", path.join(worm, "selftest")]);
    }
    expect(await runWormSelfTest(plain)).toMatchObject({ target: "plain", enforced: false, detail: expect.stringMatching(/not write-once/) });
    const bucket = s3Target("s3-unlocked");
    expect(await runWormSelfTest(bucket)).toMatchObject({ enforced: false, detail: expect.stringMatching(/not versioned|not in force/) });
    await bucket.close();
  });
});
