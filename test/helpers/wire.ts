import net from "node:net";
import { SqlPool } from "../../daemon/db/sql.js";

/**
 * What a pool writes to PostgreSQL and how many round trips that takes, read off the wire by a
 * proxy between the pool and the server: a round trip is a flight of client messages sent after
 * the server last answered (pipelined statements written together are one flight, however many
 * ReadyForQuery they get back). `statements` are the texts of Query and Parse messages in the
 * order they were written; `columns` the names of the columns the server's answers described
 * (RowDescription), in the order they came.
 */
export type Wire = { statements: string[]; columns: string[]; roundTrips: number; reset(): void };

type Proxy = { port: number; wire: Wire; close(): Promise<void> };

/** Frontend messages: an untyped startup (or SSLRequest) first, then type byte + int32 length. */
function frontendParser(onText: (text: string) => void): (chunk: Buffer) => void {
  let buf = Buffer.alloc(0);
  let started = false;
  return (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      if (!started) {
        if (buf.length < 8) return;
        const len = buf.readInt32BE(0);
        if (buf.length < len) return;
        const code = buf.readInt32BE(4);
        buf = buf.subarray(len);
        // SSLRequest / GSSENCRequest come before the real startup message.
        if (code !== 80877103 && code !== 80877104) started = true;
        continue;
      }
      if (buf.length < 5) return;
      const type = String.fromCharCode(buf[0]!);
      const len = buf.readInt32BE(1);
      if (buf.length < 1 + len) return;
      const body = buf.subarray(5, 1 + len);
      buf = buf.subarray(1 + len);
      if (type === "Q") onText(body.subarray(0, body.indexOf(0)).toString("utf8"));
      if (type === "P") {
        const nameEnd = body.indexOf(0);
        onText(body.subarray(nameEnd + 1, body.indexOf(0, nameEnd + 1)).toString("utf8"));
      }
    }
  };
}

/** Backend messages (type byte + int32 length): the field names of each RowDescription. */
function backendParser(onColumn: (name: string) => void): (chunk: Buffer) => void {
  let buf = Buffer.alloc(0);
  return (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      if (buf.length < 5) return;
      const len = buf.readInt32BE(1);
      if (buf.length < 1 + len) return;
      if (buf[0] === 0x54 /* T */) {
        const body = buf.subarray(5, 1 + len);
        let at = 2;
        for (let i = body.readInt16BE(0); i > 0; i--) {
          const end = body.indexOf(0, at);
          onColumn(body.subarray(at, end).toString("utf8"));
          at = end + 1 + 18; // table oid, column number, type oid, size, modifier, format
        }
      }
      buf = buf.subarray(1 + len);
    }
  };
}

export async function startWireProxy(target: { host: string; port: number }): Promise<Proxy> {
  const wire: Wire = {
    statements: [],
    columns: [],
    roundTrips: 0,
    reset() {
      wire.statements = [];
      wire.columns = [];
      wire.roundTrips = 0;
    },
  };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = target.host.startsWith("/") ? net.connect(`${target.host}/.s.PGSQL.${target.port}`) : net.connect(target.port, target.host);
    sockets.add(client).add(upstream);
    // Per connection: did the server answer since the client last wrote?
    let answered = true;
    const parse = frontendParser((text) => wire.statements.push(text));
    // The pools connect without TLS (no SSLRequest), so the server's first byte starts a message.
    const parseAnswers = backendParser((name) => wire.columns.push(name));
    client.on("data", (chunk) => {
      if (answered) wire.roundTrips += 1;
      answered = false;
      parse(chunk);
      upstream.write(chunk);
    });
    upstream.on("data", (chunk) => {
      answered = true;
      parseAnswers(chunk);
      client.write(chunk);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("close", end).on("error", end);
    upstream.on("close", end).on("error", end);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    wire,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * Routes `holder[key]` (an appliance's `ctx.db.app` or `ctx.db.owner`) through a counting proxy:
 * a new pool of the same options, one connection, reaching the same server through the proxy.
 * `close` puts the original pool back.
 */
export async function recordPoolWire<K extends string>(holder: Record<K, SqlPool>, key: K): Promise<{ wire: Wire; close(): Promise<void> }> {
  const original = holder[key];
  const proxy = await startWireProxy({ host: original.info.host, port: original.info.port });
  const u = new URL(original.url());
  u.searchParams.delete("host");
  u.hostname = "127.0.0.1";
  u.port = String(proxy.port);
  const routed = new SqlPool({ ...original.options, url: u.toString(), max: 1 });
  // Connected before counting: the startup and password exchange are round trips of their own.
  await routed.exec("SELECT 1");
  proxy.wire.reset();
  holder[key] = routed;
  return {
    wire: proxy.wire,
    async close() {
      holder[key] = original;
      await routed.close();
      await proxy.close();
    },
  };
}
