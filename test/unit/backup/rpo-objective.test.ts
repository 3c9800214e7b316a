import { describe, expect, it } from "vitest";
import { RpoObjective, type WalPosition } from "../../../daemon/backups/rpo-objective.js";

/**
 * The shipper's bookkeeping, on readings as PostgreSQL gives them (the integration test in
 * compose-archive.test.ts runs it against a server): which readings are writes, when a switch is
 * due, and when it is not.
 */
const SEG = (n: number) => `00000001000000000000000${n.toString(16).toUpperCase()}`;
const at = (ms: number, xmax: number, segment: number, inProgress: string[] = []): WalPosition => ({ at: ms, xmax: BigInt(xmax), inProgress, segment: SEG(segment) });

describe("RpoObjective", () => {
  // 60 s objective, 1 s passes: lead 1 s + 1 s margin + 2 × 1 s estimate = 4 s, switch at 56 s.
  const fresh = () => new RpoObjective(60_000, 1000);

  it("dates a write at the reading before it and asks for a switch once it is the objective minus the lead old", () => {
    const o = fresh();
    o.observe(at(0, 100, 3));
    o.cover(SEG(3)); // the first reading's segment is on the target: nothing waits
    expect(o.decide(0, SEG(3))).toEqual({ kind: "idle" });
    o.observe(at(1000, 101, 3)); // transaction 100 ended between the readings
    o.cover(SEG(2));
    expect(o.decide(55_999, SEG(3))).toEqual({ kind: "waiting", oldestAgeMs: 55_999, switchAtMs: 56_000 });
    expect(o.decide(56_000, SEG(3))).toEqual({ kind: "switch", oldestAgeMs: 56_000, segment: SEG(3) });
    // Once closed, it is not closed again while it travels; once on the target, nothing waits.
    o.closed(SEG(3));
    expect(o.decide(58_000, SEG(3))).toMatchObject({ kind: "closed", segment: SEG(3) });
    o.cover(SEG(3));
    expect(o.decide(58_000, SEG(4))).toEqual({ kind: "idle" });
  });

  it("counts a transaction that leaves the in-progress list, and not one still in it or the shipper's own", () => {
    const o = fresh();
    o.observe(at(0, 200, 5, ["198"]));
    o.cover(SEG(5));
    o.observe(at(1000, 200, 5, ["198"])); // still running
    o.observe(at(2000, 202, 5, ["198"]), new Set(["200", "201"])); // only the shipper's pitr_wal rows ended
    expect(o.waiting).toBe(false);
    o.observe(at(3000, 202, 5)); // 198 committed
    expect(o.waiting).toBe(true);
    expect(o.decide(3000, SEG(5))).toMatchObject({ kind: "waiting", oldestAgeMs: 1000 });
  });

  it("asks for no switch when the write's segment was closed by PostgreSQL already, and forgets all without a target", () => {
    const o = fresh();
    o.observe(at(0, 10, 6));
    o.cover(SEG(5));
    expect(o.decide(60_000, SEG(7))).toEqual({ kind: "closed", oldestAgeMs: 60_000, segment: SEG(6) });
    o.forget();
    expect(o.decide(60_000, SEG(7))).toEqual({ kind: "idle" });
  });

  it("moves the switch point earlier as shipping takes longer, down to a switch at the first sight of a write", () => {
    const o = fresh();
    for (let i = 0; i < 20; i++) o.shipped(10_000);
    expect(o.shipEstimateMs).toBeGreaterThan(9_900);
    expect(o.leadMs).toBeGreaterThan(21_000);
    o.observe(at(0, 1, 2));
    expect(o.decide(37_000, SEG(2))).toMatchObject({ kind: "waiting" });
    expect(o.decide(38_100, SEG(2))).toMatchObject({ kind: "switch" });
    const tight = new RpoObjective(5000, 1000);
    for (let i = 0; i < 20; i++) tight.shipped(10_000);
    tight.observe(at(0, 1, 2));
    expect(tight.decide(0, SEG(2))).toMatchObject({ kind: "switch", oldestAgeMs: 0 });
  });
});
