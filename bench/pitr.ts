/**
 * Point-in-time recovery benchmark (`npm run bench -- pitr`, issue 19), on an embedded appliance
 * with continuous archiving to a directory target, as a hospital runs it:
 * 1. Under the note-write load of bench/records.ts (`POST /api/v1/patients/{id}/notes`, autocannon,
 *    BENCH_PITR_CONNECTIONS clients): the WAL generation rate (pg_current_wal_lsn deltas / s)
 *    against the archive throughput (bytes of WAL shipped from the spool to the target per second
 *    the shipper was busy; the bench drives shipSpool itself every second so it can time it).
 *    Headroom = throughput / generation rate, target ≥ 2x.
 * 2. Achieved RPO: every 250 ms the bench notes a committed write's LSN and time; a write's lag is
 *    the time from its commit until its WAL segment is on the target. p99 with the defaults
 *    (backup.rpoObjectiveSeconds 60, archive_timeout 60 s; target ≤ 60 s) and at archive_timeout
 *    1 s (target ≤ 5 s), each for BENCH_PITR_SECONDS of load (default 30). The passes are the
 *    daemon's own (createWalShipper: the objective's segment switch, then shipSpool), driven once
 *    a second by the bench so it can time each; the appliance starts without its background shipper.
 *    BENCH_PITR_BASELINE=1 adds a third phase, the defaults with shipSpool alone (no objective
 *    kept: the behaviour before it), for the ratio.
 * 3. Replay: a base backup before the load, then the WAL topped up to BENCH_PITR_WAL_MB (default 64;
 *    1024 for the issue's figure) with bulk rows, then `wardkeep recover --at latest` into a fresh
 *    data directory as a real process: replay rate (MB of WAL / replay phase) and the RTO by phase.
 *    BENCH_PITR_ONLY=replay skips 1 and 2 (the 1 GB run: `BENCH_PITR_ONLY=replay BENCH_PITR_WAL_MB=1024`).
 * docs/backups.md "PITR benchmark" has the figures.
 */
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import pg from "pg";
import { createTenant } from "../daemon/access/tenants.js";
import { startAppliance } from "../daemon/appliance.js";
import { createApiToken } from "../daemon/auth/api-tokens.js";
import { acceptInvite, createInvite } from "../daemon/auth/invites.js";
import { createFirstSuperAdmin } from "../daemon/auth/setup.js";
import { createWalShipper, runBaseBackup, shipSpool, spooledFiles, spoolDir, type ShipOutcome } from "../daemon/backups/pitr.js";
import { writePolicy } from "../daemon/backups/policy.js";
import { runSnapshot } from "../daemon/backups/service.js";
import { loadConfig } from "../daemon/config/load.js";
import { inScope } from "../daemon/db/sql.js";
import type { Actor } from "../daemon/kernel/actor.js";
import { SYSTEM_META } from "../daemon/kernel/request-meta.js";
import { issueRecoveryKit } from "../daemon/keys/index.js";
import { silentLogger } from "../daemon/log/logger.js";
import { createPatient } from "../daemon/records/patients/service.js";
import { runCli } from "../test/helpers/daemon-process.js";
import { drive } from "./records.js";
import type { BenchRow } from "./run.js";

const MB = 1024 * 1024;
const SECONDS = Number(process.env.BENCH_PITR_SECONDS ?? 30);
const WAL_MB = Number(process.env.BENCH_PITR_WAL_MB ?? 64);
const CONNECTIONS = Number(process.env.BENCH_PITR_CONNECTIONS ?? 4);
/** `replay`: only the base backup, the WAL top-up and the restore (the 1 GB replay run without the two load phases). */
const ONLY = process.env.BENCH_PITR_ONLY ?? "";
const BASELINE = process.env.BENCH_PITR_BASELINE === "1";
if (ONLY && ONLY !== "replay") throw new Error(`BENCH_PITR_ONLY must be "replay" or unset, not ${JSON.stringify(ONLY)}`);
const NOTE_BODY = JSON.stringify({
  body: "Patient reports intermittent chest discomfort on exertion for two weeks, relieved by rest. No syncope. ECG today: sinus rhythm, no acute changes. Plan: stress test, lipid panel, review in clinic in one week; return sooner if symptoms at rest.".repeat(
    2,
  ),
});
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]! : NaN;
};

function embeddedEnv(dataDir: string, port: number, extra: Record<string, string> = {}): Record<string, string> {
  return {
    WARDKEEP_DATA_DIR: dataDir,
    WARDKEEP_DATABASE_EMBEDDED_PORT: String(port),
    WARDKEEP_PORT: "0",
    WARDKEEP_SERVER_REDIRECT_PORT: "0",
    WARDKEEP_SERVER_HOST: "127.0.0.1",
    WARDKEEP_LOG_LEVEL: "error",
    WARDKEEP_BACKUP_SCHEDULER_ENABLED: "false",
    WARDKEEP_BACKUP_WAL_SHIP_INTERVAL_MS: "1000",
    ...extra,
  };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

type Phase = { walBytes: number; seconds: number; shippedBytes: number; lagsMs: number[]; writes: number };

export async function run(): Promise<BenchRow[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "wardkeep-bench-pitr-"));
  fs.chmodSync(dir, 0o711);
  const dataDir = path.join(dir, "a");
  const pgPort = await freePort();
  const start = async (archiveTimeout: number) => {
    const config = loadConfig({ env: embeddedEnv(dataDir, pgPort, { WARDKEEP_BACKUP_ARCHIVE_TIMEOUT_SECONDS: String(archiveTimeout) }) });
    // The bench runs the shipper's passes itself (below), so it can time them.
    const app = await startAppliance(config, { log: silentLogger(), announce: () => undefined, walShipper: false });
    const superUrl = `postgres://postgres:${encodeURIComponent(fs.readFileSync(path.join(dataDir, "secrets", "pg-superuser-password"), "utf8").trim())}@127.0.0.1:${pgPort}/wardkeep`;
    const su = new pg.Client({ connectionString: superUrl });
    await su.connect();
    return { app, ctx: app.ctx, su };
  };
  let { app, ctx, su } = await start(60);
  /** Every shipSpool pass of the bench, timed: the shipper's capacity is bytes / busy seconds. */
  const shipping = { bytes: 0, ms: 0 };
  /** One pass: the daemon's shipper pass (the objective kept), or shipSpool alone (`plain`). */
  let shipper = createWalShipper(ctx, { intervalMs: 1000 });
  const ship = async (plain = false) => {
    const before = new Map(spooledFiles(spoolDir(ctx)).map((f) => [f.name, f.bytes]));
    let out: Pick<ShipOutcome, "shipped">;
    if (plain) {
      const t0 = performance.now();
      out = await shipSpool(ctx);
      shipping.ms += performance.now() - t0;
    } else {
      const pass = await shipper.pass();
      out = pass.ship ?? { shipped: [] };
      shipping.ms += pass.shipMs; // the shipping only: the wait for PostgreSQL's archiver after a switch is not throughput
    }
    let bytes = 0;
    for (const s of out.shipped) bytes += before.get(s.name) ?? 0;
    shipping.bytes += bytes;
    return bytes;
  };
  const one = async <T>(text: string): Promise<T> => (await su.query(text)).rows[0] as T;
  const lsn = async () => (await one<{ l: string }>("SELECT pg_current_wal_lsn()::text AS l")).l;
  const walBytes = async (from: string, to: string) => Number((await one<{ d: string }>(`SELECT pg_wal_lsn_diff('${to}', '${from}')::text AS d`)).d);
  try {
    const nas = path.join(dir, "nas");
    const target = { kind: "fs" as const, name: "nas", path: nas };
    await inScope(ctx.db.app, { kind: "appliance" }, (t) => writePolicy(ctx, t, { targets: [target] }, null));
    const kit = path.join(dir, "kit.pem");
    await issueRecoveryKit(ctx, { out: kit });
    const targetFile = path.join(dir, "nas.json");
    fs.writeFileSync(targetFile, JSON.stringify(target));

    // The people and the patient, as bench/records.ts makes them.
    const rootUser = await createFirstSuperAdmin(ctx, { email: "bench.root@hospital.example", password: `bench-${randomBytes(9).toString("hex")}` });
    const root: Actor = { userId: rootUser.id, role: "super_admin", tenantId: null, via: "session", mfaVerifiedAt: new Date() };
    const tenant = await createTenant(ctx, root, { name: "Bench Hospital", slug: "bench-hospital", mfaRequired: false }, SYSTEM_META);
    const { token: inviteToken } = await createInvite(ctx, root, { email: "bench.admin@hospital.example", role: "admin", tenantId: tenant.id }, SYSTEM_META);
    const accepted = await acceptInvite(ctx, { token: inviteToken, password: `bench-${randomBytes(9).toString("hex")}` }, SYSTEM_META);
    const admin: Actor = { userId: accepted.userId, role: "admin", tenantId: tenant.id, via: "session", mfaVerifiedAt: new Date() };
    const { token, apiToken } = await createApiToken(ctx, admin, { name: "EHR bridge", role: "practitioner", scopes: ["*"], expiresInDays: 1 }, SYSTEM_META);
    const practitioner: Actor = { userId: apiToken.serviceAccountId, role: "practitioner", tenantId: tenant.id, via: "api-token", scopes: ["*"] };
    const patient = await createPatient(ctx, practitioner, { name: "Ada Lovelace", birthDate: "1970-01-02", mrn: "MRN-000123" }, SYSTEM_META);
    const write = {
      url: `https://127.0.0.1:${app.server.port}/api/v1/patients/${patient.id}/notes`,
      method: "POST" as const,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: NOTE_BODY,
    };

    // Key-store backup and base backup first: the replay later starts from here.
    const snap = await runSnapshot(ctx, { trigger: "manual" });
    if (snap.status !== "complete") throw new Error(`snapshot: ${snap.error ?? snap.status}`);
    const base = await runBaseBackup(ctx, "manual");
    if (base.status !== "complete") throw new Error(`base backup: ${JSON.stringify(base.outcomes)}`);
    const baseLsn = await lsn();
    await ship();

    const onTarget = () => new Set(fs.existsSync(path.join(nas, "wal")) ? fs.readdirSync(path.join(nas, "wal")).map((f) => f.replace(/\.wkw$/, "")) : []);
    async function loadPhase(archiveTimeout: number, plain = false): Promise<Phase> {
      // archive_timeout is a server start setting of the embedded PostgreSQL: restart with it.
      await su.end();
      await app.stop();
      ({ app, ctx, su } = await start(archiveTimeout));
      shipper = createWalShipper(ctx, { intervalMs: 1000 });
      write.url = `https://127.0.0.1:${app.server.port}/api/v1/patients/${patient.id}/notes`;
      const phase: Phase = { walBytes: 0, seconds: 0, shippedBytes: 0, lagsMs: [], writes: 0 };
      const pending: { seg: string; at: number }[] = [];
      let loading = true;
      const resolve = () => {
        const have = onTarget();
        for (let i = pending.length - 1; i >= 0; i--) {
          if (have.has(pending[i]!.seg)) {
            phase.lagsMs.push(Date.now() - pending[i]!.at);
            pending.splice(i, 1);
          }
        }
      };
      // The shipper, once a second as the daemon's default, timed.
      const shipLoop = (async () => {
        while (loading || pending.length) {
          phase.shippedBytes += await ship(plain);
          resolve();
          await sleep(1000);
        }
      })();
      // The sampler: a committed write's segment and time, every 250 ms.
      const sampler = (async () => {
        while (loading) {
          const r = await one<{ seg: string }>("SELECT pg_walfile_name(pg_current_wal_lsn()) AS seg");
          pending.push({ seg: r.seg, at: Date.now() });
          await sleep(250);
        }
      })();
      const from = await lsn();
      const t0 = performance.now();
      const m = await drive(write, { connections: CONNECTIONS, seconds: SECONDS });
      phase.seconds = (performance.now() - t0) / 1000;
      phase.walBytes = await walBytes(from, await lsn());
      phase.writes = Math.round(m.rps * SECONDS);
      if (m.non2xx || m.errors) process.stderr.write(`pitr: ${m.non2xx} non-2xx, ${m.errors} errors during the load\n`);
      loading = false;
      await sampler;
      // Writes still waiting for their segment: wait for archive_timeout (or the objective) to close it, then give up.
      const deadline = Date.now() + (Math.max(archiveTimeout, ctx.config.backup.rpoObjectiveSeconds) + 15) * 1000;
      while (pending.length && Date.now() < deadline) await sleep(250);
      const diag = await one<{ t: string; last: string | null; at: string | null }>(
        "SELECT current_setting('archive_timeout') AS t, last_archived_wal AS last, last_archived_time::text AS at FROM pg_stat_archiver",
      );
      process.stderr.write(
        `pitr: archive_timeout is ${diag.t}; last archived ${diag.last} at ${diag.at}; newest on target ${[...onTarget()].sort().at(-1)}; ${pending.length} write(s) still waiting (first in ${pending[0]?.seg})\n`,
      );
      for (const p of pending.splice(0)) phase.lagsMs.push(Date.now() - p.at); // counted as they stand
      await shipLoop;
      process.stderr.write(
        `pitr: archive_timeout ${archiveTimeout}s${plain ? " (no objective)" : ""}: ${phase.writes} writes, ${(phase.walBytes / MB).toFixed(1)} MB WAL, ${phase.lagsMs.length} lag samples\n`,
      );
      return phase;
    }

    const slow = ONLY ? undefined : await loadPhase(60);
    const fast = ONLY ? undefined : await loadPhase(1);
    const plain = ONLY || !BASELINE ? undefined : await loadPhase(60, true);

    // Top the WAL since the base backup up to WAL_MB with bulk rows, then archive and ship it all.
    await su.query("CREATE TABLE IF NOT EXISTS bench_pitr_filler (id bigserial PRIMARY KEY, pad text)");
    while ((await walBytes(baseLsn, await lsn())) < WAL_MB * MB) {
      await su.query("INSERT INTO bench_pitr_filler (pad) SELECT repeat(md5(g::text), 30) FROM generate_series(1, 20000) g");
      await ship();
    }
    const endLsn = await lsn();
    const replayBytes = await walBytes(baseLsn, endLsn);
    const lastSeg = (await one<{ w: string }>("SELECT pg_walfile_name(pg_switch_wal()) AS w")).w;
    for (let i = 0; i < 400 && !onTarget().has(lastSeg); i++) {
      await ship();
      await sleep(250);
    }
    await su.end();
    await app.stop();

    const bDir = path.join(dir, "b");
    fs.mkdirSync(bDir, { mode: 0o711 });
    const r = await runCli(
      ["recover", "--json", "--target-file", targetFile, "--recovery-key-file", kit, "--unseal", "keyfile", "--at", "latest"],
      embeddedEnv(bDir, await freePort()),
    );
    if (r.code !== 0) throw new Error(`recover --at latest exited ${r.code}: ${r.stderr.slice(0, 500)}`);
    const rec = JSON.parse(r.stdout).recovery as {
      durationMs: number;
      replay: { walFiles: number; walBytes: number };
      phases: { locateMs: number; keyStoreMs: number; baseMs: number; replayMs: number; keysMs: number; finishMs: number };
    };
    const replayMBs = replayBytes / MB / (rec.phases.replayMs / 1000);

    const capacity = shipping.bytes / MB / (shipping.ms / 1000);
    const rows: BenchRow[] = [
      {
        name: `archive throughput, spool → encrypted objects on target (${(shipping.bytes / MB).toFixed(0)} MB of segment files over the run, per busy second)`,
        value: capacity,
        unit: "MB/s",
      },
    ];
    for (const [label, p, rpoTarget] of [
      ["defaults: rpoObjectiveSeconds 60, archive_timeout 60s", slow, 60],
      ["archive_timeout 1s", fast, 5],
      ["archive_timeout 60s, shipSpool alone, no objective kept", plain, 60],
    ] as const) {
      if (!p) continue;
      const gen = p.walBytes / MB / p.seconds;
      // A segment closed early by archive_timeout is still a whole 16 MB file to archive and ship.
      const arriving = p.shippedBytes / MB / p.seconds;
      const load = Math.max(gen, arriving);
      rows.push({ name: `WAL generated under note writes (${label}, ${CONNECTIONS} clients, ${p.writes} writes)`, value: gen, unit: "MB/s" });
      rows.push({ name: `segment files to ship (${label})`, value: arriving, unit: "MB/s" });
      rows.push({ name: `archiving headroom, throughput / max(generated, to ship) (${label})`, value: capacity / load, unit: "x", target: "≥ 2", met: capacity / load >= 2 });
      const p99 = pct(p.lagsMs, 99) / 1000;
      rows.push({
        name: `RPO p99, commit → segment on target (${label}, p50 ${(pct(p.lagsMs, 50) / 1000).toFixed(1)} s)`,
        value: p99,
        unit: "s",
        target: `≤ ${rpoTarget}`,
        met: p99 <= rpoTarget,
      });
    }
    rows.push({
      name: `replay rate, recover --at latest (${(replayBytes / MB).toFixed(0)} MB WAL, ${rec.replay.walFiles} files, ${(rec.replay.walBytes / MB).toFixed(0)} MB of WAL files fetched)`,
      value: replayMBs,
      unit: "MB/s",
    });
    for (const [k, v] of Object.entries(rec.phases)) rows.push({ name: `RTO phase ${k.replace(/Ms$/, "")}`, value: v / 1000, unit: "s" });
    rows.push({ name: "RTO total (recover --at latest)", value: rec.durationMs / 1000, unit: "s" });
    return rows;
  } finally {
    await su.end().catch(() => {});
    await app.stop().catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
