import { execFileSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { base32, matchTotp, newRecoveryCodes, newTotpSecret } from "../../../daemon/auth/mfa.js";

/** The independent TOTP client (OATH Toolkit), as an authenticator app would compute the code. */
function oathtool(secret: string, at: Date): string {
  const when = at
    .toISOString()
    .replace("T", " ")
    .replace(/\.\d+Z$/, " UTC");
  return execFileSync("/usr/bin/oathtool", ["--totp", "-b", secret, "--now", when], { encoding: "utf8" }).trim();
}

describe("TOTP", () => {
  it("encodes base32 as RFC 4648 (test vectors)", () => {
    expect(base32(Buffer.from(""))).toBe("");
    expect(base32(Buffer.from("f"))).toBe("MY");
    expect(base32(Buffer.from("foobar"))).toBe("MZXW6YTBOI");
  });

  it("makes 160-bit secrets", () => {
    const s = newTotpSecret();
    expect(s).toMatch(/^[A-Z2-7]{32}$/);
    expect(newTotpSecret()).not.toBe(s);
  });

  it("accepts the code oathtool computes for the same secret and time", () => {
    const secret = newTotpSecret();
    const at = new Date("2031-05-04T10:20:07Z");
    const code = oathtool(secret, at);
    expect(code).toMatch(/^\d{6}$/);
    expect(matchTotp(secret, code, at)).toBe(Math.floor(at.getTime() / 30_000));
  });

  it("tolerates one step of clock drift and refuses codes further away", () => {
    const secret = newTotpSecret();
    const at = new Date("2031-05-04T10:20:07Z");
    expect(matchTotp(secret, oathtool(secret, new Date(at.getTime() - 30_000)), at)).not.toBeNull();
    expect(matchTotp(secret, oathtool(secret, new Date(at.getTime() + 30_000)), at)).not.toBeNull();
    expect(matchTotp(secret, oathtool(secret, new Date(at.getTime() - 90_000)), at)).toBeNull();
    expect(matchTotp(secret, "12345", at)).toBeNull();
    expect(matchTotp(secret, "abcdef", at)).toBeNull();
  });

  it("refuses a code made with another secret", () => {
    const at = new Date("2031-05-04T10:20:07Z");
    expect(matchTotp(newTotpSecret(), oathtool(newTotpSecret(), at), at)).toBeNull();
  });
});

describe("recovery codes", () => {
  it("makes ten distinct 80-bit codes grouped for reading", () => {
    const codes = newRecoveryCodes();
    expect(codes).toHaveLength(10);
    expect(new Set(codes).size).toBe(10);
    for (const c of codes) expect(c).toMatch(/^[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}$/);
  });
});
