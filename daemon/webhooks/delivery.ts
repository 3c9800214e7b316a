import { randomUUID } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import https from "node:https";
import tls from "node:tls";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/sql.js";
import { AppError, Sealed } from "../kernel/errors.js";
import { recordEvent, SYSTEM_ACTOR } from "../audit/append.js";
import { openAlertsOf, raiseAlert, resolveAlert } from "../alerts/index.js";
import { allowListEntryFor, assertAddressLiteral, DestinationRefused, guardedLookup, parseDestination, readAllowList, type AllowListEntry } from "./destinations.js";
import type { SignatureScheme } from "./schema.js";
import { ed25519PrivateKey, openWebhookSecret, signV1, signV1a } from "./secrets.js";
import { onPublished } from "./wake.js";

/**
 * The outbound delivery worker (docs/webhooks.md, "Delivery"). Every replica runs one; each
 * claims due deliveries with FOR UPDATE SKIP LOCKED and a lease, so a delivery is sent by one
 * replica at a time and one that died mid-attempt is picked up again when its lease ends
 * (at-least-once: receivers deduplicate on `webhook-id`, as Standard Webhooks asks).
 *
 * An attempt's outcome:
 * - 2xx: delivered;
 * - 410 Gone: the delivery goes to the dead-letter list and the endpoint is disabled;
 * - a destination the allow-list rules refuse: dead-letter list at once (retrying cannot help);
 * - anything else (3xx, which is never followed, 4xx, 5xx, timeout, connection failure): retried
 *   after `retryDelayMs(attempt)`, or later if the answer's Retry-After asks, until
 *   `webhooks.maxAttempts`; then the dead-letter list.
 */

type Claimed = {
  id: string;
  attempts: number;
  tenant_id: string | null;
  message_id: string;
  body: string;
  endpoint_id: string;
  url: string;
  secret: Buffer;
  secret_version: number;
  signature_scheme: SignatureScheme;
  previous_secret: Buffer | null;
  previous_secret_version: number | null;
  previous_secret_expires_at: Date | null;
  previous_signature_scheme: SignatureScheme | null;
};

/** Signs `{id}.{timestamp}.{body}` with one secret or key, answering `v1,<sig>` or `v1a,<sig>`. */
type Signer = (messageId: string, timestampSeconds: number, body: string) => string;

type Outcome = "delivered" | "failed" | "gone" | "refused";

type AttemptResult = {
  deliveryId: string;
  endpointId: string;
  tenantId: string | null;
  attempt: number;
  startedAt: Date;
  durationMs: number;
  statusCode: number | null;
  outcome: Outcome;
  error: string | null;
  nextAttemptAt: Date | null;
};

/** The alert a dead-lettered delivery raises, one per endpoint (docs/webhooks.md). */
export const DEAD_LETTER_ALERT = "webhook.dead_letter";

/** Retry-After may ask for at most this (a receiver cannot park a delivery for ever). */
const RETRY_AFTER_MAX_MS = 24 * 3_600_000;
/** Opened signers kept per worker; past this many (endpoints × versions) the cache starts again. */
const SIGNER_CACHE_MAX = 10_000;
/** Bytes of a response body read (and thrown away) so the connection can be reused. */
const RESPONSE_READ_LIMIT = 64 * 1024;

/** Wait after failed attempt `n` (1-based): retryBaseMs × 4^(n−1), at most retryMaxMs. */
export function retryDelayMs(ctx: ApplianceContext, attempt: number): number {
  const { retryBaseMs, retryMaxMs } = ctx.config.webhooks;
  return Math.min(retryMaxMs, retryBaseMs * 4 ** (attempt - 1));
}

/** Retry-After as delay-seconds or an HTTP date (RFC 9110 §10.2.3), in milliseconds from `now`. */
export function parseRetryAfter(value: string | undefined, now: Date): number | undefined {
  if (!value) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Math.min(Number(v) * 1000, RETRY_AFTER_MAX_MS);
  const at = Date.parse(v);
  if (Number.isNaN(at)) return undefined;
  return Math.min(Math.max(0, at - now.getTime()), RETRY_AFTER_MAX_MS);
}

type Answer = { statusCode: number; retryAfter: string | undefined };

export class DeliveryWorker {
  private readonly httpAgent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  private readonly httpsAgent: https.Agent;
  private inFlight = 0;
  /**
   * Claimed deliveries waiting for a free slot: the worker claims up to one batch ahead, so the
   * next batch's claim (a database round trip) overlaps the current batch's requests instead of
   * leaving the slots empty while it runs (docs/webhooks.md, Performance). A waiting delivery
   * starts within ceil(batchSize / concurrency) request timeouts, inside its lease.
   */
  private readonly ready: { row: Claimed; allowList: AllowListEntry[] }[] = [];
  /** This worker's name on its claims (`claimed_by`): claims it alone holds for an endpoint may run ahead of the limit. */
  private readonly workerId = randomUUID();
  /** Requests in flight per endpoint from this worker: at most webhooks.perEndpointConcurrency each. */
  private readonly endpointInFlight = new Map<string, number>();
  private readonly results: AttemptResult[] = [];
  private flushing: Promise<void> | undefined;
  private signal: (() => void) | undefined;
  private woken = false;
  private stopped = false;
  private loop: Promise<void> | undefined;
  private allowList: { at: number; list: AllowListEntry[] } | undefined;
  /** Endpoints with an open dead-letter alert (any replica's), re-read at most every 5 s. */
  private deadLetterAlerts: { at: number; endpoints: Set<string> } | undefined;
  private readonly idle = new Set<() => void>();
  /** Opened signing secrets by scheme, endpoint and version (see `signer`). */
  private readonly signers = new Map<string, Signer>();
  private readonly unsubscribe: () => void;

  constructor(private readonly ctx: ApplianceContext) {
    const extraCa = ctx.config.webhooks.caFile ? fs.readFileSync(ctx.config.webhooks.caFile, "utf8") : undefined;
    this.httpsAgent = new https.Agent({ keepAlive: true, maxSockets: 256, ...(extraCa ? { ca: [...tls.rootCertificates, extraCa] } : {}) });
    this.unsubscribe = onPublished(ctx, () => this.wake());
  }

  start(): this {
    this.loop ??= this.run();
    return this;
  }

  wake(): void {
    this.woken = true;
    this.signal?.();
  }

  /** Requests in flight and claimed deliveries waiting for a slot, now (the bench samples it). */
  load(): { inFlight: number; waiting: number } {
    return { inFlight: this.inFlight, waiting: this.ready.length };
  }

  /** Resolves when nothing is in flight, waiting to be sent or waiting to be recorded (tests, the bench). */
  settled(): Promise<void> {
    if (this.inFlight === 0 && this.ready.length === 0 && this.results.length === 0 && !this.flushing) return Promise.resolve();
    return new Promise((resolve) => this.idle.add(resolve));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.unsubscribe();
    this.signal?.();
    await this.loop;
    // Claimed deliveries still waiting are sent before the worker stops (their claims would otherwise hold them until the lease ends).
    while (this.inFlight > 0 || this.ready.length > 0 || this.results.length > 0 || this.flushing) await this.settled();
    this.signers.clear();
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
  }

  private async run(): Promise<void> {
    const { pollIntervalMs, concurrency, batchSize } = this.ctx.config.webhooks;
    while (!this.stopped) {
      // Claimed and not finished: at most the slots and one batch waiting for them.
      const want = Math.min(concurrency + batchSize - this.inFlight - this.ready.length, batchSize);
      let claimed = 0;
      if (this.ctx.rootKey.isSealed) this.signers.clear();
      if (want > 0 && !this.ctx.rootKey.isSealed) {
        try {
          claimed = await this.claimAndSend(want);
        } catch (err) {
          this.ctx.log.warn(`webhooks: claiming deliveries failed: ${(err as Error).message}`);
        }
      }
      // A full claim means more may be due: go again at once while the window has room (or when it
      // has room again). Otherwise sleep until an event is published here, the window drains, or the next poll.
      if (claimed > 0 && claimed === want && this.inFlight + this.ready.length < concurrency + batchSize) continue;
      await this.sleep(pollIntervalMs);
    }
  }

  private sleep(ms: number): Promise<void> {
    if (this.woken) {
      this.woken = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.signal = undefined;
        this.woken = false;
        resolve();
      };
      const timer = setTimeout(done, ms);
      timer.unref();
      this.signal = done;
    });
  }

  private async currentAllowList(fresh = false): Promise<AllowListEntry[]> {
    // Re-read at most every 2 s: a host removed from the list stops receiving within that time
    // (one just approved is seen at once: a miss re-reads before refusing).
    if (!fresh && this.allowList && Date.now() - this.allowList.at < 2000) return this.allowList.list;
    const list = await inScope(this.ctx.db.app, { kind: "appliance" }, (tx) => readAllowList(tx));
    this.allowList = { at: Date.now(), list };
    return list;
  }

  /**
   * Claims up to `limit` due deliveries, oldest first within each endpoint and across them, within
   * the per-endpoint limit `webhooks.perEndpointConcurrency` (P) counted over every worker's claims
   * (`claimed_until` and `claimed_by` are in the database):
   * - a worker that alone holds an endpoint's claims may hold up to P + `perEndpointClaimAhead`:
   *   P in flight and the next ones claimed ahead, so a slot that frees is refilled at once,
   *   without a round trip (it sends at most P at a time to the endpoint; `pump`);
   * - when other workers hold claims for the endpoint, everyone's claims together stay within P,
   *   and a worker takes none while another holds more than P.
   * So at most P requests are in flight to an endpoint over all replicas (docs/webhooks.md).
   * Two statements in one transaction, sent in one
   * flight with the opening (the COMMIT is a second round trip): the first locks the endpoints that
   * have due deliveries (`FOR NO KEY UPDATE SKIP LOCKED`: one claimer per endpoint at a time, an
   * endpoint another replica is claiming for is left to it) and hands their ids to the second in a
   * transaction-local setting; the second, whose snapshot is taken once those locks are held, so
   * it sees every claim committed before, counts each endpoint's claimed deliveries and takes only
   * what fits.
   */
  private async claimAndSend(limit: number): Promise<number> {
    const now = this.ctx.clock.now();
    // The lease covers the wait for a slot (a batch behind `concurrency` slots starts within
    // ceil(batchSize / concurrency) request timeouts, a delivery claimed ahead for its endpoint's
    // slot within ceil(perEndpointClaimAhead / perEndpointConcurrency) more) and the attempt itself, plus 30 s.
    const { timeoutMs, batchSize, concurrency, perEndpointConcurrency, perEndpointClaimAhead } = this.ctx.config.webhooks;
    const lease = new Date(now.getTime() + timeoutMs * (Math.ceil(batchSize / concurrency) + Math.ceil(perEndpointClaimAhead / perEndpointConcurrency) + 1) + 30_000);
    const due = "d2.status = 'pending' AND d2.next_attempt_at <= $1 AND (d2.claimed_until IS NULL OR d2.claimed_until <= $1)";
    const rows = await inScope(this.ctx.db.app, { kind: "appliance" }, async (tx) => {
      const locked = tx.exec(
        `SELECT set_config('wardkeep.claim_endpoints', coalesce(array_agg(id)::text, '{}'), true)
           FROM (SELECT e2.id FROM webhook_endpoints e2
                  WHERE e2.status = 'enabled' AND EXISTS (SELECT 1 FROM webhook_deliveries d2 WHERE d2.endpoint_id = e2.id AND ${due})
                  FOR NO KEY UPDATE OF e2 SKIP LOCKED) locked`,
        [now],
      );
      const claimed = tx.rows<Claimed>(
        `UPDATE webhook_deliveries d SET claimed_until = $2, claimed_by = $5
             FROM (SELECT c.id FROM unnest(current_setting('wardkeep.claim_endpoints')::uuid[]) AS ep(id)
                     CROSS JOIN LATERAL (SELECT count(*) FILTER (WHERE x.claimed_by = $5)::int AS mine,
                                                count(*) FILTER (WHERE x.claimed_by IS DISTINCT FROM $5)::int AS others
                                           FROM webhook_deliveries x
                                          WHERE x.endpoint_id = ep.id AND x.status = 'pending' AND x.claimed_until > $1) busy
                     CROSS JOIN LATERAL (SELECT d2.id, d2.next_attempt_at FROM webhook_deliveries d2 WHERE d2.endpoint_id = ep.id AND ${due}
                                          ORDER BY d2.next_attempt_at
                                          LIMIT greatest(CASE WHEN busy.others = 0 THEN $4::int + $6::int ELSE $4::int - busy.others END - busy.mine, 0)) c
                    ORDER BY c.next_attempt_at LIMIT $3) c,
                  webhook_messages m, webhook_endpoints e
            WHERE d.id = c.id AND d.status = 'pending' AND (d.claimed_until IS NULL OR d.claimed_until <= $1) AND m.id = d.message_id AND e.id = d.endpoint_id
          RETURNING d.id, d.attempts, d.tenant_id, m.id AS message_id, m.body, e.id AS endpoint_id, e.url, e.secret, e.secret_version,
                    e.signature_scheme, e.previous_secret, e.previous_secret_version, e.previous_secret_expires_at, e.previous_signature_scheme`,
        [now, lease, limit, perEndpointConcurrency, this.workerId, perEndpointClaimAhead],
      );
      // Both are in flight already (pipelined); the first one's failure is the one reported.
      return (await Promise.all([locked, claimed]))[1];
    });
    if (rows.length === 0) return 0;
    const allowList = await this.currentAllowList();
    for (const row of rows) this.ready.push({ row, allowList });
    this.pump();
    return rows.length;
  }

  /**
   * Starts waiting deliveries, oldest first, while a slot is free: at most `webhooks.concurrency`
   * in all and `webhooks.perEndpointConcurrency` per endpoint (a delivery claimed ahead waits for
   * its endpoint's slot; those of other endpoints go past it).
   */
  private pump(): void {
    const { concurrency, perEndpointConcurrency } = this.ctx.config.webhooks;
    for (let i = 0; this.inFlight < concurrency && i < this.ready.length;) {
      const { row, allowList } = this.ready[i]!;
      const busy = this.endpointInFlight.get(row.endpoint_id) ?? 0;
      if (busy >= perEndpointConcurrency) {
        i++;
        continue;
      }
      this.ready.splice(i, 1);
      this.inFlight++;
      this.endpointInFlight.set(row.endpoint_id, busy + 1);
      void this.attempt(row, allowList).then((result) => this.finished(result));
    }
  }

  /** The secrets that sign now: the current one, and the previous one during a rotation's overlap (either may be `v1` or `v1a`). */
  private signingSecrets(row: Claimed, now: Date): Signer[] {
    const signers = [this.signer(row.signature_scheme, row.secret, row.endpoint_id, row.secret_version)];
    if (row.previous_secret && row.previous_secret_version && row.previous_secret_expires_at && row.previous_secret_expires_at > now) {
      signers.push(this.signer(row.previous_signature_scheme ?? "v1", row.previous_secret, row.endpoint_id, row.previous_secret_version));
    }
    return signers;
  }

  /**
   * The signer of one sealed secret, opened once per worker: a sealed secret is fixed for its
   * (endpoint, version) pair (a rotation makes a new version), so the cache never serves a stale
   * one. Opening costs an HKDF and an AES-GCM unwrap, and for Ed25519 a PKCS#8 parse that costs
   * more than the signature itself (docs/webhooks.md, Performance). Emptied when the appliance is
   * sealed, so a sealed appliance holds no opened secret.
   */
  private signer(scheme: SignatureScheme, sealed: Buffer, endpointId: string, version: number): Signer {
    // A sealed appliance signs nothing, not even a delivery claimed before the seal with a signer already open.
    if (this.ctx.rootKey.isSealed) {
      this.signers.clear();
      throw new Sealed("the appliance is sealed; deliveries are signed again once it is unsealed");
    }
    const key = `${scheme}:${endpointId}:${version}`;
    let signer = this.signers.get(key);
    if (signer) return signer;
    if (scheme === "v1a") {
      const der = openWebhookSecret(this.ctx, sealed, { kind: "endpoint_ed25519", id: endpointId, version });
      const privateKey = ed25519PrivateKey(der);
      der.fill(0);
      signer = (id, ts, body) => signV1a(privateKey, id, ts, body);
    } else {
      const secret = openWebhookSecret(this.ctx, sealed, { kind: "endpoint", id: endpointId, version });
      signer = (id, ts, body) => signV1(secret, id, ts, body);
    }
    if (this.signers.size >= SIGNER_CACHE_MAX) this.signers.clear();
    this.signers.set(key, signer);
    return signer;
  }

  private async attempt(row: Claimed, allowList: AllowListEntry[]): Promise<AttemptResult> {
    const attempt = row.attempts + 1;
    const startedAt = this.ctx.clock.now();
    const t0 = performance.now();
    const result = (outcome: Outcome, statusCode: number | null, error: string | null, retryAfterMs?: number): AttemptResult => {
      const max = this.ctx.config.webhooks.maxAttempts;
      const retry = outcome === "failed" && attempt < max;
      const delay = retry ? Math.max(retryDelayMs(this.ctx, attempt), retryAfterMs ?? 0) : 0;
      return {
        deliveryId: row.id,
        endpointId: row.endpoint_id,
        tenantId: row.tenant_id,
        attempt,
        startedAt,
        durationMs: Math.round(performance.now() - t0),
        statusCode,
        outcome,
        error: error?.slice(0, 300) ?? null,
        nextAttemptAt: retry ? new Date(this.ctx.clock.now().getTime() + delay) : null,
      };
    };
    try {
      const dest = parseDestination(this.ctx, row.url);
      const entry = allowListEntryFor(allowList, dest.host, dest.port) ?? allowListEntryFor(await this.currentAllowList(true), dest.host, dest.port);
      if (!entry) throw new DestinationRefused(`${dest.host}:${dest.port} is no longer on the allow-list`);
      assertAddressLiteral(dest.host, entry.allowPrivate);
      const timestamp = Math.floor(this.ctx.clock.now().getTime() / 1000);
      const signature = this.signingSecrets(row, startedAt)
        .map((sign) => sign(row.message_id, timestamp, row.body))
        .join(" ");
      const answer = await this.post(
        dest.url,
        dest.secure,
        entry.allowPrivate,
        {
          "content-type": "application/json",
          "user-agent": "Wardkeep-Webhooks/1",
          "webhook-id": row.message_id,
          "webhook-timestamp": String(timestamp),
          "webhook-signature": signature,
          "content-length": String(Buffer.byteLength(row.body)),
        },
        row.body,
      );
      const code = answer.statusCode;
      if (code >= 200 && code < 300) return result("delivered", code, null);
      if (code === 410) return result("gone", code, "the endpoint answered 410 Gone; it was disabled");
      const retryAfterMs = parseRetryAfter(answer.retryAfter, this.ctx.clock.now());
      if (code >= 300 && code < 400) return result("failed", code, `redirect (HTTP ${code}) not followed`, retryAfterMs);
      return result("failed", code, `HTTP ${code}`, retryAfterMs);
    } catch (err) {
      if (err instanceof DestinationRefused) return result("refused", null, `refused: ${err.message}`);
      if (err instanceof AppError) return result("failed", null, err.detail); // sealed while the attempt was prepared
      const e = err as NodeJS.ErrnoException;
      if (e.name === "TimeoutError" || e.name === "AbortError") return result("failed", null, `no answer within ${this.ctx.config.webhooks.timeoutMs} ms`);
      if (e.cause instanceof DestinationRefused) return result("refused", null, `refused: ${e.cause.message}`);
      return result("failed", null, e.code ? `connection failed (${e.code})` : "connection failed");
    }
  }

  private post(url: URL, secure: boolean, allowPrivate: boolean, headers: Record<string, string>, body: string): Promise<Answer> {
    return new Promise<Answer>((resolve, reject) => {
      const req = (secure ? https : http).request(url, {
        method: "POST",
        headers,
        agent: secure ? this.httpsAgent : this.httpAgent,
        lookup: guardedLookup(allowPrivate) as unknown as http.RequestOptions["lookup"],
        signal: AbortSignal.timeout(this.ctx.config.webhooks.timeoutMs),
      });
      req.on("error", reject);
      req.on("response", (res) => {
        let read = 0;
        res.on("data", (chunk: Buffer) => {
          read += chunk.length;
          if (read > RESPONSE_READ_LIMIT) res.destroy();
        });
        const answer = { statusCode: res.statusCode ?? 0, retryAfter: res.headers["retry-after"] };
        res.on("end", () => resolve(answer));
        res.on("close", () => resolve(answer));
        res.on("error", () => resolve(answer));
      });
      req.end(body);
    });
  }

  private finished(result: AttemptResult): void {
    this.inFlight--;
    const busy = (this.endpointInFlight.get(result.endpointId) ?? 1) - 1;
    if (busy > 0) this.endpointInFlight.set(result.endpointId, busy);
    else this.endpointInFlight.delete(result.endpointId);
    this.results.push(result);
    this.pump();
    // The next claim follows the flush (see `flush`): before the attempt is recorded its claim
    // still counts against the endpoint's limit, and one claim per finished delivery would cost a
    // round trip each (docs/webhooks.md, Performance).
    void this.flush();
  }

  /** Records finished attempts in one statement (the delivery's new state and its log row), serially. */
  private flush(): Promise<void> {
    if (this.flushing) return this.flushing;
    this.flushing = (async () => {
      while (this.results.length > 0) {
        const batch = this.results.splice(0, this.results.length);
        try {
          await this.record(batch);
          // Recorded, the endpoints' claims are released: a claim now may take more of their deliveries.
          this.wake();
        } catch (err) {
          // The lease runs out and the deliveries are attempted again: at-least-once, never lost.
          this.ctx.log.warn(`webhooks: recording ${batch.length} attempt(s) failed: ${(err as Error).message}`);
        }
        // Recorded: an alert that cannot be raised now is raised by the next dead letter (the log says why).
        await this.alertOnDeadLetters(batch).catch((err: Error) => this.ctx.log.warn(`webhooks: dead-letter alert: ${err.message}`));
      }
    })().finally(() => {
      this.flushing = undefined;
      if (this.inFlight === 0 && this.ready.length === 0 && this.results.length === 0) {
        for (const resolve of this.idle) resolve();
        this.idle.clear();
      } else if (this.results.length > 0) void this.flush();
    });
    return this.flushing;
  }

  /**
   * A delivery that went to the dead-letter list raises `webhook.dead_letter` for its endpoint
   * (ids and counts only); the alert resolves when a delivery to the endpoint succeeds again and
   * no dead letter is left (replayed or removed).
   */
  private async alertOnDeadLetters(batch: AttemptResult[]): Promise<void> {
    const dead = new Map(batch.filter((r) => r.outcome !== "delivered" && r.nextAttemptAt === null).map((r) => [r.endpointId, r]));
    const delivered = new Map(batch.filter((r) => r.outcome === "delivered" && !dead.has(r.endpointId)).map((r) => [r.endpointId, r]));
    if (dead.size === 0 && delivered.size === 0) return;
    if (delivered.size > 0 && (!this.deadLetterAlerts || Date.now() - this.deadLetterAlerts.at > 5000)) {
      const open = await openAlertsOf(this.ctx, [DEAD_LETTER_ALERT]);
      this.deadLetterAlerts = { at: Date.now(), endpoints: new Set(open.map((a) => a.key ?? "")) };
    }
    const check = [...dead.values(), ...[...delivered.values()].filter((r) => this.deadLetterAlerts?.endpoints.has(r.endpointId))];
    if (check.length === 0) return;
    const counts = await inScope(this.ctx.db.app, { kind: "appliance" }, (tx) =>
      tx.rows<{ endpoint_id: string; n: number }>(
        "SELECT endpoint_id::text, count(*)::int AS n FROM webhook_deliveries WHERE status = 'dead' AND endpoint_id = ANY($1::uuid[]) GROUP BY endpoint_id",
        [check.map((r) => r.endpointId)],
      ),
    );
    const deadCount = new Map(counts.map((c) => [c.endpoint_id, c.n]));
    for (const r of check) {
      const n = deadCount.get(r.endpointId) ?? 0;
      if (n > 0 && dead.has(r.endpointId)) {
        await raiseAlert(this.ctx, {
          kind: DEAD_LETTER_ALERT,
          severity: "warning",
          key: r.endpointId,
          tenantId: r.tenantId,
          summary: `${n} webhook message(s) to endpoint ${r.endpointId} are in the dead-letter list (last: ${r.outcome === "gone" ? "410 Gone" : (r.error ?? r.outcome)}); replay them from the Webhooks page once the receiver is back`,
          details: { endpointId: r.endpointId, deadLetters: n },
        });
        this.deadLetterAlerts?.endpoints.add(r.endpointId);
      } else if (n === 0) {
        await resolveAlert(this.ctx, DEAD_LETTER_ALERT, r.endpointId, { tenantId: r.tenantId });
        this.deadLetterAlerts?.endpoints.delete(r.endpointId);
      }
    }
  }

  private async record(batch: AttemptResult[]): Promise<void> {
    const now = this.ctx.clock.now();
    const recordSql = `WITH r AS (
           SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::int[], $5::int[], $6::text[], $7::timestamptz[], $8::timestamptz[])
             AS r(id, attempt, outcome, status_code, duration_ms, error, next_at, started_at)
         ), upd AS (
           UPDATE webhook_deliveries d SET
             attempts = r.attempt,
             status = CASE WHEN r.outcome = 'delivered' THEN 'delivered' WHEN r.next_at IS NULL THEN 'dead' ELSE 'pending' END,
             next_attempt_at = r.next_at,
             claimed_until = NULL,
             claimed_by = NULL,
             last_status_code = r.status_code,
             last_error = r.error,
             dead_reason = CASE WHEN r.outcome = 'delivered' OR r.next_at IS NOT NULL THEN NULL
                                WHEN r.outcome = 'gone' THEN 'gone' WHEN r.outcome = 'refused' THEN 'destination_refused' ELSE 'exhausted' END,
             finished_at = CASE WHEN r.next_at IS NULL THEN $9::timestamptz END
           FROM r WHERE d.id = r.id AND d.status = 'pending'
           RETURNING d.id, d.tenant_id
         )
         INSERT INTO webhook_attempts (delivery_id, attempt, tenant_id, started_at, duration_ms, status_code, outcome, error, next_attempt_at)
         SELECT r.id, r.attempt, upd.tenant_id, r.started_at, r.duration_ms, r.status_code, r.outcome, r.error, r.next_at FROM r JOIN upd ON upd.id = r.id
         ON CONFLICT DO NOTHING`;
    const values = [
      batch.map((r) => r.deliveryId),
      batch.map((r) => r.attempt),
      batch.map((r) => r.outcome),
      batch.map((r) => r.statusCode),
      batch.map((r) => r.durationMs),
      batch.map((r) => r.error),
      batch.map((r) => r.nextAttemptAt),
      batch.map((r) => r.startedAt),
      now,
    ];
    const gone = [...new Set(batch.filter((r) => r.outcome === "gone").map((r) => r.endpointId))];
    // The usual batch (nothing answered 410) is one statement in one flight; disabling an endpoint takes a transaction.
    if (gone.length === 0) {
      await this.ctx.db.app.singleStatementInScope({ kind: "appliance" }, recordSql, values);
      return;
    }
    await inScope(this.ctx.db.app, { kind: "appliance" }, async (tx) => {
      await tx.exec(recordSql, values);
      const disabled = await tx.rows<{ id: string; tenant_id: string | null }>(
        "UPDATE webhook_endpoints SET status = 'disabled', disabled_reason = 'gone', disabled_at = $2, updated_at = $2 WHERE id = ANY($1::uuid[]) AND status = 'enabled' RETURNING id, tenant_id",
        [gone, now],
      );
      for (const e of disabled) {
        await recordEvent(
          this.ctx,
          tx,
          SYSTEM_ACTOR,
          { action: "webhook.endpoint.disable", resourceType: "webhook_endpoint", resourceId: e.id, tenantId: e.tenant_id, outcome: "success", reason: "410 gone" },
          null,
        );
      }
    });
  }
}
