import fs from "node:fs";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { tempDir, testEnv } from "../../helpers/appliance.js";
import { spawnDaemon, type DaemonProcess } from "../../helpers/daemon-process.js";
import { createTestDatabase, type TestDatabase } from "../../helpers/postgres.js";

let db: TestDatabase | undefined;
const daemons: DaemonProcess[] = [];
const dirs: string[] = [];

afterAll(async () => {
  await Promise.all(daemons.map((d) => d.stop("SIGTERM").catch(() => undefined)));
  await db?.drop();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

describe("one job runner across replicas", () => {
  it("runs each fire of a schedule exactly once when three daemon processes share the database", async () => {
    db = await createTestDatabase();
    const start = async () => {
      const dir = tempDir("wardkeep-jobs-replica-");
      dirs.push(dir);
      // The watchdog fires every second on all three; everything else keeps its (slow) schedule.
      const d = spawnDaemon(testEnv(db!, dir, { WARDKEEP_JOBS_SCHEDULES_JOBS_WATCHDOG: "* * * * * *", WARDKEEP_LOG_LEVEL: "debug" }));
      daemons.push(d);
      await d.port();
      return d;
    };
    // The first creates the schema; the other two then join.
    await start();
    await Promise.all([start(), start()]);
    const allUp = Date.now();
    await new Promise((r) => setTimeout(r, 7_000));
    const until = Date.now() - 2_000; // fires after this may still be finishing

    const su = new pg.Client({ connectionString: db.superuserUrl });
    await su.connect();
    try {
      const rows = (
        await su.query<{ id: string; slot: Date; outcome: string; replica: string }>(
          "SELECT id::text, slot, outcome, replica FROM job_runs WHERE job = 'jobs-watchdog' AND trigger = 'schedule' ORDER BY slot",
        )
      ).rows;
      const window = rows.filter((r) => r.slot.getTime() > allUp && r.slot.getTime() <= until);
      // Every second of the window fired once: no slot missing, none twice.
      const first = Math.ceil((allUp + 1) / 1000) * 1000;
      const expected: number[] = [];
      for (let t = first; t <= until; t += 1000) expected.push(t);
      expect(expected.length).toBeGreaterThanOrEqual(4);
      expect(window.map((r) => r.slot.getTime())).toEqual(expected);
      expect(window.every((r) => r.outcome === "succeeded")).toBe(true);
      const pids = new Set(daemons.map((d) => String(d.child.pid)));
      for (const r of window) expect(pids.has(r.replica.split(":").pop()!)).toBe(true);

      // The work itself ran once per run: each run id is reported finished by exactly one process, once.
      const finished = daemons.flatMap((d) =>
        d
          .logs()
          .filter((l) => l.job === "jobs-watchdog" && l.outcome === "succeeded")
          .map((l) => String(l.runId)),
      );
      for (const r of window) expect(finished.filter((id) => id === r.id)).toHaveLength(1);
    } finally {
      await su.end();
    }
  }, 120_000);
});
