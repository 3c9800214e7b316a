import { describe, expect, it } from "vitest";
import { addressMatcher, parseProxyV2 } from "../../../daemon/http/proxy-protocol.js";

const SIG = "0d0a0d0a000d0a515549540a";
const hex = (h: string) => Buffer.from(h.replace(/\s/g, ""), "hex");

describe("PROXY protocol v2 header", () => {
  it("reads an IPv4 client and the length to skip, TLVs included", () => {
    // PROXY, INET/STREAM, 12 address bytes + a 4-byte TLV (type 0x04 NOOP, length 1), then TLS bytes.
    const buf = Buffer.concat([hex(`${SIG} 21 11 0010`), Buffer.from([10, 9, 8, 7, 127, 0, 0, 1, 0x30, 0x39, 0x20, 0xfb]), hex("04 0001 00"), hex("160301")]);
    expect(parseProxyV2(buf)).toEqual({ kind: "header", length: 32, source: { address: "10.9.8.7", port: 12345, family: "IPv4" } });
  });

  it("reads an IPv6 client in canonical form", () => {
    const src = hex("20010db8000000000000000000000001");
    const buf = Buffer.concat([hex(`${SIG} 21 21 0024`), src, hex("00000000000000000000000000000001"), hex("d431 20fb")]);
    expect(parseProxyV2(buf)).toEqual({ kind: "header", length: 52, source: { address: "2001:db8::1", port: 54321, family: "IPv6" } });
  });

  it("treats LOCAL (the proxy's own health check) and unknown families as the proxy itself", () => {
    expect(parseProxyV2(hex(`${SIG} 20 00 0000`))).toEqual({ kind: "header", length: 16, source: null });
    expect(parseProxyV2(Buffer.concat([hex(`${SIG} 21 31 00d8`), Buffer.alloc(216)]))).toEqual({ kind: "header", length: 232, source: null });
  });

  it("waits for more bytes, and refuses what is not a v2 header", () => {
    expect(parseProxyV2(hex("0d0a0d0a00"))).toEqual({ kind: "incomplete" });
    expect(parseProxyV2(hex(`${SIG} 21 11 000c 0a09`))).toEqual({ kind: "incomplete" });
    expect(parseProxyV2(Buffer.from("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"))).toMatchObject({ kind: "invalid" });
    expect(parseProxyV2(hex(`${SIG} 11 11 000c`))).toEqual({ kind: "invalid", why: "version 1" });
    expect(parseProxyV2(hex(`${SIG} 22 11 000c`))).toEqual({ kind: "invalid", why: "command 2" });
    expect(parseProxyV2(hex(`${SIG} 21 11 0004 00000000`))).toEqual({ kind: "invalid", why: "short IPv4 address block" });
    expect(parseProxyV2(hex(`${SIG} 21 11 ffff`))).toEqual({ kind: "invalid", why: "header too long" });
  });
});

describe("trusted proxy addresses", () => {
  it("matches addresses and ranges, IPv4-mapped IPv6 included, and nothing when empty", () => {
    const trusted = addressMatcher(["127.0.0.1", "10.1.0.0/16", "fd00::/8"]);
    expect(["127.0.0.1", "::ffff:127.0.0.1", "10.1.200.3", "fd12::5"].map(trusted)).toEqual([true, true, true, true]);
    expect(["127.0.0.2", "10.2.0.1", "fe80::1", undefined].map(trusted)).toEqual([false, false, false, false]);
    expect(addressMatcher([])("127.0.0.1")).toBe(false);
  });
});
