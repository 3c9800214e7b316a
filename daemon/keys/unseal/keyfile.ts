import fs from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { UnsealError, type UnsealSource } from "./source.js";

/**
 * Root key kept in a file next to the data (hex, mode 0600). It is the weakest source — anyone
 * who copies the data directory copies the key — so it exists for trying the appliance out;
 * production unseals with a passphrase, Shamir custodians or an HSM.
 */
export class KeyFileUnseal implements UnsealSource {
  readonly mode = "keyfile" as const;
  constructor(private readonly file: string) {}

  async unseal(): Promise<{ kek: Buffer; created: boolean }> {
    if (!fs.existsSync(this.file)) {
      fs.mkdirSync(path.dirname(this.file), { recursive: true, mode: 0o700 });
      const kek = randomBytes(32);
      fs.writeFileSync(this.file, kek.toString("hex") + "\n", { mode: 0o600, flag: "wx" });
      return { kek, created: true };
    }
    const stat = fs.statSync(this.file);
    if ((stat.mode & 0o077) !== 0) {
      throw new UnsealError(`key file ${this.file} is readable by other users (mode ${(stat.mode & 0o777).toString(8)}); run chmod 600 on it`);
    }
    const text = fs.readFileSync(this.file, "utf8").trim();
    if (!/^[0-9a-f]{64}$/i.test(text)) {
      throw new UnsealError(`key file ${this.file} does not hold a 256-bit key (64 hex characters)`);
    }
    return { kek: Buffer.from(text, "hex"), created: false };
  }
}
