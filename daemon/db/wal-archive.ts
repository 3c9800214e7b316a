import fs from "node:fs";
import path from "node:path";
import pg from "pg";

/**
 * Continuous archiving into a spool directory (docs/backups.md "Point-in-time recovery"): the
 * archive_command is plain POSIX shell and coreutils, so the compose file's stock postgres image
 * runs the same one. It copies the segment under a temporary name, fsyncs it, renames it and
 * fsyncs the directory, and only then exits 0: PostgreSQL recycles a segment only once it is
 * durably in the spool. A name already in the spool succeeds only with identical bytes (a retry
 * after a crash), and a spool past its limit fails the command, so PostgreSQL keeps the segment
 * in pg_wal and retries: nothing is dropped. The daemon encrypts, ships and removes what is there.
 */
export function archiveCommand(spoolDir: string, limitMiB: number, opts: { groupReadable?: boolean } = {}): string {
  if (/['"\\$`\n]/.test(spoolDir)) throw new Error(`the WAL spool path may not contain quotes, backslashes, $ or backticks: ${spoolDir}`);
  const limitKib = limitMiB * 1024;
  // PostgreSQL's umask makes the copy 0600; in the compose file the daemon reads it as a member
  // of PostgreSQL's group from another container (docker-compose.yml), so it is made 0640 there.
  const chmod = opts.groupReadable ? ` && chmod 0640 "$s/.$f.tmp"` : "";
  return [
    `s='${spoolDir}'; f='%f'`,
    `if [ -f "$s/$f" ]; then cmp -s '%p' "$s/$f"; exit $?; fi`,
    `[ "$(du -sk "$s" | cut -f1)" -lt ${limitKib} ] || { echo "WAL spool $s is over its limit of ${limitMiB} MiB" >&2; exit 1; }`,
    `cp '%p' "$s/.$f.tmp"${chmod} && sync "$s/.$f.tmp" && mv "$s/.$f.tmp" "$s/$f" && sync "$s"`,
  ].join("; ");
}

/** Server settings for continuous archiving into `spoolDir`. */
export function archiveSettings(spoolDir: string, limitMiB: number, timeoutSeconds: number): Record<string, string> {
  return {
    wal_level: "replica",
    archive_mode: "on",
    archive_timeout: String(timeoutSeconds),
    archive_command: archiveCommand(path.resolve(spoolDir), limitMiB),
  };
}

/** The spool directory, 0700, owned by the user PostgreSQL runs as (it writes, the daemon reads and removes). */
export function prepareSpool(spoolDir: string, owner: { uid: number; gid: number } | undefined): void {
  fs.mkdirSync(spoolDir, { recursive: true, mode: 0o700 });
  if (owner) fs.chownSync(spoolDir, owner.uid, owner.gid);
}

export type CheckpointerWake = "woken" | "not-archiving" | "denied";

/**
 * Makes PostgreSQL honour archive_timeout from the start. Its checkpointer works out how long to
 * sleep for the first time while the server is still starting up, when it leaves archive_timeout
 * out, and so sleeps a whole checkpoint_timeout (5 min by default) before it first looks at it: a
 * segment with a single write in it is archived only when it fills or that sleep ends, so for the
 * first minutes after every start the recovery point has no bound (seen with PostgreSQL 15 and
 * 18; docs/backups.md "Recovery point"). A configuration reload sets the checkpointer's latch:
 * it wakes, and from then on sleeps at most archive_timeout. A superuser (or a role granted
 * pg_reload_conf) may do this; `denied` otherwise.
 */
export async function wakeCheckpointer(url: string): Promise<CheckpointerWake> {
  const client = new pg.Client({ connectionString: url, application_name: "wardkeep-archive-timeout" } as pg.ClientConfig);
  await client.connect();
  try {
    const r = await client.query<{ on: boolean }>("SELECT current_setting('archive_mode') <> 'off' AND current_setting('archive_timeout')::interval > '0'::interval AS on");
    if (!r.rows[0]?.on) return "not-archiving";
    try {
      await client.query("SELECT pg_reload_conf()");
      return "woken";
    } catch (err) {
      if ((err as { code?: string }).code === "42501") return "denied";
      throw err;
    }
  } finally {
    await client.end().catch(() => {});
  }
}
