import type { KeyObject } from "node:crypto";
import type pg from "pg";
import type { SqlPool } from "../db/sql.js";
import type { ApplianceContext } from "../context.js";
import { chainHash, GENESIS_HASH, parseCanonical, ROW_COLUMNS_OK_SQL, ROW_HASH_OK_SQL } from "./canonical.js";
import { chainPendingEvents } from "./chainer.js";
import { checkpointMessage, type Checkpoint } from "./checkpoints.js";
import { auditKeyId, publicKeyFromRaw, trustedCheckpointKeys, verifyMessage, type KeyTrust, type TrustedCheckpointKeys } from "./signing-key.js";

/**
 * `wardkeep audit verify` and `GET /api/v1/audit/verify`.
 *
 * One pass over the chain in a REPEATABLE READ snapshot, read through a cursor (bounded memory
 * at any size). PostgreSQL hashes each stored canonical event (SHA-256 in C) and checks seq
 * continuity, every prev_hash link and the copied columns; this process checks the hashes that
 * signed checkpoints vouch for and classifies the first failure from the full row. Checkpoint
 * signatures are checked against trusted public keys (`trustedCheckpointKeys`: every keyring
 * version, rotated-out ones included, and the legacy key) — never against the key a database row
 * claims — so a chain rewritten end to end by someone with database access still fails at the
 * first signed checkpoint.
 */
export type BreakReason = "changed" | "missing" | "reordered" | "duplicate" | "bad-checkpoint-signature" | "checkpoint-mismatch";

export type VerifyReport = {
  intact: boolean;
  /** Events checked and found intact. */
  verified: string;
  firstSeq: string | null;
  /** Intact up to this seq (the head when intact). */
  lastGoodSeq: string;
  /** Hash at lastGoodSeq. */
  head: string;
  startedFrom: { kind: "genesis" } | { kind: "anchor"; segment: string; seq: string };
  checkpoints: { total: number; verified: number; lastSignedSeq: string | null };
  /** Which keys signatures were checked against; "database" means the rows' own keys (weak). */
  keyTrust: KeyTrust;
  /** Key ids (fingerprints) the checkpoints name. */
  keyIds: string[];
  break?: { seq: string; reason: BreakReason; detail: string };
  summary: string;
};

/** A connection of the app role as a plain pg client (COPY and cursors need the raw protocol). */
export function withRawConnection<T>(db: SqlPool, work: (client: pg.Client) => Promise<T>): Promise<T> {
  return db.withDedicatedClient("wardkeep-audit", work);
}

/** Opens the read-only snapshot every auditor read runs in (appliance scope: all tenants). */
export async function beginAuditSnapshot(client: pg.Client, scope: { tenantId: string | null }): Promise<void> {
  await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
  await client.query("SELECT set_config('wardkeep.scope', $1, true), set_config('wardkeep.tenant_id', $2, true)", [scope.tenantId ? "tenant" : "appliance", scope.tenantId ?? ""]);
}

const CHECKPOINT_SELECT = `SELECT id::text AS id, seq::text AS seq, encode(head_hash, 'hex') AS "headHash",
  to_char(signed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS "signedAt", key_id AS "keyId",
  encode(public_key, 'base64') AS "publicKey", replace(encode(signature, 'base64'), E'\n', '') AS signature, purpose
  FROM audit_checkpoints`;

/** How far from its position a moved event is looked for when classifying a failure. */
const REORDER_WINDOW = 64;

/**
 * `keysFrom`: the appliance whose keys are trusted, when the chain is another database (a
 * restored snapshot: data snapshots carry no key store). `publicKeys`: trust only these.
 */
export async function verifyAuditChain(ctx: ApplianceContext, opts: { publicKeys?: KeyObject[]; keysFrom?: ApplianceContext; flush?: boolean } = {}): Promise<VerifyReport> {
  if (opts.flush !== false) await chainPendingEvents(ctx, { wait: true });
  const trusted = await trustedCheckpointKeys(opts.keysFrom ?? ctx, opts.publicKeys);
  return withRawConnection(ctx.db.app, async (client) => {
    await beginAuditSnapshot(client, { tenantId: null });
    try {
      // One ordered reader: parallel workers would interleave the physical order. One FETCH may
      // scan millions of intact rows before it has anything to return: no statement timeout.
      await client.query("SET LOCAL max_parallel_workers_per_gather = 0; SET LOCAL statement_timeout = 0");
      return await verifyInSnapshot(client, trusted);
    } finally {
      await client.query("ROLLBACK").catch(() => undefined);
    }
  });
}

/**
 * The phases of one verification, all in the caller's snapshot: where the chain starts, the
 * checkpoint signatures, the streaming pass, the end of the chain against its recorded head, the
 * first break, and the report.
 */
async function verifyInSnapshot(client: pg.Client, trusted: TrustedCheckpointKeys): Promise<VerifyReport> {
  const start = await readChainStart(client);
  const checkpoints = (await client.query<Checkpoint>(`${CHECKPOINT_SELECT} ORDER BY audit_checkpoints.seq, audit_checkpoints.id`)).rows;
  const signatures = checkSignatures(checkpoints, trusted, start);
  const scan = await scanChain(client, start, signedHashes(checkpoints, start));
  const found = scan.found ?? (await checkChainEnd(client, start, scan, checkpoints));
  const brk = await firstBreak(client, found, signatures.badCheckpoint);
  return reportOf(client, { start, checkpoints, signatures, scan, brk, trusted });
}

type AnchorRow = { segment: string; last_seq: string | null; last_hash: string | null; checkpoint_id: string | null };

/** Where the chain starts: genesis, or the anchor left by the newest dropped segment. */
type ChainStart = { seq: number; hashHex: string; hash: Buffer; startedFrom: VerifyReport["startedFrom"]; anchor: AnchorRow | undefined };

/** A failure found in the data; "classify": the row failed its own checks, `classify` says how. */
type Found = { seq: number; reason: BreakReason | "classify"; detail: string };

type Break = { seq: number; reason: BreakReason; detail: string };

type Signatures = {
  keyIds: Set<string>;
  verified: number;
  /** The earliest checkpoint that does not verify under a trusted key (or an anchor no checkpoint backs). */
  badCheckpoint: { seq: number; detail: string } | undefined;
};

type ScanResult = { expected: number; prevHash: Buffer; firstSeq: number | null; found: Found | undefined; rows: number };

async function readChainStart(client: pg.Client): Promise<ChainStart> {
  const anchor = (
    await client.query<AnchorRow>(
      `SELECT segment, last_seq::text AS last_seq, encode(last_hash, 'hex') AS last_hash, checkpoint_id::text AS checkpoint_id
         FROM audit_segment_anchors WHERE last_seq IS NOT NULL ORDER BY last_seq DESC LIMIT 1`,
    )
  ).rows[0];
  const hashHex = anchor?.last_hash ?? GENESIS_HASH;
  return {
    seq: anchor?.last_seq ? Number(anchor.last_seq) : 0,
    hashHex,
    hash: Buffer.from(hashHex, "hex"),
    startedFrom: anchor?.last_seq ? { kind: "anchor", segment: anchor.segment, seq: anchor.last_seq } : { kind: "genesis" },
    anchor,
  };
}

/** Signatures first: a checkpoint either verifies under a trusted key or marks where trust ends. */
function checkSignatures(checkpoints: Checkpoint[], trusted: TrustedCheckpointKeys, start: ChainStart): Signatures {
  const result: Signatures = { keyIds: new Set<string>(), verified: 0, badCheckpoint: undefined };
  const noteBad = (seq: number, detail: string) => {
    if (!result.badCheckpoint || seq < result.badCheckpoint.seq) result.badCheckpoint = { seq, detail };
  };
  for (const c of checkpoints) {
    const raw = Buffer.from(c.publicKey, "base64");
    let key = trusted.keys.get(c.keyId)?.publicKey;
    if (!key && trusted.trust === "database" && raw.length === 32 && auditKeyId(raw) === c.keyId) key = publicKeyFromRaw(raw);
    result.keyIds.add(c.keyId);
    if (key && verifyMessage(key, checkpointMessage(c), Buffer.from(c.signature, "base64"))) result.verified += 1;
    else
      noteBad(
        Number(c.seq),
        key ? `checkpoint #${c.id} at seq ${c.seq} has a signature that does not verify` : `checkpoint #${c.id} at seq ${c.seq} is signed by unknown key ${c.keyId}`,
      );
  }
  const anchor = start.anchor;
  if (anchor?.last_seq) {
    const cp = checkpoints.find((c) => c.id === anchor.checkpoint_id);
    if (!cp || cp.seq !== anchor.last_seq || cp.headHash !== anchor.last_hash) {
      noteBad(start.seq, `the anchor of dropped segment ${anchor.segment} is not backed by a matching signed checkpoint`);
    }
  }
  return result;
}

/** The hashes signed checkpoints vouch for, by seq (after the start only). */
function signedHashes(checkpoints: Checkpoint[], start: ChainStart): Map<number, { id: string; hash: Buffer }[]> {
  const signedHash = new Map<number, { id: string; hash: Buffer }[]>();
  for (const c of checkpoints) {
    const s = Number(c.seq);
    if (s > start.seq) signedHash.set(s, [...(signedHash.get(s) ?? []), { id: c.id, hash: Buffer.from(c.headHash, "hex") }]);
  }
  return signedHash;
}

/**
 * The streaming pass, in SQL through a cursor: PostgreSQL hashes each stored canonical event
 * and compares seq and prev_hash with the row before it (lag over a window); only rows that
 * fail, rows that checkpoints sign, and the ends of the chain come back. The table is
 * append-only, so its physical order is seq order and the first pass needs no sort; if
 * anything fails (tampering also disturbs the physical order), a second, sorted pass names
 * the first broken seq exactly.
 */
async function scanChain(client: pg.Client, start: ChainStart, signedHash: Map<number, { id: string; hash: Buffer }[]>): Promise<ScanResult> {
  const pass = await scanPass(client, start, signedHash, false);
  return pass.found ? scanPass(client, start, signedHash, true) : pass;
}

async function scanPass(client: pg.Client, start: ChainStart, signedHash: Map<number, { id: string; hash: Buffer }[]>, ordered: boolean): Promise<ScanResult> {
  type Flagged = { seq: string; prev_hash: Buffer; hash: Buffer; step: string | null; linked: boolean | null; hash_ok: boolean; columns_ok: boolean; last: boolean };
  const startSeq = start.seq;
  const cpSeqs = [...signedHash.keys()];
  let expected = startSeq + 1;
  let prevHash: Buffer = start.hash;
  let firstSeq: number | null = null;
  let found: Found | undefined;
  let rows = 0;
  const w = ordered ? "ORDER BY e.seq" : "";
  await client.query(
    `DECLARE audit_verify NO SCROLL CURSOR FOR
     SELECT x.seq::text AS seq, x.prev_hash, x.hash, x.step::text AS step, x.linked, x.hash_ok, x.columns_ok, x.last FROM (
       SELECT e.seq, e.prev_hash, e.hash, e.seq - lag(e.seq) OVER w AS step, e.prev_hash = lag(e.hash) OVER w AS linked,
              ${ROW_HASH_OK_SQL} AS hash_ok, ${ROW_COLUMNS_OK_SQL} AS columns_ok, lead(e.seq) OVER w IS NULL AS last
         FROM audit_events e WHERE e.seq > ${startSeq} WINDOW w AS (${w})) x
     WHERE x.step IS DISTINCT FROM 1 OR x.linked IS NOT TRUE OR NOT x.hash_ok OR NOT x.columns_ok OR x.last
        OR x.seq = ANY('{${cpSeqs.join(",")}}'::bigint[])
     ${ordered ? "ORDER BY x.seq" : ""}`,
  );
  try {
    fetching: for (;;) {
      const batch = (await client.query<Flagged>("FETCH 1000 FROM audit_verify")).rows;
      for (const r of batch) {
        rows += 1;
        const seq = Number(r.seq);
        firstSeq ??= seq;
        // Rows between two flagged rows passed every check in SQL, so a flagged row whose
        // step is 1 and whose link holds continues the chain seen so far.
        if (r.step === null ? seq !== startSeq + 1 : r.step !== "1") {
          const prevSeq = r.step === null ? startSeq : seq - Number(r.step);
          found =
            r.step === "0"
              ? { seq, reason: "duplicate", detail: `seq ${seq} appears more than once` }
              : { seq: prevSeq + 1, reason: "missing", detail: seq > prevSeq + 1 ? `events ${prevSeq + 1}..${seq - 1} are missing` : `seq ${seq} is out of order` };
          break fetching;
        }
        if (!r.hash_ok || !r.columns_ok) {
          found = { seq, reason: "classify", detail: "" };
          break fetching;
        }
        const link = r.step === null ? r.prev_hash.equals(start.hash) : r.linked === true;
        if (!link) {
          found =
            r.step === null
              ? {
                  seq,
                  reason: "changed",
                  detail:
                    start.startedFrom.kind === "anchor" ? `seq ${seq} does not continue the anchor of the dropped segment` : `seq ${seq} does not start from the genesis hash`,
                }
              : { seq: seq - 1, reason: "changed", detail: `the hash of seq ${seq - 1} differs from the one seq ${seq} was chained to: one of them was rewritten` };
          break fetching;
        }
        const bad = signedHash.get(seq)?.find((c) => !c.hash.equals(r.hash));
        if (bad) {
          found = { seq, reason: "checkpoint-mismatch", detail: `signed checkpoint #${bad.id} recorded a different hash at seq ${seq}: events up to ${seq} were rewritten` };
          break fetching;
        }
        if (r.last) {
          expected = seq + 1;
          prevHash = r.hash;
        }
      }
      if (batch.length < 1000) break;
    }
  } finally {
    await client.query("CLOSE audit_verify");
  }
  return { expected, prevHash, firstSeq, found, rows };
}

/** A chain intact row by row still breaks where it disagrees with its recorded head or a later checkpoint. */
async function checkChainEnd(client: pg.Client, start: ChainStart, scan: ScanResult, checkpoints: Checkpoint[]): Promise<Found | undefined> {
  const lastGood = scan.expected - 1;
  const head = (await client.query<{ seq: string; hash: string }>("SELECT seq::text AS seq, encode(hash, 'hex') AS hash FROM audit_chain_head")).rows[0]!;
  const headSeq = Number(head.seq);
  const beyond = checkpoints.find((c) => Number(c.seq) > lastGood);
  if (headSeq > lastGood)
    return {
      seq: lastGood + 1,
      reason: "missing",
      detail: `the chain head is at seq ${headSeq} but the table ends at ${lastGood}: events ${lastGood + 1}..${headSeq} are missing`,
    };
  if (headSeq < lastGood) return { seq: headSeq + 1, reason: "changed", detail: `events after the recorded chain head (seq ${headSeq}) were added outside the chainer` };
  if (lastGood > start.seq && head.hash !== scan.prevHash.toString("hex"))
    return { seq: lastGood, reason: "changed", detail: `the hash at seq ${lastGood} differs from the recorded chain head` };
  if (beyond) return { seq: lastGood + 1, reason: "missing", detail: `checkpoint #${beyond.id} signed seq ${beyond.seq} but the chain ends at ${lastGood}` };
  return undefined;
}

/** The first thing that breaks: the data's first failure, classified, or an earlier bad signature. */
async function firstBreak(client: pg.Client, found: Found | undefined, badCheckpoint: Signatures["badCheckpoint"]): Promise<Break | undefined> {
  const data: Break | undefined =
    found === undefined ? undefined : found.reason === "classify" ? await classify(client, found.seq) : { seq: found.seq, reason: found.reason, detail: found.detail };
  if (badCheckpoint && (!data || badCheckpoint.seq <= data.seq)) return { seq: badCheckpoint.seq, reason: "bad-checkpoint-signature", detail: badCheckpoint.detail };
  return data;
}

async function reportOf(
  client: pg.Client,
  v: { start: ChainStart; checkpoints: Checkpoint[]; signatures: Signatures; scan: ScanResult; brk: Break | undefined; trusted: TrustedCheckpointKeys },
): Promise<VerifyReport> {
  const { start, checkpoints, signatures, scan } = v;
  let lastGood = scan.expected - 1;
  let headHex = scan.prevHash.toString("hex");
  if (v.brk) {
    lastGood = Math.max(start.seq, v.brk.seq - 1);
    headHex = await hashAt(client, lastGood, start.seq, start.hashHex);
  }
  const lastSigned = checkpoints.filter((c) => Number(c.seq) <= lastGood).at(-1);
  const brk = v.brk ? { seq: String(v.brk.seq), reason: v.brk.reason, detail: v.brk.detail } : undefined;
  return {
    intact: !brk,
    verified: String(Math.max(0, lastGood - start.seq)),
    firstSeq: scan.firstSeq === null ? null : String(scan.firstSeq),
    lastGoodSeq: String(lastGood),
    head: headHex,
    startedFrom: start.startedFrom,
    checkpoints: { total: checkpoints.length, verified: signatures.verified, lastSignedSeq: lastSigned?.seq ?? null },
    keyTrust: v.trusted.trust,
    keyIds: [...signatures.keyIds],
    summary: brk ? `broken at seq ${brk.seq} (${brk.reason}): ${brk.detail}` : `intact up to seq ${lastGood}, head ${headHex}`,
    ...(brk ? { break: brk } : {}),
  };
}

async function hashAt(client: pg.Client, seq: number, startSeq: number, startHash: string): Promise<string> {
  if (seq <= startSeq) return startHash;
  const r = await client.query<{ hash: string }>("SELECT encode(hash, 'hex') AS hash FROM audit_events WHERE seq = $1 LIMIT 1", [seq]);
  return r.rows[0]?.hash ?? "";
}

/** Why a row failed its own checks: moved from another position, or changed. */
async function classify(client: pg.Client, seq: number): Promise<{ seq: number; reason: BreakReason; detail: string }> {
  const row = (
    await client.query<{ canonical: string; prev_hash: string; hash: string; hash_ok: boolean }>(
      `SELECT e.canonical, encode(e.prev_hash, 'hex') AS prev_hash, encode(e.hash, 'hex') AS hash, ${ROW_HASH_OK_SQL} AS hash_ok
         FROM audit_events e WHERE e.seq = $1 LIMIT 1`,
      [seq],
    )
  ).rows[0];
  if (!row) return { seq, reason: "changed", detail: `seq ${seq} changed` };
  let claimed: string | undefined;
  try {
    claimed = parseCanonical(row.canonical).seq;
  } catch {
    return { seq, reason: "changed", detail: `the stored event at seq ${seq} is no longer valid canonical JSON` };
  }
  if (row.hash_ok) {
    if (claimed !== String(seq)) return { seq, reason: "reordered", detail: `the event stored at seq ${seq} was recorded as seq ${claimed}: events were reordered` };
    return { seq, reason: "changed", detail: `the time or tenant columns of seq ${seq} no longer match the recorded event` };
  }
  // Content rewritten to claim this position: it still hashes under the seq it was recorded at.
  for (let d = 1; d <= REORDER_WINDOW; d++) {
    for (const other of [seq + d, seq - d]) {
      if (other < 1) continue;
      const moved = row.canonical.replace(/^\{"v":1,"seq":\d+,/, `{"v":1,"seq":${other},`);
      if (chainHash(row.prev_hash, moved) === row.hash) {
        return { seq, reason: "reordered", detail: `the event at seq ${seq} was recorded as seq ${other}: events were reordered` };
      }
    }
  }
  return { seq, reason: "changed", detail: `the content of seq ${seq} no longer matches its hash` };
}
