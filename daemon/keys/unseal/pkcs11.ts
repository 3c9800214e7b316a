import fs from "node:fs";
import { randomBytes } from "node:crypto";
import type * as Pkcs11Types from "pkcs11js";
import { z } from "zod";
import type { KeysConfig } from "../config.js";
import { zeroize } from "../primitives.js";
import { UnsealError, type CreateSealInput, type SealCreation, type UnsealSource } from "./source.js";

type Pkcs11Module = typeof Pkcs11Types;
type Session = { p: Pkcs11Types.PKCS11; session: Buffer; lib: Pkcs11Module; tokenLabel: string };

const AAD = Buffer.from("wardkeep/unseal-key/pkcs11/v1", "utf8");

const paramsSchema = z
  .object({
    tokenLabel: z.string(),
    keyLabel: z.string().min(1),
    iv: z.string().regex(/^[A-Za-z0-9_-]{16}$/),
    wrapped: z.string().regex(/^[A-Za-z0-9_-]+$/),
  })
  .strict();

/** pkcs11js is a native addon: load it only when an HSM is configured, and say so when it failed to build. */
async function loadLibrary(): Promise<Pkcs11Module> {
  try {
    const mod = (await import("pkcs11js")) as unknown as { default?: Pkcs11Module } & Pkcs11Module;
    return mod.default ?? mod;
  } catch {
    throw new UnsealError("the pkcs11js native module is not available (its build failed at npm install); pkcs11 unseal cannot be used on this machine", "unavailable");
  }
}

function pkcs11Code(err: unknown): string {
  const e = err as { message?: string; code?: number };
  return typeof e?.message === "string" && /^CKR_\w+$/.test(e.message) ? e.message : "an HSM error";
}

/**
 * An AES-256 key that never leaves the HSM (CKA_SENSITIVE, not extractable) wraps the random
 * unseal key with AES-GCM inside the token; only that wrapped blob is stored. Unsealing needs
 * the token and its PIN: copying the database and the data directory is not enough.
 */
export class Pkcs11Unseal implements UnsealSource {
  readonly mode = "pkcs11" as const;
  readonly wrongKeyMessage = "the HSM key does not unwrap this key store's unseal key (another token or a replaced key)";

  constructor(private readonly config: KeysConfig["pkcs11"]) {}

  async create(input: CreateSealInput): Promise<SealCreation> {
    return this.withSession(async (s) => {
      let key = this.findKey(s);
      if (!key) {
        if (!input.createHsmKey) {
          throw new UnsealError(
            `token "${s.tokenLabel}" has no AES key labelled "${this.config.keyLabel}": create one, or run \`wardkeep keys init --unseal pkcs11 --create-hsm-key\``,
            "unavailable",
          );
        }
        key = this.generateKey(s);
      }
      const unsealKey = randomBytes(32);
      const iv = randomBytes(12);
      let wrapped: Buffer;
      try {
        s.p.C_EncryptInit(s.session, this.mechanism(s.lib, iv), key);
        wrapped = Buffer.from(s.p.C_Encrypt(s.session, unsealKey, Buffer.alloc(unsealKey.length + 32)));
      } catch (err) {
        zeroize(unsealKey);
        throw new UnsealError(`the HSM refused to wrap the unseal key (${pkcs11Code(err)}); the key must allow CKM_AES_GCM encryption`, "unavailable");
      }
      return {
        unsealKey,
        params: { tokenLabel: s.tokenLabel, keyLabel: this.config.keyLabel, iv: iv.toString("base64url"), wrapped: wrapped.toString("base64url") },
      };
    });
  }

  async open(stored: Record<string, unknown>): Promise<Buffer> {
    const parsed = paramsSchema.safeParse(stored);
    if (!parsed.success) throw new UnsealError("the key store's PKCS#11 parameters are damaged", "unavailable");
    const params = parsed.data;
    return this.withSession(async (s) => {
      const key = this.findKey(s, params.keyLabel);
      if (!key) throw new UnsealError(`token "${s.tokenLabel}" has no key labelled "${params.keyLabel}" (was it deleted, or is this another token?)`, "unavailable");
      try {
        s.p.C_DecryptInit(s.session, this.mechanism(s.lib, Buffer.from(params.iv, "base64url")), key);
        return Buffer.from(s.p.C_Decrypt(s.session, Buffer.from(params.wrapped, "base64url"), Buffer.alloc(64)));
      } catch {
        throw new UnsealError(this.wrongKeyMessage, "wrong-secret");
      }
    }, params.tokenLabel);
  }

  private mechanism(lib: Pkcs11Module, iv: Buffer): Pkcs11Types.Mechanism {
    return { mechanism: lib.CKM_AES_GCM, parameter: { type: lib.CK_PARAMS_AES_GCM, iv, aad: AAD, ivBits: 96, tagBits: 128 } as Pkcs11Types.AesGCM };
  }

  private readPin(): string {
    if (!this.config.pinFile) throw new UnsealError("keys.pkcs11.pinFile is not set: the HSM user PIN is read from a file", "unavailable");
    try {
      return fs.readFileSync(this.config.pinFile, "utf8").replace(/\r?\n$/, "");
    } catch (err) {
      throw new UnsealError(`cannot read the HSM PIN file ${this.config.pinFile} (${(err as NodeJS.ErrnoException).code})`, "unavailable");
    }
  }

  private async withSession<T>(work: (s: Session) => Promise<T>, storedTokenLabel?: string): Promise<T> {
    if (!this.config.module) throw new UnsealError("keys.pkcs11.module is not set: give the path of the HSM's PKCS#11 library", "unavailable");
    const lib = await loadLibrary();
    const pin = this.readPin();
    const p = new lib.PKCS11();
    try {
      p.load(this.config.module);
    } catch {
      throw new UnsealError(`cannot load the PKCS#11 library ${this.config.module}`, "unavailable");
    }
    let initialised = false;
    let session: Buffer | undefined;
    try {
      try {
        p.C_Initialize();
        initialised = true;
      } catch (err) {
        throw new UnsealError(`the PKCS#11 library ${this.config.module} failed to initialise (${pkcs11Code(err)})`, "unavailable");
      }
      const wanted = this.config.tokenLabel ?? storedTokenLabel;
      const tokens = p.C_GetSlotList(true).map((slot) => ({ slot, label: p.C_GetTokenInfo(slot).label.trim() }));
      const token = wanted ? tokens.find((t) => t.label === wanted) : tokens[0];
      if (!token) {
        throw new UnsealError(
          wanted ? `no HSM token labelled "${wanted}" is present (is the HSM connected and the token initialised?)` : "no HSM token is present (is the HSM connected?)",
          "unavailable",
        );
      }
      session = p.C_OpenSession(token.slot, lib.CKF_SERIAL_SESSION | lib.CKF_RW_SESSION);
      try {
        p.C_Login(session, lib.CKU_USER, pin);
      } catch (err) {
        const code = pkcs11Code(err);
        if (code !== "CKR_USER_ALREADY_LOGGED_IN") {
          throw new UnsealError(
            code === "CKR_PIN_INCORRECT" ? `HSM login to token "${token.label}" failed: wrong PIN` : `HSM login to token "${token.label}" failed (${code})`,
            code === "CKR_PIN_INCORRECT" ? "wrong-secret" : "unavailable",
          );
        }
      }
      return await work({ p, session, lib, tokenLabel: token.label });
    } finally {
      if (session) {
        try {
          p.C_Logout(session);
        } catch {
          /* already logged out */
        }
        try {
          p.C_CloseSession(session);
        } catch {
          /* token removed */
        }
      }
      if (initialised) {
        try {
          p.C_Finalize();
        } catch {
          /* nothing to release */
        }
      }
      try {
        p.close();
      } catch {
        /* library already unloaded */
      }
    }
  }

  private findKey(s: Session, label = this.config.keyLabel): Buffer | undefined {
    s.p.C_FindObjectsInit(s.session, [
      { type: s.lib.CKA_CLASS, value: s.lib.CKO_SECRET_KEY },
      { type: s.lib.CKA_KEY_TYPE, value: s.lib.CKK_AES },
      { type: s.lib.CKA_LABEL, value: label },
    ]);
    try {
      const found = s.p.C_FindObjects(s.session, 2);
      if (found.length > 1) throw new UnsealError(`token "${s.tokenLabel}" holds more than one key labelled "${label}"; labels must be unique`, "unavailable");
      return found[0];
    } finally {
      s.p.C_FindObjectsFinal(s.session);
    }
  }

  private generateKey(s: Session): Buffer {
    try {
      return s.p.C_GenerateKey(s.session, { mechanism: s.lib.CKM_AES_KEY_GEN }, [
        { type: s.lib.CKA_CLASS, value: s.lib.CKO_SECRET_KEY },
        { type: s.lib.CKA_KEY_TYPE, value: s.lib.CKK_AES },
        { type: s.lib.CKA_TOKEN, value: true },
        { type: s.lib.CKA_PRIVATE, value: true },
        { type: s.lib.CKA_LABEL, value: this.config.keyLabel },
        { type: s.lib.CKA_VALUE_LEN, value: 32 },
        { type: s.lib.CKA_ENCRYPT, value: true },
        { type: s.lib.CKA_DECRYPT, value: true },
        // The key must never be readable outside the HSM: that is the point of using one.
        { type: s.lib.CKA_SENSITIVE, value: true },
        { type: s.lib.CKA_EXTRACTABLE, value: false },
      ]);
    } catch (err) {
      throw new UnsealError(`the HSM could not create an AES-256 key (${pkcs11Code(err)})`, "unavailable");
    }
  }
}
