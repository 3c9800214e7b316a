import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import pg from "pg";
import { startEmbeddedPostgres, type EmbeddedPostgres } from "../../daemon/db/embedded.js";
import { freePort } from "./postgres.js";

/**
 * A PostgreSQL primary with a synchronous streaming standby, from the embedded PostgreSQL 18
 * binaries (no pg_basebackup among them): the standby's base copy is taken the way the manual
 * describes a low-level base backup (`pg_backup_start`, a file copy, `pg_backup_stop`'s label),
 * it streams through a physical replication slot, and the primary waits for the standby's flush
 * before it acknowledges a commit (`synchronous_standby_names`), so nothing acknowledged can be
 * lost when the primary dies.
 */

export const STANDBY_NAME = "wardkeep_standby";

export type ReplicatedPostgres = {
  dir: string;
  primary: EmbeddedPostgres & { dataDir: string };
  standby: EmbeddedPostgres & { dataDir: string };
  password: string;
  /** SIGKILL to the primary's whole process group: the postmaster and every backend at once, like a host crash. */
  killPrimary(): void;
  /** Promotes the standby (waits until it accepts writes). */
  promoteStandby(): Promise<void>;
  stop(): Promise<void>;
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function query<T extends pg.QueryResultRow>(url: string, text: string, values: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query<T>(text, values)).rows;
  } finally {
    await c.end();
  }
}

function postmasterPid(dataDir: string): number {
  return Number(fs.readFileSync(path.join(dataDir, "postmaster.pid"), "utf8").split("\n")[0]);
}

export async function startReplicatedPostgres(dir: string): Promise<ReplicatedPostgres> {
  fs.chmodSync(dir, 0o711);
  const passwordFile = path.join(dir, "superuser-password");
  const primaryDir = path.join(dir, "primary");
  const standbyDir = path.join(dir, "standby");
  const primary = { ...(await startEmbeddedPostgres({ dataDir: primaryDir, port: await freePort(), passwordFile })), dataDir: primaryDir };
  const password = fs.readFileSync(passwordFile, "utf8").trim();

  // Base copy: the slot keeps every WAL segment from here on until the standby has streamed it.
  const su = new pg.Client({ connectionString: primary.superuserUrl });
  await su.connect();
  try {
    await su.query("SELECT pg_create_physical_replication_slot($1, true)", [STANDBY_NAME]);
    await su.query("SELECT pg_backup_start('wardkeep-standby', true)");
    execFileSync("cp", ["-a", primaryDir, standbyDir]);
    const [{ labelfile }] = (await su.query<{ labelfile: string }>("SELECT labelfile FROM pg_backup_stop(true)")).rows as [{ labelfile: string }];
    const owner = fs.statSync(primaryDir);
    const write = (name: string, text: string, flag = "w") => {
      fs.writeFileSync(path.join(standbyDir, name), text, { mode: 0o600, flag });
      fs.chownSync(path.join(standbyDir, name), owner.uid, owner.gid);
    };
    // What the manual says to leave out of a base copy.
    for (const f of ["postmaster.pid", "postmaster.opts"]) fs.rmSync(path.join(standbyDir, f), { force: true });
    for (const sub of ["pg_wal", "pg_replslot"]) {
      for (const entry of fs.readdirSync(path.join(standbyDir, sub)))
        if (entry !== "archive_status" && entry !== "summaries") fs.rmSync(path.join(standbyDir, sub, entry), { recursive: true, force: true });
    }
    write("backup_label", labelfile);
    write("standby.signal", "");
    write(
      "postgresql.auto.conf",
      `\nprimary_conninfo = 'host=127.0.0.1 port=${primary.port} user=postgres password=${password} application_name=${STANDBY_NAME}'\nprimary_slot_name = '${STANDBY_NAME}'\n`,
      "a",
    );
  } finally {
    await su.end();
  }
  const standby = { ...(await startEmbeddedPostgres({ dataDir: standbyDir, port: await freePort(), passwordFile })), dataDir: standbyDir };

  // Synchronous from now on: a COMMIT returns once the standby has flushed it.
  await query(primary.superuserUrl, `ALTER SYSTEM SET synchronous_standby_names = '${STANDBY_NAME}'`);
  await query(primary.superuserUrl, "SELECT pg_reload_conf()");
  const deadline = Date.now() + 30_000;
  for (;;) {
    const rows = await query<{ sync_state: string; state: string }>(primary.superuserUrl, "SELECT sync_state, state FROM pg_stat_replication WHERE application_name = $1", [
      STANDBY_NAME,
    ]);
    if (rows[0]?.state === "streaming" && rows[0].sync_state === "sync") break;
    if (Date.now() > deadline) throw new Error(`the standby did not become a synchronous streaming replica: ${JSON.stringify(rows)}`);
    await sleep(100);
  }

  return {
    dir,
    primary,
    standby,
    password,
    killPrimary() {
      process.kill(-postmasterPid(primaryDir), "SIGKILL");
      // A lost server stays lost: without this the embedded server's supervisor starts the old
      // primary again a second later, beside the promoted standby, and the balancer sends writes
      // to both (on the old one every COMMIT waits for a synchronous standby that is gone).
      void primary.stop().catch(() => undefined);
    },
    async promoteStandby() {
      await query(standby.superuserUrl, "SELECT pg_promote(true, 60)");
      const until = Date.now() + 60_000;
      while ((await query<{ r: boolean }>(standby.superuserUrl, "SELECT pg_is_in_recovery() AS r"))[0]!.r) {
        if (Date.now() > until) throw new Error("the standby did not leave recovery");
        await sleep(100);
      }
    },
    async stop() {
      await standby.stop();
      await primary.stop().catch(() => undefined);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
