import dns from "node:dns";
import net from "node:net";
import type { ApplianceContext } from "../context.js";
import type { Tx } from "../db/sql.js";
import { Invalid } from "../kernel/errors.js";

/**
 * Where a webhook may go (docs/webhooks.md, "Destinations"). A tenant admin can name a URL, so
 * without limits a webhook would let anyone with that role probe the hospital network from the
 * appliance (SSRF). Three rules, checked when an endpoint is saved and again at every attempt:
 * 1. the URL's host and port are on the allow-list the appliance's operators approved;
 * 2. every address the host resolves to is allowed: link-local (cloud metadata), multicast,
 *    broadcast and unspecified addresses never; private, shared (CGNAT) and loopback addresses
 *    only where the entry says `allowPrivate`; the connection goes to an address that passed
 *    the check (the lookup is done once, by the guard, so a DNS answer cannot change in between);
 * 3. redirects are never followed (a 3xx is a failed attempt).
 */

/** Never reachable, whatever the allow-list says. */
const forbidden = new net.BlockList();
forbidden.addSubnet("0.0.0.0", 8, "ipv4"); // "this network", unspecified
forbidden.addSubnet("169.254.0.0", 16, "ipv4"); // link-local: cloud metadata services live here
forbidden.addSubnet("224.0.0.0", 4, "ipv4"); // multicast
forbidden.addSubnet("240.0.0.0", 4, "ipv4"); // reserved and the limited broadcast address
forbidden.addAddress("::", "ipv6");
forbidden.addSubnet("fe80::", 10, "ipv6"); // link-local
forbidden.addSubnet("ff00::", 8, "ipv6"); // multicast

/** Reachable only from an entry with `allowPrivate`. */
const privateRanges = new net.BlockList();
privateRanges.addSubnet("10.0.0.0", 8, "ipv4");
privateRanges.addSubnet("172.16.0.0", 12, "ipv4");
privateRanges.addSubnet("192.168.0.0", 16, "ipv4");
privateRanges.addSubnet("100.64.0.0", 10, "ipv4"); // shared address space (CGNAT)
privateRanges.addSubnet("127.0.0.0", 8, "ipv4"); // loopback: the appliance itself
privateRanges.addSubnet("198.18.0.0", 15, "ipv4"); // benchmarking networks
privateRanges.addAddress("::1", "ipv6");
privateRanges.addSubnet("fc00::", 7, "ipv6"); // unique local

export type AddressClass = "public" | "private" | "forbidden";

export function classifyAddress(address: string): AddressClass {
  const family = net.isIP(address);
  if (family === 0) return "forbidden";
  let ip = address;
  let type: "ipv4" | "ipv6" = family === 4 ? "ipv4" : "ipv6";
  // An IPv4-mapped IPv6 address (::ffff:10.0.0.1) is the IPv4 address.
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) {
    ip = mapped[1]!;
    type = "ipv4";
  }
  if (forbidden.check(ip, type)) return "forbidden";
  if (privateRanges.check(ip, type)) return "private";
  return "public";
}

export function addressAllowed(address: string, allowPrivate: boolean): boolean {
  const c = classifyAddress(address);
  return c === "public" || (c === "private" && allowPrivate);
}

/** An attempt the rules refused before anything was sent. Its text names the rule, never more. */
export class DestinationRefused extends Error {
  readonly code = "EDESTINATIONREFUSED";
}

export type ParsedDestination = { url: URL; host: string; port: number; secure: boolean };

/** The URL's scheme and form (no credentials in it, https unless plain HTTP is allowed), as host and port. */
export function parseDestination(ctx: ApplianceContext, raw: string): ParsedDestination {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new Invalid("the endpoint URL is not a valid URL");
  }
  const secure = url.protocol === "https:";
  if (!secure && !(url.protocol === "http:" && ctx.config.webhooks.allowPlainHttp)) {
    throw new Invalid(ctx.config.webhooks.allowPlainHttp ? "the endpoint URL must be https:// or http://" : "the endpoint URL must be https:// (webhooks.allowPlainHttp is off)");
  }
  if (url.username || url.password) throw new Invalid("the endpoint URL must not carry credentials; the signature authenticates the appliance");
  if (url.hash) throw new Invalid("the endpoint URL must not have a fragment");
  const host = url.hostname.toLowerCase();
  const port = url.port ? Number(url.port) : secure ? 443 : 80;
  return { url, host, port, secure };
}

export type AllowListEntry = { host: string; port: number; allowPrivate: boolean };

export async function readAllowList(tx: Tx): Promise<AllowListEntry[]> {
  return tx.rows<AllowListEntry>('SELECT host, port, allow_private AS "allowPrivate" FROM webhook_allowed_hosts ORDER BY host, port');
}

export function allowListEntryFor(list: readonly AllowListEntry[], host: string, port: number): AllowListEntry | undefined {
  return list.find((e) => e.host === host && e.port === port);
}

/** Rule 1 when an endpoint is saved (rule 2 is checked at every attempt, when the name is resolved). */
export async function assertAllowedDestination(ctx: ApplianceContext, tx: Tx, raw: string): Promise<ParsedDestination> {
  const dest = parseDestination(ctx, raw);
  const entry = allowListEntryFor(await readAllowList(tx), dest.host, dest.port);
  if (!entry) throw new Invalid(`${dest.host}:${dest.port} is not on the webhook allow-list; an appliance operator approves destinations`, { reason: "not_allow_listed" });
  const literal = dest.host.replace(/^\[|\]$/g, "");
  if (net.isIP(literal) && !addressAllowed(literal, entry.allowPrivate)) {
    throw new Invalid(`${dest.host} is a ${classifyAddress(literal)} address, which this allow-list entry does not permit`, { reason: "address_not_allowed" });
  }
  return dest;
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | dns.LookupAddress[], family?: number) => void;

/**
 * A `lookup` for http.request that resolves the name once and hands the socket only addresses
 * rule 2 allows; an IP literal (which Node connects to without calling lookup) is checked by
 * `assertAddressLiteral` before the request.
 */
export function guardedLookup(allowPrivate: boolean) {
  return (hostname: string, options: dns.LookupOptions, callback: LookupCallback): void => {
    dns.lookup(hostname, { all: true, family: options.family ?? 0 }, (err, addresses) => {
      if (err) return callback(err, []);
      const ok = addresses.filter((a) => addressAllowed(a.address, allowPrivate));
      if (ok.length === 0) {
        const kinds = [...new Set(addresses.map((a) => classifyAddress(a.address)))].join(", ");
        return callback(new DestinationRefused(`the host resolves only to addresses the allow-list entry does not permit (${kinds})`), []);
      }
      if (options.all) callback(null, ok);
      else callback(null, ok[0]!.address, ok[0]!.family);
    });
  };
}

export function assertAddressLiteral(host: string, allowPrivate: boolean): void {
  const literal = host.replace(/^\[|\]$/g, "");
  if (net.isIP(literal) && !addressAllowed(literal, allowPrivate))
    throw new DestinationRefused(`the address is ${classifyAddress(literal)}, which the allow-list entry does not permit`);
}
