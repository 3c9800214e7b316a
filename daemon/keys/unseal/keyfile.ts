import fs from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { UnsealError, type SealCreation, type UnsealSource } from "./source.js";

/**
 * Overwrites a key file no longer in use with random bytes, flushes it to disk, then deletes it.
 * After a rekey the old file no longer unseals the key store, but it still unseals every
 * key-store backup taken before the rekey: it must not linger next to the data. (On a
 * copy-on-write or journaling file system the old blocks may survive the overwrite; the
 * deletion is what matters most, and docs/keys.md says so.)
 */
export function shredKeyFile(file: string): boolean {
  let fd: number;
  try {
    fd = fs.openSync(file, "r+");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw new UnsealError(`cannot open the old key file ${file} to shred it (${(err as NodeJS.ErrnoException).code})`, "unavailable");
  }
  try {
    const size = Math.max(fs.fstatSync(fd).size, 65);
    fs.writeSync(fd, randomBytes(size), 0, size, 0);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.unlinkSync(file);
  return true;
}

/**
 * Unseal key kept in a file next to the data (hex, mode 0600). It is the weakest source — anyone
 * who copies the data directory and the database has everything — so it exists for trying the
 * appliance out; production unseals with a passphrase, Shamir custodians or an HSM.
 * Replicas share one key store, so each needs a copy of the same file.
 */
export class KeyFileUnseal implements UnsealSource {
  readonly mode = "keyfile" as const;
  readonly wrongKeyMessage: string;

  constructor(private readonly file: string) {
    this.wrongKeyMessage = `the key file ${file} does not belong to this key store (it was made by another install or replaced); copy the file of the replica that initialised the key store`;
  }

  /** Uses a provisioned file (the same one on every replica) or writes a new random key. */
  async create(): Promise<SealCreation> {
    if (fs.existsSync(this.file)) return { unsealKey: this.read(), params: {} };
    fs.mkdirSync(path.dirname(this.file), { recursive: true, mode: 0o700 });
    const key = randomBytes(32);
    try {
      fs.writeFileSync(this.file, key.toString("hex") + "\n", { mode: 0o600, flag: "wx" });
    } catch (err) {
      // Another replica sharing this directory won the race: use its key.
      if ((err as NodeJS.ErrnoException).code === "EEXIST") {
        key.fill(0);
        return { unsealKey: this.read(), params: {} };
      }
      throw new UnsealError(`cannot write key file ${this.file} (${(err as NodeJS.ErrnoException).code})`);
    }
    return { unsealKey: key, params: {}, createdFile: this.file };
  }

  async open(): Promise<Buffer> {
    return this.read();
  }

  private read(): Buffer {
    let stat: fs.Stats;
    try {
      stat = fs.statSync(this.file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") {
        throw new UnsealError(`key file ${this.file} not found: every replica needs a copy of the key file of the install that initialised the key store`, "unavailable");
      }
      throw new UnsealError(`cannot read key file ${this.file} (${(err as NodeJS.ErrnoException).code})`, "unavailable");
    }
    if ((stat.mode & 0o077) !== 0) {
      throw new UnsealError(`key file ${this.file} is readable by other users (mode ${(stat.mode & 0o777).toString(8)}); run chmod 600 on it`, "unavailable");
    }
    const text = fs.readFileSync(this.file, "utf8").trim();
    if (!/^[0-9a-f]{64}$/i.test(text)) {
      throw new UnsealError(`key file ${this.file} does not hold a 256-bit key (64 hex characters)`, "malformed");
    }
    return Buffer.from(text, "hex");
  }
}
