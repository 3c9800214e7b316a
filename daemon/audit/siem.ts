import fs from "node:fs";
import os from "node:os";
import tls from "node:tls";
import type { ApplianceContext } from "../context.js";
import { parseCanonical } from "./canonical.js";
import { onAuditChained, type ChainedBatch } from "./chainer.js";

/**
 * Optional SIEM forwarding (`audit.siem`): each event this replica chains, as an RFC 5424 syslog
 * message over TLS with RFC 5425 octet-counting framing. Ids only: `reason` and `user_agent`
 * never leave the appliance this way. SIEM is a copy — the chain is the record — so a collector
 * that is down never blocks requests; the queue is bounded and a dropped range is logged by seq.
 */
const QUEUE_MAX = 50_000;
// RFC 5612 documentation enterprise number; a hospital's SIEM keys on the SD-ID name.
const SD_ID = "wardkeep@32473";

const sdEscape = (v: string) => v.replace(/[\\"\]]/g, (c) => `\\${c}`);
const printable = (v: string, max: number) => (v.replace(/[^\x21-\x7e]/g, "_").slice(0, max) || "-");

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

export type SiemForwarder = { stop(): Promise<void>; pending(): number };

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
  const queue: string[] = [];
  let socket: tls.TLSSocket | undefined;
  let connected = false;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let dropped: { from: string; to: string } | undefined;

  const flush = () => {
    while (connected && socket && queue.length) {
      const frame = queue.shift()!;
      if (!socket.write(frame)) {
        socket.once("drain", flush);
        return;
      }
    }
  };
  const connect = () => {
    if (stopped) return;
    const s = tls.connect({ host: cfg.host, port: cfg.port, servername: /^[\d.:]+$/.test(cfg.host) ? undefined : cfg.host, minVersion: "TLSv1.2", ...secure });
    socket = s;
    s.setNoDelay(true);
    s.once("secureConnect", () => {
      connected = true;
      if (dropped) {
        ctx.log.warn("SIEM queue overflowed while the collector was unreachable; those events are only in the chain", { fromSeq: dropped.from, toSeq: dropped.to });
        dropped = undefined;
      }
      flush();
    });
    s.on("error", (err) => {
      ctx.log.warn("SIEM collector connection failed", { host: cfg.host, port: cfg.port, code: (err as NodeJS.ErrnoException).code ?? err.message });
    });
    s.once("close", () => {
      connected = false;
      socket = undefined;
      if (!stopped) timer = setTimeout(connect, cfg.reconnectMs);
    });
  };
  const unsubscribe = onAuditChained(ctx, (batch: ChainedBatch) => {
    for (const ev of batch) {
      const msg = syslogMessage(ev.canonical, ev.hash, { appName: cfg.appName, facility: cfg.facility, hostname });
      if (queue.length >= QUEUE_MAX) {
        queue.shift();
        dropped = { from: dropped?.from ?? ev.seq, to: ev.seq };
      }
      queue.push(`${Buffer.byteLength(msg, "utf8")} ${msg}`);
    }
    flush();
  });
  connect();
  return {
    pending: () => queue.length,
    async stop() {
      stopped = true;
      unsubscribe();
      clearTimeout(timer);
      if (socket) {
        const s = socket;
        await new Promise<void>((resolve) => {
          s.once("close", () => resolve());
          s.end();
          setTimeout(() => {
            s.destroy();
            resolve();
          }, 2_000).unref();
        });
      }
    },
  };
}
