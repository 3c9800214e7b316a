import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import YAML from "yaml";
import { runAs } from "../../../daemon/db/embedded.js";
import { archiveCommand } from "../../../daemon/db/wal-archive.js";
import { freePort } from "../../helpers/postgres.js";
import { tempDir } from "./helpers.js";

/**
 * The compose file's PostgreSQL archives into the spool volume the daemon ships from: its
 * archive_command is the daemon's own (one source, daemon/db/wal-archive.ts), and that exact text
 * from docker-compose.yml, with only the spool path pointed at a temporary directory, runs under
 * Debian's PostgreSQL 15 started here: a switched segment lands in the spool byte for byte,
 * readable by the group, and PostgreSQL counts it archived with no failure.
 */
const root = fileURLToPath(new URL("../../..", import.meta.url));
const BIN = "/usr/lib/postgresql/15/bin";
const SPOOL = "/var/lib/wardkeep-wal";
const haveBinaries = fs.existsSync(path.join(BIN, "postgres"));

type Service = { command?: string[]; entrypoint?: string[]; volumes?: string[]; environment?: Record<string, string>; group_add?: string[] };
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

describe("the compose file's WAL archiving", () => {
  it("runs the daemon's archive_command into a volume both containers mount, where the daemon ships from", () => {
    expect(settings).toMatchObject({ wal_level: "replica", archive_mode: "on", archive_timeout: "60" });
    expect(settings.archive_command).toBe(archiveCommand(SPOOL, 4096, { groupReadable: true }));
    expect(db.volumes).toContain(`wal-spool:${SPOOL}`);
    expect(daemon.volumes).toContain(`wal-spool:${SPOOL}`);
    expect(compose.volumes).toHaveProperty("wal-spool");
    expect(daemon.environment?.WARDKEEP_BACKUP_WAL_SPOOL_DIR).toBe(SPOOL);
    // The spool is postgres's (gid 999 in the postgres image), setgid: the daemon reads and removes through the group.
    expect(daemon.group_add).toEqual(["999"]);
    expect(db.entrypoint?.join(" ")).toContain(`install -d -o postgres -g postgres -m 2770 ${SPOOL} && exec docker-entrypoint.sh "$$@"`);
  });

  describe.skipIf(!haveBinaries)("under Debian's PostgreSQL 15", () => {
    let dir: string;
    let spool: string;
    let server: ChildProcess | undefined;
    let url: string;
    const ids = runAs();

    beforeAll(async () => {
      dir = tempDir("wardkeep-compose-wal-");
      fs.chmodSync(dir, 0o711);
      const data = path.join(dir, "pg");
      spool = path.join(dir, "spool");
      fs.mkdirSync(spool, { mode: 0o2770 });
      const sockets = path.join(dir, "run");
      fs.mkdirSync(data, { mode: 0o700 });
      fs.mkdirSync(sockets, { mode: 0o700 });
      if (ids) for (const d of [spool, data, sockets]) fs.chownSync(d, ids.uid, ids.gid);
      execFileSync(path.join(BIN, "initdb"), ["-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"], {
        ...ids,
        stdio: "pipe",
        env: { ...process.env, LC_ALL: "C" },
      });
      const port = await freePort();
      const args = ["-D", data, "-p", String(port), "-c", "listen_addresses=127.0.0.1", "-c", `unix_socket_directories=${sockets}`, "-c", "fsync=off"];
      // The compose file's settings, the spool path alone pointed at this test's directory.
      for (const [k, v] of Object.entries(settings)) args.push("-c", `${k}=${k === "archive_command" ? v.replaceAll(`'${SPOOL}'`, `'${spool}'`) : v}`);
      server = spawn(path.join(BIN, "postgres"), args, { ...ids, stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, LC_ALL: "C" } });
      let log = "";
      server.stderr?.on("data", (d: Buffer) => (log += d.toString()));
      url = `postgres://postgres@127.0.0.1:${port}/postgres`;
      for (let i = 0; ; i++) {
        try {
          const c = new pg.Client({ connectionString: url });
          await c.connect();
          await c.end();
          break;
        } catch (err) {
          if (i > 100 || server.exitCode !== null) throw new Error(`PostgreSQL 15 did not start: ${(err as Error).message}\n${log.slice(-2000)}`);
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    }, 60_000);

    afterAll(async () => {
      if (server && server.exitCode === null) {
        const exited = new Promise((r) => server!.once("exit", r));
        server.kill("SIGINT");
        await exited;
      }
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    });

    it("puts a switched segment into the spool byte for byte, group-readable, and PostgreSQL counts it archived", async () => {
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
          await new Promise((r) => setTimeout(r, 100));
        }
        expect(stat?.last_archived_wal).toBe(wal);
        expect(stat?.failed_count).toBe("0");
      } finally {
        await c.end();
      }
      const file = path.join(spool, wal);
      expect(fs.readdirSync(spool)).toContain(wal);
      expect(fs.statSync(file).mode & 0o777).toBe(0o640);
      expect(fs.statSync(file).size).toBe(16 * 1024 * 1024);
      // Same bytes as the segment PostgreSQL wrote (still in pg_wal until the next checkpoint).
      expect(fs.readFileSync(file).equals(fs.readFileSync(path.join(dir, "pg", "pg_wal", wal)))).toBe(true);
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
  });
});
