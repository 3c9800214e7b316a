import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { CANONICAL_FIELDS, canonicalEventJson, chainHash, GENESIS_HASH, stableText, type ChainedEvent } from "../../../daemon/audit/canonical.js";
import { syslogMessage } from "../../../daemon/audit/siem.js";

const event = (over: Partial<ChainedEvent> = {}): ChainedEvent => ({
  seq: "7",
  recorded_at: 1_735_732_800_123,
  tenant_id: null,
  actor_user_id: "u-1",
  patient_id: null,
  event_id: "3f1c2a9e-0d4b-4c1e-9a57-8f2b6d0e4c11",
  occurred_at: 1_735_732_800_001,
  actor_role: "admin",
  impersonator_id: null,
  break_glass: false,
  action: "patient.read",
  resource_type: "patient",
  resource_id: "p-1",
  outcome: "success",
  source_ip: "10.0.0.1",
  user_agent: null,
  request_id: null,
  reason: null,
  ...over,
});

function jqCanonical(e: ChainedEvent): string {
  const r = spawnSync("jq", ["-c", `{${CANONICAL_FIELDS.join(", ")}}`], { input: canonicalEventJson(e).slice(0, -1) + ',"extra":"ignored"}', encoding: "utf8" });
  if (r.status !== 0) throw new Error(r.stderr);
  return r.stdout.replace(/\n$/, "");
}

describe("canonical encoding", () => {
  it("is byte for byte what jq -c prints, for strings every encoder finds awkward", () => {
    const awkward = stableText('quote " backslash \\ nl \n tab \t cr \r bell \u0007 del \u007f nul \u0000 lone \ud800 emoji 😷 cjk 病歴 sep \u2028 </script>');
    const e = event({ reason: awkward, user_agent: awkward, actor_user_id: awkward, break_glass: true, tenant_id: "0b7f0a52-3d0e-4a4e-9d1c-6f7e0f3a1a11" });
    expect(jqCanonical(e)).toBe(canonicalEventJson(e));
  });

  it("puts the fields in the documented order, starting with those the database copies", () => {
    expect(Object.keys(JSON.parse(canonicalEventJson(event())))).toEqual([...CANONICAL_FIELDS]);
    expect(canonicalEventJson(event())).toMatch(/^\{"v":1,"seq":7,"recorded_at":1735732800123,"tenant_id":null,"actor_user_id":"u-1","patient_id":null,/);
  });

  it("chains from 64 hex zeros, with the previous hash as hex text, as sha256sum computes it", () => {
    const line = canonicalEventJson(event());
    const r = spawnSync("sh", ["-c", 'printf "%s%s" "$1" "$2" | sha256sum | cut -c1-64', "sh", GENESIS_HASH, line], { encoding: "utf8" });
    expect(r.stdout.trim()).toBe(chainHash(GENESIS_HASH, line));
  });

  it("replaces controls and lone surrogates but keeps tab, newline and carriage return", () => {
    expect(stableText("a\u0000b\u001bc\u007fd\ud800e\tf\ng\rh")).toBe("a\uFFFDb\uFFFDc\uFFFDd\uFFFDe\tf\ng\rh");
    expect(stableText("😷")).toBe("😷");
  });
});

describe("syslog messages", () => {
  it("are RFC 5424 with escaped structured data and no free text", () => {
    const msg = syslogMessage(canonicalEventJson(event({ resource_id: 'a"b]c\\d', reason: "Jane Roe", user_agent: "UA/1", outcome: "denied" })), "ab".repeat(32), {
      appName: "wardkeep",
      facility: 13,
      hostname: "ward keep",
    });
    expect(msg).toMatch(/^<108>1 2025-01-01T12:00:00\.123Z ward_keep wardkeep \d+ patient\.read \[wardkeep@32473 seq="7" hash="(ab){32}" /);
    expect(msg).toContain('resource="a\\"b\\]c\\\\d"');
    expect(msg).not.toContain("Jane Roe");
    expect(msg).not.toContain("UA/1");
  });
});
