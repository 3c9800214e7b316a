import pg from "pg";
import { Unavailable } from "../kernel/errors.js";

/**
 * The database circuit (docs/hardening.md, "Database outage"). Without it, a stopped PostgreSQL
 * turned every request into a 500 and a frozen one (SIGSTOP, a hung storage volume, a network
 * partition) held requests for half a minute until the pool gave up. With it:
 *
 * - a heartbeat (`SELECT 1` on a connection of its own) notices within `heartbeatMs +
 *   probeTimeoutMs` that the server no longer answers, and so does any request that meets a
 *   connection-level failure (it asks for a probe at once);
 * - while the circuit is open every request fails fast with 503 and `Retry-After`, and work that
 *   was waiting on the server is abandoned: its transaction never commits (the server rolls back an
 *   open transaction when its connection goes), so nothing is half-applied;
 * - the heartbeat keeps probing and closes the circuit on the first answer: the daemon recovers by
 *   itself within about a second of the database's return.
 *
 * A COMMIT already on the wire is not abandoned by the circuit (its outcome would be unknown); it
 * has a client-side deadline of its own (`database.commitTimeoutMs`).
 */
export class DatabaseUnavailable extends Unavailable {
  constructor(retryAfterSeconds: number, detail = "the database is not answering; the request changed nothing, try again shortly") {
    super(detail, { retryAfterSeconds });
  }
}

export type CircuitEvent = { state: "open"; reason: string } | { state: "closed"; downMs: number };

export type CircuitOptions = {
  /** Connection URL the heartbeat uses (the app role's). */
  url: string;
  /** How often the heartbeat asks while the circuit is closed. */
  heartbeatMs: number;
  /** How long a probe may take before the server counts as gone (also its connect timeout). */
  probeTimeoutMs: number;
  /** What Retry-After says while open. */
  retryAfterSeconds: number;
};

const CONNECTION_CLASSES = ["08", "57P01", "57P02", "57P03", "53300"];
const CONNECTION_MESSAGES =
  /terminated|ECONNREFUSED|ECONNRESET|ENOENT|EPIPE|ETIMEDOUT|EHOSTUNREACH|timeout exceeded when trying to connect|Query read timeout|Connection terminated|not queryable|socket/i;

/** Whether an error says the server could not be reached or went away (rather than refusing a statement). */
export function isConnectionFailure(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  // A socket call that failed (write EPIPE, read ECONNRESET): its code is an errno name, which can
  // look like a SQLSTATE (EPIPE is five capitals), so it is told apart by the failed call it names.
  if (typeof (err as NodeJS.ErrnoException).syscall === "string") return true;
  const code = (err as { code?: string }).code;
  if (code && CONNECTION_CLASSES.some((c) => code.startsWith(c))) return true;
  if (code && /^[0-9A-Z]{5}$/.test(code)) return false; // any other SQLSTATE: the server answered
  return CONNECTION_MESSAGES.test(err.message);
}

export class DatabaseCircuit {
  private open: { since: number; reason: string } | undefined;
  private readonly abandon = new Set<(err: Error) => void>();
  private timer: NodeJS.Timeout | undefined;
  private probing: Promise<boolean> | undefined;
  private probeClient: pg.Client | undefined;
  private stopped = false;
  private readonly listeners: ((e: CircuitEvent) => void)[] = [];

  constructor(readonly options: CircuitOptions) {}

  get isOpen(): boolean {
    return this.open !== undefined;
  }

  onChange(fn: (e: CircuitEvent) => void): void {
    this.listeners.push(fn);
  }

  unavailable(): DatabaseUnavailable {
    return new DatabaseUnavailable(this.options.retryAfterSeconds);
  }

  /** Throws at once while the circuit is open: no request waits on a server that is gone. */
  check(): void {
    if (this.open) throw this.unavailable();
  }

  /**
   * Waits for `work`, unless the circuit opens first: then the caller gets DatabaseUnavailable and
   * `onAbandon` runs (the caller makes sure the connection is not reused). A connection-level
   * failure of `work` becomes DatabaseUnavailable too, and asks for a probe.
   */
  async guard<T>(work: Promise<T>, onAbandon?: () => void): Promise<T> {
    if (this.open) {
      work.catch(() => {});
      onAbandon?.();
      throw this.unavailable();
    }
    let abandon: ((err: Error) => void) | undefined;
    const abandoned = new Promise<never>((_, reject) => {
      abandon = reject;
    });
    this.abandon.add(abandon!);
    try {
      return await Promise.race([work, abandoned]);
    } catch (err) {
      if (err instanceof DatabaseUnavailable) {
        onAbandon?.();
        // The abandoned work settles later (or never); its outcome is nobody's any more.
        work.catch(() => {});
        throw err;
      }
      throw this.translate(err);
    } finally {
      this.abandon.delete(abandon!);
    }
  }

  /** A connection-level failure becomes DatabaseUnavailable (and a probe is asked for); anything else passes. */
  translate(err: unknown): unknown {
    if (err instanceof DatabaseUnavailable || !isConnectionFailure(err)) return err;
    void this.probeNow();
    return this.unavailable();
  }

  /** Starts the heartbeat. */
  start(): void {
    this.stopped = false;
    this.schedule(this.options.heartbeatMs);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.probing?.catch(() => false);
    await this.probeClient?.end().catch(() => {});
    this.probeClient = undefined;
  }

  private schedule(ms: number) {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.probeNow(), ms);
    this.timer.unref();
  }

  /** One probe (joined if one is running); opens or closes the circuit on its outcome. */
  probeNow(): Promise<boolean> {
    if (this.probing) return this.probing;
    this.probing = this.probe().finally(() => {
      this.probing = undefined;
      // Closed: the steady heartbeat. Open: ask every 500 ms, so the return is noticed at once.
      this.schedule(this.open ? 500 : this.options.heartbeatMs);
    });
    return this.probing;
  }

  /**
   * A probe that timed out opens the circuit only when the next one, on a fresh connection, times
   * out too: one slow answer on a busy machine must not turn a healthy appliance into 503s. A
   * refused or dropped connection opens it at once.
   */
  private async probe(): Promise<boolean> {
    const first = await this.probeOnce();
    if (first === "ok") return (this.closeCircuit(), true);
    const outcome = first === "timeout" && !this.open ? await this.probeOnce() : first;
    if (outcome === "ok") return (this.closeCircuit(), true);
    this.openCircuit(this.lastFailure);
    return false;
  }

  private lastFailure = "";

  private async probeOnce(): Promise<"ok" | "timeout" | "refused"> {
    const timeout = this.options.probeTimeoutMs;
    let timer: NodeJS.Timeout | undefined;
    let timedOut = false;
    try {
      const client = this.probeClient ?? new pg.Client({ connectionString: this.options.url, connectionTimeoutMillis: timeout, application_name: "wardkeep-heartbeat" });
      if (!this.probeClient) {
        this.probeClient = client;
        client.on("error", () => {}); // a dropped idle connection: the next probe opens a new one
        await client.connect();
      }
      await Promise.race([
        client.query({ text: "SELECT 1", query_timeout: timeout } as pg.QueryConfig),
        new Promise((_, reject) => {
          timer = setTimeout(() => {
            timedOut = true;
            reject(new Error(`no answer within ${timeout} ms`));
          }, timeout);
        }),
      ]);
      return "ok";
    } catch (err) {
      // A frozen server leaves the query pending: drop that connection, never reuse it.
      const dead = this.probeClient;
      this.probeClient = undefined;
      void dead?.end().catch(() => {});
      const message = (err as Error).message;
      this.lastFailure = message.split("\n")[0] ?? "no answer";
      return timedOut || /timeout/i.test(message) ? "timeout" : "refused";
    } finally {
      clearTimeout(timer);
    }
  }

  private openCircuit(reason: string) {
    if (this.stopped) return;
    if (!this.open) {
      this.open = { since: Date.now(), reason };
      for (const fn of this.listeners) fn({ state: "open", reason });
    }
    const err = this.unavailable();
    for (const abandon of [...this.abandon]) abandon(err);
  }

  private closeCircuit() {
    if (!this.open) return;
    const downMs = Date.now() - this.open.since;
    this.open = undefined;
    for (const fn of this.listeners) fn({ state: "closed", downMs });
  }
}
