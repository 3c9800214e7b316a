import fs from "node:fs";
import os from "node:os";
import tls from "node:tls";
import pg from "pg";
import { Counter, Gauge } from "prom-client";
import { raiseAlert, resolveAlert } from "../alerts/index.js";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/sql.js";
import { octetFrame, printable, sdEscape, syslogTlsOptions } from "../log/syslog.js";
import { parseCanonical } from "./canonical.js";
import { onAuditChained } from "./chainer.js";

/**
 * Optional SIEM forwarding (`audit.siem`): every chained event, as an RFC 5424 syslog message over
 * TLS with RFC 5425 octet-counting framing. Ids only: `reason` and `user_agent` never leave the
 * appliance this way. SIEM is a copy — the chain is the record — so a collector that is down never
 * blocks requests.
 *
 * Nothing is skipped: the forwarder reads the chain itself from a durable cursor
 * (`audit_siem_cursor`, the last sequence the collector's TLS socket accepted) and moves the
 * cursor only after the socket has taken the frames, so after a collector outage, a restart or a
 * crash it resends from there, in order, however long it was away. With several replicas, only
 * the one holding the forwarder's advisory lock (a session lock on its own connection: PostgreSQL
 * drops it when that replica dies, and another takes over) connects and sends, so each event goes
 * out once and in sequence order, whichever replica chained it.
 *
 * Limit (RFC 5425 has no application acknowledgement): frames the kernel accepted but the
 * collector never read when its connection broke are lost to it; frames written before a crash but
 * before the cursor moved are sent again (the `seq` SD-PARAM lets the SIEM drop duplicates).
 */
const BATCH = 500;
/** The lag alert's kind in the alert store (docs/alerts.md). */
const SIEM_LAG_ALERT = "audit.siem_lag";
/** Forwarder leadership across replicas (see daemon/audit/checkpoints.ts, background.ts for 7_305_00x). */
const FORWARDER_LOCK = 7_305_003;
/** A collector that takes no bytes for this long is treated as gone (see writeFrames). */
const STALL_MS = 30_000;
// RFC 5612 documentation enterprise number; a hospital's SIEM keys on the SD-ID name.
const SD_ID = "wardkeep@32473";

/** One event as an RFC 5424 message (without framing). */
export function syslogMessage(canonical: string, hash: string, opts: { appName: string; facility: number; hostname: string }): string {
  const e = parseCanonical(canonical);
  const severity = e.outcome === "success" ? 5 : 4; // notice; warning for denied and failed
  const params: [string, string | null][] = [
    ["seq", e.seq],
    ["hash", hash],
    ["eventId", e.event_id],
    ["tenant", e.tenant_id],
    ["actor", e.actor_user_id],
    ["role", e.actor_role],
    ["impersonator", e.impersonator_id],
    ["breakGlass", e.break_glass ? "true" : null],
    ["outcome", e.outcome],
    ["resourceType", e.resource_type],
    ["resource", e.resource_id],
    ["patient", e.patient_id],
    ["sourceIp", e.source_ip],
    ["requestId", e.request_id],
  ];
  const sd = `[${SD_ID} ${params
    .filter((p): p is [string, string] => p[1] !== null)
    .map(([k, v]) => `${k}="${sdEscape(v)}"`)
    .join(" ")}]`;
  const header = `<${opts.facility * 8 + severity}>1 ${new Date(e.recorded_at).toISOString()} ${printable(opts.hostname, 255)} ${printable(opts.appName, 48)} ${process.pid} ${printable(e.action, 32)}`;
  return `${header} ${sd} ${e.action} ${e.outcome}`;
}

const frame = octetFrame;

export type SiemLag = { cursor: string | null; head: string; events: number; seconds: number; alertRaised: boolean };

const LAG_SQL = `SELECT c.seq::text AS cursor, h.seq::text AS head, EXISTS (SELECT 1 FROM alerts a WHERE a.kind = 'audit.siem_lag' AND a.tenant_id IS NULL AND a.resolved_at IS NULL) AS alert,
       (SELECT round(date_part('epoch', e.recorded_at) * 1000)::bigint::text FROM audit_events e
         WHERE e.seq > coalesce(c.seq, h.seq) ORDER BY e.seq LIMIT 1) AS oldest_ms
  FROM audit_siem_cursor c, audit_chain_head h`;
type LagRow = { cursor: string | null; head: string; alert: boolean; oldest_ms: string | null };

function lagOf(ctx: ApplianceContext, r: LagRow): SiemLag {
  const events = r.cursor === null ? 0 : Math.max(0, Number(BigInt(r.head) - BigInt(r.cursor)));
  const seconds = events > 0 && r.oldest_ms ? Math.max(0, (ctx.clock.now().getTime() - Number(r.oldest_ms)) / 1000) : 0;
  return { cursor: r.cursor, head: r.head, events, seconds, alertRaised: r.alert };
}

/** How far forwarding is behind the chain, as any replica sees it (the lag metrics). */
export async function readSiemLag(ctx: ApplianceContext): Promise<SiemLag> {
  const rows = await inScope(ctx.db.app, { kind: "appliance" }, (t) => t.rows<LagRow>(LAG_SQL));
  return lagOf(ctx, rows[0]!);
}

function registerSiemMetrics(ctx: ApplianceContext, state: { leader(): boolean; connected(): boolean }): Counter {
  // One read per scrape serves the three lag gauges (collect runs for each; the first fills it).
  let pending: Promise<SiemLag | undefined> | undefined;
  const lag = () => {
    pending ??= readSiemLag(ctx)
      .catch(() => undefined)
      .finally(() => setTimeout(() => (pending = undefined), 0));
    return pending;
  };
  new Gauge({
    name: "wardkeep_audit_siem_lag_events",
    help: "Chained audit events not yet written to the SIEM collector (-1: unknown, database unreachable)",
    registers: [ctx.metrics],
    async collect() {
      this.set((await lag())?.events ?? -1);
    },
  });
  new Gauge({
    name: "wardkeep_audit_siem_lag_seconds",
    help: "Age of the oldest chained audit event not yet written to the SIEM collector (0: caught up)",
    registers: [ctx.metrics],
    async collect() {
      this.set((await lag())?.seconds ?? -1);
    },
  });
  new Gauge({
    name: "wardkeep_audit_siem_lag_alert",
    help: "1 while the SIEM lag alert is raised (lag above audit.siem.lagAlertSeconds)",
    registers: [ctx.metrics],
    async collect() {
      this.set((await lag())?.alertRaised ? 1 : 0);
    },
  });
  new Gauge({
    name: "wardkeep_audit_siem_leader",
    help: "1 on the replica that holds the SIEM forwarder lock and sends to the collector",
    registers: [ctx.metrics],
    collect() {
      this.set(state.leader() ? 1 : 0);
    },
  });
  new Gauge({
    name: "wardkeep_audit_siem_connected",
    help: "1 while this replica has a TLS connection to the SIEM collector",
    registers: [ctx.metrics],
    collect() {
      this.set(state.connected() ? 1 : 0);
    },
  });
  return new Counter({ name: "wardkeep_audit_siem_forwarded_events_total", help: "Audit events this replica wrote to the SIEM collector", registers: [ctx.metrics] });
}

/** A connection of the owner pool's role, for the session lock (held as long as the connection). */
function ownerClient(ctx: ApplianceContext): pg.Client {
  // keepAlive: a leader cut off from PostgreSQL finds out (and stops sending) instead of waiting on a dead socket.
  return new pg.Client({ connectionString: ctx.db.owner.url(), application_name: "wardkeep-siem", keepAlive: true });
}

/**
 * Writes frames and resolves with how many the socket accepted, in order (0..frames.length). A
 * collector that stops reading would hold the writes forever: after `stallMs` the socket is
 * dropped, and what it had not taken is sent again on the next connection.
 */
function writeFrames(socket: tls.TLSSocket, frames: string[], stallMs: number): Promise<number> {
  return new Promise((resolve) => {
    let accepted = 0;
    let settled = false;
    const stall = setTimeout(() => socket.destroy(), stallMs);
    const done = () => {
      if (settled) return;
      settled = true;
      clearTimeout(stall);
      socket.off("close", done);
      resolve(accepted);
    };
    socket.once("close", done);
    frames.forEach((f, i) =>
      socket.write(f, (err) => {
        if (err) return done();
        if (!settled) accepted = i + 1;
        if (i === frames.length - 1) done();
      }),
    );
  });
}

export type SiemForwarder = { stop(): Promise<void>; isLeader(): boolean };

export function startSiemForwarder(ctx: ApplianceContext): SiemForwarder | undefined {
  const cfg = ctx.config.audit.siem;
  if (!cfg.enabled) return undefined;
  if (!cfg.host) {
    ctx.log.error("audit.siem.enabled is true but audit.siem.host is empty: SIEM forwarding is off");
    return undefined;
  }
  const read = (f?: string) => (f ? fs.readFileSync(f) : undefined);
  const secure = { ca: read(cfg.caFile), cert: read(cfg.certFile), key: read(cfg.keyFile) };
  const hostname = os.hostname();
  const pollMs = ctx.config.audit.chainIntervalMs;

  let conn: pg.Client | undefined; // this replica's own connection, for the session lock
  let leader = false;
  let socket: tls.TLSSocket | undefined;
  let connected = false;
  let connecting = false;
  let stopped = false;
  let running: Promise<void> | undefined;
  let again = false;
  let lastLagCheck = 0;
  let failures = 0;
  let nextConnectAt = 0;
  let connectFailures = 0;
  const timers = new Set<NodeJS.Timeout>();
  const later = (fn: () => void, ms: number) => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    t.unref();
    timers.add(t);
  };

  const forwarded = registerSiemMetrics(ctx, { leader: () => leader, connected: () => connected });

  const dropSocket = () => {
    const s = socket;
    socket = undefined;
    connected = false;
    s?.destroy();
  };
  /**
   * Leadership lost (its connection broke) or given up: stop sending at once, so two replicas never
   * interleave; closing the connection releases the lock if PostgreSQL still holds it.
   */
  const resign = () => {
    const c = conn;
    conn = undefined;
    leader = false;
    dropSocket();
    void c?.end().catch(() => {});
  };

  async function connection(): Promise<pg.Client> {
    if (conn) return conn;
    const client = ownerClient(ctx);
    client.on("error", () => {
      if (conn !== client) return;
      if (leader) ctx.log.warn("SIEM forwarder lost its database connection; another replica or a retry takes over");
      resign();
    });
    try {
      await client.connect();
      // Session-level appliance scope: this connection is never pooled or shared.
      await client.query("SELECT set_config('wardkeep.tenant_id', '', false), set_config('wardkeep.scope', 'appliance', false)");
    } catch (err) {
      await client.end().catch(() => {});
      throw err;
    }
    conn = client;
    return client;
  }

  /** Standby replicas ask again on every poll, on the same connection, until the leader's goes away. */
  async function tryLead(): Promise<boolean> {
    const client = await connection();
    const r = await client.query<{ ok: boolean }>("SELECT pg_try_advisory_lock($1) AS ok", [FORWARDER_LOCK]);
    if (!r.rows[0]?.ok) return false;
    await client.query(`UPDATE audit_siem_cursor SET seq = CASE WHEN $1 = 'genesis' THEN 0 ELSE (SELECT seq FROM audit_chain_head) END, acked_at = now() WHERE seq IS NULL`, [
      cfg.startFrom,
    ]);
    leader = true;
    ctx.log.info("SIEM forwarder leads on this replica", { host: cfg.host, port: cfg.port });
    return true;
  }

  const connect = () => {
    if (stopped || connecting || socket || Date.now() < nextConnectAt) return;
    connecting = true;
    const s = tls.connect(syslogTlsOptions({ host: cfg.host, port: cfg.port, ...secure }));
    socket = s;
    s.setNoDelay(true);
    s.once("secureConnect", () => {
      connecting = false;
      connected = true;
      connectFailures = 0;
      ctx.log.info("SIEM collector connected", { host: cfg.host, port: cfg.port });
      kick();
    });
    s.on("error", (err) => {
      // A collector away for hours would otherwise write a line every reconnectMs; the lag alert says the rest.
      connectFailures += 1;
      if (connectFailures === 1 || connectFailures % 100 === 0) {
        ctx.log.warn("SIEM collector connection failed", { host: cfg.host, port: cfg.port, errno: (err as NodeJS.ErrnoException).code ?? err.name, attempts: connectFailures });
      }
    });
    // The collector never speaks in RFC 5425; reading keeps a half-closed socket noticed.
    s.on("data", () => {});
    s.once("close", () => {
      connecting = false;
      if (socket === s) {
        socket = undefined;
        connected = false;
      }
      nextConnectAt = Date.now() + cfg.reconnectMs;
      if (!stopped) later(kick, cfg.reconnectMs);
    });
  };

  /** Sends from the cursor until caught up or the socket stops taking frames. */
  async function pump(client: pg.Client, s: tls.TLSSocket): Promise<void> {
    for (;;) {
      const [cursor] = (await client.query<{ seq: string }>("SELECT seq::text AS seq FROM audit_siem_cursor")).rows;
      const from = BigInt(cursor!.seq);
      // ORDER BY audit_events.seq: a bare `seq` would sort by the text alias ("10" before "5").
      const { rows } = await client.query<{ seq: string; canonical: string; hash: string }>(
        "SELECT seq::text AS seq, canonical, encode(hash, 'hex') AS hash FROM audit_events WHERE seq > $1 ORDER BY audit_events.seq LIMIT $2",
        [from.toString(), BATCH],
      );
      if (rows.length === 0) return;
      if (from > 0n && BigInt(rows[0]!.seq) !== from + 1n) {
        // Retention dropped segments the collector never got (it was away longer than audit.retentionYears).
        ctx.log.warn("SIEM forwarding resumes after events that retention already dropped; they are only in the signed segment anchors", {
          fromSeq: (from + 1n).toString(),
          toSeq: (BigInt(rows[0]!.seq) - 1n).toString(),
        });
      }
      const frames = rows.map((r) => frame(syslogMessage(r.canonical, r.hash, { appName: cfg.appName, facility: cfg.facility, hostname })));
      if (conn !== client || !leader || socket !== s || !connected) return;
      const accepted = await writeFrames(s, frames, STALL_MS);
      if (accepted > 0) {
        await client.query("UPDATE audit_siem_cursor SET seq = $1, acked_at = now()", [rows[accepted - 1]!.seq]);
        forwarded.inc(accepted);
      }
      if (accepted < frames.length || rows.length < BATCH) return;
    }
  }

  /** Raises or clears the lag alert in the alert store (only the leader checks, so once across replicas). */
  async function checkLag(client: pg.Client): Promise<void> {
    const now = Date.now();
    if (now - lastLagCheck < pollMs) return; // a busy round does not re-read the lag for each batch
    lastLagCheck = now;
    const lag = lagOf(ctx, (await client.query<LagRow>(LAG_SQL)).rows[0]!);
    const over = lag.seconds > cfg.lagAlertSeconds;
    if (over && !lag.alertRaised) {
      await raiseAlert(ctx, {
        kind: SIEM_LAG_ALERT,
        severity: "warning",
        summary: `audit events are not reaching the SIEM collector: ${lag.events} event(s) behind, the oldest ${Math.round(lag.seconds)} s old`,
        details: { lagEvents: lag.events, lagSeconds: Math.round(lag.seconds), thresholdSeconds: cfg.lagAlertSeconds },
      });
      ctx.log.error("SIEM forwarding lag alert raised: audit events are not reaching the collector", {
        alert: "siem_lag",
        lagEvents: lag.events,
        lagSeconds: Math.round(lag.seconds),
        thresholdSeconds: cfg.lagAlertSeconds,
      });
    } else if (!over && lag.alertRaised) {
      await resolveAlert(ctx, SIEM_LAG_ALERT, "");
      ctx.log.info("SIEM forwarding lag alert cleared", { alert: "siem_lag", lagEvents: lag.events });
    }
  }

  async function round(): Promise<void> {
    if (!leader && !(await tryLead())) return;
    const client = conn!;
    await checkLag(client);
    if (!socket) return connect();
    if (connected) await pump(client, socket);
    await checkLag(client);
  }

  function kick(): void {
    if (stopped) return;
    if (running) {
      again = true;
      return;
    }
    running = (async () => {
      do {
        again = false;
        try {
          await round();
          failures = 0;
        } catch (err) {
          failures += 1;
          if (failures === 1 || failures % 100 === 0) {
            ctx.log.warn("SIEM forwarding round failed; it resumes from its cursor", { sqlstate: (err as { code?: string }).code ?? (err as Error).name, failures });
          }
          // A lock connection that failed may be half-dead: give leadership up and start afresh.
          resign();
        }
      } while (again && !stopped);
    })().finally(() => {
      running = undefined;
    });
  }

  // Events this replica chains wake the forwarder at once; the poll picks up other replicas' and
  // lets a standby replica take over when the leader dies.
  const unsubscribe = onAuditChained(ctx, () => kick());
  const poll = setInterval(kick, pollMs);
  poll.unref();
  kick();

  return {
    isLeader: () => leader,
    async stop() {
      stopped = true;
      unsubscribe();
      clearInterval(poll);
      for (const t of timers) clearTimeout(t);
      // Frames already written are flushed (a round in flight then records them); the rest stay
      // after the cursor for whichever replica leads next.
      const s = socket;
      if (s && connected) {
        await new Promise<void>((resolve) => {
          s.once("close", () => resolve());
          s.end();
          setTimeout(() => {
            s.destroy();
            resolve();
          }, 2_000).unref();
        });
      }
      await running;
      resign();
    },
  };
}
