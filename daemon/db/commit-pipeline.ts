import { createRequire } from "node:module";
import type pg from "pg";
import type { Sequelize, Transaction, TransactionOptions } from "sequelize";
import { takeOpening } from "./opening-pipeline.js";
import { sendStatement, statementName, type PgConnection } from "./wire-protocol.js";

/**
 * Statements that travel with COMMIT: `withCommit(t, statement)` holds a parameterised statement
 * until the transaction commits, then sends it and `COMMIT` in one round trip (one extended-protocol
 * pipeline: Parse/Bind/Execute for each, one Sync; a held statement is prepared under a name on
 * its connection the first time, so later COMMITs only Bind and Execute it — PostgreSQL would
 * otherwise plan the audit INSERT on every request). The audit trail uses it for the event every
 * PHI read and write records (docs/records.md, Performance): the event is still written in the
 * same transaction as the work, and if it cannot be written PostgreSQL skips the COMMIT, the
 * transaction rolls back and the statement's `onError` says what the client is told (without one,
 * the statement's own error).
 *
 * Only top-level transactions on a pool set up with `commitPipelines` defer; anywhere else (a
 * nested transaction, another pool) the statement runs at once, as before.
 */
export type DeferredStatement = { text: string; values: unknown[]; onError?: (err: Error) => Error };

const pipelined = new WeakSet<Sequelize>();
const pending = new WeakMap<Transaction, DeferredStatement[]>();

/**
 * `prepared`: keep it as a named prepared statement on the connection (held statements recur).
 * `rows`: the pipeline's result is this step's rows (one step at most asks for them).
 */
export type Step = { text: string; values: unknown[]; prepared?: boolean; rows?: boolean };

/** node-postgres' row parser; the client gives it the connection's type parsers (`_types`) when the pipeline is queued. */
type PgResult = { rows: Record<string, unknown>[]; _types?: unknown; addFields(fields: unknown[]): void; parseRow(fields: unknown[]): Record<string, unknown>; addRow(row: Record<string, unknown>): void };
const PgResultClass = createRequire(import.meta.url)("pg/lib/result.js") as new () => PgResult;

/**
 * Named statements of the commit pipelines, per connection: "parsed", or "unknown" after a
 * pipeline failed at or before the statement (its Parse may or may not have happened, so the next
 * pipeline closes the name first; closing a name that does not exist is not an error).
 */
const namedOn = new WeakMap<PgConnection, Map<string, "parsed" | "unknown">>();
const names = new Map<string, string>();

function nameOf(text: string): string {
  let name = names.get(text);
  if (!name) {
    name = statementName("wk_commit_", text);
    names.set(text, name);
  }
  return name;
}

/** A node-postgres "submittable": several statements, one Sync, one round trip. */
class Pipeline {
  private completed = 0;
  private error: (Error & { step?: number }) | undefined;
  private connection: PgConnection | undefined;
  /** Read by the client: it sets `_types` here, so rows parse as any query's would. */
  readonly _result: PgResult = new PgResultClass();
  private readonly rowsOf: number;
  constructor(
    private readonly steps: Step[],
    private readonly done: (err: (Error & { step?: number }) | undefined, rows: Record<string, unknown>[]) => void,
  ) {
    this.rowsOf = steps.findIndex((s) => s.rows);
  }
  submit(connection: PgConnection): null {
    this.connection = connection;
    const named = namedOn.get(connection) ?? new Map<string, "parsed" | "unknown">();
    namedOn.set(connection, named);
    connection.stream.cork?.();
    try {
      const parsedHere = new Set<string>();
      for (const s of this.steps) {
        const name = s.prepared ? nameOf(s.text) : "";
        const state = name ? (parsedHere.has(name) ? "parsed" : named.get(name)) : undefined;
        if (state === "unknown") connection.close({ type: "S", name });
        if (name) parsedHere.add(name);
        sendStatement(connection, { text: s.text, values: s.values, name, parsed: state === "parsed", describe: s.rows });
      }
      connection.sync();
    } finally {
      connection.stream.uncork?.();
    }
    return null;
  }
  /** Steps before `upTo` ran, so their named statements exist; the rest are in doubt. */
  private settleNames(upTo: number): void {
    const named = namedOn.get(this.connection!)!;
    this.steps.forEach((s, i) => {
      if (s.prepared) named.set(nameOf(s.text), i < upTo ? "parsed" : "unknown");
    });
  }
  handleCommandComplete(): void {
    this.completed += 1;
  }
  handleError(err: Error): void {
    // After an error PostgreSQL skips to the Sync, so the step that failed is the one after the
    // last that completed. node-postgres forgets the active query on an error (its ReadyForQuery
    // goes to no one), so the outcome is reported here.
    if (this.error) return;
    this.settleNames(this.completed);
    this.error = Object.assign(err, { step: this.completed });
    this.done(this.error, []);
  }
  handleReadyForQuery(): void {
    if (this.error) return;
    this.settleNames(this.steps.length);
    this.done(undefined, this._result.rows);
  }
  handleRowDescription(msg: { fields: unknown[] }): void {
    // Only the step that asked (Describe) gets a description.
    this._result.addFields(msg.fields);
  }
  handleDataRow(msg: { fields: unknown[] }): void {
    // Other steps' rows (the scope's set_config) arrive undescribed: dropped.
    if (this.completed === this.rowsOf) this._result.addRow(this._result.parseRow(msg.fields));
  }
  handleEmptyQuery(): void {}
  handlePortalSuspended(): void {}
  handleCopyInResponse(connection: PgConnection): void {
    connection.sendCopyFail("no COPY in a commit pipeline");
  }
  handleCopyData(): void {}
}

/**
 * Sends `steps` with one Sync and resolves to the rows of the step marked `rows` (none: []); a
 * failure carries `step`, the index of the statement that failed.
 */
export function runPipeline<T = Record<string, unknown>>(client: pg.Client, steps: Step[]): Promise<T[]> {
  return new Promise((resolve, reject) => {
    (client as unknown as { query(q: Pipeline): void }).query(new Pipeline(steps, (err, rows) => (err ? reject(err) : resolve(rows as T[]))));
  });
}

export function parentOf(t: Transaction): unknown {
  return (t as unknown as { parent?: unknown }).parent;
}

export function connectionOf(t: Transaction): pg.Client {
  return (t as unknown as { connection: pg.Client }).connection;
}

export function isCommitPipelined(db: Sequelize): boolean {
  return pipelined.has(db);
}

/** Runs `statement` with this transaction's COMMIT, or at once where that is not possible. */
export async function withCommit(db: Sequelize, t: Transaction, statement: DeferredStatement): Promise<void> {
  if (pipelined.has(db) && !parentOf(t)) {
    const list = pending.get(t) ?? [];
    list.push(statement);
    pending.set(t, list);
    return;
  }
  try {
    await db.query(statement.text, { bind: statement.values, transaction: t });
  } catch (err) {
    throw statement.onError ? statement.onError(err as Error) : err;
  }
}

/**
 * Makes this pool's top-level COMMITs carry the statements `withCommit` held for them, and the
 * transaction's opening if it is still held (daemon/db/opening-pipeline.ts): a transaction whose
 * only work was held costs one round trip; one that sent nothing at all sends nothing.
 */
export function commitPipelines(db: Sequelize): Sequelize {
  const qi = db.getQueryInterface();
  const commit = qi.commitTransaction.bind(qi);
  qi.commitTransaction = async (transaction: Transaction, options?: TransactionOptions) => {
    if (parentOf(transaction)) return commit(transaction, options);
    const client = connectionOf(transaction);
    const statements = pending.get(transaction) ?? [];
    pending.delete(transaction);
    const opening = takeOpening(client) ?? [];
    if (statements.length === 0) return opening.length ? undefined : commit(transaction, options);
    const steps: Step[] = [...opening.map((text) => ({ text, values: [] })), ...statements.map((s) => ({ ...s, prepared: true })), { text: "COMMIT", values: [] }];
    try {
      await runPipeline(client, steps);
    } catch (err) {
      const step = ((err as { step?: number }).step ?? steps.length - 1) - opening.length;
      const failed = step >= 0 && step < statements.length ? statements[step]! : undefined;
      throw failed?.onError ? failed.onError(err as Error) : err;
    }
  };
  pipelined.add(db);
  return db;
}
