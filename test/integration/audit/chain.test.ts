import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { appendAuditEvent, REASON_MAX_CHARS, type AuditEventInput } from "../../../daemon/audit/append.js";
import { canonicalEventJson, chainHash, GENESIS_HASH, parseCanonical, type ChainedEvent } from "../../../daemon/audit/canonical.js";
import { chainPendingEvents, onAuditChained, readChainHead, startAuditChainer } from "../../../daemon/audit/chainer.js";
import { inScope } from "../../../daemon/db/sql.js";
import { Unavailable } from "../../../daemon/kernel/errors.js";
import { recordPoolWire } from "../../helpers/wire.js";
import { auditTestContext, type AuditTestContext } from "./context.js";

let t: AuditTestContext;
let tenantA: string;
let tenantB: string;

const event = (over: Partial<AuditEventInput> = {}): AuditEventInput => ({
  tenantId: null,
  actor: { userId: "11111111-1111-4111-8111-111111111111", role: "admin" },
  action: "test.write",
  resourceType: "thing",
  resourceId: "r1",
  outcome: "success",
  ...over,
});

type Row = ChainedEvent & { v: number; prev_hash: string; hash: string; canonical: string };
async function chainRows(): Promise<Row[]> {
  const rows = await inScope(t.ctx.db.app, { kind: "appliance" }, (transaction) =>
    transaction.rows<{ canonical: string; prev_hash: string; hash: string }>(
      `SELECT canonical, encode(prev_hash, 'hex') AS prev_hash, encode(hash, 'hex') AS hash FROM audit_events ORDER BY audit_events.seq`,
    ),
  );
  return rows.map((r) => ({ ...parseCanonical(r.canonical), prev_hash: r.prev_hash, hash: r.hash, canonical: r.canonical }));
}

beforeAll(async () => {
  t = await auditTestContext({ poolMax: 20 });
  [tenantA, tenantB] = await inScope(t.ctx.db.app, { kind: "appliance" }, async (transaction) => {
    const rows = await transaction.rows<{ id: string }>("INSERT INTO tenants (name, slug) VALUES ('North', 'north'), ('South', 'south') RETURNING id");
    return rows.map((r) => r.id) as [string, string];
  });
});
afterAll(async () => {
  await t?.close();
});

describe("appending audit events", () => {
  it("commits the event with the work and chains it with the next sequence number", async () => {
    const before = await readChainHead(t.ctx);
    const receipt = await inScope(t.ctx.db.app, { kind: "tenant", tenantId: tenantA }, (transaction) =>
      appendAuditEvent(t.ctx, transaction, event({ tenantId: tenantA, patientId: "p-1", reason: "ticket 42" })),
    );
    expect(receipt.seq).toBe("pending");
    const outcome = await chainPendingEvents(t.ctx);
    expect(outcome.chained).toBe(1);
    expect(BigInt(outcome.head.seq)).toBe(BigInt(before.seq) + 1n);
    const rows = await chainRows();
    const mine = rows.find((r) => r.event_id === receipt.eventId)!;
    expect(mine).toMatchObject({ tenant_id: tenantA, patient_id: "p-1", reason: "ticket 42", outcome: "success", seq: outcome.head.seq });
    const { prev_hash, hash, canonical, v: _v, ...fields } = mine;
    expect(canonicalEventJson(fields)).toBe(canonical);
    expect(hash).toBe(chainHash(prev_hash, canonical));
  });

  it("leaves no event behind when the work rolls back", async () => {
    const before = await readChainHead(t.ctx);
    let eventId = "";
    await expect(
      inScope(t.ctx.db.app, { kind: "appliance" }, async (transaction) => {
        eventId = (await appendAuditEvent(t.ctx, transaction, event())).eventId;
        throw new Error("the work failed");
      }),
    ).rejects.toThrow("the work failed");
    await chainPendingEvents(t.ctx);
    expect((await readChainHead(t.ctx)).seq).toBe(before.seq);
    expect((await chainRows()).some((r) => r.event_id === eventId)).toBe(false);
  });

  it("fails the work with 503 Unavailable when the event cannot be written", async () => {
    // A tenant's transaction may not write another tenant's event: row-level security refuses it.
    const err = await inScope(t.ctx.db.app, { kind: "tenant", tenantId: tenantA }, (transaction) => appendAuditEvent(t.ctx, transaction, event({ tenantId: tenantB }))).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(Unavailable);
    expect((err as Unavailable).status).toBe(503);
  });

  it("keeps the free-text reason out of the log when the write fails", async () => {
    const secret = "Reason mentions Jane Roe MRN 99812";
    await inScope(t.ctx.db.app, { kind: "tenant", tenantId: tenantA }, (transaction) => appendAuditEvent(t.ctx, transaction, event({ tenantId: tenantB, reason: secret }))).catch(
      () => undefined,
    );
    expect(t.logLines.some((l) => l.includes("audit event could not be written"))).toBe(true);
    expect(t.logLines.some((l) => l.includes("Jane Roe") || l.includes("99812"))).toBe(false);
  });

  it("caps the reason and replaces control characters that encoders disagree on", async () => {
    const receipt = await inScope(t.ctx.db.app, { kind: "appliance" }, (transaction) =>
      appendAuditEvent(t.ctx, transaction, event({ reason: "x".repeat(REASON_MAX_CHARS + 50), userAgent: "agent\u0000\u007f\u001b\ud800 ok" })),
    );
    await chainPendingEvents(t.ctx);
    const row = (await chainRows()).find((r) => r.event_id === receipt.eventId)!;
    expect(row.reason).toHaveLength(REASON_MAX_CHARS);
    expect(row.user_agent).toBe("agent\uFFFD\uFFFD\uFFFD\uFFFD ok");
  });

  it("rejects a malformed action name as a programming error", async () => {
    await expect(inScope(t.ctx.db.app, { kind: "appliance" }, (transaction) => appendAuditEvent(t.ctx, transaction, event({ action: "Drop Table" })))).rejects.toThrow(TypeError);
  });
});

describe("the append-only table", () => {
  it("refuses UPDATE and DELETE to the app role, which has INSERT and SELECT only", async () => {
    const client = new pg.Client({ connectionString: t.db.appUrl });
    await client.connect();
    try {
      await client.query("SELECT set_config('wardkeep.scope', 'appliance', false)");
      await expect(client.query("UPDATE audit_events SET canonical = canonical")).rejects.toThrow(/permission denied/);
      await expect(client.query("DELETE FROM audit_events")).rejects.toThrow(/permission denied/);
      await expect(client.query("TRUNCATE audit_events")).rejects.toThrow(/permission denied/);
      await expect(client.query("SELECT * FROM audit_intake")).rejects.toThrow(/permission denied/);
      await expect(client.query("DELETE FROM audit_intake")).rejects.toThrow(/permission denied/);
      await expect(client.query("SELECT audit_drop_expired_segment('1 year', NULL)")).rejects.toThrow(/permission denied/);
    } finally {
      await client.end();
    }
  });

  it("lets the owner role change no row: no UPDATE or DELETE policy exists, so nothing is visible to change", async () => {
    await appendOne();
    await chainPendingEvents(t.ctx);
    const client = new pg.Client({ connectionString: t.db.ownerUrl });
    await client.connect();
    try {
      await client.query("SELECT set_config('wardkeep.scope', 'appliance', false)");
      expect((await client.query("SELECT count(*)::int AS n FROM audit_events")).rows[0].n).toBeGreaterThan(0);
      expect((await client.query("UPDATE audit_events SET canonical = canonical")).rowCount).toBe(0);
      expect((await client.query("DELETE FROM audit_events")).rowCount).toBe(0);
      await expect(client.query("TRUNCATE audit_events")).rejects.toThrow(/append-only: TRUNCATE/);
    } finally {
      await client.end();
    }
  });

  it("rejects UPDATE, DELETE and TRUNCATE by trigger even for a superuser, who must disable it first", async () => {
    await appendOne();
    await chainPendingEvents(t.ctx);
    const client = new pg.Client({ connectionString: t.db.superuserUrl });
    await client.connect();
    try {
      await expect(client.query("UPDATE audit_events SET canonical = canonical")).rejects.toThrow(/append-only: UPDATE/);
      await expect(client.query("DELETE FROM audit_events")).rejects.toThrow(/append-only: DELETE/);
      await expect(client.query("TRUNCATE audit_events")).rejects.toThrow(/append-only: TRUNCATE/);
      const part = await client.query<{ relname: string }>(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'audit_events'::regclass LIMIT 1",
      );
      await expect(client.query(`TRUNCATE ${part.rows[0]!.relname}`)).rejects.toThrow(/append-only: TRUNCATE/);
      await expect(client.query(`DELETE FROM ${part.rows[0]!.relname}`)).rejects.toThrow(/append-only: DELETE/);
      await expect(client.query("TRUNCATE audit_checkpoints CASCADE")).rejects.toThrow(/append-only: TRUNCATE/);
      await expect(client.query("TRUNCATE audit_segment_anchors")).rejects.toThrow(/append-only: TRUNCATE/);
      await expect(client.query("DELETE FROM audit_chain_head")).rejects.toThrow(/append-only: DELETE/);
    } finally {
      await client.end();
    }
  });
});

async function appendOne(over: Partial<AuditEventInput> = {}) {
  return inScope(t.ctx.db.app, { kind: "appliance" }, (transaction) => appendAuditEvent(t.ctx, transaction, event(over)));
}

describe("the background chainer", () => {
  it("waits chainDelayMs after a commit, then seals every event committed meanwhile in one batch", async () => {
    await chainPendingEvents(t.ctx);
    const batches: number[] = [];
    const stopListening = onAuditChained(t.ctx, (batch) => batches.push(batch.length));
    const chainer = startAuditChainer(t.ctx, { pollMs: 60_000, delayMs: 400 });
    try {
      await new Promise((r) => setTimeout(r, 100)); // its first run at start finds nothing
      const start = BigInt((await readChainHead(t.ctx)).seq);
      for (let i = 0; i < 10; i++) await appendOne({ resourceId: `burst-${i}` });
      expect(BigInt((await readChainHead(t.ctx)).seq)).toBe(start);
      const deadline = Date.now() + 5_000;
      while (BigInt((await readChainHead(t.ctx)).seq) < start + 10n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(BigInt((await readChainHead(t.ctx)).seq)).toBe(start + 10n);
      expect(batches).toEqual([10]);
    } finally {
      stopListening();
      await chainer.stop();
    }
  });
});

describe("the chainer's transaction", () => {
  it("takes three round trips a batch, and makes a month's segment again when it was dropped behind its back, losing no event", async () => {
    // One connection per pool, so the wire of the owner pool is the chainer's.
    const one = await auditTestContext({ poolMax: 1 });
    try {
      const append = (resourceId: string) => inScope(one.ctx.db.app, { kind: "appliance" }, (transaction) => appendAuditEvent(one.ctx, transaction, event({ resourceId })));
      await append("first");
      expect((await chainPendingEvents(one.ctx)).chained).toBe(1); // also makes this month's segment
      await append("second");
      const routed = await recordPoolWire(one.ctx.db, "owner");
      try {
        routed.wire.reset();
        expect((await chainPendingEvents(one.ctx)).chained).toBe(1);
        // The opening with the head's lock, the intake, then the chain rows and the new head with COMMIT.
        expect(routed.wire.roundTrips).toBe(3);
      } finally {
        await routed.close();
      }

      const owner = new pg.Client({ connectionString: one.db.ownerUrl });
      await owner.connect();
      try {
        const segments = await owner.query("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'audit_events'::regclass");
        for (const r of segments.rows) {
          await owner.query(`ALTER TABLE audit_events DETACH PARTITION ${r.relname}`);
          await owner.query(`DROP TABLE ${r.relname}`);
        }
      } finally {
        await owner.end();
      }
      await append("third");
      await expect(chainPendingEvents(one.ctx)).rejects.toThrow(/no partition/);
      // The failed batch rolled back: the event is still in the intake, and the next batch remakes the segment.
      expect(await chainPendingEvents(one.ctx)).toMatchObject({ chained: 1, head: { seq: "3" } });
    } finally {
      await one.close();
    }
  });
});

describe("the chain under concurrency", () => {
  it("has no gaps, forks or duplicate sequence numbers with 64 writers and 3 competing chainers", async () => {
    const start = BigInt((await readChainHead(t.ctx)).seq);
    const writers = Array.from({ length: 64 }, async (_, w) => {
      for (let i = 0; i < 10; i++) await appendOne({ resourceId: `w${w}-${i}` });
    });
    const chainers = Array.from({ length: 3 }, async () => {
      for (let i = 0; i < 20; i++) {
        await chainPendingEvents(t.ctx, { wait: i % 2 === 0, batch: 50 });
        await new Promise((r) => setTimeout(r, 5));
      }
    });
    await Promise.all([...writers, ...chainers]);
    await chainPendingEvents(t.ctx);
    const rows = await chainRows();
    let prev = GENESIS_HASH;
    rows.forEach((r, i) => {
      expect(BigInt(r.seq)).toBe(BigInt(i + 1));
      expect(r.prev_hash).toBe(prev);
      expect(r.hash).toBe(chainHash(prev, r.canonical));
      const hash = r.hash;
      prev = hash;
    });
    expect(BigInt(rows.length)).toBe(start + 640n);
    expect(new Set(rows.map((r) => r.resource_id)).size).toBeGreaterThanOrEqual(640);
  });
});
