import tls from "node:tls";

/**
 * A SIEM collector as a hospital runs one: syslog over TLS (RFC 5425) with octet-counted frames,
 * on a port the test chooses, so it can be down while events are written and come back later.
 */
export type SyslogCollector = {
  /** Every message received, in arrival order, across connections. */
  frames: string[];
  /** The `seq` SD-PARAM of each frame, in arrival order. */
  seqs(): number[];
  connections(): number;
  listen(port: number): Promise<void>;
  /** Stops listening and cuts every open connection (the collector goes down). */
  close(): Promise<void>;
};

export function syslogCollector(certPem: string, keyPem: string): SyslogCollector {
  const frames: string[] = [];
  let server: tls.Server | undefined;
  const sockets = new Set<tls.TLSSocket>();
  let connections = 0;
  return {
    frames,
    seqs: () => frames.map((f) => Number(/ seq="(\d+)"/.exec(f)?.[1] ?? NaN)),
    connections: () => connections,
    listen(port) {
      const s = tls.createServer({ cert: certPem, key: keyPem, minVersion: "TLSv1.2" }, (socket) => {
        connections += 1;
        sockets.add(socket);
        socket.on("close", () => sockets.delete(socket));
        socket.on("error", () => {});
        let buf = Buffer.alloc(0);
        socket.on("data", (d: Buffer) => {
          buf = Buffer.concat([buf, d]);
          for (;;) {
            const space = buf.indexOf(0x20);
            if (space < 0) break;
            const len = Number(buf.subarray(0, space).toString());
            if (!Number.isInteger(len) || len <= 0) throw new Error(`not an octet-counted frame: ${buf.subarray(0, 40).toString()}`);
            if (buf.length < space + 1 + len) break;
            frames.push(buf.subarray(space + 1, space + 1 + len).toString("utf8"));
            buf = buf.subarray(space + 1 + len);
          }
        });
      });
      server = s;
      return new Promise((resolve, reject) => {
        s.once("error", reject);
        s.listen(port, "127.0.0.1", () => resolve());
      });
    },
    async close() {
      const s = server;
      server = undefined;
      for (const socket of sockets) socket.destroy();
      if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
    },
  };
}

export async function waitUntil(cond: () => boolean | Promise<boolean>, ms = 20_000, what = "condition"): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
