import net from "node:net";

/**
 * The PROXY protocol version 2 header (HAProxy's `send-proxy-v2`; haproxy.org/download/2.8/doc/
 * proxy-protocol.txt, section 2.2): a binary preamble a proxy sends before the client's bytes, naming
 * the client's address. Written here rather than taken from a package because it is forty lines and
 * sits in front of every connection.
 *
 *   12 bytes  signature \r\n\r\n\0\r\nQUIT\n
 *    1 byte   version (high nibble, 2) and command (low nibble: 0 LOCAL, 1 PROXY)
 *    1 byte   address family (high nibble: 0 UNSPEC, 1 INET, 2 INET6, 3 UNIX) and transport
 *    2 bytes  length of what follows (addresses, then TLVs, which are skipped)
 *   INET:  source address 4, destination address 4, source port 2, destination port 2
 *   INET6: source address 16, destination address 16, source port 2, destination port 2
 */
export const PROXY_V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const HEADER_BYTES = 16;
/** Far above any header HAProxy sends (addresses plus a few TLVs); more is treated as malformed. */
const MAX_PAYLOAD_BYTES = 512;

export type ProxyHeader =
  /** Not enough bytes yet. */
  | { kind: "incomplete" }
  | { kind: "invalid"; why: string }
  /** `length` bytes belong to the header; `source` is null for LOCAL (the proxy's own health checks) and unknown families. */
  | { kind: "header"; length: number; source: { address: string; port: number; family: "IPv4" | "IPv6" } | null };

export function parseProxyV2(buf: Buffer): ProxyHeader {
  const sig = Math.min(buf.length, PROXY_V2_SIGNATURE.length);
  if (!buf.subarray(0, sig).equals(PROXY_V2_SIGNATURE.subarray(0, sig))) return { kind: "invalid", why: "no PROXY v2 signature" };
  if (buf.length < HEADER_BYTES) return { kind: "incomplete" };
  const version = buf[12]! >> 4;
  const command = buf[12]! & 0x0f;
  if (version !== 2) return { kind: "invalid", why: `version ${version}` };
  if (command > 1) return { kind: "invalid", why: `command ${command}` };
  const payload = buf.readUInt16BE(14);
  if (payload > MAX_PAYLOAD_BYTES) return { kind: "invalid", why: "header too long" };
  const length = HEADER_BYTES + payload;
  if (buf.length < length) return { kind: "incomplete" };
  if (command === 0) return { kind: "header", length, source: null };
  const family = buf[13]! >> 4;
  if (family === 1) {
    if (payload < 12) return { kind: "invalid", why: "short IPv4 address block" };
    const address = [...buf.subarray(16, 20)].join(".");
    return { kind: "header", length, source: { address, port: buf.readUInt16BE(24), family: "IPv4" } };
  }
  if (family === 2) {
    if (payload < 36) return { kind: "invalid", why: "short IPv6 address block" };
    const groups: string[] = [];
    for (let i = 0; i < 8; i++) groups.push(buf.readUInt16BE(16 + i * 2).toString(16));
    // Canonical text form, as the socket would report it (net.SocketAddress normalises).
    const address = new net.SocketAddress({ address: groups.join(":"), family: "ipv6" }).address;
    return { kind: "header", length, source: { address, port: buf.readUInt16BE(48), family: "IPv6" } };
  }
  // UNSPEC or UNIX: no usable client address; the connection stands for the proxy itself.
  return { kind: "header", length, source: null };
}

/** Whether an address (IPv4, IPv6 or IPv4-mapped IPv6) is in the configured list of addresses and CIDR ranges. */
export function addressMatcher(entries: readonly string[]): (address: string | undefined) => boolean {
  const list = new net.BlockList();
  for (const entry of entries) {
    const [addr, prefix] = entry.split("/");
    const type = net.isIPv6(addr!) ? "ipv6" : "ipv4";
    if (prefix === undefined) list.addAddress(addr!, type);
    else list.addSubnet(addr!, Number(prefix), type);
  }
  return (address) => {
    if (!address || entries.length === 0) return false;
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
    if (mapped) return list.check(mapped[1]!, "ipv4");
    return list.check(address, net.isIPv6(address) ? "ipv6" : "ipv4");
  };
}
