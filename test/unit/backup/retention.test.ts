import { describe, expect, it } from "vitest";
import { planRetention, snapshotTime } from "../../../backup/retention.js";

const id = (iso: string, n = 0) =>
  iso
    .replace(/[-:]/g, "")
    .replace(/\.\d+Z$/, "Z")
    .replace(/Z$/, "Z") + `-0000000${n}`;
const hourlyFor = (days: number, from = Date.UTC(2025, 0, 1)) => Array.from({ length: days * 24 }, (_, h) => id(new Date(from + h * 3_600_000).toISOString().slice(0, 19) + "Z"));

describe("grandfather-father-son retention", () => {
  it("keeps 24 hourly, 14 daily, 8 weekly and 12 monthly snapshots of a year of hourly runs", () => {
    const ids = hourlyFor(365);
    const plan = planRetention(ids, { hourly: 24, daily: 14, weekly: 8, monthly: 12 });
    const kept = plan.keep.map((k) => k.id);
    expect(kept[0]).toBe(ids.at(-1));
    expect(plan.keep.filter((k) => k.reasons.some((r) => r.startsWith("hourly")))).toHaveLength(24);
    expect(plan.keep.filter((k) => k.reasons.some((r) => r.startsWith("daily")))).toHaveLength(14);
    expect(plan.keep.filter((k) => k.reasons.some((r) => r.startsWith("weekly")))).toHaveLength(8);
    expect(plan.keep.filter((k) => k.reasons.some((r) => r.startsWith("monthly")))).toHaveLength(12);
    // Overlaps are kept once: far fewer than the sum.
    expect(kept.length).toBeLessThan(24 + 14 + 8 + 12);
    expect(kept.length + plan.prune.length).toBe(ids.length);
    // The monthly grandfathers are the last snapshot of each month.
    const monthly = plan.keep.filter((k) => k.reasons.some((r) => r.startsWith("monthly"))).map((k) => snapshotTime(k.id).toISOString());
    expect(monthly).toContain("2025-11-30T23:00:00.000Z");
  });

  it("never prunes the newest snapshot, even with every count at zero", () => {
    const ids = hourlyFor(2);
    const plan = planRetention(ids, { hourly: 0, daily: 0, weekly: 0, monthly: 0 });
    expect(plan.keep).toEqual([{ id: ids.at(-1), reasons: ["newest"] }]);
  });

  it("uses ISO weeks (a week spanning New Year is one bucket)", () => {
    const ids = [id("2024-12-30T10:00:00Z"), id("2025-01-02T10:00:00Z"), id("2025-01-06T10:00:00Z")];
    const plan = planRetention(ids, { hourly: 0, daily: 0, weekly: 2, monthly: 0 });
    expect(plan.prune).toEqual([ids[0]]);
  });
});
