import { generateKeyPairSync } from "node:crypto";
import { describe, expect, it } from "vitest";
import { DecryptionError } from "../../../daemon/keys/primitives.js";
import {
  generateRecoveryKeyPair,
  rawPrivateKey,
  rawPublicKey,
  recoveryFingerprint,
  recoveryPrivateKeyFromRaw,
  unwrapWithRecovery,
  wrapForRecovery,
} from "../../../daemon/keys/recovery-crypto.js";

describe("recovery wrap (X25519 + HKDF-SHA-256 + AES-256-GCM)", () => {
  const pair = generateRecoveryKeyPair();
  const snapshotKey = Buffer.from("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", "hex");

  it("unwraps with the private half what the public half wrapped, from KeyObjects or raw bytes", () => {
    const blob = wrapForRecovery(pair.publicKey, snapshotKey);
    expect(unwrapWithRecovery(pair.privateKey, blob)).toEqual(snapshotKey);
    expect(unwrapWithRecovery(rawPrivateKey(pair.privateKey), wrapForRecovery(rawPublicKey(pair.publicKey), snapshotKey))).toEqual(snapshotKey);
  });

  it("uses a fresh ephemeral key per wrap, so two wraps of one key differ", () => {
    const a = wrapForRecovery(pair.publicKey, snapshotKey);
    const b = wrapForRecovery(pair.publicKey, snapshotKey);
    expect(a.subarray(1, 33).equals(b.subarray(1, 33))).toBe(false);
    expect(a.equals(b)).toBe(false);
    expect(a.length).toBe(1 + 32 + 12 + 32 + 16);
  });

  it("refuses another recovery key", () => {
    const blob = wrapForRecovery(pair.publicKey, snapshotKey);
    expect(() => unwrapWithRecovery(generateRecoveryKeyPair().privateKey, blob)).toThrow(DecryptionError);
  });

  it("detects a flipped bit anywhere in the blob", () => {
    const blob = wrapForRecovery(pair.publicKey, snapshotKey);
    for (const at of [0, 1, 20, 33, 40, 45, 60, blob.length - 1]) {
      const bad = Buffer.from(blob);
      bad[at]! ^= 0x01;
      expect(() => unwrapWithRecovery(pair.privateKey, bad), `byte ${at}`).toThrow(DecryptionError);
    }
    expect(() => unwrapWithRecovery(pair.privateKey, blob.subarray(0, 40))).toThrow(DecryptionError);
  });

  it("rejects keys of the wrong type instead of misusing them", () => {
    const ed = generateKeyPairSync("ed25519");
    expect(() => wrapForRecovery(ed.publicKey, snapshotKey)).toThrow(/X25519/);
  });

  it("round-trips the private key through its raw form and names the pair by a stable fingerprint", () => {
    const again = recoveryPrivateKeyFromRaw(rawPrivateKey(pair.privateKey));
    expect(rawPrivateKey(again)).toEqual(rawPrivateKey(pair.privateKey));
    expect(recoveryFingerprint(pair.publicKey)).toBe(recoveryFingerprint(rawPublicKey(pair.publicKey)));
    expect(recoveryFingerprint(pair.publicKey)).toMatch(/^([0-9a-f]{4}:){7}[0-9a-f]{4}$/);
  });
});
