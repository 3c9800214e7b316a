import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { appendAuditEvent } from "../../../daemon/audit/append.js";
import { chainPendingEvents } from "../../../daemon/audit/chainer.js";
import { dropExpiredAuditSegments } from "../../../daemon/audit/retention.js";
import { verifyAuditChain } from "../../../daemon/audit/verify.js";
import { inScope } from "../../../daemon/db/sql.js";
import { auditTestContext, ManualClock, type AuditTestContext } from "./context.js";

let t: AuditTestContext;
const clock = new ManualClock();

async function eventsAt(at: string, n: number) {
  clock.set(new Date(at));
  for (let i = 0; i < n; i++) {
    await inScope(t.ctx.db.app, { kind: "appliance" }, (tx) =>
      appendAuditEvent(t.ctx, tx, { tenantId: null, actor: { userId: "u", role: "admin" }, action: "record.read", resourceType: "record", outcome: "success" }),
    );
  }
  await chainPendingEvents(t.ctx);
}

beforeAll(async () => {
  t = await auditTestContext({ clock });
  await eventsAt("2015-03-10T10:00:00Z", 4); // segment 2015_03
  await eventsAt("2015-04-02T10:00:00Z", 3); // segment 2015_04
  await eventsAt(new Date().toISOString(), 5); // this month
});
afterAll(async () => {
  await t?.close();
});

describe("retention of the audit trail", () => {
  it("refuses to drop anything younger than one year, and the app role cannot call it at all", async () => {
    const owner = new pg.Client({ connectionString: t.db.ownerUrl });
    await owner.connect();
    try {
      await expect(owner.query("SELECT audit_drop_expired_segment('6 months', NULL)")).rejects.toThrow(/below one year is refused/);
      // No checkpoint at the segment's last event: the function refuses too.
      await expect(owner.query("SELECT audit_drop_expired_segment('7 years', NULL)")).rejects.toThrow(/needs a signed checkpoint at seq 4/);
    } finally {
      await owner.end();
    }
  });

  it("drops whole segments past 7 years, leaving signed anchors from which the rest still verifies", async () => {
    const dropped = await dropExpiredAuditSegments(t.ctx);
    expect(dropped).toEqual(["audit_events_2015_03", "audit_events_2015_04"]);
    const su = new pg.Client({ connectionString: t.db.superuserUrl });
    await su.connect();
    try {
      const anchors = (await su.query("SELECT segment, first_seq::int, last_seq::int, event_count::int FROM audit_segment_anchors ORDER BY id")).rows;
      expect(anchors).toEqual([
        { segment: "audit_events_2015_03", first_seq: 1, last_seq: 4, event_count: 4 },
        { segment: "audit_events_2015_04", first_seq: 5, last_seq: 7, event_count: 3 },
      ]);
      expect((await su.query("SELECT min(seq)::int AS s FROM audit_events")).rows[0].s).toBe(8);
    } finally {
      await su.end();
    }
    const report = await verifyAuditChain(t.ctx);
    expect(report).toMatchObject({ intact: true, startedFrom: { kind: "anchor", segment: "audit_events_2015_04", seq: "7" }, lastGoodSeq: "12", verified: "5" });
    expect(await dropExpiredAuditSegments(t.ctx)).toEqual([]);
  });

  it("detects a segment dropped by hand, without the function and its anchor", async () => {
    const owner = new pg.Client({ connectionString: t.db.ownerUrl });
    await owner.connect();
    try {
      const current = (
        await owner.query("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'audit_events'::regclass ORDER BY 1 LIMIT 1")
      ).rows[0].relname as string;
      await owner.query(`ALTER TABLE audit_events DETACH PARTITION ${current}`);
      await owner.query(`DROP TABLE ${current}`);
    } finally {
      await owner.end();
    }
    const report = await verifyAuditChain(t.ctx);
    expect(report.break).toMatchObject({ seq: "8", reason: "missing" });
  });
});
