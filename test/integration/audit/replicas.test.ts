import fs from "node:fs";
import path from "node:path";
import pg from "pg";
import request from "supertest";
import { afterAll, describe, expect, it } from "vitest";
import { GENESIS_HASH, chainHash } from "../../../daemon/audit/canonical.js";
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

describe("the chain across replicas", () => {
  it("has no gaps, forks or duplicates when 3 daemon processes write audit events concurrently", async () => {
    db = await createTestDatabase();
    // The first replica creates the key store and schema; the others then join the same database.
    const start = async () => {
      const dir = tempDir("wardkeep-replica-");
      dirs.push(dir);
      const d = spawnDaemon(testEnv(db!, dir, { WARDKEEP_AUDIT_CHAIN_INTERVAL_MS: "100" }));
      daemons.push(d);
      const port = await d.port();
      return { d, port, ca: () => fs.readFileSync(path.join(dir, "tls", "ca.crt"), "utf8") };
    };
    const first = await start();
    const others = await Promise.all([start(), start()]);
    const replicas = [first, ...others];

    // Failed sign-ins are audited (auth.login failure, or denied once rate limited) by whichever
    // replica serves them: 3 replicas x 16 attempts, 8 in flight per replica.
    const perReplica = 16;
    await Promise.all(
      replicas.map(async (r, i) => {
        const ca = r.ca();
        for (let batch = 0; batch < perReplica / 8; batch++) {
          await Promise.all(
            Array.from({ length: 8 }, (_, j) =>
              request(`https://localhost:${r.port}`)
                .post("/api/v1/auth/login")
                .ca(ca)
                .send({ email: `nobody-${i}-${batch}-${j}@example.org`, password: "wrong password 123" })
                .then((res) => expect([401, 429]).toContain(res.status)),
            ),
          );
        }
      }),
    );

    // Every replica's chainer and poll settle the intake; then read the chain as an auditor would.
    const su = new pg.Client({ connectionString: db.superuserUrl });
    await su.connect();
    try {
      const deadline = Date.now() + 20_000;
      while ((await su.query("SELECT count(*)::int AS n FROM audit_intake")).rows[0].n > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      expect((await su.query("SELECT count(*)::int AS n FROM audit_intake")).rows[0].n).toBe(0);
      const rows = (
        await su.query<{ seq: string; canonical: string; prev_hash: string; hash: string }>(
          "SELECT seq::text AS seq, canonical, encode(prev_hash, 'hex') AS prev_hash, encode(hash, 'hex') AS hash FROM audit_events ORDER BY audit_events.seq",
        )
      ).rows;
      const logins = rows.filter((r) => r.canonical.includes('"action":"auth.login"'));
      expect(logins.length).toBe(3 * perReplica);
      let prev = GENESIS_HASH;
      rows.forEach((r, i) => {
        expect(r.seq).toBe(String(i + 1)); // no gaps, no duplicates
        expect(r.prev_hash).toBe(prev); // no forks: one predecessor each
        expect(r.hash).toBe(chainHash(prev, r.canonical));
        prev = r.hash;
      });
      const head = (await su.query("SELECT seq::text AS seq, encode(hash, 'hex') AS hash FROM audit_chain_head")).rows[0];
      expect(head).toEqual({ seq: String(rows.length), hash: prev });
      // One event per request, none chained twice by two replicas' chainers.
      const requests = new Set(logins.map((r) => (JSON.parse(r.canonical) as { request_id: string }).request_id));
      expect(requests.size).toBe(3 * perReplica);
    } finally {
      await su.end();
    }
  }, 120_000);
});
