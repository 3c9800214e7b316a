import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import YAML from "yaml";
import { startAppliance } from "../../../daemon/appliance.js";
import { closeAndShipSegment, createWalShipper, runBaseBackup, wakeAfterServerRestart } from "../../../daemon/backups/pitr.js";
import { backupJobs } from "../../../daemon/backups/background.js";
import { AUDIT_CHAIN_CHECK, CHECKPOINT_CHECK, DECRYPT_CHECK, runPitrDrill } from "../../../daemon/backups/pitr-drill.js";
import { writePolicy } from "../../../daemon/backups/policy.js";
import { runSnapshot } from "../../../daemon/backups/service.js";
import { systemClock } from "../../../daemon/clock.js";
import { loadConfig } from "../../../daemon/config/load.js";
import { adoptAsEmbedded } from "../../../daemon/db/adopt.js";
import { embeddedBinaries, replayBinaries, runAs } from "../../../daemon/db/embedded.js";
import { inScope } from "../../../daemon/db/sql.js";
import { archiveCommand } from "../../../daemon/db/wal-archive.js";
import { issueRecoveryKit } from "../../../daemon/keys/recovery.js";
import { createLogger, silentLogger } from "../../../daemon/log/logger.js";
import { signIn, signInWithPassword, type SignedIn } from "../../helpers/actors.js";
import type { TestAppliance } from "../../helpers/appliance.js";
import { runCli } from "../../helpers/daemon-process.js";
import { freePort } from "../../helpers/postgres.js";
import { openClinic, type Clinic } from "../records/helpers.js";
import { tempDir } from "./helpers.js";

/**
 * The compose file's PostgreSQL, end to end without Docker. Its archive_command is the daemon's own
 * (one source, daemon/db/wal-archive.ts), and the db service is run here as the compose file sets
 * it up: PostgreSQL 18 from the embedded package's binaries (the image's major), initialised with
 * the file's POSTGRES_USER and POSTGRES_INITDB_ARGS (group access), started with the file's
 * settings, only the spool path pointed at a temporary directory. Then:
 * - a switched segment lands in the spool byte for byte, group-readable, counted archived;
 * - with a daemon on it as its external database (database.url, database.serverDataDir), a base
 *   backup of it, and `wardkeep recover --at` onto a brand-new embedded appliance serves exactly
 *   the patients written before the point, through its API;
 * - a PITR drill of it passes its checks, as for the embedded server;
 * - the daemon keeps its recovery point objective (8 s here) although the file's archive_timeout
 *   is 60 s: a write is on the target within the objective; an idle appliance closes no segment;
 * - the daemon notices a restart of that server alone (restarted with archive_timeout at 1 s, so
 *   the bound is seconds): a write is on the target within archive_timeout + shipping.
 */
const root = fileURLToPath(new URL("../../..", import.meta.url));
const SPOOL = "/var/lib/wardkeep-wal";
const ARCHIVE_TIMEOUT_S = 1;
const SHIP_INTERVAL_MS = 1000;
/** The daemon's backup.rpoObjectiveSeconds here: far below the file's archive_timeout (60 s). */
const RPO_OBJECTIVE_S = 8;
/** Copying a 16 MB segment into the spool with fsync, then sealing and writing it, on a loaded 2-core machine. */
const SLACK_MS = 8000;

type Service = { command?: string[]; entrypoint?: string[]; volumes?: string[]; environment?: Record<string, string>; group_add?: string[]; image?: string };
const compose = YAML.parse(fs.readFileSync(path.join(root, "docker-compose.yml"), "utf8")) as { services: Record<string, Service>; volumes: Record<string, unknown> };
const db = compose.services.db!;
const daemon = compose.services.wardkeep!;
/** `-c name=value` pairs of the db service's command; compose turns `$$` into `$`. */
const settings = Object.fromEntries(
  (db.command ?? [])
    .map((a, i, all) => (all[i - 1] === "-c" ? a : null))
    .filter((a): a is string => a !== null)
    .map((a) => [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1).replaceAll("$$", "$")]),
);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("the compose file's db service", () => {
  it("archives with the daemon's command into a volume both containers mount, and lets the daemon read its data directory", () => {
    expect(settings).toMatchObject({ wal_level: "replica", archive_mode: "on", archive_timeout: "60" });
    expect(settings.archive_command).toBe(archiveCommand(SPOOL, 4096, { groupReadable: true }));
    expect(db.volumes).toContain(`wal-spool:${SPOOL}`);
    expect(daemon.volumes).toContain(`wal-spool:${SPOOL}`);
    expect(compose.volumes).toHaveProperty("wal-spool");
    expect(daemon.environment?.WARDKEEP_BACKUP_WAL_SPOOL_DIR).toBe(SPOOL);
    // The spool is postgres's (gid 999 in the postgres image), setgid: the daemon reads and removes through the group.
    expect(daemon.group_add).toEqual(["999"]);
    // The embedded server's major, so `recover --at` can replay what it archives; its data
    // directory group-readable and mounted read-only where database.serverDataDir points.
    expect(db.image).toBe("postgres:18");
    expect(db.environment?.POSTGRES_INITDB_ARGS).toBe("--allow-group-access");
    expect(db.volumes).toContain("db-data:/var/lib/postgresql");
    expect(daemon.volumes).toContain("db-data:/var/lib/postgresql:ro");
    expect(daemon.environment?.WARDKEEP_DATABASE_SERVER_DATA_DIR).toBe("/var/lib/postgresql/18/docker");
  });

  it("keeps the data directory group-readable on every start: its entrypoint text, run with stand-ins for the image's commands", () => {
    const dir = tempDir("wardkeep-compose-entry-");
    try {
      const bin = path.join(dir, "bin");
      const pgdata = path.join(dir, "18", "docker");
      fs.mkdirSync(bin);
      fs.mkdirSync(path.join(pgdata, "base"), { recursive: true, mode: 0o700 });
      fs.chmodSync(pgdata, 0o700);
      fs.writeFileSync(path.join(pgdata, "base", "1"), "x", { mode: 0o600 });
      // Stand-ins: `install` makes the directory (no postgres user needed), `gosu` and the image's entrypoint say how they were called.
      const said = path.join(dir, "said");
      fs.writeFileSync(path.join(bin, "install"), `#!/bin/sh\nfor a; do d="$a"; done; mkdir -p "$d"\n`, { mode: 0o755 });
      fs.writeFileSync(path.join(bin, "gosu"), `#!/bin/sh\necho "gosu $*" > '${said}'\n`, { mode: 0o755 });
      fs.writeFileSync(path.join(bin, "docker-entrypoint.sh"), `#!/bin/sh\necho "entrypoint $*" > '${said}'\n`, { mode: 0o755 });
      const [shell, flag, script, argv0] = db.entrypoint!;
      expect([shell, flag, argv0]).toEqual(["sh", "-c", "--"]);
      const run = () =>
        execFileSync(shell!, [flag!, script!.replaceAll("$$", "$").replaceAll(SPOOL, path.join(dir, "spool")), argv0!, "postgres", "-c", "wal_level=replica"], {
          env: { PATH: `${bin}:${process.env.PATH}`, PGDATA: pgdata },
        });
      // First start (no cluster yet): the image's entrypoint runs initdb with POSTGRES_INITDB_ARGS.
      run();
      expect(fs.readFileSync(said, "utf8")).toBe("entrypoint postgres -c wal_level=replica\n");
      // Later starts: group read access kept (also an existing 0700 install's one-time fix), PostgreSQL started as postgres.
      fs.writeFileSync(path.join(pgdata, "PG_VERSION"), "18\n", { mode: 0o600 });
      run();
      expect(fs.readFileSync(said, "utf8")).toBe("gosu postgres postgres -c wal_level=replica\n");
      expect(fs.statSync(pgdata).mode & 0o777).toBe(0o750);
      expect(fs.statSync(path.join(pgdata, "base")).mode & 0o777).toBe(0o750);
      expect(fs.statSync(path.join(pgdata, "base", "1")).mode & 0o777).toBe(0o640);
      expect(fs.existsSync(path.join(dir, "spool"))).toBe(true);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("PostgreSQL 18 set up as the compose file's db service", () => {
  let dir: string;
  let data: string;
  let spool: string;
  let server: ChildProcess | undefined;
  let serverArgs: string[];
  let serverLog = "";
  let url: string;
  let port: number;
  let postgresBin: string;
  const ids = runAs();
  const user = db.environment?.POSTGRES_USER ?? "postgres";

  async function startServer() {
    server = spawn(postgresBin, serverArgs, { ...ids, stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, LC_ALL: "C" } });
    server.stderr?.on("data", (d: Buffer) => (serverLog = (serverLog + d.toString()).slice(-4000)));
    for (let i = 0; ; i++) {
      try {
        const c = new pg.Client({ connectionString: `postgres://${user}@127.0.0.1:${port}/postgres` });
        await c.connect();
        await c.end();
        return;
      } catch (err) {
        if (i > 200 || server.exitCode !== null) throw new Error(`PostgreSQL 18 did not start: ${(err as Error).message}\n${serverLog}`);
        await sleep(100);
      }
    }
  }

  async function stopServer() {
    if (!server || server.exitCode !== null) return;
    const exited = new Promise((r) => server!.once("exit", r));
    server.kill("SIGINT"); // what `docker compose restart db` sends (the image's STOPSIGNAL)
    await exited;
  }

  async function one<T>(text: string, database = "wardkeep"): Promise<T> {
    const c = new pg.Client({ connectionString: `postgres://${user}@127.0.0.1:${port}/${database}` });
    await c.connect();
    try {
      return (await c.query(text)).rows[0] as T;
    } finally {
      await c.end();
    }
  }

  beforeAll(async () => {
    dir = tempDir("wardkeep-compose-pg-");
    fs.chmodSync(dir, 0o711);
    data = path.join(dir, "pg");
    spool = path.join(dir, "spool");
    fs.mkdirSync(spool, { mode: 0o2770 });
    const sockets = path.join(dir, "run");
    fs.mkdirSync(data, { mode: 0o700 });
    fs.mkdirSync(sockets, { mode: 0o700 });
    if (ids) for (const d of [spool, data, sockets]) fs.chownSync(d, ids.uid, ids.gid);
    const bins = await embeddedBinaries();
    postgresBin = bins.postgres;
    // As the image's entrypoint does: initdb --username=POSTGRES_USER plus POSTGRES_INITDB_ARGS.
    execFileSync(
      bins.initdb,
      ["-D", data, `--username=${user}`, ...(db.environment?.POSTGRES_INITDB_ARGS ?? "").split(" ").filter(Boolean), "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"],
      {
        ...ids,
        stdio: "pipe",
        env: { ...process.env, LC_ALL: "C" },
      },
    );
    port = await freePort();
    serverArgs = ["-D", data, "-p", String(port), "-c", "listen_addresses=127.0.0.1", "-c", `unix_socket_directories=${sockets}`, "-c", "fsync=off"];
    // The compose file's settings, the spool path alone pointed at this test's directory.
    for (const [k, v] of Object.entries(settings)) serverArgs.push("-c", `${k}=${k === "archive_command" ? v.replaceAll(`'${SPOOL}'`, `'${spool}'`) : v}`);
    await startServer();
    // The image's POSTGRES_DB.
    await one(`CREATE DATABASE ${db.environment?.POSTGRES_DB ?? user}`, "postgres");
    url = `postgres://${user}@127.0.0.1:${port}/wardkeep`;
  }, 60_000);

  afterAll(async () => {
    await stopServer();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it("puts a switched segment into the spool byte for byte, group-readable, and PostgreSQL counts it archived", async () => {
    // initdb with the file's --allow-group-access: the data directory 0750, its files 0640.
    expect(fs.statSync(data).mode & 0o777).toBe(0o750);
    expect(fs.statSync(path.join(data, "PG_VERSION")).mode & 0o777).toBe(0o640);
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    let wal: string;
    try {
      await c.query("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
      wal = (await c.query<{ wal: string }>("SELECT pg_walfile_name(pg_switch_wal()) AS wal")).rows[0]!.wal;
      let stat: { archived_count: string; failed_count: string; last_archived_wal: string | null } | undefined;
      for (let i = 0; i < 100; i++) {
        stat = (await c.query("SELECT archived_count::text, failed_count::text, last_archived_wal FROM pg_stat_archiver")).rows[0];
        if (stat?.last_archived_wal && stat.last_archived_wal >= wal) break;
        await sleep(100);
      }
      expect(stat?.last_archived_wal).toBe(wal);
      expect(stat?.failed_count).toBe("0");
      await c.query("DROP TABLE t");
    } finally {
      await c.end();
    }
    const file = path.join(spool, wal);
    expect(fs.readdirSync(spool)).toContain(wal);
    expect(fs.statSync(file).mode & 0o777).toBe(0o640);
    expect(fs.statSync(file).size).toBe(16 * 1024 * 1024);
    // Same bytes as the segment PostgreSQL wrote (still in pg_wal until the next checkpoint).
    expect(fs.readFileSync(file).equals(fs.readFileSync(path.join(data, "pg_wal", wal)))).toBe(true);
    // No temporary file is left behind.
    expect(fs.readdirSync(spool).filter((n) => n.startsWith("."))).toEqual([]);
  });

  it("accepts a retry of a segment already in the spool only with the same bytes", () => {
    const wal = fs.readdirSync(spool).find((n) => /^[0-9A-F]{24}$/.test(n))!;
    const command = (source: string) => settings.archive_command!.replaceAll(`'${SPOOL}'`, `'${spool}'`).replaceAll("%f", wal).replaceAll("%p", source);
    const run = (source: string) => {
      try {
        execFileSync("sh", ["-c", command(source)], { ...ids, stdio: "pipe" });
        return 0;
      } catch (err) {
        return (err as { status: number }).status;
      }
    };
    const same = path.join(dir, "same");
    const other = path.join(dir, "other");
    fs.copyFileSync(path.join(spool, wal), same);
    fs.writeFileSync(other, Buffer.alloc(16 * 1024 * 1024, 1));
    if (ids) for (const f of [same, other]) fs.chownSync(f, ids.uid, ids.gid);
    expect(run(same)).toBe(0);
    expect(run(other)).toBe(1);
    expect(fs.readFileSync(path.join(spool, wal)).equals(fs.readFileSync(same))).toBe(true);
  });

  describe("with a daemon on it as its external database", () => {
    let app: TestAppliance & { stop(): Promise<void> };
    let nas: string;
    let kit: string;
    let targetFile: string;
    let clinic: Clinic;
    let operator: SignedIn;
    let desk: { email: string; password: string; totpSecret: string | null };
    const logLines: string[] = [];
    let point: Date;
    let baseId: string;
    const patients: Record<"early" | "before" | "after", string> = { early: "", before: "", after: "" };

    beforeAll(async () => {
      const dataDir = path.join(dir, "a");
      const config = loadConfig({
        env: {
          WARDKEEP_DATA_DIR: dataDir,
          WARDKEEP_DATABASE_URL: url,
          WARDKEEP_DATABASE_SERVER_DATA_DIR: data,
          WARDKEEP_PORT: "0",
          WARDKEEP_SERVER_REDIRECT_PORT: "0",
          WARDKEEP_SERVER_HOST: "127.0.0.1",
          WARDKEEP_BACKUP_SCHEDULER_ENABLED: "false",
          WARDKEEP_BACKUP_WAL_SPOOL_DIR: spool,
          WARDKEEP_BACKUP_WAL_SHIP_INTERVAL_MS: String(SHIP_INTERVAL_MS),
          WARDKEEP_BACKUP_RPO_OBJECTIVE_SECONDS: String(RPO_OBJECTIVE_S),
          // Scheduled work writes (job runs every minute, the nonce counters of key maintenance),
          // so each run is a segment to close: both quiet here, so that the idle window below is idle.
          WARDKEEP_JOBS_ENABLED: "false",
          WARDKEEP_KEYS_MAINTENANCE_INTERVAL_SECONDS: "3600",
        },
      });
      const stream = new Writable({
        write(chunk: Buffer, _e, cb) {
          logLines.push(...chunk.toString().split("\n").filter(Boolean));
          cb();
        },
      });
      const started = await startAppliance(config, { log: createLogger({ level: "info", stream }), announce: () => {} });
      const caPem = fs.readFileSync(path.join(dataDir, "tls", "ca.crt"), "utf8");
      app = Object.assign(started, { config, dataDir, caPem, logLines, baseUrl: `https://localhost:${started.server.port}` }) as unknown as TestAppliance & {
        stop(): Promise<void>;
      };
      nas = path.join(dir, "nas");
      const target = { kind: "fs" as const, name: "nas", path: nas };
      await inScope(app.ctx.db.app, { kind: "appliance" }, (t) => writePolicy(app.ctx, t, { targets: [target] }, null));
      kit = path.join(dir, "kit.pem");
      await issueRecoveryKit(app.ctx, { out: kit });
      targetFile = path.join(dir, "nas.json");
      fs.writeFileSync(targetFile, JSON.stringify(target));
      clinic = await openClinic(app, "Compose Clinic");
      desk = { email: clinic.frontDesk.user.email, password: clinic.frontDesk.password, totpSecret: clinic.frontDesk.totpSecret };
      operator = await signIn(app, { role: "super_admin" });
    }, 120_000);

    afterAll(async () => {
      await app?.stop().catch(() => {});
    });

    it("takes a base backup of it, and `recover --at` onto a brand-new embedded appliance serves exactly the writes before the point, through its API", async () => {
      const snap = await runSnapshot(app.ctx, { trigger: "manual" }); // the key-store backup recovery opens
      expect(snap.status, snap.error ?? "").toBe("complete");
      patients.early = (await clinic.frontDesk.agent.post("/api/v1/patients").send({ name: "Early Patient" }).expect(201)).body.id;
      const base = await runBaseBackup(app.ctx, "manual");
      expect(base.status, JSON.stringify(base.outcomes)).toBe("complete");
      baseId = base.id;
      // Whose cluster it is: the image's superuser owns the daemon's tables.
      expect(base.body.server).toMatchObject({ superuser: user, database: "wardkeep", owner: user });
      expect(base.body.server.versionNum).toBeGreaterThanOrEqual(180000);
      patients.before = (await clinic.frontDesk.agent.post("/api/v1/patients").send({ name: "Before Point" }).expect(201)).body.id;
      await sleep(1200);
      point = new Date();
      await sleep(1200);
      patients.after = (await clinic.frontDesk.agent.post("/api/v1/patients").send({ name: "After Point" }).expect(201)).body.id;
      await closeAndShipSegment(app.ctx);

      const dataDir = tempDir("wardkeep-compose-b-");
      fs.chmodSync(dataDir, 0o711);
      const env = {
        WARDKEEP_DATA_DIR: dataDir,
        WARDKEEP_DATABASE_EMBEDDED_PORT: String(await freePort()),
        WARDKEEP_PORT: "0",
        WARDKEEP_SERVER_REDIRECT_PORT: "0",
        WARDKEEP_SERVER_HOST: "127.0.0.1",
        WARDKEEP_BACKUP_SCHEDULER_ENABLED: "false",
      };
      let b: Awaited<ReturnType<typeof startAppliance>> | undefined;
      try {
        const r = await runCli(["recover", "--json", "--target-file", targetFile, "--recovery-key", kit, "--unseal", "keyfile", "--at", point.toISOString()], env);
        expect(r.code, r.stdout + r.stderr).toBe(0);
        const out = JSON.parse(r.stdout).recovery;
        expect(out.baseBackup).toBe(base.id);
        expect(out.auditChain.intact).toBe(true);
        expect(Date.parse(out.recoveredTo)).toBeLessThan(point.getTime());
        // Made an embedded cluster: the image's superuser is postgres now, its tables wardkeep_owner's.
        expect(out.adopted).toMatchObject({ renamedSuperuser: user, ownerFrom: user });
        expect(out.adopted.objects).toBeGreaterThan(50);

        b = await startAppliance(loadConfig({ env }), { log: silentLogger(), announce: () => {} });
        const caPem = fs.readFileSync(path.join(dataDir, "tls", "ca.crt"), "utf8");
        const recovered = { baseUrl: `https://localhost:${b.server.port}`, caPem, ctx: { clock: systemClock } } as unknown as TestAppliance;
        const frontDesk = await signInWithPassword(recovered, desk);
        for (const [id, name] of [
          [patients.early, "Early Patient"],
          [patients.before, "Before Point"],
        ] as const) {
          const res = await frontDesk.agent.get(`/api/v1/patients/${id}`);
          expect(res.status, JSON.stringify(res.body)).toBe(200);
          expect(res.body.name).toBe(name);
        }
        expect((await frontDesk.agent.get(`/api/v1/patients/${patients.after}`)).status).toBe(404);
        const list = await frontDesk.agent.get("/api/v1/patients");
        expect(list.body.items.map((p: { name: string }) => p.name).sort()).toEqual(["Before Point", "Early Patient"]);

        // The image's trust rules did not come along: no connection without a password.
        const port = env.WARDKEEP_DATABASE_EMBEDDED_PORT;
        const anon = new pg.Client({ connectionString: `postgres://postgres@127.0.0.1:${port}/wardkeep` });
        await expect(anon.connect()).rejects.toThrow(/password/);
        await anon.end().catch(() => {});
        const su = new pg.Client({
          connectionString: `postgres://postgres:${encodeURIComponent(fs.readFileSync(path.join(dataDir, "secrets", "pg-superuser-password"), "utf8").trim())}@127.0.0.1:${port}/wardkeep`,
        });
        await su.connect();
        try {
          const owners = await su.query<{ owner: string; n: number }>(
            "SELECT pg_get_userbyid(relowner) AS owner, count(*)::int AS n FROM pg_class WHERE relnamespace IN ('public'::regnamespace, 'keystore'::regnamespace) AND relkind IN ('r', 'p', 'S') GROUP BY 1",
          );
          const odd = await su.query(
            "SELECT relname, relkind, pg_get_userbyid(relowner) AS owner FROM pg_class WHERE relnamespace IN ('public'::regnamespace, 'keystore'::regnamespace) AND relkind IN ('r', 'p', 'S') AND pg_get_userbyid(relowner) <> 'wardkeep_owner'",
          );
          expect(
            owners.rows.map((o) => o.owner),
            JSON.stringify(odd.rows),
          ).toEqual(["wardkeep_owner"]);
          const roles = await su.query<{ rolname: string }>("SELECT rolname FROM pg_roles WHERE rolname IN ($1, 'postgres') ORDER BY 1", [user]);
          expect(roles.rows.map((x) => x.rolname)).toEqual(["postgres"]);
        } finally {
          await su.end();
        }
      } finally {
        await b?.stop();
        fs.rmSync(dataDir, { recursive: true, force: true });
      }
    }, 240_000);

    it("drills a point-in-time restore of it through the same path: the job is scheduled, the drill passes its three checks and the API lists it", async () => {
      const scheduled = { ...app.ctx, config: { ...app.ctx.config, backup: { ...app.ctx.config.backup, schedulerEnabled: true } } };
      const job = (name: string) => backupJobs.find((j) => j.name === name)!.schedule(scheduled);
      expect(job("pitr-base-backup")).toBe(app.ctx.config.backup.baseBackupCron);
      expect(job("pitr-drill")).toBe(app.ctx.config.backup.pitrDrillCron);
      const noDir = { ...scheduled, config: { ...scheduled.config, database: { ...scheduled.config.database, serverDataDir: undefined } } };
      expect(backupJobs.find((j) => j.name === "pitr-base-backup")!.schedule(noDir)).toBeNull();

      // With the server binaries where the daemon image keeps them: a copy of the embedded package's
      // native tree (deploy/Dockerfile copies it to /opt/wardkeep/postgresql), named by backup.replayBinDir.
      const copy = path.join(dir, "opt-postgresql");
      execFileSync("cp", ["-a", path.resolve(path.dirname(postgresBin), ".."), copy]);
      const withBinDir = (replayBinDir: string) => ({ ...app.ctx, config: { ...app.ctx.config, backup: { ...app.ctx.config.backup, replayBinDir } } });
      const scheduledWithDir = { ...scheduled, config: { ...scheduled.config, backup: { ...scheduled.config.backup, replayBinDir: path.join(copy, "bin") } } };
      expect(job("pitr-drill")).toBe(app.ctx.config.backup.pitrDrillCron);
      expect(backupJobs.find((j) => j.name === "pitr-drill")!.schedule(scheduledWithDir)).toBe(app.ctx.config.backup.pitrDrillCron);
      await expect(replayBinaries(path.join(copy, "bin"))).resolves.toMatchObject({ postgres: path.join(copy, "bin", "postgres") });
      // A directory without them is refused in one line, before anything is fetched or recorded.
      const drillsBefore = (await operator.agent.get("/api/v1/backups/pitr/drills").expect(200)).body.length;
      await expect(runPitrDrill(withBinDir(path.join(dir, "no-bin")), { trigger: "manual", target: "nas", at: point })).rejects.toThrow(
        `backup.replayBinDir ${path.join(dir, "no-bin")} has no PostgreSQL server binary to replay with (ENOENT): point it at the bin directory of PostgreSQL 18 server binaries (docs/backups.md, PITR drills)`,
      );
      expect((await operator.agent.get("/api/v1/backups/pitr/drills").expect(200)).body.length).toBe(drillsBefore);

      const drill = await runPitrDrill(withBinDir(path.join(copy, "bin")), { trigger: "manual", target: "nas", at: point });
      expect(drill.error).toBeNull();
      expect(drill.status).toBe("passed");
      expect(drill.baseBackup).toBe(baseId);
      expect(drill.checks.map((c) => [c.name, c.ok])).toEqual([
        [AUDIT_CHAIN_CHECK, true],
        [CHECKPOINT_CHECK, true],
        [DECRYPT_CHECK, true],
      ]);
      expect(Date.parse(drill.achievedTime!)).toBeLessThan(point.getTime());
      const listed = await operator.agent.get("/api/v1/backups/pitr/drills").expect(200);
      expect(listed.body[0]).toEqual(drill);
    }, 120_000);

    it("keeps the recovery point objective below archive_timeout: a write is on the target within the objective, and an idle appliance closes no segment", async () => {
      // The server closes a quiet segment only after the file's 60 s; the daemon's objective is 8 s.
      await expect(one<{ t: string }>("SHOW archive_timeout")).resolves.toEqual({ archive_timeout: "1min" });
      const onTarget = () => (fs.existsSync(path.join(nas, "wal")) ? fs.readdirSync(path.join(nas, "wal")).sort() : []);
      for (const name of ["Objective Patient"]) {
        const t0 = Date.now(); // before the commit, so the measured time is the most it can be
        await clinic.frontDesk.agent.post("/api/v1/patients").send({ name }).expect(201);
        const { seg } = await one<{ seg: string }>("SELECT pg_walfile_name(pg_current_wal_insert_lsn()) AS seg");
        let status: { target: string; newestWal: string | null; rpoSeconds: number | null } | undefined;
        for (const deadline = t0 + 60_000; Date.now() < deadline; await sleep(100)) {
          if (!fs.existsSync(path.join(nas, "wal", `${seg}.wkw`))) continue;
          status = (await operator.agent.get("/api/v1/backups/pitr").expect(200)).body.targets[0];
          break;
        }
        const ms = Date.now() - t0;
        expect(status?.newestWal && status.newestWal >= seg, `segment ${seg} on the target after ${ms} ms`).toBe(true);
        expect(ms).toBeLessThanOrEqual(RPO_OBJECTIVE_S * 1000);
      }
      // What the console says the objective is.
      const pitr = (await operator.agent.get("/api/v1/backups/pitr").expect(200)).body;
      expect(pitr).toMatchObject({ rpoObjectiveSeconds: RPO_OBJECTIVE_S, archiveTimeoutSeconds: 60 });

      // Idle: no request (a signed-in request writes its session's last-seen time), autovacuum paused
      // (an ANALYZE writes statistics). The writes above are shipped first, then for longer than the
      // objective nothing is committed: no segment may be closed, archived or shipped.
      await one("ALTER SYSTEM SET autovacuum = off");
      await one("SELECT pg_reload_conf()");
      try {
        // The segment of the last write (the status read above touched its session) reaches the target first.
        const { seg: last } = await one<{ seg: string }>("SELECT pg_walfile_name(pg_current_wal_insert_lsn()) AS seg");
        // Shipped means on the target and recorded in pitr_wal (the shipper's own record, committed after the upload).
        const recorded = async () => (await one<{ n: number }>(`SELECT count(*)::int AS n FROM pitr_wal WHERE name = '${last}'`)).n > 0;
        for (const deadline = Date.now() + RPO_OBJECTIVE_S * 2000; Date.now() < deadline && !(await recorded());) await sleep(250);
        expect(onTarget(), "the last write's segment is shipped before the idle window").toContain(`${last}.wkw`);
        expect(await recorded()).toBe(true);
        const state = async () => ({
          ...(await one<{ xmax: string; archived: string }>(
            "SELECT pg_snapshot_xmax(pg_current_snapshot())::text AS xmax, archived_count::text AS archived FROM pg_stat_archiver",
          )),
          files: onTarget(),
        });
        const before = await state();
        await sleep(RPO_OBJECTIVE_S * 1000 + 2000);
        const after = await state();
        expect(after.xmax, "nothing was committed in the idle window").toBe(before.xmax);
        expect(after.archived).toBe(before.archived);
        expect(after.files).toEqual(before.files);
      } finally {
        await one("ALTER SYSTEM RESET autovacuum");
        await one("SELECT pg_reload_conf()");
      }

      // A role that may not switch (the app role here): the pass says so, logs it once, and the
      // segment stays open for archive_timeout to close.
      const asApp = { ...app.ctx, db: { ...app.ctx.db, owner: app.ctx.db.app }, config: { ...app.ctx.config, backup: { ...app.ctx.config.backup, rpoObjectiveSeconds: 0 } } };
      const denied = createWalShipper(asApp, { intervalMs: SHIP_INTERVAL_MS });
      await one("CREATE TABLE objective_probe AS SELECT 1 AS n");
      const { seg: open } = await one<{ seg: string }>("SELECT pg_walfile_name(pg_current_wal_insert_lsn()) AS seg");
      const pass = await denied.pass();
      expect(pass.objective).toMatchObject({ kind: "switch", segment: open });
      expect(pass.switched).toBeNull();
      await denied.pass();
      expect(logLines.filter((l) => l.includes("the database role may not call pg_switch_wal(): the recovery point rests on archive_timeout alone")).length).toBe(1);
      await expect(one<{ seg: string }>("SELECT pg_walfile_name(pg_current_wal_insert_lsn()) AS seg")).resolves.toEqual({ seg: open });
      await one("DROP TABLE objective_probe");
    }, 120_000);

    it("notices a restart of the server alone: a write after it is on the target within archive_timeout + the shipping interval", async () => {
      const before = await one<{ at: string }>("SELECT pg_postmaster_start_time()::text AS at");
      // Restarted with archive_timeout at 1 s (the file's 60 s would make this test a minute long).
      await stopServer();
      serverArgs = serverArgs.map((a) => (a.startsWith("archive_timeout=") ? `archive_timeout=${ARCHIVE_TIMEOUT_S}` : a));
      await startServer();
      // The first write after the restart (503 while the daemon's circuit is still open).
      let res: { status: number; body: { id: string } } | undefined;
      for (const deadline = Date.now() + 30_000; Date.now() < deadline; await sleep(200)) {
        res = await clinic.frontDesk.agent.post("/api/v1/patients").send({ name: "After Restart" });
        if (res.status === 201) break;
      }
      expect(res?.status).toBe(201);
      const { seg, at } = await one<{ seg: string; at: string }>("SELECT pg_walfile_name(pg_current_wal_lsn()) AS seg, pg_postmaster_start_time()::text AS at");
      expect(at).not.toBe(before.at);
      const t0 = Date.now();
      let status: { target: string; newestWal: string | null } | undefined;
      for (const deadline = t0 + 60_000; Date.now() < deadline; await sleep(100)) {
        const res = await operator.agent.get("/api/v1/backups/pitr");
        if (res.status !== 200) continue; // 503 while the daemon's circuit still counts the restart as an outage
        status = res.body.targets[0];
        if (status?.newestWal && status.newestWal >= seg && fs.existsSync(path.join(nas, "wal", `${seg}.wkw`))) break;
      }
      const ms = Date.now() - t0;
      // Without the wake the checkpointer sleeps checkpoint_timeout (5 min) first: this would time out.
      expect(status?.newestWal && status.newestWal >= seg, `segment ${seg} on the target after ${ms} ms`).toBe(true);
      expect(ms).toBeLessThanOrEqual(ARCHIVE_TIMEOUT_S * 1000 + SHIP_INTERVAL_MS + SLACK_MS);
      expect(logLines.some((l) => l.includes(`PostgreSQL restarted (at ${at}): its checkpointer was woken`))).toBe(true);
      // A role that may not reload is told so, in the log, and nothing else happens.
      const asApp = { ...app.ctx, db: { ...app.ctx.db, owner: app.ctx.db.app } };
      await expect(wakeAfterServerRestart(asApp, { startedAt: "an earlier start" })).resolves.toBe("denied");
      expect(logLines.some((l) => l.includes("and this role may not reload its configuration: archive_timeout applies after its first checkpoint"))).toBe(true);
    }, 120_000);

    it("refuses a base backup in one line without database.serverDataDir, or with a directory that is not the server's", async () => {
      const withDir = (serverDataDir: string | undefined) => ({ ...app.ctx, config: { ...app.ctx.config, database: { ...app.ctx.config.database, serverDataDir } } });
      await expect(runBaseBackup(withDir(undefined))).rejects.toThrow(
        "base backups read the PostgreSQL data directory: set database.serverDataDir (WARDKEEP_DATABASE_SERVER_DATA_DIR) to the external server's data directory as this daemon sees it, mounted read-only (docs/backups.md, Compose PostgreSQL)",
      );
      const empty = path.join(dir, "not-mounted");
      fs.mkdirSync(empty);
      await expect(runBaseBackup(withDir(empty))).rejects.toThrow(`database.serverDataDir ${empty} cannot be read (ENOENT): mount the server's data directory there`);
      // Another cluster's (same major, another system identifier).
      fs.writeFileSync(path.join(empty, "PG_VERSION"), "18\n");
      fs.mkdirSync(path.join(empty, "global"));
      fs.writeFileSync(path.join(empty, "global", "pg_control"), Buffer.alloc(8192, 7));
      const { sysid } = await one<{ sysid: string }>("SELECT system_identifier::text AS sysid FROM pg_control_system()");
      await expect(runBaseBackup(withDir(empty))).rejects.toThrow(
        `database.serverDataDir ${empty} is not the connected server's data directory (PostgreSQL 18, system identifier ${Buffer.alloc(8, 7).readBigUInt64LE(0)}; the server is 18, ${sysid})`,
      );
    });

    it("will not adopt a cluster that has a role postgres besides its superuser, and changes nothing", async () => {
      await one("CREATE ROLE postgres NOLOGIN");
      try {
        const run = { superuserUrl: (database: string, as = user) => `postgres://${as}@127.0.0.1:${port}/${database}`, dataDir: data, log: [] };
        await expect(adoptAsEmbedded(run, { superuser: user, database: "wardkeep", owner: user })).rejects.toThrow(
          `the restored cluster has a role postgres besides its superuser ${user}: the embedded server's superuser must be postgres; rename or drop that role on the source and take a new base backup`,
        );
        const { owner } = await one<{ owner: string }>("SELECT pg_get_userbyid(datdba) AS owner FROM pg_database WHERE datname = 'wardkeep'");
        expect(owner).toBe(user);
        expect(fs.readFileSync(path.join(data, "pg_hba.conf"), "utf8")).not.toContain("Written by wardkeep recover");
      } finally {
        await one("DROP ROLE postgres");
      }
    });
  });
});
