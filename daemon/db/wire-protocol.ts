import { createHash } from "node:crypto";
import { createRequire } from "node:module";

/**
 * The few node-postgres connection internals the pipelines write to (daemon/db/opening-pipeline.ts,
 * commit-pipeline.ts): extended-protocol messages sent without a Sync, so several statements share
 * one round trip.
 */
export type PgConnection = {
  stream: { cork?: () => void; uncork?: () => void };
  parse(m: { text: string; name: string; types: unknown[] }): void;
  bind(m: { portal: string; statement: string; values: unknown[]; binary: boolean; valueMapper: (v: unknown) => unknown }): void;
  describe(m: { type: "P"; name: string }): void;
  execute(m: { portal: string; rows: number }): void;
  close(m: { type: "S"; name: string }): void;
  sync(): void;
  sendCopyFail(message: string): void;
};

const prepareValue = (createRequire(import.meta.url)("pg/lib/utils.js") as { prepareValue: (v: unknown) => unknown }).prepareValue;

/**
 * Bind and Execute one statement on the unnamed portal, after its Parse unless `parsed` (a named
 * statement already prepared on this connection). Values are mapped as node-postgres maps them.
 * `describe`: ask for the row description too (without it PostgreSQL sends rows but no columns).
 */
export function sendStatement(connection: PgConnection, s: { text: string; values: unknown[]; name?: string; parsed?: boolean; describe?: boolean }): void {
  const name = s.name ?? "";
  if (!s.parsed) connection.parse({ text: s.text, name, types: [] });
  connection.bind({ portal: "", statement: name, values: s.values, binary: false, valueMapper: prepareValue });
  if (s.describe) connection.describe({ type: "P", name: "" });
  connection.execute({ portal: "", rows: 0 });
}

/** A prepared-statement name for `text`: `prefix` plus a digest of the text, the same on every connection. */
export function statementName(prefix: string, text: string): string {
  return `${prefix}${createHash("sha256").update(text).digest("hex").slice(0, 24)}`;
}
