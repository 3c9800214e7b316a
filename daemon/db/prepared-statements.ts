import type pg from "pg";
import { statementName } from "./wire-protocol.js";

/**
 * Server-side prepared statements for the statements a connection runs again and again.
 *
 * Sequelize sends every parameterised statement unnamed, so PostgreSQL parses and plans it on
 * every execution. For the record reads that is most of the database's work: the patient read
 * (row-level security policies plus the care-team and break-glass checks) costs ~340 µs of
 * backend CPU to plan and ~50 µs to run (docs/records.md, Performance). A statement text seen a
 * second time on a connection is given a name (a digest of its text), so node-postgres parses it
 * there once and later executions only Bind and Execute the prepared statement; PostgreSQL
 * re-plans by itself when a table or policy it depends on changes.
 *
 * Bounded per connection: at most MAX_NAMED names (statements built with a varying shape, such
 * as a SET list, cannot grow the server's memory without limit) and a bounded memory of texts
 * seen once. Statements without parameters, and multi-statement texts, are left alone.
 */
const MAX_NAMED = 100;
const MAX_SEEN = 2_000;
/** SQLSTATEs after which a name cannot be trusted on this connection any more. */
const STALE = new Set(["26000", "0A000"]);

type Callback = (err: Error | null, result?: unknown) => void;
const NAMED = Symbol("wardkeep.namedStatements");

export function nameRepeatedStatements(client: pg.Client): void {
  const c = client as pg.Client & { [NAMED]?: true; _invalid?: boolean };
  if (c[NAMED]) return;
  c[NAMED] = true;
  const query = client.query.bind(client) as (config: unknown, values?: unknown, callback?: unknown) => unknown;
  const seen = new Map<string, number>();
  const named = new Map<string, string>();
  (client as unknown as { query: typeof query }).query = (config, values, callback) => {
    if (typeof config !== "string" || !Array.isArray(values) || values.length === 0 || typeof callback !== "function") return query(config, values, callback);
    let name = named.get(config);
    if (!name) {
      if (!seen.has(config) || named.size >= MAX_NAMED) {
        if (seen.size >= MAX_SEEN) seen.clear();
        seen.set(config, 1);
        return query(config, values, callback);
      }
      seen.delete(config);
      name = statementName("wk_", config);
      named.set(config, name);
    }
    const done = callback as Callback;
    return query({ name, text: config, values }, (err: (Error & { code?: string }) | null, result?: unknown) => {
      // A statement whose prepared form went stale (its result type changed under it): the
      // connection is retired by the pool rather than trusted with names it can no longer keep.
      if (err?.code && STALE.has(err.code)) c._invalid = true;
      done(err, result);
    });
  };
}
