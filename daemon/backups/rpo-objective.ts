/**
 * The recovery point objective, kept by the WAL shipper (docs/backups.md "Recovery point
 * objective"). PostgreSQL's archive_timeout alone promises a write on the targets only after the
 * timeout AND the copy: a write committed just after a segment switch waits the whole timeout for
 * the next one, then for archive_command, the next shipping pass, encryption and upload. So the
 * shipper tracks, itself, how old the oldest committed write not yet on every target is, and
 * closes the segment holding it (`pg_switch_wal()`, pitr.ts `closeSegment`) once that age reaches
 * `backup.rpoObjectiveSeconds` minus its lead: the shipping interval, a margin, and twice a moving
 * estimate of how long a closed segment takes to reach every target. archive_timeout stays as
 * PostgreSQL's own backstop (for a daemon that is down, or a role that may not switch).
 *
 * Writes are seen through transaction ids, not WAL positions: each pass reads the snapshot's xmax
 * and in-progress list. A transaction that wrote anything has an id; one that ended since the last
 * pass (xmax moved, or an id left the in-progress list) is a committed (or aborted) write, and its
 * commit record lies at or before the WAL insert position read in the same query. WAL that no
 * transaction wrote (the running-transactions record PostgreSQL logs after activity, checkpoints,
 * a switch record) is not a write, so an idle appliance gets no segment switch, not even the one
 * that a WAL-position test would make after every switch of its own.
 */
import type { ApplianceContext } from "../context.js";

/** What one pass reads from PostgreSQL (`readWalPosition`). */
export type WalPosition = {
  /** pg_snapshot_xmax: the first transaction id not yet completed as of the read. */
  xmax: bigint;
  /** pg_snapshot_xip: transaction ids in progress at the read. */
  inProgress: string[];
  /** The WAL file holding the insert position (a commit seen at this read lies in it or an earlier one). */
  segment: string;
  /** Wall-clock time of the read (ms). */
  at: number;
};

/** Reads the position; null on a standby (it writes no WAL of its own) or when the server does not archive (nothing to close segments for). */
export async function readWalPosition(ctx: ApplianceContext): Promise<WalPosition | null> {
  const row = await ctx.db.owner.one<{ xmax: string; xip: string[]; seg: string | null }>(
    `SELECT pg_snapshot_xmax(s)::text AS xmax, ARRAY(SELECT pg_snapshot_xip(s)::text) AS xip,
            CASE WHEN pg_is_in_recovery() OR current_setting('archive_mode') = 'off' THEN NULL
                 ELSE pg_walfile_name(pg_current_wal_insert_lsn()) END AS seg
       FROM pg_current_snapshot() s`,
  );
  if (!row?.seg) return null;
  return { xmax: BigInt(row.xmax), inProgress: row.xip, segment: row.seg, at: Date.now() };
}

/** Segment order without the timeline (the last 16 hex digits: log and segment number). */
const segKey = (name: string) => name.slice(8, 24);

export type ObjectiveDecision =
  /** Nothing committed is waiting: every write so far is on every target. */
  | { kind: "idle" }
  /** Writes wait, younger than the switch point. */
  | { kind: "waiting"; oldestAgeMs: number; switchAtMs: number }
  /** The oldest waiting write is in a segment already closed: archiving and shipping are under way. */
  | { kind: "closed"; oldestAgeMs: number; segment: string }
  /** Close the segment being written now. */
  | { kind: "switch"; oldestAgeMs: number; segment: string };

/**
 * The bookkeeping, one instance per shipper. `observe` with each pass's position and the newest
 * `cover` with the newest segment every target holds; `decide` says whether to switch; `shipped`
 * feeds the moving estimate.
 */
export class RpoObjective {
  /** Oldest possible commit time (ms) of a write not yet on every target, by the segment (key) it is in. */
  private readonly pending = new Map<string, { segment: string; since: number }>();
  private previous?: WalPosition;
  /** The segment this shipper last closed: closing it again would do nothing. */
  private switched?: string;
  /** Moving estimate (ms) of the time from closing a segment until it is on every target. */
  private estimateMs: number;

  constructor(
    private readonly objectiveMs: number,
    private readonly intervalMs: number,
    opts: { initialEstimateMs?: number; marginMs?: number } = {},
  ) {
    this.estimateMs = opts.initialEstimateMs ?? 1000;
    this.marginMs = opts.marginMs ?? 1000;
  }

  private readonly marginMs: number;

  /** How long before the objective the segment is closed. */
  get leadMs(): number {
    return this.intervalMs + this.marginMs + 2 * this.estimateMs;
  }

  get shipEstimateMs(): number {
    return this.estimateMs;
  }

  /**
   * One pass's reading. `own`: transaction ids of the shipper's own bookkeeping (its `pitr_wal` rows),
   * which are not writes to keep within the objective: counting them would close a segment for the
   * record of the last one, and so on, forever. A write that completed since the previous reading is dated at that reading
   * (it may have committed just after it: the conservative side). The first reading counts as a
   * write made now (the shipper cannot tell what happened before it started); `cover` drops it when
   * its segment is already on every target.
   */
  observe(now: WalPosition, own: ReadonlySet<string> = new Set()): void {
    const prev = this.previous;
    this.previous = now;
    const wrote = !prev || wroteSince(prev, now, own);
    if (wrote && !this.pending.has(segKey(now.segment))) this.pending.set(segKey(now.segment), { segment: now.segment, since: prev?.at ?? now.at });
  }

  /** `covered`: the newest WAL segment every target holds (null: none yet). The writes in it and before it are safe. */
  cover(covered: string | null): void {
    if (covered !== null) for (const key of [...this.pending.keys()]) if (key <= segKey(covered)) this.pending.delete(key);
  }

  /** No target: nothing can be kept (the shipper discards the spool), so nothing is tracked. */
  forget(): void {
    this.pending.clear();
  }

  /** Whether any write waits (the caller reads the covered segment only then). */
  get waiting(): boolean {
    return this.pending.size > 0;
  }

  decide(nowMs: number, writing: string): ObjectiveDecision {
    let oldest: { segment: string; since: number } | undefined;
    for (const p of this.pending.values()) if (!oldest || p.since < oldest.since) oldest = p;
    if (!oldest) return { kind: "idle" };
    const oldestAgeMs = nowMs - oldest.since;
    const switchAtMs = Math.max(0, this.objectiveMs - this.leadMs);
    if (oldestAgeMs < switchAtMs) return { kind: "waiting", oldestAgeMs, switchAtMs };
    // Written in a segment PostgreSQL has closed already (full, or its archive_timeout): a switch
    // would close an empty one; the segment is on its way through the archiver and the spool.
    // The same once this shipper has closed it (it waits for a target that is down, say).
    if (segKey(oldest.segment) < segKey(writing) || oldest.segment === this.switched) return { kind: "closed", oldestAgeMs, segment: oldest.segment };
    return { kind: "switch", oldestAgeMs, segment: oldest.segment };
  }

  /** The shipper closed `segment` (pg_switch_wal answered with it). */
  closed(segment: string): void {
    this.switched = segment;
  }

  /** A closed segment reached every target `ms` after the switch (or a shipping pass took that long): the moving estimate. */
  shipped(ms: number): void {
    this.estimateMs = 0.7 * this.estimateMs + 0.3 * ms;
  }
}

/**
 * Whether a transaction other than `own` ended between two readings: one that was in progress and
 * no longer is, or one whose id lies between the two xmax values and is not in progress now (a
 * span wider than 256 ids is a write for sure: the shipper makes one transaction per shipped file).
 */
function wroteSince(prev: WalPosition, now: WalPosition, own: ReadonlySet<string>): boolean {
  const still = new Set(now.inProgress);
  for (const x of prev.inProgress) if (!still.has(x) && !own.has(x)) return true;
  if (now.xmax <= prev.xmax) return false;
  if (now.xmax - prev.xmax > 256n) return true;
  for (let x = prev.xmax; x < now.xmax; x++) if (!still.has(x.toString()) && !own.has(x.toString())) return true;
  return false;
}
