import { Client, InvalidCredentialsError, type Entry } from "ldapts";
import { disabledFilterOf, LDAP_CAP_ACTIVE_DIRECTORY, LDAP_MATCHING_RULE_IN_CHAIN, UF_ACCOUNTDISABLE, userFilterOf, type LdapProviderConfig, type LdapSecrets } from "./config.js";

/**
 * The directory side of LDAP / Active Directory sign-in (docs/sso.md "LDAP and Active
 * Directory"): find the user's DN with the service account, refuse disabled accounts, bind as the
 * user with the typed password, expand nested groups. No account data is logged here; the caller
 * audits the outcome's `reason` (ids and reasons only, never the password or attribute values).
 */

/** What a successful directory sign-in yields (the caller turns it into an ExternalIdentity). */
export type LdapUser = {
  dn: string;
  /** objectGUID (AD, as the usual 8-4-4-4-12 text) or entryUUID (OpenLDAP). */
  subject: string;
  username: string;
  email?: string;
  displayName?: string;
  /** Every group the user is in, nested ones included, as `groupsAs` says (cn or DN). */
  groups: string[];
  /** How the groups were found, and whether the walk stopped at maxGroupDepth. */
  groupLookup: { mode: "in-chain" | "walk"; truncated: boolean };
  /** A test sign-in's view of the entry (`entryAttributes`): its readable attributes, passwords and binary values left out. */
  attributes?: Record<string, string[]>;
};

export type LdapRefusal =
  | "empty password"
  | "unknown user"
  | "ambiguous user (several entries match)"
  | "account disabled in the directory (userAccountControl ACCOUNTDISABLE)"
  | "account disabled in the directory (disabledFilter matched)"
  | "wrong password"
  | "entry has no stable id (objectGUID/entryUUID)"
  | `directory unavailable: ${string}`;

export type LdapSignIn = { ok: true; user: LdapUser } | { ok: false; reason: LdapRefusal };

/** RFC 4515 escaping of a value placed in a filter. */
export function escapeFilterValue(value: string): string {
  return value.replace(/[\\*()\0]/g, (ch) => `\\${ch.charCodeAt(0).toString(16).padStart(2, "0")}`);
}

/** A filter that matches any of the bytes given exactly (binary attributes such as objectGUID). */
function escapeBytes(bytes: Buffer): string {
  return [...bytes].map((b) => `\\${b.toString(16).padStart(2, "0")}`).join("");
}

/** AD stores a GUID's first three fields little-endian; this is the text form Windows shows. */
export function guidToText(b: Buffer): string {
  const h = (buf: Buffer) => buf.toString("hex");
  const le = (s: number, n: number) => h(Buffer.from(b.subarray(s, s + n)).reverse());
  return `${le(0, 4)}-${le(4, 2)}-${le(6, 2)}-${h(b.subarray(8, 10))}-${h(b.subarray(10, 16))}`;
}

export function guidToBytes(text: string): Buffer {
  const hex = text.replace(/-/g, "");
  if (!/^[0-9a-f]{32}$/i.test(hex)) throw new Error("not a GUID");
  const b = Buffer.from(hex, "hex");
  return Buffer.concat([Buffer.from(b.subarray(0, 4)).reverse(), Buffer.from(b.subarray(4, 6)).reverse(), Buffer.from(b.subarray(6, 8)).reverse(), b.subarray(8)]);
}

function one(entry: Entry, attr: string): string | undefined {
  const key = Object.keys(entry).find((k) => k.toLowerCase() === attr.toLowerCase());
  if (!key) return undefined;
  const v = entry[key];
  const first = Array.isArray(v) ? v[0] : v;
  if (first === undefined) return undefined;
  return Buffer.isBuffer(first) ? first.toString("utf8") : first;
}

function buffer(entry: Entry, attr: string): Buffer | undefined {
  const key = Object.keys(entry).find((k) => k.toLowerCase() === attr.toLowerCase());
  const v = key ? entry[key] : undefined;
  const first = Array.isArray(v) ? v[0] : v;
  return Buffer.isBuffer(first) ? first : undefined;
}

/** DNs compare without case and without spaces after separators. */
function dnKey(dn: string): string {
  return dn.toLowerCase().replace(/\s*([,=+])\s*/g, "$1");
}

const subjectAttr = (c: LdapProviderConfig) => (c.flavor === "ad" ? "objectGUID" : "entryUUID");
const usernameAttr = (c: LdapProviderConfig) => (c.flavor === "ad" ? "sAMAccountName" : "uid");

function subjectOf(c: LdapProviderConfig, entry: Entry): string | undefined {
  if (c.flavor === "ad") {
    const g = buffer(entry, "objectGUID");
    return g && g.length === 16 ? guidToText(g) : undefined;
  }
  return one(entry, "entryUUID");
}

function failureText(err: unknown): string {
  const code = (err as { code?: unknown }).code;
  const name = err instanceof Error ? err.name : "error";
  // The message of a TLS or socket error names the host and the cause, never account data.
  const msg = err instanceof Error ? err.message.slice(0, 200) : String(err).slice(0, 200);
  return `${name}${typeof code === "string" || typeof code === "number" ? ` (${code})` : ""}: ${msg}`;
}

/** A TLS-protected connection, bound as the service account. */
export async function connectDirectory(c: LdapProviderConfig, secrets: LdapSecrets): Promise<Client> {
  const tlsOptions = {
    minVersion: "TLSv1.2" as const,
    rejectUnauthorized: true,
    ...(c.caPem ? { ca: c.caPem } : {}),
    ...(c.tlsServerName ? { servername: c.tlsServerName } : {}),
  };
  const ms = c.timeoutSeconds * 1000;
  // ldapts connects with TLS whenever the constructor gets tlsOptions, so an ldap:// URL gets
  // them only at StartTLS (which must come before the bind sends a password).
  const client = new Client({ url: c.url, timeout: ms, connectTimeout: ms, ...(c.startTls ? {} : { tlsOptions }) });
  try {
    if (c.startTls) await client.startTLS({ ...tlsOptions });
    try {
      await client.bind(c.bindDn, secrets.bindPassword);
    } catch (err) {
      if (err instanceof InvalidCredentialsError) throw new Error("the directory refused the service account (bindDn or its password is wrong)", { cause: err });
      throw err;
    }
    return client;
  } catch (err) {
    await client.unbind().catch(() => undefined);
    throw err;
  }
}

const userAttributes = (c: LdapProviderConfig) => ["1.1", subjectAttr(c), usernameAttr(c), "mail", "displayName", "cn", "userAccountControl"];

/** Attributes a test sign-in never shows: secrets, and binary values that are no text. */
const HIDDEN_ATTRIBUTE = /password|pwd|unicodepwd|lmpwdhistory|ntpwdhistory|supplementalcredentials|photo|certificate|objectsid|objectguid|thumbnail|^dn$|^controls$/i;

/** The entry's attributes for a test sign-in's display: text only, at most 60 attributes of 20 values of 300 characters. */
function displayableAttributes(entry: Entry): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const [name, raw] of Object.entries(entry)) {
    if (HIDDEN_ATTRIBUTE.test(name) || Object.keys(out).length >= 60) continue;
    const values = (Array.isArray(raw) ? raw : [raw]).filter((v): v is string => typeof v === "string");
    if (values.length > 0) out[name] = values.slice(0, 20).map((v) => v.slice(0, 300));
  }
  return out;
}

async function isDisabled(c: LdapProviderConfig, client: Client, entry: Entry): Promise<LdapRefusal | null> {
  if (c.flavor === "ad") {
    const uac = Number.parseInt(one(entry, "userAccountControl") ?? "0", 10);
    if (Number.isFinite(uac) && (uac & UF_ACCOUNTDISABLE) !== 0) return "account disabled in the directory (userAccountControl ACCOUNTDISABLE)";
  }
  const filter = disabledFilterOf(c);
  if (filter) {
    const { searchEntries } = await client.search(entry.dn, { scope: "base", filter, attributes: ["1.1"] });
    if (searchEntries.length > 0) return "account disabled in the directory (disabledFilter matched)";
  }
  return null;
}

/** Does the server evaluate LDAP_MATCHING_RULE_IN_CHAIN? Only Active Directory announces it. */
async function groupMode(c: LdapProviderConfig, client: Client): Promise<"in-chain" | "walk"> {
  if (c.nestedGroups !== "auto") return c.nestedGroups;
  const { searchEntries } = await client.search("", { scope: "base", filter: "(objectClass=*)", attributes: ["supportedCapabilities"] });
  const caps = searchEntries[0]?.supportedCapabilities;
  const list = Array.isArray(caps) ? caps.map(String) : caps ? [String(caps)] : [];
  return list.includes(LDAP_CAP_ACTIVE_DIRECTORY) ? "in-chain" : "walk";
}

/**
 * Every group `dn` is in, nested groups included. In-chain: one query the domain controller
 * answers transitively. Walk: level by level over `member`/`uniqueMember`, each group visited
 * once (so a cycle A ∈ B ∈ A ends), at most `maxGroupDepth` levels.
 */
export async function groupsOf(c: LdapProviderConfig, client: Client, dn: string): Promise<{ groups: Entry[]; mode: "in-chain" | "walk"; truncated: boolean }> {
  const base = c.groupBase ?? c.userBase;
  const mode = await groupMode(c, client);
  if (mode === "in-chain") {
    const filter = `(member:${LDAP_MATCHING_RULE_IN_CHAIN}:=${escapeFilterValue(dn)})`;
    const { searchEntries } = await client.search(base, { scope: "sub", filter, attributes: ["cn"], paged: { pageSize: 500 } });
    return { groups: searchEntries, mode, truncated: false };
  }
  const seen = new Map<string, Entry>();
  let frontier = [dn];
  for (let depth = 0; depth < c.maxGroupDepth && frontier.length > 0; depth++) {
    const next: string[] = [];
    for (let i = 0; i < frontier.length; i += 50) {
      const chunk = frontier.slice(i, i + 50);
      const terms = chunk.flatMap((d) => [`(member=${escapeFilterValue(d)})`, `(uniqueMember=${escapeFilterValue(d)})`]).join("");
      const { searchEntries } = await client.search(base, { scope: "sub", filter: `(|${terms})`, attributes: ["cn"], paged: { pageSize: 500 } });
      for (const g of searchEntries) {
        const key = dnKey(g.dn);
        if (seen.has(key)) continue;
        seen.set(key, g);
        next.push(g.dn);
      }
    }
    frontier = next;
  }
  return { groups: [...seen.values()], mode, truncated: frontier.length > 0 };
}

/**
 * Signs `username` in against the directory. The service account finds exactly one entry; a
 * disabled account is refused before its password is tried; the password is checked by binding
 * as the user (so the directory's own lockout and password policy apply).
 */
export async function authenticateLdap(
  c: LdapProviderConfig,
  secrets: LdapSecrets,
  username: string,
  password: string,
  opts: { entryAttributes?: boolean } = {},
): Promise<LdapSignIn> {
  // An empty password is an "unauthenticated bind" (RFC 4513 5.1.2), which many servers accept.
  if (password.length === 0) return { ok: false, reason: "empty password" };
  let client: Client | undefined;
  try {
    client = await connectDirectory(c, secrets);
    const filter = userFilterOf(c).replaceAll("{username}", escapeFilterValue(username));
    const { searchEntries } = await client.search(c.userBase, {
      scope: "sub",
      filter,
      // A test sign-in also reads the entry's other attributes ("*"; the operational ones it needs by name).
      attributes: opts.entryAttributes ? ["*", ...userAttributes(c).slice(1)] : userAttributes(c),
      explicitBufferAttributes: c.flavor === "ad" ? ["objectGUID"] : [],
      sizeLimit: 2,
    });
    if (searchEntries.length === 0) return { ok: false, reason: "unknown user" };
    if (searchEntries.length > 1) return { ok: false, reason: "ambiguous user (several entries match)" };
    const entry = searchEntries[0]!;
    const disabled = await isDisabled(c, client, entry);
    if (disabled) return { ok: false, reason: disabled };
    const subject = subjectOf(c, entry);
    if (!subject) return { ok: false, reason: "entry has no stable id (objectGUID/entryUUID)" };
    try {
      await client.bind(entry.dn, password);
    } catch (err) {
      if (err instanceof InvalidCredentialsError) return { ok: false, reason: "wrong password" };
      throw err;
    }
    // Back to the service account: a user may not be allowed to read group entries.
    await client.bind(c.bindDn, secrets.bindPassword);
    const found = await groupsOf(c, client, entry.dn);
    const email = one(entry, "mail");
    const displayName = one(entry, "displayName") ?? one(entry, "cn");
    return {
      ok: true,
      user: {
        dn: entry.dn,
        subject,
        username: one(entry, usernameAttr(c)) ?? username,
        ...(email ? { email } : {}),
        ...(displayName ? { displayName } : {}),
        groups: found.groups.map((g) => (c.groupsAs === "dn" ? g.dn : (one(g, "cn") ?? g.dn))).sort(),
        groupLookup: { mode: found.mode, truncated: found.truncated },
        ...(opts.entryAttributes ? { attributes: displayableAttributes(entry) } : {}),
      },
    };
  } catch (err) {
    return { ok: false, reason: `directory unavailable: ${failureText(err)}` };
  } finally {
    await client?.unbind().catch(() => undefined);
  }
}

export type DirectoryStatus = "active" | "disabled" | "gone";

/**
 * The directory's view of accounts already linked to this provider, by subject: still there and
 * enabled, disabled, or gone (no entry with that id under userBase). Throws when the directory
 * cannot be asked, so a reconcile never mistakes an outage for a mass departure.
 */
export async function directoryStatus(c: LdapProviderConfig, secrets: LdapSecrets, subjects: string[]): Promise<Map<string, DirectoryStatus>> {
  const result = new Map<string, DirectoryStatus>();
  if (subjects.length === 0) return result;
  const client = await connectDirectory(c, secrets);
  try {
    const term = (s: string) => {
      if (c.flavor !== "ad") return `(entryUUID=${escapeFilterValue(s)})`;
      try {
        return `(objectGUID=${escapeBytes(guidToBytes(s))})`;
      } catch {
        return null; // not a GUID: no entry can have it
      }
    };
    for (let i = 0; i < subjects.length; i += 100) {
      const chunk = subjects.slice(i, i + 100);
      for (const s of chunk) result.set(s, "gone");
      const terms = chunk.map(term).filter((t): t is string => t !== null);
      if (terms.length === 0) continue;
      const { searchEntries } = await client.search(c.userBase, {
        scope: "sub",
        filter: `(|${terms.join("")})`,
        attributes: userAttributes(c),
        explicitBufferAttributes: c.flavor === "ad" ? ["objectGUID"] : [],
        paged: { pageSize: 500 },
      });
      for (const entry of searchEntries) {
        const s = subjectOf(c, entry);
        if (s === undefined || !result.has(s)) continue;
        result.set(s, (await isDisabled(c, client, entry)) ? "disabled" : "active");
      }
    }
    return result;
  } finally {
    await client.unbind().catch(() => undefined);
  }
}

/** For the "test connection" display: can the service account bind, and which group mode applies. */
export async function probeDirectory(c: LdapProviderConfig, secrets: LdapSecrets): Promise<{ ok: true; groupMode: "in-chain" | "walk" } | { ok: false; reason: string }> {
  try {
    const client = await connectDirectory(c, secrets);
    try {
      return { ok: true, groupMode: await groupMode(c, client) };
    } finally {
      await client.unbind().catch(() => undefined);
    }
  } catch (err) {
    return { ok: false, reason: failureText(err) };
  }
}
