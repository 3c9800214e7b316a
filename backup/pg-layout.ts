/**
 * What a snapshot reads from the catalog, inside its REPEATABLE READ transaction: the tables to
 * copy, partitions created at run time (the audit trail's monthly segments) with their own
 * triggers, sequence positions, the migration list (the schema version) and the audit chain head.
 */
import type pg from "pg";
import { SnapshotRefused } from "./errors.js";
import type { ManifestBody } from "./manifest.js";

export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

export type TableInfo = { schema: string; table: string; columns: string[]; types: string[]; estimatedBytes: number };

export type DatabaseLayout = {
  tables: TableInfo[];
  partitions: ManifestBody["partitions"];
  sequences: ManifestBody["sequences"];
  database: ManifestBody["database"];
  auditHead: ManifestBody["auditHead"];
};

/** Schemas that are PostgreSQL's own. */
export const SYSTEM_SCHEMA_SQL = `(n.nspname IN ('pg_catalog', 'information_schema') OR n.nspname LIKE 'pg\\_toast%' OR n.nspname LIKE 'pg\\_temp%')`;

/** The table umzug records applied migrations in: restored by running the migrations, not copied. */
export const MIGRATIONS_TABLE = "schema_migrations";

/**
 * Snapshots run as the table owner, to whom FORCE ROW LEVEL SECURITY still applies; they set the
 * appliance scope, which every Wardkeep policy admits (`app_is_appliance_scope() OR ...`). A
 * policy that does not would silently drop rows from the snapshot, so such a table stops the run.
 */
async function assertPoliciesAdmitApplianceScope(client: pg.Client, excluded: readonly string[]) {
  const r = await client.query<{ schema: string; table: string; policies: { permissive: string; cmd: string; qual: string | null }[] }>(
    `SELECT n.nspname AS schema, c.relname AS table,
            coalesce(json_agg(json_build_object('permissive', p.permissive, 'cmd', p.cmd, 'qual', p.qual)) FILTER (WHERE p.policyname IS NOT NULL), '[]') AS policies
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       LEFT JOIN pg_policies p ON p.schemaname = n.nspname AND p.tablename = c.relname
      WHERE c.relkind IN ('r', 'p') AND c.relrowsecurity AND c.relforcerowsecurity
        AND NOT ${SYSTEM_SCHEMA_SQL} AND NOT (n.nspname = ANY($1))
      GROUP BY 1, 2`,
    [excluded],
  );
  const admits = (qual: string | null) => qual !== null && /^\(?app_is_appliance_scope\(\)( OR |\)?$)/.test(qual.trim());
  for (const row of r.rows) {
    const reading = row.policies.filter((p) => p.cmd === "ALL" || p.cmd === "SELECT");
    const ok = reading.some((p) => p.permissive === "PERMISSIVE" && admits(p.qual)) && reading.filter((p) => p.permissive === "RESTRICTIVE").every((p) => admits(p.qual));
    if (!ok) {
      throw new SnapshotRefused(
        `table ${row.schema}.${row.table} has a row-level security policy that does not admit the appliance scope, so a snapshot would miss rows; add "app_is_appliance_scope() OR" to its SELECT policy`,
      );
    }
  }
}

export async function readDatabaseLayout(client: pg.Client, excluded: readonly string[]): Promise<DatabaseLayout> {
  await assertPoliciesAdmitApplianceScope(client, excluded);
  const tables = await client.query<{ oid: number; schema: string; table: string; columns: string[]; types: string[]; bytes: string }>(
    `SELECT c.oid, n.nspname AS schema, c.relname AS table, pg_relation_size(c.oid)::text AS bytes,
            array(SELECT a.attname::text FROM pg_attribute a
                   WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
                   ORDER BY a.attnum) AS columns,
            array(SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
                   WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
                   ORDER BY a.attnum) AS types
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'r' AND c.relpersistence = 'p'
        AND NOT ${SYSTEM_SCHEMA_SQL} AND NOT (n.nspname = ANY($1))
        AND NOT (c.relname = $2 AND n.nspname = current_schema())
        AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
      ORDER BY n.nspname, c.relname`,
    [excluded, MIGRATIONS_TABLE],
  );

  const partitions = await client.query<{
    schema: string;
    table: string;
    parent_schema: string;
    parent: string;
    bound: string;
    rls: boolean;
    force_rls: boolean;
    triggers: { name: string; definition: string }[];
  }>(
    `SELECT n.nspname AS schema, c.relname AS table, pn.nspname AS parent_schema, p.relname AS parent,
            pg_get_expr(c.relpartbound, c.oid) AS bound, c.relrowsecurity AS rls, c.relforcerowsecurity AS force_rls,
            coalesce((SELECT json_agg(json_build_object('name', t.tgname, 'definition', pg_get_triggerdef(t.oid)) ORDER BY t.tgname)
                        FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal AND t.tgparentid = 0), '[]') AS triggers
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       JOIN pg_inherits i ON i.inhrelid = c.oid
       JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = p.relnamespace
      WHERE c.relispartition AND c.relkind IN ('r', 'p') AND NOT ${SYSTEM_SCHEMA_SQL} AND NOT (n.nspname = ANY($1))
      ORDER BY (c.relkind = 'r'), n.nspname, c.relname`,
    [excluded],
  );

  const seqNames = await client.query<{ schema: string; name: string }>(
    `SELECT n.nspname AS schema, c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'S' AND NOT ${SYSTEM_SCHEMA_SQL} AND NOT (n.nspname = ANY($1))
        AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
      ORDER BY 1, 2`,
    [excluded],
  );
  const sequences: ManifestBody["sequences"] = [];
  for (const s of seqNames.rows) {
    const v = await client.query<{ last_value: string; is_called: boolean }>(`SELECT last_value::text AS last_value, is_called FROM ${quoteIdent(s.schema)}.${quoteIdent(s.name)}`);
    sequences.push({ schema: s.schema, name: s.name, lastValue: v.rows[0]!.last_value, isCalled: v.rows[0]!.is_called });
  }

  const info = await client.query<{ version: string; encoding: string; migrations: string | null; head: string | null }>(
    `SELECT current_setting('server_version') AS version, current_setting('server_encoding') AS encoding,
            to_regclass($1) AS migrations, to_regclass('audit_chain_head') AS head`,
    [MIGRATIONS_TABLE],
  );
  const { version, encoding, migrations: hasMigrations, head: hasHead } = info.rows[0]!;
  if (!hasMigrations) throw new SnapshotRefused("this database has no schema_migrations table: it is not a Wardkeep database");
  const migrations = (await client.query<{ name: string }>(`SELECT name FROM ${quoteIdent(MIGRATIONS_TABLE)} ORDER BY name`)).rows.map((r) => r.name);
  if (migrations.length === 0) throw new SnapshotRefused("no migration has been applied to this database");
  let auditHead: ManifestBody["auditHead"] = null;
  if (hasHead) {
    const h = await client.query<{ seq: string; hash: string; recorded_at: string }>(
      `SELECT seq::text AS seq, encode(hash, 'hex') AS hash,
              to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS recorded_at FROM audit_chain_head`,
    );
    const row = h.rows[0];
    if (row) auditHead = { seq: row.seq, hash: row.hash, recordedAt: row.recorded_at };
  }

  return {
    tables: tables.rows.map((t) => ({ schema: t.schema, table: t.table, columns: t.columns, types: t.types, estimatedBytes: Number(t.bytes) })),
    partitions: partitions.rows.map((p) => ({
      schema: p.schema,
      table: p.table,
      parentSchema: p.parent_schema,
      parent: p.parent,
      bound: p.bound,
      rowSecurity: p.rls,
      forceRowSecurity: p.force_rls,
      triggers: p.triggers,
    })),
    sequences,
    database: { serverVersion: version, encoding, migrations, schemaVersion: migrations.at(-1)! },
    auditHead,
  };
}
