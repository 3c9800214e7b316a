import tls from "node:tls";

/**
 * RFC 5424 syslog over TLS (RFC 5425), shared by the audit trail's SIEM forwarder
 * (daemon/audit/siem.ts, a long-lived connection with a durable cursor) and the alert channels
 * (daemon/alerts/transports.ts, one connection per batch of messages).
 */

/** RFC 5424 SD-PARAM value escaping. */
export const sdEscape = (v: string) => v.replace(/[\\"\]]/g, (c) => `\\${c}`);

/** A header field: printable US-ASCII only, "-" when empty. */
export const printable = (v: string, max: number) => v.replace(/[^\x21-\x7e]/g, "_").slice(0, max) || "-";

/** RFC 5425 section 4.3: octet-counting framing. */
export const octetFrame = (msg: string) => `${Buffer.byteLength(msg, "utf8")} ${msg}`;

export type SyslogTlsTarget = { host: string; port: number; ca?: string | Buffer; cert?: Buffer; key?: Buffer };

/** TLS options for a collector: TLS 1.2 or newer, the name checked unless the host is an address. */
export function syslogTlsOptions(target: SyslogTlsTarget): tls.ConnectionOptions {
  return {
    host: target.host,
    port: target.port,
    servername: /^[\d.:]+$/.test(target.host) ? undefined : target.host,
    minVersion: "TLSv1.2",
    ...(target.ca ? { ca: target.ca } : {}),
    ...(target.cert ? { cert: target.cert, key: target.key } : {}),
  };
}

/**
 * Connects, writes the messages (framed), and closes: resolves once the socket took them all and
 * ended cleanly; rejects with a one-line reason (refused, TLS failure, timeout) otherwise.
 */
export function sendSyslogOverTls(target: SyslogTlsTarget, messages: string[], timeoutMs = 10_000): Promise<void> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const socket = tls.connect(syslogTlsOptions(target));
    const finish = (err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) {
        socket.destroy();
        reject(err);
      } else resolve();
    };
    const timer = setTimeout(() => finish(new Error(`syslog collector ${target.host}:${target.port} did not take the message within ${timeoutMs} ms`)), timeoutMs);
    socket.on("error", (err: NodeJS.ErrnoException) => finish(new Error(`syslog collector ${target.host}:${target.port}: ${err.code ?? err.message}`)));
    socket.on("data", () => {});
    socket.once("secureConnect", () => {
      socket.end(messages.map(octetFrame).join(""), () => finish());
    });
  });
}
