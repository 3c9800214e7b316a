import fs from "node:fs";
import { FsTarget } from "./fs.js";
import { S3Target } from "./s3.js";
import { SftpTarget } from "./sftp.js";
import type { SnapshotTarget, TargetDefinition, TargetSecrets } from "./target.js";

export * from "./target.js";

function readSecretFile(file: string | undefined): string | undefined {
  if (!file) return undefined;
  try {
    return fs.readFileSync(file, "utf8").replace(/\r?\n$/, "");
  } catch (err) {
    throw new Error(`cannot read secret file ${file} (${(err as NodeJS.ErrnoException).code})`);
  }
}

/** Builds a target from its definition and its secrets (given directly or as files). */
export function openTarget(def: TargetDefinition, secrets: TargetSecrets = {}): SnapshotTarget {
  switch (def.kind) {
    case "fs":
      return new FsTarget({ name: def.name, path: def.path, quotaBytes: def.quotaBytes });
    case "sftp":
      return new SftpTarget({
        name: def.name,
        host: def.host,
        port: def.port,
        username: def.username,
        path: def.path,
        hostKeySha256: def.hostKeySha256,
        privateKey: secrets.privateKey ?? readSecretFile(def.privateKeyFile),
        passphrase: secrets.passphrase,
        password: secrets.password,
      });
    case "s3":
      return new S3Target({
        name: def.name,
        bucket: def.bucket,
        prefix: def.prefix,
        region: def.region,
        endpoint: def.endpoint,
        forcePathStyle: def.forcePathStyle,
        accessKeyId: def.accessKeyId,
        secretAccessKey: secrets.secretAccessKey ?? readSecretFile(def.secretAccessKeyFile),
        objectLock: def.objectLock,
        partSizeMiB: def.partSizeMiB,
      });
  }
}
