import { hash as oneShotHash } from "node:crypto";

/**
 * The canonical encoding of an audit event (docs/audit-format.md, "Canonical encoding").
 * One compact JSON object, keys in exactly this order, no whitespace, strings escaped as
 * `jq -c` escapes them — so an auditor recomputes the bytes with
 * `jq -c '{v, seq, recorded_at, ...}'` and the hash with `sha256sum`.
 * Changing this is a format version bump (`v`), never an edit.
 */
export const CANONICAL_VERSION = 1;
export const CANONICAL_FIELDS = [
  "v",
  "seq",
  "recorded_at",
  "tenant_id",
  "actor_user_id",
  "patient_id",
  "event_id",
  "occurred_at",
  "actor_role",
  "impersonator_id",
  "break_glass",
  "action",
  "resource_type",
  "resource_id",
  "outcome",
  "source_ip",
  "user_agent",
  "request_id",
  "reason",
] as const;

export const GENESIS_HASH = "0".repeat(64);

export type ChainedEvent = {
  seq: string; // bigint as decimal text
  /** Milliseconds since 1970-01-01T00:00:00Z (integers: no time zone or format to disagree on). */
  recorded_at: number;
  event_id: string;
  occurred_at: number;
  tenant_id: string | null;
  actor_user_id: string | null;
  actor_role: string | null;
  impersonator_id: string | null;
  break_glass: boolean;
  action: string;
  resource_type: string;
  resource_id: string | null;
  patient_id: string | null;
  outcome: string;
  source_ip: string | null;
  user_agent: string | null;
  request_id: string | null;
  reason: string | null;
};

/**
 * Characters on which JSON encoders disagree (jq writes DEL as \u007f, JSON.stringify and
 * PostgreSQL write it raw) or that invite log injection: C0 controls other than tab, newline and
 * carriage return, and DEL. Replaced at intake, so every tool produces the same bytes.
 */
const UNSTABLE = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/g;

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/** String.prototype.toWellFormed (ES2024, beyond our lib target): lone surrogates become U+FFFD. */
export function wellFormed(s: string): string {
  return s.replace(LONE_SURROGATE, "\uFFFD");
}

export function stableText(s: string): string {
  return wellFormed(s).replace(UNSTABLE, "\uFFFD");
}

const str = (v: string | null): string => (v === null ? "null" : JSON.stringify(v));

/** The exact canonical bytes (as a string; hash its UTF-8). */
export function canonicalEventJson(e: ChainedEvent): string {
  return (
    '{"v":1,"seq":' +
    e.seq +
    ',"recorded_at":' +
    e.recorded_at +
    ',"tenant_id":' +
    str(e.tenant_id) +
    ',"actor_user_id":' +
    str(e.actor_user_id) +
    ',"patient_id":' +
    str(e.patient_id) +
    ',"event_id":' +
    str(e.event_id) +
    ',"occurred_at":' +
    e.occurred_at +
    ',"actor_role":' +
    str(e.actor_role) +
    ',"impersonator_id":' +
    str(e.impersonator_id) +
    ',"break_glass":' +
    (e.break_glass ? "true" : "false") +
    ',"action":' +
    str(e.action) +
    ',"resource_type":' +
    str(e.resource_type) +
    ',"resource_id":' +
    str(e.resource_id) +
    ',"outcome":' +
    str(e.outcome) +
    ',"source_ip":' +
    str(e.source_ip) +
    ',"user_agent":' +
    str(e.user_agent) +
    ',"request_id":' +
    str(e.request_id) +
    ',"reason":' +
    str(e.reason) +
    "}"
  );
}

/** hash_n = SHA-256(hex(hash_{n-1}) || canonical_n), as lowercase hex. */
export function chainHash(prevHex: string, canonical: string): string {
  return oneShotHash("sha256", prevHex + canonical, "hex");
}

/**
 * SQL over a row `e` of audit_events: true when the stored hash is SHA-256(hex(prev_hash) ||
 * canonical), and when the copied columns (seq, recorded_at, tenant_id, actor_user_id,
 * patient_id) agree with the canonical text, whose first fields are exactly these (that is why
 * they come first: a prefix comparison, no JSON parsing per row).
 */
export const ROW_HASH_OK_SQL = `pg_catalog.sha256(pg_catalog.convert_to(pg_catalog.encode(e.prev_hash, 'hex') || e.canonical, 'UTF8')) = e.hash`;
export const ROW_COLUMNS_OK_SQL = `starts_with(e.canonical, '{"v":1,"seq":' || e.seq || ',"recorded_at":'
  || round(date_part('epoch', e.recorded_at) * 1000)::bigint || ',"tenant_id":'
  || coalesce('"' || e.tenant_id::text || '"', 'null') || ',"actor_user_id":'
  || coalesce(to_json(e.actor_user_id)::text, 'null') || ',"patient_id":'
  || coalesce(to_json(e.patient_id)::text, 'null') || ',')`;

/** Parses stored canonical text back into an event (for search results and exports). */
export function parseCanonical(text: string): ChainedEvent & { v: number } {
  const o = JSON.parse(text) as Omit<ChainedEvent, "seq"> & { v: number; seq: number | string };
  return { ...o, seq: String(o.seq) };
}

/** A Date as the canonical timestamp: integer milliseconds since the Unix epoch. */
export function canonicalTime(d: Date): number {
  return d.getTime();
}
