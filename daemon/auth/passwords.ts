import argon2 from "argon2";
import { Invalid } from "../http/errors.js";

/**
 * argon2id at OWASP's minimum (m = 19 MiB, t = 2, p = 1: OWASP Password Storage Cheat Sheet);
 * the identity capability makes these configurable and rehashes on login when they change.
 */
export const ARGON2_PARAMS = { type: argon2.argon2id, memoryCost: 19_456, timeCost: 2, parallelism: 1 } as const;

export async function hashPassword(password: string): Promise<string> {
  return argon2.hash(password, ARGON2_PARAMS);
}

export async function verifyPassword(hash: string, password: string): Promise<boolean> {
  try {
    return await argon2.verify(hash, password);
  } catch {
    return false;
  }
}

/** NIST SP 800-63B §5.1.1.2: at least 8 characters; we ask 12 of staff who reach PHI, and cap the length. */
export function assertPasswordAcceptable(password: string) {
  if (password.length < 12) throw new Invalid("the password must be at least 12 characters long");
  if (password.length > 256) throw new Invalid("the password must be at most 256 characters long");
}
