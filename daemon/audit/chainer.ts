import type { ApplianceContext } from "../context.js";
import { inScope, sqlState } from "../db/sql.js";
import { canonicalEventJson, canonicalTime, chainHash, type ChainedEvent } from "./canonical.js";

/**
 * The chainer seals committed events from `audit_intake` into the hash chain (`audit_events`).
 *
 * Why after commit (docs/audit-format.md): a chain head locked inside each writer's transaction
 * serialises every audited request from its audit write to its commit (one WAL flush each), which
 * caps the appliance at roughly 1/fsync-latency requests per second. Here writers only insert
 * into the intake table (as cheap as an unchained insert, and durable with their work), and one
 * chainer at a time, in any replica, moves a batch under the `audit_chain_head` row lock: one
 * lock, one flush, thousands of events. Sequence numbers are assigned by the chainer only, so
 * they have no gaps and no duplicates, and the row lock makes forks impossible.
 *
 * Runs as the owner role: the app role can neither read nor delete intake rows, nor insert into
 * the chain, so a compromised request path cannot rewrite what it has already recorded.
 */
export const CHAIN_BATCH = 5_000;

type IntakeRow = Omit<ChainedEvent, "seq" | "recorded_at" | "occurred_at"> & { id: string; occurred_at: string };
export type ChainHead = { seq: string; hash: string; recordedAt: string };
export type ChainOutcome = { chained: number; head: ChainHead; busy: boolean };

/** Months whose segment this process has made sure exists, per appliance (database). */
const knownSegments = new WeakMap<ApplianceContext, Set<string>>();

/** What this process just chained, for forwarders (SIEM). Called after the batch commits. */
export type ChainedBatch = { seq: string; canonical: string; hash: string }[];
type ChainListener = (batch: ChainedBatch) => void;
const listeners = new WeakMap<ApplianceContext, Set<ChainListener>>();

export function onAuditChained(ctx: ApplianceContext, listener: ChainListener): () => void {
  const set = listeners.get(ctx) ?? new Set<ChainListener>();
  listeners.set(ctx, set);
  set.add(listener);
  return () => set.delete(listener);
}

function segmentMonth(d: Date): string {
  return d.toISOString().slice(0, 7);
}

/**
 * One batch: lock the head, take up to `limit` committed intake rows, chain them, move the head.
 * Three round trips: the transaction's opening travels with the head's lock, and the chain rows
 * and the new head with COMMIT (daemon/db/sql.ts).
 */
async function chainBatch(ctx: ApplianceContext, limit: number, wait: boolean): Promise<ChainOutcome> {
  const owner = ctx.db.owner;
  return inScope(owner, { kind: "appliance" }, async (transaction) => {
    const heads = await transaction.rows<{ seq: string; hash: string; recorded_at: string }>(`SELECT seq::text AS seq, encode(hash, 'hex') AS hash,
              to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS recorded_at
         FROM audit_chain_head ${wait ? "FOR UPDATE" : "FOR UPDATE SKIP LOCKED"}`);
    const head = heads[0];
    if (!head) return { chained: 0, head: { seq: "?", hash: "?", recordedAt: "?" }, busy: true };
    // READ COMMITTED: only committed events are visible; one still in flight (lower id, later
    // commit) is simply chained in a later batch. Order within a batch is intake order.
    const rows = await transaction.rows<IntakeRow>(
      `DELETE FROM audit_intake WHERE id IN (SELECT id FROM audit_intake ORDER BY id LIMIT $1)
       RETURNING id::text AS id, event_id::text AS event_id,
         round(date_part('epoch', occurred_at) * 1000)::bigint::text AS occurred_at,
         tenant_id::text AS tenant_id, actor_user_id, actor_role, impersonator_id, break_glass, action,
         resource_type, resource_id, patient_id, outcome, source_ip, user_agent, request_id, reason`,
      [limit],
    );
    const current: ChainHead = { seq: head.seq, hash: head.hash, recordedAt: head.recorded_at };
    if (rows.length === 0) return { chained: 0, head: current, busy: false };
    // Intake order; ids are decimal text, so shorter is smaller (no BigInt parsing per compare).
    rows.sort((a, b) => a.id.length - b.id.length || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));

    // recorded_at never goes backwards along the chain, even when replicas' clocks disagree:
    // segments (monthly partitions) then hold contiguous sequence ranges.
    const now = ctx.clock.now().getTime();
    const recordedAt = new Date(Math.max(now, Date.parse(head.recorded_at)));
    const recorded = canonicalTime(recordedAt);
    const month = segmentMonth(recordedAt);
    const known = knownSegments.get(ctx) ?? new Set<string>();
    knownSegments.set(ctx, known);
    if (!known.has(month)) {
      await transaction.exec("SELECT audit_ensure_segment($1)", [recordedAt]);
      // Remembered only once this transaction commits (a rollback would undo the CREATE TABLE).
      transaction.afterCommit(() => {
        known.add(month);
      });
    }

    let seq = BigInt(head.seq);
    let prev = head.hash;
    const out: {
      seq: string;
      recorded_at: string;
      tenant_id: string | null;
      actor_user_id: string | null;
      patient_id: string | null;
      canonical: string;
      prev_hash: string;
      hash: string;
    }[] = new Array(rows.length);
    for (let i = 0; i < rows.length; i++) {
      const { id: _id, ...r } = rows[i]!;
      seq += 1n;
      const canonical = canonicalEventJson({ ...r, occurred_at: Number(r.occurred_at), seq: seq.toString(), recorded_at: recorded });
      const hash = chainHash(prev, canonical);
      out[i] = {
        seq: seq.toString(),
        recorded_at: recordedAt.toISOString(),
        tenant_id: r.tenant_id,
        actor_user_id: r.actor_user_id,
        patient_id: r.patient_id,
        canonical,
        prev_hash: "\\x" + prev,
        hash: "\\x" + hash,
      };
      prev = hash;
    }
    transaction.holdForCommit({
      text: `INSERT INTO audit_events (seq, recorded_at, tenant_id, actor_user_id, patient_id, canonical, prev_hash, hash)
         SELECT seq, recorded_at, tenant_id, actor_user_id, patient_id, canonical, prev_hash, hash FROM json_populate_recordset(NULL::audit_events, $1::json)`,
      values: [JSON.stringify(out)],
      onError: (err: Error) => {
        // The month's segment vanished behind our back (dropped by hand): make it again next time.
        known.delete(month);
        return err;
      },
    });
    const subscribers = listeners.get(ctx);
    if (subscribers?.size) {
      const batch: ChainedBatch = out.map((o) => ({ seq: o.seq, canonical: o.canonical, hash: o.hash.slice(2) }));
      transaction.afterCommit(() => {
        for (const l of subscribers) l(batch);
      });
    }
    transaction.holdForCommit({
      text: "UPDATE audit_chain_head SET seq = $1, hash = decode($2, 'hex'), recorded_at = $3",
      values: [seq.toString(), prev, recordedAt],
    });
    return { chained: rows.length, head: { seq: seq.toString(), hash: prev, recordedAt: recordedAt.toISOString() }, busy: false };
  });
}

/**
 * Chains everything committed so far. `wait` blocks on another chainer's lock (verification and
 * exports want a settled head); without it a busy chain is left to whoever holds it.
 */
export async function chainPendingEvents(ctx: ApplianceContext, opts: { wait?: boolean; batch?: number } = {}): Promise<ChainOutcome> {
  const limit = opts.batch ?? CHAIN_BATCH;
  let total = 0;
  for (;;) {
    const r = await chainBatch(ctx, limit, opts.wait ?? true);
    total += r.chained;
    if (r.busy || r.chained < limit) return { ...r, chained: total };
  }
}

export async function readChainHead(ctx: ApplianceContext): Promise<ChainHead> {
  const rows = await ctx.db.app.rows<{ seq: string; hash: string; recorded_at: string }>(`SELECT seq::text AS seq, encode(hash, 'hex') AS hash,
            to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS recorded_at FROM audit_chain_head`);
  const r = rows[0]!;
  return { seq: r.seq, hash: r.hash, recordedAt: r.recorded_at };
}

type ChainerState = { kick(): void; stop(): Promise<void> };
const chainers = new WeakMap<ApplianceContext, ChainerState>();

/** Wakes this process's chainer after a commit that wrote audit events (no-op if none runs). */
export function notifyAuditIntake(ctx: ApplianceContext): void {
  chainers.get(ctx)?.kick();
}

/**
 * Runs the chainer in the background of a daemon: woken `delayMs` after a local commit (so under
 * load one chainer transaction seals the events of many requests: each costs several round trips
 * and a WAL flush), and polling so events committed by other replicas (or left by a crashed one)
 * are chained too.
 */
export function startAuditChainer(ctx: ApplianceContext, opts: { pollMs?: number; delayMs?: number } = {}): ChainerState {
  const pollMs = opts.pollMs ?? ctx.config.audit.chainIntervalMs;
  const delayMs = opts.delayMs ?? ctx.config.audit.chainDelayMs;
  let woken: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let again = false;
  let stopped = false;
  let failures = 0;
  let retry: NodeJS.Timeout | undefined;

  const run = () => {
    if (stopped) return;
    if (running) {
      again = true;
      return;
    }
    running = (async () => {
      do {
        again = false;
        try {
          const r = await chainPendingEvents(ctx, { wait: false });
          if (failures > 0) ctx.log.info("audit chainer recovered");
          failures = 0;
          // Another replica holds the head: try again shortly so our commits are not left waiting.
          if (r.busy && !stopped) {
            clearTimeout(retry);
            retry = setTimeout(run, 20);
          }
        } catch (err) {
          failures += 1;
          if (failures === 1 || failures % 100 === 0) {
            const code = sqlState(err);
            ctx.log.error("audit chainer failed; events wait in audit_intake", { sqlstate: code, failures });
          }
        }
      } while (again && !stopped);
    })().finally(() => {
      running = undefined;
    });
  };
  // The poll looks first, without a lock: locking the head is a transaction id and WAL, so an idle
  // appliance would write every pollMs and the WAL shipper would close a segment for it every
  // recovery point objective (docs/backups.md "Recovery point objective").
  const poll = () => {
    if (stopped || running) return run();
    inScope(ctx.db.owner, { kind: "appliance" }, (t) => t.rows<{ any: boolean }>("SELECT EXISTS (SELECT 1 FROM audit_intake) AS any")).then(
      (r) => (r[0]?.any ? run() : undefined),
      () => run(), // the batch reports the failure
    );
  };
  const timer = setInterval(poll, pollMs);
  timer.unref();
  const state: ChainerState = {
    kick() {
      if (delayMs === 0) return run();
      if (woken || stopped) return;
      woken = setTimeout(() => {
        woken = undefined;
        run();
      }, delayMs);
    },
    async stop() {
      stopped = true;
      clearInterval(timer);
      clearTimeout(retry);
      clearTimeout(woken);
      await running;
    },
  };
  chainers.set(ctx, state);
  run();
  return state;
}
