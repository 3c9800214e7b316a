import { quoteIdent } from "../db/sql.js";
import type { ApplianceContext } from "../context.js";
import { signCheckpoint } from "./checkpoints.js";

/**
 * The retention job's audit part (docs/audit-format.md, "Retention"): drops whole monthly
 * segments that ended more than `audit.retentionYears` ago, oldest first, each only after a
 * checkpoint signed at its last event, through the owner-role function that leaves an anchor.
 */
export async function dropExpiredAuditSegments(ctx: ApplianceContext, opts: { retainYears?: number } = {}): Promise<string[]> {
  const years = opts.retainYears ?? ctx.config.audit.retentionYears;
  const owner = ctx.db.owner;
  const dropped: string[] = [];
  for (;;) {
    const [oldest] = await owner.rows<{ name: string; expired: boolean }>(
      `WITH segs AS (
         SELECT c.relname AS name,
                (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']+)''\\)'))[1]::timestamptz AS hi
           FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'audit_events'::regclass)
       SELECT name, hi <= now() - make_interval(years => $1) AS expired
         FROM segs ORDER BY hi LIMIT 1`,
      [years],
    );
    if (!oldest?.expired) return dropped;
    const last = await owner.transaction(async (t) => {
      await t.exec("SELECT set_config('wardkeep.scope', 'appliance', true)");
      const seg = quoteIdent(oldest.name);
      const rows = await t.rows<{ s: string; hash: string }>(`SELECT seq::text AS s, encode(hash, 'hex') AS hash FROM ${seg} ORDER BY ${seg}.seq DESC LIMIT 1`);
      return rows[0] ? { seq: rows[0].s, hash: rows[0].hash } : undefined;
    });
    const checkpoint = last ? await signCheckpoint(ctx, { seq: last.seq, hash: last.hash }, "retention") : undefined;
    const [r] = await owner.rows<{ name: string | null }>("SELECT audit_drop_expired_segment(make_interval(years => $1), $2) AS name", [years, checkpoint?.id ?? null]);
    if (!r?.name) return dropped;
    dropped.push(r.name);
    ctx.log.info("audit segment past retention dropped; its anchor and signed checkpoint remain", { segment: r.name, lastSeq: last?.seq ?? null });
  }
}
