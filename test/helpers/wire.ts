import type pg from "pg";
import type { Sequelize } from "sequelize";

/**
 * What a pooled connection writes to PostgreSQL and how many round trips that takes, read off the
 * protocol itself (every round trip ends with the server's ReadyForQuery): `statements` are the
 * texts of simple Query and Parse messages in the order they were written.
 */
export type Wire = { statements: string[]; roundTrips: number; reset(): void };

type Connection = {
  query(text: string): void;
  parse(m: { text: string }): void;
  on(event: "readyForQuery", listener: () => void): void;
};

const recorded = new WeakMap<object, Wire>();

export function recordWire(client: pg.Client): Wire {
  const connection = (client as unknown as { connection: Connection }).connection;
  const known = recorded.get(connection);
  if (known) return known;
  const wire: Wire = {
    statements: [],
    roundTrips: 0,
    reset() {
      wire.statements = [];
      wire.roundTrips = 0;
    },
  };
  const query = connection.query.bind(connection);
  const parse = connection.parse.bind(connection);
  connection.query = (text) => {
    wire.statements.push(text);
    query(text);
  };
  connection.parse = (m) => {
    wire.statements.push(m.text);
    parse(m);
  };
  connection.on("readyForQuery", () => {
    wire.roundTrips += 1;
  });
  recorded.set(connection, wire);
  return wire;
}

/** The wire of a one-connection pool (`pool: { max: 1 }`): every transaction runs on this connection. */
export async function recordPoolWire(db: Sequelize): Promise<Wire> {
  const manager = db.connectionManager as unknown as { getConnection(o: object): Promise<pg.Client>; releaseConnection(c: pg.Client): Promise<void> };
  const client = await manager.getConnection({ type: "write" });
  await manager.releaseConnection(client);
  return recordWire(client);
}
