import { createHash } from "node:crypto";
import net from "node:net";
import { performance } from "node:perf_hooks";
import pg from "pg";
import { DatabaseUnavailable, isConnectionFailure, type DatabaseCircuit } from "./circuit.js";

/**
 * The database layer: pg's public API only (`Pool`, pipeline mode, named statements), no ORM.
 *
 * - `sql` is a tagged template that numbers its own parameters: values never enter the text.
 * - `SqlPool.inScope(scope, tx => …)` runs work in a transaction under a row-level-security scope.
 *   Clients run in pg's pipeline mode (`pipeline: true`), so statements written one after the other
 *   without waiting travel in one round trip: a transaction's opening (`BEGIN` and its scope) goes
 *   out with its first statement, and statements held for COMMIT (`tx.holdForCommit`) go out with
 *   the COMMIT. Every round trip costs both processes a socket write and a wake-up, which is most of
 *   a request's cost on small machines (docs/records.md, Performance).
 * - A statement text a connection runs a second time is prepared under a name (a digest of the
 *   text), so PostgreSQL plans it once per connection, not on every request.
 */

// ---- statements ------------------------------------------------------------------------------

export type Row = Record<string, unknown>;

/** A statement ready to send: text with `$n` placeholders and the values they stand for. */
export type Statement = { readonly text: string; readonly values: readonly unknown[] };

/** What the query functions accept: a `sql` fragment, a Statement, or plain text with its values. */
export type Query = Statement | string;

const RAW = Symbol("wardkeep.sql.raw");

/** A piece of SQL built by `sql`: text pieces and the values (or nested fragments) between them. */
export class SqlFragment implements Statement {
  readonly text: string;
  readonly values: unknown[];
  constructor(
    private readonly strings: readonly string[],
    private readonly args: readonly unknown[],
  ) {
    // Own properties (not getters), so `{ ...fragment, onError }` is still a statement.
    const values: unknown[] = [];
    this.text = this.appendTo(values);
    this.values = values;
  }
  /** Writes this fragment's text, numbering its values after those already in `values`. */
  appendTo(values: unknown[]): string {
    let text = this.strings[0] ?? "";
    this.args.forEach((arg, i) => {
      if (arg instanceof SqlFragment) text += arg.appendTo(values);
      else if (isRaw(arg)) text += arg[RAW];
      else {
        values.push(arg);
        text += `$${values.length}`;
      }
      text += this.strings[i + 1] ?? "";
    });
    return text;
  }
}

type Raw = { [RAW]: string };
function isRaw(v: unknown): v is Raw {
  return typeof v === "object" && v !== null && RAW in v;
}

/**
 * `sql\`SELECT … WHERE id = ${id}\`` → `{text: "SELECT … WHERE id = $1", values: [id]}`. A nested
 * fragment is spliced in with its values renumbered, so SQL can be composed without counting
 * placeholders by hand.
 */
export function sql(strings: TemplateStringsArray, ...args: unknown[]): SqlFragment {
  return new SqlFragment(strings, args);
}

/** Trusted text spliced as is: only for SQL the code itself spells (never a request's value). */
sql.raw = (text: string): SqlFragment => new SqlFragment([""], [{ [RAW]: text }]);

/** A quoted identifier (schema, table or column name read from the catalogue). */
sql.ident = (name: string): SqlFragment => sql.raw(quoteIdent(name));

/** Fragments joined by a separator (default `, `). */
sql.join = (parts: readonly SqlFragment[], separator = ", "): SqlFragment => {
  if (parts.length === 0) return sql.raw("");
  const strings = ["", ...parts.slice(1).map(() => separator), ""];
  return new SqlFragment(strings, parts);
};

export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

function statementOf(q: Query, values?: readonly unknown[]): Statement {
  if (typeof q === "string") return { text: q, values: values ?? [] };
  if (values !== undefined) throw new TypeError("a sql fragment carries its own values");
  return q;
}

/** A prepared-statement name for `text`: `prefix` plus a digest of the text, the same on every connection. */
function statementName(prefix: string, text: string): string {
  return `${prefix}${createHash("sha256").update(text).digest("hex").slice(0, 24)}`;
}

// ---- errors ----------------------------------------------------------------------------------

/** A PostgreSQL error as pg reports it (`code` is the SQLSTATE). */
export type PgError = Error & { code?: string; constraint?: string; table?: string; column?: string; step?: number };

/** The SQLSTATE of a database error, if it is one. */
export function sqlState(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/** unique_violation on the named constraint or index (never its detail: it quotes values). */
export function isUniqueViolation(err: unknown, constraint?: string): boolean {
  return sqlState(err) === "23505" && (constraint === undefined || (err as PgError).constraint === constraint);
}

/** The transaction was rolled back by PostgreSQL (an earlier statement failed) where a COMMIT was asked. */
export class TransactionRolledBack extends Error {
  readonly code = "25P02";
  constructor() {
    super("the transaction was rolled back: a statement in it failed");
  }
}

// ---- scopes ----------------------------------------------------------------------------------

/**
 * Who a transaction acts for. Row-level security policies read these settings through
 * `app_tenant_id()` and `app_is_appliance_scope()` (migration 0001).
 * - tenant: a request inside one tenant (hospital, clinic, department) sees only its rows.
 * - appliance: super-admin work across tenants (creating tenants, first-run setup).
 */
export type Scope = { kind: "tenant"; tenantId: string } | { kind: "appliance" };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * The statement that sets a scope for the rest of the transaction: `set_config(..., is_local =>
 * true)`, the same as `SET LOCAL`, so the setting cannot leak to the next user of the pooled
 * connection. A tenant id that is not a UUID is refused before anything is sent.
 */
export function scopeStatement(scope: Scope): Statement {
  if (scope.kind === "appliance") return { text: "SELECT set_config('wardkeep.tenant_id', '', true), set_config('wardkeep.scope', 'appliance', true)", values: [] };
  if (!UUID.test(scope.tenantId)) throw new TypeError("a tenant scope needs a tenant UUID");
  return { text: "SELECT set_config('wardkeep.tenant_id', $1, true), set_config('wardkeep.scope', 'tenant', true)", values: [scope.tenantId.toLowerCase()] };
}

// ---- prepared statements ---------------------------------------------------------------------

/**
 * Which statement texts a connection runs under a name. A text seen a second time gets one; at
 * most MAX_NAMED per connection (statements built with a varying shape cannot grow the server's
 * memory without limit) and a bounded memory of texts seen once.
 */
const MAX_NAMED = 100;
const MAX_SEEN = 2_000;
/** SQLSTATEs after which a connection's prepared statements cannot be trusted any more. */
const STALE = new Set(["26000", "0A000"]);

type Naming = { seen: Set<string>; named: Map<string, string> };
const namings = new WeakMap<pg.ClientBase, Naming>();

function namingOf(client: pg.ClientBase): Naming {
  let n = namings.get(client);
  if (!n) {
    n = { seen: new Set(), named: new Map() };
    namings.set(client, n);
  }
  return n;
}

/** The query config for `s` on `client`: named once the text recurs (or at once when `prepare`). */
function configFor(client: pg.ClientBase, s: Statement, prepare: boolean): pg.QueryConfig {
  const values = s.values as unknown[];
  const n = namingOf(client);
  let name = n.named.get(s.text);
  // Statements without parameters may hold several commands (migrations), which only the simple
  // protocol runs: they are named only when asked (the scope statement, BEGIN).
  if (!name && !prepare && values.length === 0) return { text: s.text, values };
  if (!name && n.named.size < MAX_NAMED && (prepare || n.seen.has(s.text))) {
    name = statementName("wk_", s.text);
    n.named.set(s.text, name);
    n.seen.delete(s.text);
  } else if (!name) {
    if (n.seen.size >= MAX_SEEN) n.seen.clear();
    n.seen.add(s.text);
  }
  return name ? { name, text: s.text, values } : { text: s.text, values };
}

// ---- transactions ----------------------------------------------------------------------------

/** A statement held for COMMIT; `onError` says what the caller is told when it fails. */
export type HeldStatement = Statement & { onError?: (err: PgError) => Error };

/** What work inside a transaction can do. */
export interface Tx {
  /** The rows of a statement. */
  rows<T = Row>(q: Query, values?: readonly unknown[]): Promise<T[]>;
  /** The first row of a statement, or undefined. */
  one<T = Row>(q: Query, values?: readonly unknown[]): Promise<T | undefined>;
  /** Runs a statement; resolves to its row count. */
  exec(q: Query, values?: readonly unknown[]): Promise<number>;
  /**
   * Holds a statement until COMMIT and sends it with the COMMIT in one round trip. If it fails,
   * PostgreSQL rolls the whole transaction back and the caller gets `onError(err)` (or `err`).
   */
  holdForCommit(s: HeldStatement): void;
  /** Runs `fn` after a COMMIT that succeeded (never after a failed one). */
  afterCommit(fn: () => void): void;
}

type Sent = { promise: Promise<pg.QueryResult>; settled: Promise<unknown> };

/**
 * One transaction on one pipelined client. The opening (`BEGIN` + scope) is held until the first
 * statement and sent in the same flight; a transaction that never sends anything is never opened.
 */
class PipelinedTx implements Tx {
  private opening: Statement[] | undefined;
  private readonly held: HeldStatement[] = [];
  private readonly hooks: (() => void)[] = [];
  private readonly inFlight = new Set<Promise<unknown>>();
  /** Set when the connection must not go back to the pool (stale prepared statement, broken socket). */
  broken: Error | undefined;
  private ended = false;
  private commitSent = false;

  private abandoned = false;

  constructor(
    private readonly client: pg.PoolClient,
    opening: Statement[],
    private readonly observe: ((text: string) => void) | undefined,
    private readonly commitTimeoutMs?: number,
  ) {
    this.opening = opening;
  }

  /**
   * The database went away while the work waited on it: nothing more is sent, the connection is
   * destroyed rather than pooled, and the open transaction dies with it on the server.
   */
  abandon(): void {
    this.abandoned = true;
    this.ended = true;
    this.broken ??= new Error("abandoned while the database was not answering");
  }

  private send(s: Statement, prepare = false, deadline?: number): Sent {
    if (this.ended) throw new Error("the transaction has ended");
    this.observe?.(s.text);
    const config = configFor(this.client, s, prepare);
    const promise = this.client.query((deadline ? { ...config, query_timeout: deadline } : config) as pg.QueryConfig) as Promise<pg.QueryResult>;
    const settled = promise.then(
      () => undefined,
      (err: PgError) => {
        if (err.code && STALE.has(err.code)) this.broken = err;
        else if (!err.code) this.broken = err; // no SQLSTATE: the connection itself failed
      },
    );
    this.inFlight.add(settled);
    void settled.finally(() => this.inFlight.delete(settled));
    return { promise, settled };
  }

  /** Sends the held opening (if any) and then `s`, in one flight; the first failure in order is reported. */
  private async run(s: Statement): Promise<pg.QueryResult> {
    const opening = this.opening?.map((o) => this.send(o, true)) ?? [];
    this.opening = undefined;
    const sent = this.send(s);
    for (const o of opening) await o.promise;
    return sent.promise;
  }

  async rows<T>(q: Query, values?: readonly unknown[]): Promise<T[]> {
    return (await this.run(statementOf(q, values))).rows as T[];
  }
  async one<T>(q: Query, values?: readonly unknown[]): Promise<T | undefined> {
    return (await this.run(statementOf(q, values))).rows[0] as T | undefined;
  }
  async exec(q: Query, values?: readonly unknown[]): Promise<number> {
    return (await this.run(statementOf(q, values))).rowCount ?? 0;
  }
  holdForCommit(s: HeldStatement): void {
    this.held.push(s);
  }
  afterCommit(fn: () => void): void {
    this.hooks.push(fn);
  }

  /** COMMIT with the held statements (and the opening, if nothing was sent yet) in one flight. */
  async commit(): Promise<void> {
    const opening = this.opening;
    this.opening = undefined;
    if (opening && this.held.length === 0) {
      this.ended = true;
      return; // nothing was ever sent: there is no transaction on the server
    }
    const deadline = this.commitTimeoutMs;
    const steps: { sent: Sent; held?: HeldStatement }[] = [
      ...(opening ?? []).map((o) => ({ sent: this.send(o, true, deadline) })),
      ...this.held.map((h) => ({ sent: this.send(h, true, deadline), held: h })),
      { sent: this.send({ text: "COMMIT", values: [] }, true, deadline) },
    ];
    this.ended = true;
    this.commitSent = true;
    const outcomes = await Promise.all(
      steps.map((s) =>
        s.sent.promise.then(
          (r) => ({ r }),
          (err: PgError) => ({ err }),
        ),
      ),
    );
    const failed = outcomes.findIndex((o) => "err" in o);
    if (failed >= 0) {
      const err = (outcomes[failed] as { err: PgError }).err;
      const held = steps[failed]!.held;
      throw held?.onError ? held.onError(err) : err;
    }
    // PostgreSQL answers a COMMIT of a failed transaction with ROLLBACK, not an error: a statement
    // whose error the work caught and swallowed. Its work is gone, so the caller must hear it.
    if ((outcomes[outcomes.length - 1] as { r: pg.QueryResult }).r.command === "ROLLBACK") throw new TransactionRolledBack();
  }

  async rollback(): Promise<void> {
    const opened = this.opening === undefined;
    this.opening = undefined;
    this.ended = true;
    // Abandoned: what is in flight may never answer; the destroyed connection rolls it back.
    if (this.abandoned) return;
    await Promise.all([...this.inFlight]);
    // A COMMIT that was sent ended the transaction either way (PostgreSQL rolled back what failed).
    if (!opened || this.broken || this.commitSent) return;
    try {
      await this.client.query("ROLLBACK");
    } catch (err) {
      this.broken = err as Error;
    }
  }

  async settle(): Promise<void> {
    await Promise.all([...this.inFlight]);
  }

  runAfterCommit(): void {
    for (const fn of this.hooks) fn();
  }
}

// ---- the pool --------------------------------------------------------------------------------

export type PoolOptions = {
  url: string;
  applicationName: string;
  max: number;
  statementTimeoutMs: number;
  /** How long a request waits for a connection (to open one, or for one to be free). */
  acquireTimeoutMs?: number;
  idleTimeoutMs?: number;
  /** The database circuit shared by the appliance's pools (./circuit.ts); none: no fail-fast. */
  circuit?: DatabaseCircuit;
  /** Client-side deadline of a flight that carries a COMMIT, whose outcome the circuit must not guess. */
  commitTimeoutMs?: number;
  /** Group commit for `groupedStatementInScope`; none: each statement in a transaction of its own. */
  groupCommit?: GroupCommitOptions;
};

/**
 * How long a pooled connection may sit idle before it is closed. A new connection costs a
 * password exchange, a cold backend and the statements it had prepared, so a steady load must
 * not reopen connections on every burst (its effect on tail latency: docs/records.md, Performance).
 */
const POOL_IDLE_MS = 300_000;

export type TransactionOptions = { isolation?: "READ COMMITTED" | "REPEATABLE READ" | "SERIALIZABLE"; readOnly?: boolean };

/**
 * The socket under each pooled connection (pg's `stream` option): what is written in one tick of
 * the event loop leaves in one system call. pg corks and uncorks around each statement, so a
 * flight of pipelined statements (BEGIN, the scope, a statement, COMMIT) was one write each, and
 * each write can wake the backend on its own; corked until the tick ends, the flight is one write
 * and one wake-up. Nothing waits past the current tick.
 */
function coalescingSocket(): net.Socket {
  const socket = new net.Socket();
  const write = socket.write.bind(socket);
  let corked = false;
  const flush = () => {
    corked = false;
    socket.uncork();
  };
  socket.write = ((...args: Parameters<typeof write>) => {
    if (!corked) {
      corked = true;
      socket.cork();
      process.nextTick(flush);
    }
    return write(...args);
  }) as typeof socket.write;
  return socket;
}

/** Connection details of a pool, for tools that open their own connections (backup COPY streams). */
export type ConnectionInfo = { host: string; port: number; user: string; password?: string; database: string };

/** Group commit (`SqlPool.setGroupCommit`); the measured effect is in docs/records.md. */
export type GroupCommitOptions = {
  /** Most statements in one shared transaction (1: no grouping). */
  maxMembers: number;
  /** Most shared transactions in flight at once; a statement that finds fewer goes out at once. */
  maxInFlight: number;
  /** A transaction out longer than this (a member waiting on a lock) no longer holds the queue back (default 50 ms). */
  stallMs?: number;
  /**
   * Wait for a group only while this process's event loop is at least this busy (0–1, over the last
   * `BUSY_WINDOW_MS`); below it a statement that finds `maxInFlight` transactions out goes at once,
   * alone. Grouping buys CPU with waiting, which pays only when CPU is what requests queue for.
   * Unset or 0: always wait.
   */
  busyThreshold?: number;
};

const GROUP_STALL_MS = 50;
/** How long an event-loop utilisation sample of `busyThreshold` spans. */
const BUSY_WINDOW_MS = 20;

function sameScope(a: Scope, b: Scope): boolean {
  return a.kind === b.kind && (a.kind === "appliance" || a.tenantId === (b as { tenantId: string }).tenantId);
}

/** Transactions sent by group commit (a member alone counts as one), the statements they held, and those run again alone. */
export type GroupCommitStats = { transactions: number; members: number; retried: number };

type Member = { scope: Scope; statement: Statement; resolve: (rows: Row[]) => void; reject: (err: unknown) => void };

/**
 * The queue behind `groupedStatementInScope`. While `maxInFlight` transactions are out, arriving
 * statements wait; each finished transaction sends the next group, and so does one that has been
 * out for `stallMs` (it stops counting), so a slow member delays the others by that much at most. A group that PostgreSQL rolled
 * back (one member refused: a policy-less audit grant, a constraint; or a deadlock) is run again
 * member by member, each in its own transaction, so a member's failure costs its neighbours one
 * retry, never their work or a wrong answer.
 */
class GroupCommit {
  private readonly queue: Member[] = [];
  private inFlight = 0;

  constructor(
    private readonly pool: SqlPool,
    private readonly options: GroupCommitOptions,
    /** The pool's counts, kept across changes of the options. */
    private readonly counts: GroupCommitStats,
  ) {}

  submit(scope: Scope, statement: Statement): Promise<Row[]> {
    return new Promise((resolve, reject) => {
      const member = { scope, statement, resolve, reject };
      // Nobody waiting and CPU to spare: waiting for the transactions out would only add latency.
      if (this.queue.length === 0 && this.inFlight >= this.options.maxInFlight && !this.busy()) this.launch([member]);
      else {
        this.queue.push(member);
        this.pump();
      }
    });
  }

  private pump(): void {
    while (this.inFlight < this.options.maxInFlight && this.queue.length > 0) this.launch(this.queue.splice(0, this.options.maxMembers));
  }

  private launch(members: Member[]): void {
    this.inFlight++;
    let counted = true;
    const release = () => {
      if (!counted) return;
      counted = false;
      this.inFlight--;
      this.pump();
    };
    // One member waiting on a lock (a key rotation) must not hold every other request back.
    const stall = setTimeout(release, this.options.stallMs ?? GROUP_STALL_MS);
    stall.unref();
    void this.send(members).finally(() => {
      clearTimeout(stall);
      release();
    });
  }

  private utilisation = performance.eventLoopUtilization();
  private sampledAt = performance.now();
  private wasBusy = true;

  /** Whether the event loop was at least `busyThreshold` busy over the last sample (always, without a threshold). */
  private busy(): boolean {
    const threshold = this.options.busyThreshold;
    if (!threshold) return true;
    const now = performance.now();
    if (now - this.sampledAt >= BUSY_WINDOW_MS) {
      const current = performance.eventLoopUtilization();
      this.wasBusy = performance.eventLoopUtilization(current, this.utilisation).utilization >= threshold;
      this.utilisation = current;
      this.sampledAt = now;
    }
    return this.wasBusy;
  }

  private async send(members: Member[]): Promise<void> {
    this.counts.transactions++;
    this.counts.members += members.length;
    if (members.length === 1) return this.alone(members[0]!);
    let results: Row[][] | undefined;
    try {
      results = await this.pool.sharedTransaction(members);
    } catch (err) {
      for (const m of members) m.reject(err);
      return;
    }
    if (results) {
      members.forEach((m, i) => m.resolve(results[i]!));
      return;
    }
    this.counts.retried += members.length;
    await Promise.all(members.map((m) => this.alone(m)));
  }

  private alone(m: Member): Promise<void> {
    return this.pool.singleStatementInScope(m.scope, m.statement).then(m.resolve, m.reject);
  }
}

export class SqlPool {
  readonly pool: pg.Pool;
  readonly info: ConnectionInfo;
  /** Sees the text of every statement this pool sends (diagnostics and tests; never logged: texts hold no values). */
  onStatement: ((text: string) => void) | undefined;

  constructor(readonly options: PoolOptions) {
    const parsed = new pg.Client({ connectionString: options.url });
    this.info = { host: parsed.host, port: parsed.port, user: parsed.user ?? "", password: parsed.password ?? undefined, database: parsed.database ?? "" };
    this.pool = new pg.Pool({
      connectionString: options.url,
      application_name: options.applicationName,
      max: options.max,
      idleTimeoutMillis: options.idleTimeoutMs ?? POOL_IDLE_MS,
      connectionTimeoutMillis: options.acquireTimeoutMs ?? 5_000,
      statement_timeout: options.statementTimeoutMs,
      // A server that vanished without closing the connection (power, cable, a frozen VM) is noticed by TCP.
      keepAlive: true,
      pipeline: true,
      stream: coalescingSocket,
    } as pg.PoolConfig);
    // An idle client whose server went away emits 'error' on the pool; without a listener that
    // would end the process. The pool drops the client; the next request opens a fresh one.
    this.pool.on("error", () => {});
    // A connection lost while checked out (the server killed, a failover) emits 'error' on the
    // client, which the pool listens to only while the client is idle: unheard, it would end the
    // process. The statement in flight fails with it, and the pool drops the broken client on release.
    this.pool.on("connect", (client) => client.on("error", () => {}));
    this.setGroupCommit(options.groupCommit);
  }

  /** Runs `work` in a transaction under `scope`; commits when it resolves, rolls back when it throws. */
  async inScope<T>(scope: Scope, work: (tx: Tx) => Promise<T>): Promise<T> {
    return this.transactionWith([{ text: "BEGIN", values: [] }, scopeStatement(scope)], work);
  }

  /** A transaction without a row-level-security scope (appliance tables, advisory locks, migrations). */
  transaction<T>(work: (tx: Tx) => Promise<T>, opts: TransactionOptions = {}): Promise<T> {
    const modes = [opts.isolation ? `ISOLATION LEVEL ${opts.isolation}` : "", opts.readOnly ? "READ ONLY" : ""].filter(Boolean).join(" ");
    return this.transactionWith([{ text: modes ? `BEGIN ${modes}` : "BEGIN", values: [] }], work);
  }

  /** A pooled connection, within the acquire timeout and never while the circuit is open. */
  private async acquire(): Promise<pg.PoolClient> {
    const circuit = this.options.circuit;
    if (!circuit) return this.pool.connect();
    circuit.check();
    const pending = this.pool.connect();
    // A connection that arrives after its request was abandoned goes straight back, destroyed.
    return circuit.guard(
      pending,
      () =>
        void pending.then(
          (c) => c.release(new Error("abandoned")),
          () => {},
        ),
    );
  }

  /** `work` under the circuit (when there is one): abandoned at once if the database goes away. */
  private guarded<T>(work: Promise<T>, onAbandon?: () => void): Promise<T> {
    return this.options.circuit ? this.options.circuit.guard(work, onAbandon) : work;
  }

  /** A failure of a flight that carried a COMMIT: a connection-level one is a 503 whose outcome the detail admits. */
  private commitFailure(err: unknown): unknown {
    const circuit = this.options.circuit;
    if (!circuit || !isConnectionFailure(err)) return err;
    void circuit.probeNow();
    return new DatabaseUnavailable(circuit.options.retryAfterSeconds, "the database stopped answering while this change was being committed; read it back before trying again");
  }

  private async transactionWith<T>(opening: Statement[], work: (tx: Tx) => Promise<T>): Promise<T> {
    const client = await this.acquire();
    const tx = new PipelinedTx(client, opening, this.onStatement, this.options.commitTimeoutMs);
    try {
      let result: T;
      try {
        result = await this.guarded(work(tx), () => tx.abandon());
        await tx.commit().catch((err: unknown) => {
          throw this.commitFailure(err);
        });
      } catch (err) {
        await tx.rollback();
        throw err;
      }
      await tx.settle();
      tx.runAfterCommit();
      return result;
    } finally {
      client.release(tx.broken ?? false);
    }
  }

  /**
   * One statement in a scoped transaction of its own: `BEGIN`, the scope, the statement and
   * `COMMIT` go out in one flight and its rows come back. If the statement fails, PostgreSQL
   * answers the COMMIT with a ROLLBACK; the error is the statement's, with `step` 2.
   */
  async singleStatementInScope<T = Row>(scope: Scope, q: Query, values?: readonly unknown[]): Promise<T[]> {
    const client = await this.acquire();
    const steps = [{ text: "BEGIN", values: [] }, scopeStatement(scope), statementOf(q, values), { text: "COMMIT", values: [] }];
    let broken: Error | undefined;
    try {
      const outcomes = await this.flight(client, steps);
      const failed = outcomes.findIndex((o) => "err" in o);
      if (failed >= 0) {
        const err = (outcomes[failed] as { err: PgError }).err;
        if (!err.code || STALE.has(err.code)) broken = err;
        throw this.commitFailure(Object.assign(err, { step: failed }));
      }
      const commit = (outcomes[3] as { r: pg.QueryResult }).r;
      if (commit.command === "ROLLBACK") throw new TransactionRolledBack();
      return (outcomes[2] as { r: pg.QueryResult }).r.rows as T[];
    } finally {
      client.release(broken ?? false);
    }
  }

  /**
   * `singleStatementInScope`, except that under load the statement may share its transaction with
   * other requests' statements (group commit, `groupCommit`): one `BEGIN`, each member's scope and
   * statement, one `COMMIT` and one WAL flush for the lot. The caller gets exactly what it would
   * get alone: its rows only after the COMMIT that holds its work, or its own error, because a
   * group in which anything fails is rolled back whole and each member is then run again alone.
   */
  groupedStatementInScope<T = Row>(scope: Scope, q: Query): Promise<T[]> {
    const statement = statementOf(q);
    if (!this.groups) return this.singleStatementInScope<T>(scope, statement);
    if (scope.kind === "tenant" && !UUID.test(scope.tenantId)) return Promise.reject(new TypeError("a tenant scope needs a tenant UUID"));
    return this.groups.submit(scope, statement) as Promise<T[]>;
  }

  private groups: GroupCommit | undefined;

  /**
   * Group commit for `groupedStatementInScope`: at most `maxInFlight` transactions of grouped
   * statements at a time, each holding up to `maxMembers` statements; a statement that finds
   * fewer in flight goes out at once, alone. Undefined (or `maxMembers` 1): every statement alone.
   */
  setGroupCommit(options: GroupCommitOptions | undefined): void {
    this.groups = options && options.maxMembers > 1 ? new GroupCommit(this, options, this.groupCounts) : undefined;
  }

  private readonly groupCounts: GroupCommitStats = { transactions: 0, members: 0, retried: 0 };

  /** What group commit has sent so far (diagnostics, tests and benchmarks). */
  groupCommitStats(): GroupCommitStats {
    return { ...this.groupCounts };
  }

  /**
   * The statements of a group in one transaction on one connection (`GroupCommit`): each member's
   * rows in order, or `undefined` when PostgreSQL rolled the transaction back (a member failed, a
   * deadlock) and nothing of it took effect. A connection-level failure (outcome unknown) throws.
   */
  async sharedTransaction(members: readonly { scope: Scope; statement: Statement }[]): Promise<Row[][] | undefined> {
    const client = await this.acquire();
    const steps: Statement[] = [{ text: "BEGIN", values: [] }];
    const at: number[] = [];
    let scope: Scope | undefined;
    for (const m of members) {
      // The scope is set again only where it changes: set_config(..., true) holds to the end of the transaction.
      if (!scope || !sameScope(scope, m.scope)) steps.push(scopeStatement(m.scope));
      scope = m.scope;
      at.push(steps.length);
      steps.push(m.statement);
    }
    steps.push({ text: "COMMIT", values: [] });
    let broken: Error | undefined;
    try {
      const outcomes = await this.flight(client, steps);
      const failure = outcomes.find((o): o is { err: PgError } => "err" in o)?.err;
      if (failure && (!failure.code || STALE.has(failure.code))) broken = failure;
      // The connection failed: each member gets the 503 it would get alone (outcome unknown), never a second attempt.
      if (failure && (!sqlState(failure) || isConnectionFailure(failure))) throw this.commitFailure(failure);
      if (failure || (outcomes.at(-1) as { r: pg.QueryResult }).r.command === "ROLLBACK") return undefined;
      return at.map((i) => (outcomes[i] as { r: pg.QueryResult }).r.rows as Row[]);
    } finally {
      client.release(broken ?? false);
    }
  }

  /** `steps` written in one flight on `client` (the last is a COMMIT: bounded by the commit deadline, not abandoned by the circuit). */
  private flight(client: pg.PoolClient, steps: readonly Statement[]): Promise<({ r: pg.QueryResult } | { err: PgError })[]> {
    for (const s of steps) this.onStatement?.(s.text);
    const deadline = this.options.commitTimeoutMs ? { query_timeout: this.options.commitTimeoutMs } : {};
    return Promise.all(
      steps.map((s) =>
        (client.query({ ...configFor(client, s, true), ...deadline } as pg.QueryConfig) as Promise<pg.QueryResult>).then(
          (r) => ({ r }),
          (err: PgError) => ({ err }),
        ),
      ),
    );
  }

  /** A statement on its own, outside any transaction (autocommit: one statement, applied whole or not at all). */
  async rows<T = Row>(q: Query, values?: readonly unknown[]): Promise<T[]> {
    return (await this.autocommit(q, values)).rows as T[];
  }
  async one<T = Row>(q: Query, values?: readonly unknown[]): Promise<T | undefined> {
    return (await this.rows<T>(q, values))[0];
  }
  async exec(q: Query, values?: readonly unknown[]): Promise<number> {
    return (await this.autocommit(q, values)).rowCount ?? 0;
  }
  private autocommit(q: Query, values?: readonly unknown[]): Promise<pg.QueryResult> {
    const s = statementOf(q, values);
    this.onStatement?.(s.text);
    this.options.circuit?.check();
    return this.guarded(this.pool.query(s as pg.QueryConfig));
  }

  /** A URL for the same server and role, optionally another database. */
  url(database?: string): string {
    const u = new URL("postgres://localhost");
    const host = this.info.host;
    // A host that is a directory is a Unix socket (the embedded server): it travels as ?host=.
    if (host.startsWith("/")) u.searchParams.set("host", host);
    else u.hostname = host || "127.0.0.1";
    if (this.info.port) u.port = String(this.info.port);
    u.username = encodeURIComponent(this.info.user);
    if (this.info.password) u.password = encodeURIComponent(this.info.password);
    u.pathname = `/${database ?? this.info.database}`;
    return u.toString();
  }

  /**
   * A connection of its own, outside the pool and not pipelined: for COPY streams, cursors and
   * session-level advisory locks, which pipeline mode refuses or which must outlive a transaction.
   * The caller ends it.
   */
  async dedicatedClient(applicationName: string, database?: string): Promise<pg.Client> {
    const client = new pg.Client({
      connectionString: this.url(database),
      application_name: applicationName,
      statement_timeout: this.options.statementTimeoutMs,
    } as pg.ClientConfig);
    // A lost connection fails the statement in flight; unheard, its 'error' event would end the process.
    client.on("error", () => {});
    await client.connect();
    return client;
  }

  /** `work` on a dedicated client (see `dedicatedClient`), ended afterwards. */
  async withDedicatedClient<T>(applicationName: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
    const client = await this.dedicatedClient(applicationName);
    try {
      return await work(client);
    } finally {
      await client.end().catch(() => {});
    }
  }

  close(): Promise<void> {
    return this.pool.end();
  }
}

/** `db.inScope(scope, work)`, as a function (the shape every service calls). */
export function inScope<T>(db: SqlPool, scope: Scope, work: (tx: Tx) => Promise<T>): Promise<T> {
  return db.inScope(scope, work);
}
