import pg from "pg";
import { sendStatement, type PgConnection } from "./wire-protocol.js";

/**
 * Statements that travel with a transaction's first query: `holdOpening(client, statements)`
 * keeps `START TRANSACTION` and the scope until the transaction sends something, then writes them
 * ahead of that first query in the same round trip. A request that reads one row and records its
 * audit event then costs two round trips (open + read, audit event + COMMIT) instead of three,
 * and a transaction whose only work is held for COMMIT (daemon/db/commit-pipeline.ts) costs one.
 * Every round trip costs both processes a socket write and a wake-up (docs/records.md,
 * Performance), which is most of a request's cost on small machines.
 *
 * How the first query carries them, without a second ReadyForQuery:
 * - extended protocol (bind parameters): Parse/Bind/Execute for each opening statement, then the
 *   query's own Parse/Bind/Describe/Execute and its one Sync. If an opening statement fails,
 *   PostgreSQL skips to the Sync, the query does not run, and its caller gets the error;
 * - simple protocol (no parameters): the opening statements are prefixed to the query's text.
 * The opening statements' own replies (command tags, the scope's set_config row) are dropped
 * before the query sees them, so its result is exactly what it would have been alone.
 *
 * A transaction that ends before sending anything sent nothing: `takeOpening` lets COMMIT and
 * ROLLBACK know there is no transaction on the server to end (or carry the opening themselves).
 */
const OPENING = Symbol("wardkeep.opening");
const PATCHED = Symbol("wardkeep.openingPatched");

type Client = pg.Client & { [OPENING]?: string[]; [PATCHED]?: boolean };

type QueryInternals = {
  text: string;
  name?: string;
  requiresPreparation(): boolean;
  submit(connection: PgConnection): Error | null;
  handleRowDescription(msg: unknown): void;
  handleDataRow(msg: unknown): void;
  handleCommandComplete(msg: unknown, connection: unknown): void;
  handleError(err: Error, connection: { parsedStatements: Record<string, string>; submittedNamedStatements: Record<string, string> }): void;
};

/**
 * Holds `statements` (no parameters) until this client's next query, or the end of its
 * transaction. An opening still held from before was never sent (its transaction never began on
 * the server), so it is replaced.
 */
export function holdOpening(client: pg.Client, statements: string[]): void {
  const c = client as Client;
  carryOpenings(c);
  c[OPENING] = statements;
}

/** The opening statements not yet sent (and forgets them): the transaction has not begun on the server. */
export function takeOpening(client: pg.Client): string[] | undefined {
  const c = client as Client;
  const statements = c[OPENING];
  c[OPENING] = undefined;
  return statements;
}

/** Lets this client carry held openings (done at connect by the daemon's pools; `holdOpening` does it otherwise). */
export function carryOpenings(pgClient: pg.Client): void {
  const client = pgClient as Client;
  if (client[PATCHED]) return;
  const query = client.query.bind(client) as (config: unknown, values?: unknown, callback?: unknown) => unknown;
  client[PATCHED] = true;
  (client as unknown as { query: typeof query }).query = (config, values, callback) => {
    const opening = client[OPENING];
    if (!opening) return query(config, values, callback);
    client[OPENING] = undefined;
    if (typeof (config as { submit?: unknown }).submit === "function") {
      prefix(config as QueryInternals, opening);
      return query(config, values, callback);
    }
    const make = (cb: unknown) => {
      const q = new pg.Query(config as pg.QueryConfig, (typeof values === "function" ? undefined : values) as unknown[], cb as () => void) as unknown as QueryInternals;
      prefix(q, opening);
      return query(q);
    };
    const cb = typeof values === "function" ? values : callback;
    if (typeof cb === "function") return make(cb);
    return new Promise((resolve, reject) => make((err: Error | null, result: unknown) => (err ? reject(err) : resolve(result))));
  };
}

function prefix(q: QueryInternals, opening: string[]): void {
  let repliesToDrop = opening.length;
  // node-postgres records a named statement as parsed at the first ParseComplete it sees: hide
  // the name while the opening's own ParseCompletes arrive. If the opening fails, PostgreSQL skips
  // the statement's Parse: forget that it was submitted, so the next run parses it again.
  const name = q.name;
  let inOpeningReplies = false;
  if (name) {
    Object.defineProperty(q, "name", { configurable: true, get: () => (inOpeningReplies ? undefined : name) });
    const handleError = q.handleError.bind(q);
    q.handleError = (err, connection) => {
      if (inOpeningReplies) {
        delete connection.parsedStatements[name];
        delete connection.submittedNamedStatements[name];
      }
      handleError(err, connection);
    };
  }
  const submit = q.submit.bind(q);
  q.submit = (connection) => {
    if (!q.requiresPreparation()) {
      q.text = `${opening.join("; ")}; ${q.text}`;
      return submit(connection);
    }
    connection.stream.cork?.();
    try {
      for (const text of opening) sendStatement(connection, { text, values: [] });
      const refused = submit(connection);
      inOpeningReplies = true;
      return refused;
    } finally {
      connection.stream.uncork?.();
    }
  };
  const rowDescription = q.handleRowDescription.bind(q);
  const dataRow = q.handleDataRow.bind(q);
  const commandComplete = q.handleCommandComplete.bind(q);
  q.handleRowDescription = (msg) => {
    if (repliesToDrop === 0) rowDescription(msg);
  };
  q.handleDataRow = (msg) => {
    if (repliesToDrop === 0) dataRow(msg);
  };
  q.handleCommandComplete = (msg, connection) => {
    if (repliesToDrop === 0) return commandComplete(msg, connection);
    repliesToDrop -= 1;
    inOpeningReplies = repliesToDrop > 0;
  };
}
