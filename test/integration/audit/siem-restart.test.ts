import fs from "node:fs";
import path from "node:path";
import pg from "pg";
import request from "supertest";
import { afterAll, describe, expect, it } from "vitest";
import { ensureTlsMaterial } from "../../../daemon/tls/internal-ca.js";
import { tempDir, testEnv } from "../../helpers/appliance.js";
import { spawnDaemon, type DaemonProcess } from "../../helpers/daemon-process.js";
import { createTestDatabase, freePort, type TestDatabase } from "../../helpers/postgres.js";
import { syslogCollector, waitUntil, type SyslogCollector } from "../../helpers/syslog-collector.js";

let db: TestDatabase | undefined;
let collector: SyslogCollector | undefined;
const daemons: DaemonProcess[] = [];
const dirs: string[] = [];

afterAll(async () => {
  await Promise.all(daemons.map((d) => d.stop("SIGTERM").catch(() => undefined)));
  await collector?.close();
  await db?.drop();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe("SIEM forwarding across a crash (real daemon processes, real TLS collector)", () => {
  it("collector down, events written, appliance SIGKILLed and restarted as two replicas, collector back: every sequence number arrives once, in order", async () => {
    db = await createTestDatabase();
    const collectorDir = tempDir("wardkeep-collector-");
    dirs.push(collectorDir);
    const material = await ensureTlsMaterial({ dir: collectorDir, hostnames: ["localhost", "127.0.0.1"], validityDays: 30 });
    collector = syslogCollector(material.certPem, material.keyPem);
    const collectorPort = await freePort();
    const siemEnv = {
      WARDKEEP_AUDIT_SIEM_ENABLED: "true",
      WARDKEEP_AUDIT_SIEM_HOST: "localhost",
      WARDKEEP_AUDIT_SIEM_PORT: String(collectorPort),
      WARDKEEP_AUDIT_SIEM_CA_FILE: path.join(collectorDir, "ca.crt"),
      WARDKEEP_AUDIT_SIEM_RECONNECT_MS: "250",
      // Everything from the first event on, so the test can say "every sequence number".
      WARDKEEP_AUDIT_SIEM_START_FROM: "genesis",
      WARDKEEP_AUDIT_CHAIN_INTERVAL_MS: "100",
    };
    const firstDir = tempDir("wardkeep-siem-a-");
    dirs.push(firstDir);
    const start = (dir: string) => {
      const d = spawnDaemon(testEnv(db!, dir, siemEnv));
      daemons.push(d);
      return d;
    };
    const su = new pg.Client({ connectionString: db.superuserUrl });
    await su.connect();
    const head = async () => Number((await su.query<{ seq: string }>("SELECT seq::text AS seq FROM audit_chain_head")).rows[0]!.seq);
    const intake = async () => (await su.query<{ n: number }>("SELECT count(*)::int AS n FROM audit_intake")).rows[0]!.n;
    // Failed sign-ins are audited (auth.login failure, or denied once rate limited).
    const signIns = async (port: number, ca: string, n: number, tag: string) => {
      for (let i = 0; i < n; i++) {
        const res = await request(`https://localhost:${port}`)
          .post("/api/v1/auth/login")
          .ca(ca)
          .send({ email: `nobody-${tag}-${i}@example.org`, password: "wrong password 123" });
        expect([401, 429]).toContain(res.status);
      }
    };
    try {
      const first = start(firstDir);
      const port1 = await first.port();
      const ca1 = fs.readFileSync(path.join(firstDir, "tls", "ca.crt"), "utf8");
      await signIns(port1, ca1, 20, "a");
      await waitUntil(async () => (await intake()) === 0 && (await head()) >= 20, 20_000, "the chain to hold the sign-ins");
      const metrics = (await request(`https://localhost:${port1}`).get("/metrics").ca(ca1)).text;
      expect(Number(/^wardkeep_audit_siem_lag_events (\S+)$/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(20);
      expect(metrics).toMatch(/^wardkeep_audit_siem_leader 1$/m);
      expect(collector.frames).toHaveLength(0);

      // The appliance dies without a chance to flush anything.
      first.child.kill("SIGKILL");
      await first.exited;

      // It comes back as two replicas (the second shares the first's key file, as HA replicas do).
      const secondDir = tempDir("wardkeep-siem-b-");
      dirs.push(secondDir);
      fs.cpSync(path.join(firstDir, "keys"), path.join(secondDir, "keys"), { recursive: true });
      const replicas = [start(firstDir), start(secondDir)];
      const ports = await Promise.all(replicas.map((r) => r.port()));
      const cas = [firstDir, secondDir].map((d) => fs.readFileSync(path.join(d, "tls", "ca.crt"), "utf8"));
      await Promise.all(ports.map((p, i) => signIns(p, cas[i]!, 8, `b${i}`)));

      await collector.listen(collectorPort);
      await Promise.all(ports.map((p, i) => signIns(p, cas[i]!, 4, `c${i}`)));
      await waitUntil(async () => (await intake()) === 0, 20_000, "the intake to drain");
      const last = await head();
      expect(last).toBeGreaterThanOrEqual(20 + 16 + 8);
      await waitUntil(() => collector!.frames.length >= last, 30_000, `all ${last} events at the collector`);
      await new Promise((r) => setTimeout(r, 500));
      expect(collector.seqs()).toEqual(range(1, last));
      // One replica sent them all, over one connection.
      const leaders = await Promise.all(ports.map(async (p, i) => (await request(`https://localhost:${p}`).get("/metrics").ca(cas[i]!)).text));
      expect(leaders.map((m) => /^wardkeep_audit_siem_leader (\d)$/m.exec(m)?.[1]).sort()).toEqual(["0", "1"]);
      expect(leaders[0]).toMatch(/^wardkeep_audit_siem_lag_events 0$/m);
      expect(collector.connections()).toBe(1);
    } finally {
      await su.end();
    }
  }, 240_000);
});
