import { createCipheriv, createDecipheriv, randomBytes, randomFillSync } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { startEmbeddedPostgres } from "../daemon/db/embedded.js";
import { decryptField, encryptField, NonceBudget, type DataKey, type DataKeyLookup, type FieldContext } from "../daemon/keys/field-cipher.js";
import type { BenchRow } from "./run.js";

/**
 * Field encryption throughput (issue 3): one encrypt + one decrypt of a PHI value through the
 * keys module (header, AAD binding tenant/table/column/row, nonce budget) against the same work
 * with plain node:crypto AES-256-GCM, and against PostgreSQL's pgcrypto
 * pgp_sym_encrypt/pgp_sym_decrypt (what many vendors use) on the same values in the same run.
 *
 * Values: a PHI-like mix — 60 % short identifiers and names (8–40 bytes), 35 % addresses and
 * short free text (100–300 bytes), 5 % clinical notes (2–4 KiB).
 */
const VALUES = Number(process.env.BENCH_FIELD_VALUES ?? 20_000);
const PG_VALUES = Number(process.env.BENCH_FIELD_PG_VALUES ?? 2_000);
// Many short alternating rounds, best of each: on a shared machine the best round is the one least disturbed.
const ROUNDS = Number(process.env.BENCH_FIELD_ROUNDS ?? 15);

function sampleValues(n: number): string[] {
  const alphabet = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789,.-";
  const text = (len: number) => {
    const bytes = randomBytes(len);
    let s = "";
    for (let i = 0; i < len; i++) s += alphabet[bytes[i]! % alphabet.length];
    return s;
  };
  return Array.from({ length: n }, (_, i) => {
    const r = i % 20;
    if (r < 12) return text(8 + (i % 33));
    if (r < 19) return text(100 + (i % 201));
    return text(2048 + (i % 2049));
  });
}

type Work = (value: string, i: number) => void;

/**
 * Best of ROUNDS for each contender, in values per second (each value: one encrypt and one
 * decrypt). Rounds alternate between contenders so load from other processes hits both alike.
 */
function measure(values: string[], contenders: Work[]): number[] {
  for (const work of contenders) for (let i = 0; i < Math.min(values.length, 2000); i++) work(values[i]!, i); // warm-up (JIT, OpenSSL)
  const best = contenders.map(() => 0);
  for (let round = 0; round < ROUNDS; round++) {
    contenders.forEach((work, c) => {
      const start = process.hrtime.bigint();
      for (let i = 0; i < values.length; i++) work(values[i]!, i);
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      best[c] = Math.max(best[c]!, values.length / seconds);
    });
  }
  return best;
}

function moduleWork(): Work {
  const key: DataKey = { id: "tenant/6f0d3f4e-0d4b-4c32-9a8f-0a5b0e9a3c11", version: 1, key: randomBytes(32) };
  const lookup: DataKeyLookup = (id, version) => (id === key.id && version === key.version ? key : undefined);
  const budget = new NonceBudget();
  const base = { tenantId: "6f0d3f4e-0d4b-4c32-9a8f-0a5b0e9a3c11", table: "patients", column: "name" };
  return (value, i) => {
    const field: FieldContext = { ...base, rowId: String(i) };
    const ct = encryptField(key, field, value, { nonceBudget: budget });
    if (decryptField(lookup, field, ct).length === 0 && value.length > 0) throw new Error("nothing decrypted");
  };
}

/**
 * The floor: AES-256-GCM with the same context as AAD and a fresh random nonce, drawn from a
 * pooled CSPRNG block as the module does (so the ratio isolates the module's own work).
 */
function rawWork(): Work {
  const key = randomBytes(32);
  const pool = Buffer.allocUnsafe(12 * 512);
  let at = pool.length;
  let sink = 0;
  return (value, i) => {
    const aad = Buffer.from(`6f0d3f4e-0d4b-4c32-9a8f-0a5b0e9a3c11patientsname${i}`);
    if (at + 12 > pool.length) {
      randomFillSync(pool);
      at = 0;
    }
    const nonce = pool.subarray(at, (at += 12));
    const c = createCipheriv("aes-256-gcm", key, nonce);
    c.setAAD(aad);
    const body = Buffer.concat([c.update(value, "utf8"), c.final()]);
    const tag = c.getAuthTag();
    const d = createDecipheriv("aes-256-gcm", key, nonce);
    d.setAAD(aad);
    d.setAuthTag(tag);
    sink += Buffer.concat([d.update(body), d.final()]).length;
    if (sink < 0) throw new Error("unreachable");
  };
}

async function withPostgres<T>(work: (url: string) => Promise<T>): Promise<T> {
  if (process.env.WARDKEEP_DATABASE_URL) return work(process.env.WARDKEEP_DATABASE_URL);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "wardkeep-bench-pg-"));
  fs.chmodSync(dir, 0o711);
  const server = await startEmbeddedPostgres({ dataDir: path.join(dir, "data"), port: 55_000 + Math.floor(Math.random() * 5000), passwordFile: path.join(dir, "pw") });
  try {
    return await work(server.superuserUrl);
  } finally {
    await server.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** pgcrypto on the same values, in batches of 200 per statement so round trips do not dominate. */
async function pgcryptoThroughput(values: string[]): Promise<number> {
  return withPostgres(async (url) => {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      await client.query("CREATE EXTENSION IF NOT EXISTS pgcrypto");
      const passphrase = randomBytes(32).toString("base64");
      const batches: string[][] = [];
      for (let i = 0; i < values.length; i += 200) batches.push(values.slice(i, i + 200));
      // Same algorithm as ours (AES-256); pgcrypto's default S2K, as vendors deploy it.
      const sql = "SELECT sum(length(pgp_sym_decrypt(pgp_sym_encrypt(v, $2, 'cipher-algo=aes256'), $2))) AS n FROM unnest($1::text[]) AS v";
      await client.query(sql, [batches[0], passphrase]); // warm-up
      let best = 0;
      for (let round = 0; round < 2; round++) {
        const start = process.hrtime.bigint();
        for (const batch of batches) await client.query(sql, [batch, passphrase]);
        best = Math.max(best, values.length / (Number(process.hrtime.bigint() - start) / 1e9));
      }
      return best;
    } finally {
      await client.end();
    }
  });
}

export async function run(): Promise<BenchRow[]> {
  const values = sampleValues(VALUES);
  const bytes = values.reduce((n, v) => n + Buffer.byteLength(v), 0);
  const [ours, raw] = measure(values, [moduleWork(), rawWork()]) as [number, number];
  const pgcrypto = await pgcryptoThroughput(values.slice(0, PG_VALUES));
  const overhead = raw / ours;
  const speedup = ours / pgcrypto;
  return [
    { name: "field encrypt+decrypt, keys module", value: ours, unit: "values/s" },
    { name: "field encrypt+decrypt, keys module", value: (ours * bytes) / values.length / 1e6, unit: "MB/s" },
    { name: "raw node:crypto AES-256-GCM, same values", value: raw, unit: "values/s" },
    { name: "pgcrypto pgp_sym_encrypt+decrypt, same values", value: pgcrypto, unit: "values/s" },
    { name: "overhead vs raw AES-GCM (raw / module)", value: overhead, unit: "x", baseline: raw, ratio: overhead, target: "<= 1.5", met: overhead <= 1.5 },
    { name: "speed vs pgcrypto (module / pgcrypto)", value: speedup, unit: "x", baseline: pgcrypto, ratio: speedup, target: ">= 20", met: speedup >= 20 },
  ];
}
