import { describe, expect, it } from "vitest";
import { SNAPSHOT_ID } from "../../../backup/manifest.js";
import { snapshotTime } from "../../../backup/retention.js";
import { newSnapshotId } from "../../../backup/snapshot.js";

describe("snapshot ids", () => {
  it("sort by start time even when two snapshots start within the same second", () => {
    const second = Date.UTC(2026, 10, 30, 12, 0, 5);
    // Every millisecond of one second, made in shuffled order: sorting the ids restores the order.
    const ms = Array.from({ length: 1000 }, (_, i) => i).sort(() => Math.random() - 0.5);
    const ids = ms.map((m) => ({ m, id: newSnapshotId(new Date(second + m)) }));
    const sorted = [...ids].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)).map((x) => x.m);
    expect(sorted).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    for (const { id } of ids) {
      expect(id).toMatch(SNAPSHOT_ID);
      expect(snapshotTime(id).getTime()).toBe(second);
    }
    expect(newSnapshotId(new Date(second + 999)).slice(-8, -5)).toBe("3e7");
  });
});
