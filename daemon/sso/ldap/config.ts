import { z } from "zod";

/**
 * Configuration of an LDAP / Active Directory sign-in provider (`identity_providers.config` where
 * kind = "ldap"; docs/sso.md "LDAP and Active Directory"). The service account's password is a
 * secret (`ldapSecrets`), sealed apart from this.
 */
export const ldapProviderConfig = z
  .object({
    /** `ldaps://host:636`, or `ldap://host:389` with `startTls: true`; plain LDAP is refused. */
    url: z.string().regex(/^ldaps?:\/\/[^/?#\s]+\/?$/i, "url must be ldaps://host[:port] or ldap://host[:port] (scheme, host and port only)"),
    /** Upgrade an `ldap://` connection with StartTLS before anything else is sent. */
    startTls: z.boolean().default(false),
    /** PEM of the CA(s) that issued the directory's certificate; the system trust store when absent. */
    caPem: z.string().max(65_536).optional(),
    /** The name on the directory's certificate when it differs from the URL's host. */
    tlsServerName: z.string().max(253).optional(),
    /** `ad` (Active Directory: userAccountControl, objectGUID, sAMAccountName) or `openldap`. */
    flavor: z.enum(["ad", "openldap"]).default("ad"),
    /** DN of the service account that looks users up (it needs read access, nothing more). */
    bindDn: z.string().min(1).max(1024),
    /** Where users are searched (subtree). */
    userBase: z.string().min(1).max(1024),
    /**
     * The search for the signing-in user; `{username}` is replaced by the typed name, escaped
     * (RFC 4515). Default: `(sAMAccountName={username})` for AD, `(uid={username})` otherwise.
     */
    userFilter: z.string().includes("{username}", { message: "userFilter must contain {username}" }).max(1024).optional(),
    /** Where groups are searched (subtree); `userBase` when absent. */
    groupBase: z.string().min(1).max(1024).optional(),
    /**
     * Nested groups: `in-chain` asks the server for every group at once with
     * LDAP_MATCHING_RULE_IN_CHAIN (Active Directory only), `walk` follows `member` links level by
     * level (OpenLDAP and others), `auto` picks in-chain when the server's root DSE announces
     * Active Directory.
     */
    nestedGroups: z.enum(["auto", "in-chain", "walk"]).default("auto"),
    /** How deep `walk` follows groups inside groups (cycles are followed once). */
    maxGroupDepth: z.number().int().min(1).max(32).default(8),
    /** Groups are reported by this: `cn` (name) or `dn`. Rules match on what is reported. */
    groupsAs: z.enum(["cn", "dn"]).default("cn"),
    /**
     * An LDAP filter that marks a disabled account (evaluated on the user's entry). AD's
     * userAccountControl ACCOUNTDISABLE bit is always checked for `ad`; the default for
     * `openldap` is `(pwdAccountLockedTime=*)` (ppolicy lockout).
     */
    disabledFilter: z.string().max(1024).optional(),
    /** Seconds for connecting and for each operation. */
    timeoutSeconds: z.number().int().min(1).max(60).default(10),
  })
  .strict()
  .superRefine((c, issue) => {
    const scheme = c.url.slice(0, c.url.indexOf(":")).toLowerCase();
    if (scheme === "ldap" && !c.startTls) {
      issue.addIssue({
        code: "custom",
        path: ["url"],
        message: "plain LDAP sends passwords in clear: use an ldaps:// URL or set startTls: true",
      });
    }
    if (scheme === "ldaps" && c.startTls) {
      issue.addIssue({ code: "custom", path: ["startTls"], message: "startTls is for ldap:// URLs; an ldaps:// connection is already TLS" });
    }
    if (c.caPem !== undefined && !c.caPem.includes("-----BEGIN CERTIFICATE-----")) {
      issue.addIssue({ code: "custom", path: ["caPem"], message: "caPem must hold PEM certificates (-----BEGIN CERTIFICATE-----)" });
    }
  });

export type LdapProviderConfig = z.infer<typeof ldapProviderConfig>;

/** Sealed with the provider: the service account's password. */
export const ldapSecrets = z.object({ bindPassword: z.string().min(1).max(1024) }).strict();
export type LdapSecrets = z.infer<typeof ldapSecrets>;

/** AD's "matching rule in chain": transitive membership evaluated by the domain controller. */
export const LDAP_MATCHING_RULE_IN_CHAIN = "1.2.840.113556.1.4.1941";
/** Root DSE supportedCapabilities value of Active Directory (LDAP_CAP_ACTIVE_DIRECTORY_OID). */
export const LDAP_CAP_ACTIVE_DIRECTORY = "1.2.840.113556.1.4.800";
/** userAccountControl bit ACCOUNTDISABLE. */
export const UF_ACCOUNTDISABLE = 0x2;

export function userFilterOf(c: LdapProviderConfig): string {
  return c.userFilter ?? (c.flavor === "ad" ? "(sAMAccountName={username})" : "(uid={username})");
}

export function disabledFilterOf(c: LdapProviderConfig): string | null {
  return c.disabledFilter ?? (c.flavor === "openldap" ? "(pwdAccountLockedTime=*)" : null);
}
