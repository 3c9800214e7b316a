import type pg from "pg";
import type { Tx } from "./sql.js";

/**
 * Copies whole tables, row for row, from one database (read in one statement: one MVCC snapshot)
 * into another whose schema has the same tables (`into`: a client inside the caller's
 * transaction). Tables are given schema-qualified, in the order their foreign keys need; with
 * `replace`, what `into` holds of them is deleted first (in reverse order). Identity columns
 * continue after the copied rows. Used by the in-place restore, which gives the database it loaded
 * the live key store and backup catalogue (docs/backups.md "Restore in place").
 */
export async function carryRows(from: Tx, into: pg.ClientBase, tables: readonly string[], opts: { replace: boolean }): Promise<Record<string, number>> {
  const read = tables.map((t, i) => `(SELECT coalesce(json_agg(x), '[]') FROM ${t} x) AS t${i}`).join(", ");
  const live = (await from.one<Record<string, unknown[]>>(`SELECT ${read}`))!;
  if (opts.replace) for (const t of [...tables].reverse()) await into.query(`DELETE FROM ${t}`);
  const counts: Record<string, number> = {};
  for (const [i, table] of tables.entries()) {
    const rows = live[`t${i}`]!;
    counts[table] = rows.length;
    // bytea travels as its "\x…" text form, which json_populate_recordset reads back as bytea.
    for (let k = 0; k < rows.length; k += 5000) {
      await into.query(`INSERT INTO ${table} OVERRIDING SYSTEM VALUE SELECT * FROM json_populate_recordset(NULL::${table}, $1::json)`, [JSON.stringify(rows.slice(k, k + 5000))]);
    }
    const [schema, name] = table.includes(".") ? table.split(".") : ["public", table];
    const identities = await into.query<{ column_name: string }>(
      "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 AND is_identity = 'YES'",
      [schema, name],
    );
    for (const c of identities.rows) {
      const col = into.escapeIdentifier(c.column_name);
      await into.query(`SELECT setval(pg_get_serial_sequence($1, $2), coalesce((SELECT max(${col}) FROM ${table}), 0) + 1, false)`, [table, c.column_name]);
    }
  }
  return counts;
}
