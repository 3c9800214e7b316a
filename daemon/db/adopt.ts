import fs from "node:fs";
import path from "node:path";
import pg from "pg";
import { runAs, type RecoveryRun } from "./embedded.js";
import { APP_ROLE, EMBEDDED_DATABASE, OWNER_ROLE } from "./roles.js";

/**
 * Whose cluster a base backup copied (backup/FORMAT.md "Base backups", `server`): its bootstrap
 * superuser, the daemon's database and the role owning the daemon's tables. Backups of the
 * embedded PostgreSQL taken before these were recorded are the embedded names.
 */
export type ClusterNames = { superuser: string; database: string; owner: string };

export function clusterNames(server: { superuser?: string; database?: string; owner?: string }): ClusterNames {
  return { superuser: server.superuser ?? "postgres", database: server.database ?? EMBEDDED_DATABASE, owner: server.owner ?? OWNER_ROLE };
}

/** What an embedded server's initdb (--auth=scram-sha-256) writes: a password for every connection, local ones too. */
export const EMBEDDED_HBA = [
  "# Written by wardkeep recover: the embedded PostgreSQL's rules (a password for every connection).",
  "local   all             all                                     scram-sha-256",
  "host    all             all             127.0.0.1/32            scram-sha-256",
  "host    all             all             ::1/128                 scram-sha-256",
  "local   replication     all                                     scram-sha-256",
  "host    replication     all             127.0.0.1/32            scram-sha-256",
  "host    replication     all             ::1/128                 scram-sha-256",
  "",
].join("\n");

export type Adoption = { renamedSuperuser?: string; renamedDatabase?: string; ownerFrom?: string; objects: number };

async function connect(url: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  return c;
}

/**
 * Makes a restored cluster of another PostgreSQL (the compose file's `db`, whose bootstrap superuser
 * is its POSTGRES_USER and owns the daemon's tables) look as the embedded server's own does, so the
 * recovered appliance starts on it as on any embedded install and later migrations run as
 * `wardkeep_owner`: the database is renamed `wardkeep`; every schema, table, view, sequence,
 * routine and type the old owner held in it goes to `wardkeep_owner` (REASSIGN OWNED refuses the
 * bootstrap superuser); the bootstrap superuser is renamed `postgres` (the recovery gives it this
 * appliance's password), a former owner that was not the superuser may no longer log in, and the
 * image's pg_hba.conf (trust for local connections) is replaced by the embedded rules. Runs in
 * the promoted server before anything else; a cluster that already has the embedded names is left
 * as it is.
 */
export async function adoptAsEmbedded(run: RecoveryRun, names: ClusterNames): Promise<Adoption> {
  const out: Adoption = { objects: 0 };
  if (names.superuser === "postgres" && names.database === EMBEDDED_DATABASE && names.owner === OWNER_ROLE) return out;
  const admin = await connect(run.superuserUrl("template1", names.superuser));
  try {
    const id = (s: string) => admin.escapeIdentifier(s);
    const exists = async (role: string) => ((await admin.query("SELECT 1 FROM pg_roles WHERE rolname = $1", [role])).rowCount ?? 0) > 0;
    if (names.superuser !== "postgres" && (await exists("postgres"))) {
      throw new Error(
        `the restored cluster has a role postgres besides its superuser ${names.superuser}: the embedded server's superuser must be postgres; rename or drop that role on the source and take a new base backup`,
      );
    }
    if (names.database !== EMBEDDED_DATABASE) {
      await admin.query(`ALTER DATABASE ${id(names.database)} RENAME TO ${id(EMBEDDED_DATABASE)}`);
      out.renamedDatabase = names.database;
    }
    // Login and password come with the appliance's first start (db/roles.ts prepareDatabase).
    if (!(await exists(OWNER_ROLE))) await admin.query(`CREATE ROLE ${id(OWNER_ROLE)} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS`);
    if (!(await exists(APP_ROLE))) await admin.query(`CREATE ROLE ${id(APP_ROLE)} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS`);
    if (names.owner !== OWNER_ROLE) {
      const db = await connect(run.superuserUrl(EMBEDDED_DATABASE, names.superuser));
      try {
        await db.query("SELECT set_config('wardkeep.adopt_from', $1, false), set_config('wardkeep.adopt_to', $2, false)", [names.owner, OWNER_ROLE]);
        await db.query(REASSIGN_FROM);
        out.objects = (await db.query<{ n: number }>("SELECT current_setting('wardkeep.adopt_count')::int AS n")).rows[0]?.n ?? 0;
      } finally {
        await db.end().catch(() => {});
      }
      await admin.query(`ALTER DATABASE ${id(EMBEDDED_DATABASE)} OWNER TO ${id(OWNER_ROLE)}`);
      await admin.query(`REVOKE ALL ON DATABASE ${id(EMBEDDED_DATABASE)} FROM PUBLIC`);
      await admin.query(`GRANT CONNECT, TEMPORARY ON DATABASE ${id(EMBEDDED_DATABASE)} TO ${id(APP_ROLE)}`);
      if (names.owner !== names.superuser && (await exists(names.owner))) await admin.query(`ALTER ROLE ${id(names.owner)} NOLOGIN`);
      out.ownerFrom = names.owner;
    }
    if (names.superuser !== "postgres") {
      // A role cannot rename the session's user: a stand-in superuser does it for this statement.
      await admin.query("CREATE ROLE wardkeep_recovery SUPERUSER NOLOGIN");
      await admin.query("SET SESSION AUTHORIZATION wardkeep_recovery");
      await admin.query(`ALTER ROLE ${id(names.superuser)} RENAME TO postgres`);
      await admin.query("RESET SESSION AUTHORIZATION");
      await admin.query("DROP ROLE wardkeep_recovery");
      out.renamedSuperuser = names.superuser;
    }
  } finally {
    await admin.end().catch(() => {});
  }
  const hba = path.join(run.dataDir, "pg_hba.conf");
  fs.writeFileSync(hba, EMBEDDED_HBA, { mode: 0o600 });
  const owner = runAs();
  if (owner) fs.chownSync(hba, owner.uid, owner.gid);
  return out;
}

/**
 * Every schema, relation, routine and type one role owns outside the system schemas (and outside
 * extensions) goes to another (the session settings wardkeep.adopt_from and wardkeep.adopt_to); a
 * table takes its indexes, column sequences and row type with it (so sequences tied to a column are
 * left to it), each partition is altered on its own. Leaves the count in wardkeep.adopt_count.
 */
const REASSIGN_FROM = `
DO $$
DECLARE
  old oid := (SELECT oid FROM pg_roles WHERE rolname = current_setting('wardkeep.adopt_from'));
  new text := current_setting('wardkeep.adopt_to');
  n int := 0;
  r record;
BEGIN
  FOR r IN SELECT ns.nspname FROM pg_namespace ns
            WHERE ns.nspowner = old AND ns.nspname NOT LIKE 'pg\\_%' AND ns.nspname <> 'information_schema' LOOP
    EXECUTE format('ALTER SCHEMA %I OWNER TO %I', r.nspname, new);
    n := n + 1;
  END LOOP;
  FOR r IN SELECT c.oid::regclass AS rel, c.relkind FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace
            WHERE c.relowner = old AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c', 'S')
              AND ns.nspname NOT LIKE 'pg\\_%' AND ns.nspname <> 'information_schema'
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                                AND (d.deptype = 'e' OR (c.relkind = 'S' AND d.deptype IN ('a', 'i'))))
            ORDER BY c.relkind = 'S' LOOP
    EXECUTE format('ALTER %s %s OWNER TO %I',
      CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'c' THEN 'TYPE' WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
      r.rel, new);
    n := n + 1;
  END LOOP;
  FOR r IN SELECT p.oid::regprocedure AS fn FROM pg_proc p JOIN pg_namespace ns ON ns.oid = p.pronamespace
            WHERE p.proowner = old AND ns.nspname NOT LIKE 'pg\\_%' AND ns.nspname <> 'information_schema'
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e') LOOP
    EXECUTE format('ALTER ROUTINE %s OWNER TO %I', r.fn, new);
    n := n + 1;
  END LOOP;
  FOR r IN SELECT t.oid::regtype AS typ FROM pg_type t JOIN pg_namespace ns ON ns.oid = t.typnamespace
            WHERE t.typowner = old AND t.typtype IN ('e', 'd', 'r') AND ns.nspname NOT LIKE 'pg\\_%' AND ns.nspname <> 'information_schema'
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'e') LOOP
    EXECUTE format('ALTER TYPE %s OWNER TO %I', r.typ, new);
    n := n + 1;
  END LOOP;
  PERFORM set_config('wardkeep.adopt_count', n::text, false);
END $$`;
