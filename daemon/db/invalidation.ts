import pg from "pg";

/**
 * Cross-replica cache invalidation through PostgreSQL LISTEN/NOTIFY (docs/scale-out.md).
 *
 * A few answers are kept in each daemon's memory because asking PostgreSQL on every request
 * costs a round trip (resolved API tokens, unwrapped data keys). Whatever changes what such an
 * answer depends on (a token revoked, an account deactivated, a tenant suspended, a key destroyed)
 * fires a trigger (migration 0070) that NOTIFYs in the same transaction: PostgreSQL delivers it
 * only when that transaction commits, to every listening daemon. So a change made through any
 * replica, the CLI or SQL takes effect on all of them within one notification's latency, not
 * after the cache's time limit.
 *
 * Each daemon keeps one dedicated connection LISTENing. While that connection is down a
 * notification can be missed: every cache then falls back to its own time limit, and when the
 * listener is back it asks every subscriber to drop everything (a resync), since it cannot know
 * what it missed.
 */

export const INVALIDATION_CHANNEL = "wardkeep_invalidate";

/** What a cache subscribes to; migration 0070 says which changes publish which topic. */
export type InvalidationTopic = "api-tokens" | "data-keys";

/** A notification's payload: `ids` narrows it (for example the data key ids destroyed); none means "all". */
type Message = { topic: InvalidationTopic; ids: string[] };

type Handler = (ids: string[]) => void;
type BusLog = { info(message: string, meta?: Record<string, unknown>): void; warn(message: string, meta?: Record<string, unknown>): void };

const RECONNECT_FIRST_MS = 250;
const RECONNECT_MAX_MS = 5_000;

/**
 * One daemon's listener. Subscribers register at any time; `start()` (the appliance does it once
 * it serves) opens the LISTEN connection and keeps it open, reconnecting with backoff.
 * Contexts that never start it (CLI commands) still publish: the triggers do, in their transactions.
 */
export class InvalidationBus {
  private readonly handlers = new Map<InvalidationTopic, Set<Handler>>();
  private client: pg.Client | undefined;
  private started = false;
  private closed = false;
  private everConnected = false;
  private retryMs = RECONNECT_FIRST_MS;
  private retryTimer: NodeJS.Timeout | undefined;
  private log: BusLog | undefined;
  private connected = false;
  private lostAt: number | undefined;

  constructor(private readonly url: string) {}

  /** True while the LISTEN connection is open, so notifications reach this daemon. */
  get listening(): boolean {
    return this.connected;
  }

  /**
   * Calls `handler` with the ids of each invalidation of `topic`, and with `[]` ("drop
   * everything") after the listener was away. Returns the unsubscribe function.
   */
  subscribe(topic: InvalidationTopic, handler: Handler): () => void {
    let set = this.handlers.get(topic);
    if (!set) this.handlers.set(topic, (set = new Set()));
    set.add(handler);
    return () => set.delete(handler);
  }

  start(log: BusLog): void {
    if (this.started || this.closed) return;
    this.started = true;
    this.log = log;
    void this.connect();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retryTimer);
    const client = this.client;
    this.client = undefined;
    this.connected = false;
    await client?.end().catch(() => undefined);
  }

  private async connect(): Promise<void> {
    if (this.closed) return;
    const client = new pg.Client({ connectionString: this.url, application_name: "wardkeep-invalidation", keepAlive: true });
    // A broken connection (server restart, failover, network) emits 'error' and then 'end'.
    client.on("error", () => this.lost(client));
    client.on("end", () => this.lost(client));
    client.on("notification", (n) => {
      if (n.channel === INVALIDATION_CHANNEL && n.payload) this.deliver(n.payload);
    });
    this.client = client;
    try {
      await client.connect();
      await client.query(`LISTEN ${INVALIDATION_CHANNEL}`);
    } catch {
      this.lost(client);
      return;
    }
    if (this.closed || this.client !== client) {
      await client.end().catch(() => undefined);
      return;
    }
    this.connected = true;
    this.retryMs = RECONNECT_FIRST_MS;
    if (this.everConnected) {
      // Anything may have changed while no notification could arrive.
      this.resync();
      this.log?.info("cache invalidation listener reconnected; caches dropped", { downMs: this.lostAt ? Date.now() - this.lostAt : undefined });
    }
    this.everConnected = true;
    this.lostAt = undefined;
  }

  private lost(client: pg.Client) {
    if (this.client !== client) return;
    this.client = undefined;
    const wasConnected = this.connected;
    this.connected = false;
    client.end().catch(() => undefined);
    if (this.closed) return;
    if (wasConnected) {
      this.lostAt = Date.now();
      this.log?.warn("cache invalidation listener lost its database connection; caches fall back to their time limits until it is back");
    }
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => void this.connect(), this.retryMs);
    this.retryTimer.unref();
    this.retryMs = Math.min(this.retryMs * 2, RECONNECT_MAX_MS);
  }

  private deliver(payload: string) {
    let message: Message;
    try {
      message = JSON.parse(payload) as Message;
    } catch {
      return;
    }
    for (const handler of this.handlers.get(message.topic) ?? []) this.call(handler, Array.isArray(message.ids) ? message.ids.map(String) : []);
  }

  private resync() {
    for (const set of this.handlers.values()) for (const handler of set) this.call(handler, []);
  }

  private call(handler: Handler, ids: string[]) {
    try {
      handler(ids);
    } catch (err) {
      this.log?.warn(`cache invalidation handler failed: ${(err as Error).message}`);
    }
  }
}
