import argon2 from "argon2";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../../../daemon/config/load.js";
import { argon2ParamsFrom, assertPasswordAcceptable, hashPassword, isCommonPassword, needsRehash, verifyPassword } from "../../../daemon/auth/passwords.js";

describe("password rules", () => {
  it("refuses passwords from the bundled list of the 10,000 most common ones, in any case", () => {
    for (const p of ["password", "iloveyou", "Superman", "trustno1"]) expect(isCommonPassword(p)).toBe(true);
    expect(isCommonPassword("glacier-orbit-7f3a9c")).toBe(false);
  });

  it("refuses common passwords padded to pass the length rule", () => {
    for (const p of ["Password1234!", "iloveyou2024", "letmeinletmein", "qwertyuiop12", "aaaaaaaaaaaaaa"]) {
      expect(() => assertPasswordAcceptable(p), p).toThrow(/common or breached/);
    }
  });

  it("asks for 12 to 256 characters and refuses the email's local part inside the password", () => {
    expect(() => assertPasswordAcceptable("short-pass")).toThrow(/at least 12/);
    expect(() => assertPasswordAcceptable("x".repeat(257))).toThrow(/at most 256/);
    expect(() => assertPasswordAcceptable("drsmithson-42-orbit", { email: "drsmithson@clinic.example" })).toThrow(/email/);
    expect(() => assertPasswordAcceptable("correct horse battery")).not.toThrow();
  });
});

describe("argon2id hashing", () => {
  it("hashes with argon2id at the configured parameters and verifies", async () => {
    const params = argon2ParamsFrom(loadConfig({ env: {} }));
    expect(params).toMatchObject({ memoryCost: 19_456, timeCost: 2, parallelism: 1 });
    const hash = await hashPassword("correct horse battery", params);
    expect(hash).toMatch(/^\$argon2id\$v=19\$m=19456,p=1,t=2\$/);
    expect(await verifyPassword(hash, "correct horse battery")).toBe(true);
    expect(await verifyPassword(hash, "correct horse batterY")).toBe(false);
    expect(await verifyPassword("not-a-hash", "x")).toBe(false);
  });

  it("flags hashes made with weaker parameters or another algorithm for rehashing", async () => {
    const base = argon2ParamsFrom(loadConfig({ env: {} }));
    const hash = await hashPassword("correct horse battery", base);
    expect(needsRehash(hash, base)).toBe(false);
    expect(needsRehash(hash, { ...base, timeCost: 3 })).toBe(true);
    expect(needsRehash(await argon2.hash("x", { type: argon2.argon2i, memoryCost: 19_456, timeCost: 2, parallelism: 1 }), base)).toBe(true);
  });

  it("refuses argon2 settings below OWASP's minimum in config", () => {
    expect(() => loadConfig({ env: { WARDKEEP_AUTH_ARGON2_MEMORY_KIB: "4096" } })).toThrow(/auth\.argon2MemoryKib/);
    expect(() => loadConfig({ env: { WARDKEEP_AUTH_ARGON2_TIME_COST: "1" } })).toThrow(/auth\.argon2TimeCost/);
  });
});
