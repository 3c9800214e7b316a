/**
 * The peer for bench/records.ts: the architecture hosted clinical products describe on their trust
 * pages, built as such a team would build it with Express and pg, serving the product's two request
 * shapes (a patient's six demographic fields; a note plus its first version):
 *
 * - a bearer token verified on every request (an HS256 JWT, checked with node:crypto; no database
 *   round trip) and helmet's headers, as the product sends;
 * - PHI encrypted in PostgreSQL with pgcrypto: `pgp_sym_encrypt(value, key, 'cipher-algo=aes256')`
 *   on write, `pgp_sym_decrypt` in the SELECT on read, the key passed as a bind parameter from
 *   the application's configuration (pgcrypto's default S2K settings, as its documentation shows);
 * - tenant isolation by row-level security (`ENABLE` + `FORCE`, a policy on a per-transaction
 *   setting that each request sets with `set_config(..., true)`);
 * - an audit row per read and per write, inserted by the request in the same transaction; a
 *   BEFORE INSERT trigger chains it, `hash = sha256(prev_hash || event)`, under a row lock on the
 *   chain's head row (`SELECT ... FOR UPDATE`), which it then advances.
 *
 * Statements are sent one at a time as pg's `client.query` does by default (BEGIN, scope, work,
 * audit INSERT, COMMIT), unnamed, so planned on every execution. Like records-baseline.ts it
 * exists only in bench/.
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import https from "node:https";
import type { AddressInfo } from "node:net";
import express, { type NextFunction, type Request, type Response } from "express";
import helmet from "helmet";
import pg from "pg";

const SCHEMA = `
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE SCHEMA IF NOT EXISTS bench_peer;
CREATE TABLE IF NOT EXISTS bench_peer.patients (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(), tenant_id uuid NOT NULL,
  name bytea, birth_date bytea, mrn bytea, phone bytea, email bytea, address bytea,
  version integer NOT NULL DEFAULT 1, created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS bench_peer.notes (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(), tenant_id uuid NOT NULL, patient_id uuid NOT NULL REFERENCES bench_peer.patients (id),
  kind text NOT NULL, status text NOT NULL DEFAULT 'draft', current_version integer NOT NULL DEFAULT 1, version integer NOT NULL DEFAULT 1,
  created_at timestamptz NOT NULL DEFAULT now(), created_by uuid NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS bench_peer.note_versions (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(), tenant_id uuid NOT NULL, patient_id uuid NOT NULL, note_id uuid NOT NULL REFERENCES bench_peer.notes (id),
  version integer NOT NULL, change text NOT NULL, body bytea NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), created_by uuid NOT NULL);
CREATE TABLE IF NOT EXISTS bench_peer.audit_log (
  seq bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp(), tenant_id uuid NOT NULL, actor_id uuid NOT NULL,
  action text NOT NULL, resource_type text NOT NULL, resource_id uuid, patient_id uuid, source_ip text, user_agent text,
  prev_hash bytea, hash bytea);
CREATE SEQUENCE IF NOT EXISTS bench_peer.audit_seq;
CREATE TABLE IF NOT EXISTS bench_peer.audit_head (id boolean PRIMARY KEY DEFAULT true CHECK (id), hash bytea NOT NULL);
INSERT INTO bench_peer.audit_head (hash) VALUES ('\\x00') ON CONFLICT DO NOTHING;

CREATE OR REPLACE FUNCTION bench_peer.chain_audit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE head bytea;
BEGIN
  -- One chain: the head row's lock orders every writer (held until the transaction commits).
  SELECT hash INTO head FROM bench_peer.audit_head WHERE id FOR UPDATE;
  -- Numbered under the lock, so sequence order is chain order.
  NEW.seq := nextval('bench_peer.audit_seq');
  NEW.at := clock_timestamp();
  NEW.prev_hash := head;
  NEW.hash := digest(head || convert_to(concat_ws('|', to_char(NEW.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), NEW.tenant_id, NEW.actor_id, NEW.action, NEW.resource_type, NEW.resource_id, NEW.patient_id, NEW.source_ip, NEW.user_agent), 'UTF8'), 'sha256');
  UPDATE bench_peer.audit_head SET hash = NEW.hash WHERE id;
  RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS chain ON bench_peer.audit_log;
CREATE TRIGGER chain BEFORE INSERT ON bench_peer.audit_log FOR EACH ROW EXECUTE FUNCTION bench_peer.chain_audit();

ALTER TABLE bench_peer.patients ENABLE ROW LEVEL SECURITY;
ALTER TABLE bench_peer.patients FORCE ROW LEVEL SECURITY;
ALTER TABLE bench_peer.notes ENABLE ROW LEVEL SECURITY;
ALTER TABLE bench_peer.notes FORCE ROW LEVEL SECURITY;
ALTER TABLE bench_peer.note_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE bench_peer.note_versions FORCE ROW LEVEL SECURITY;
ALTER TABLE bench_peer.audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE bench_peer.audit_log FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant ON bench_peer.patients;
DROP POLICY IF EXISTS tenant ON bench_peer.notes;
DROP POLICY IF EXISTS tenant ON bench_peer.note_versions;
DROP POLICY IF EXISTS tenant ON bench_peer.audit_log;
CREATE POLICY tenant ON bench_peer.patients USING (tenant_id = current_setting('peer.tenant_id', true)::uuid);
CREATE POLICY tenant ON bench_peer.notes USING (tenant_id = current_setting('peer.tenant_id', true)::uuid);
CREATE POLICY tenant ON bench_peer.note_versions USING (tenant_id = current_setting('peer.tenant_id', true)::uuid);
CREATE POLICY tenant ON bench_peer.audit_log USING (tenant_id = current_setting('peer.tenant_id', true)::uuid);
`;

const PGP_OPTIONS = "cipher-algo=aes256";

export type Peer = {
  url: string;
  patientId: string;
  token: string;
  /** Resolves once no request is still working or queued for a connection (an overloaded run leaves a backlog behind). */
  settle(): Promise<void>;
  close(): Promise<void>;
};

const b64url = (b: Buffer | string) => Buffer.from(b).toString("base64url");

/** HS256 JWT, as hosted APIs hand out: {sub, tid, exp}. */
function signToken(secret: Buffer, claims: { sub: string; tid: string; exp: number }): string {
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify(claims));
  return `${head}.${body}.${b64url(createHmac("sha256", secret).update(`${head}.${body}`).digest())}`;
}

function verifyToken(secret: Buffer, token: string): { sub: string; tid: string } | null {
  const [head, body, mac] = token.split(".");
  if (!head || !body || !mac) return null;
  const expected = createHmac("sha256", secret).update(`${head}.${body}`).digest();
  const given = Buffer.from(mac, "base64url");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
  const claims = JSON.parse(Buffer.from(body, "base64url").toString("utf8")) as { sub: string; tid: string; exp: number };
  return claims.exp * 1000 > Date.now() ? claims : null;
}

type Caller = { userId: string; tenantId: string };

export async function startPeer(opts: { databaseUrl: string; poolMax: number; tls: { certPem: string; keyPem: string } }): Promise<Peer> {
  const pool = new pg.Pool({ connectionString: opts.databaseUrl, max: opts.poolMax, idleTimeoutMillis: 300_000 });
  // An idle connection closed by the server at shutdown is not a bench failure.
  pool.on("error", () => undefined);
  await pool.query(SCHEMA);
  const tenantId = "00000000-0000-4000-8000-0000000000a1";
  const userId = "00000000-0000-4000-8000-0000000000a2";
  const phiKey = randomBytes(32).toString("base64");
  const jwtSecret = randomBytes(32);

  /** One transaction in the caller's tenant: BEGIN, the RLS setting, the work, COMMIT (ROLLBACK on error). */
  async function inTenant<T>(caller: Caller, work: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await pool.connect();
    try {
      await client.query("BEGIN");
      await client.query("SELECT set_config('peer.tenant_id', $1, true), set_config('peer.user_id', $2, true)", [caller.tenantId, caller.userId]);
      const out = await work(client);
      await client.query("COMMIT");
      return out;
    } catch (err) {
      await client.query("ROLLBACK").catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  }

  const audit = (c: pg.PoolClient, req: Request, caller: Caller, action: string, type: string, resourceId: string, patientId: string) =>
    c.query(
      "INSERT INTO bench_peer.audit_log (tenant_id, actor_id, action, resource_type, resource_id, patient_id, source_ip, user_agent) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
      [caller.tenantId, caller.userId, action, type, resourceId, patientId, req.ip ?? null, req.get("user-agent") ?? null],
    );

  const patient = await inTenant({ tenantId, userId }, async (c) => {
    const { rows } = await c.query<{ id: string }>(
      `INSERT INTO bench_peer.patients (tenant_id, name, birth_date, mrn, phone, email, address)
       VALUES ($1, pgp_sym_encrypt($2, $8, $9), pgp_sym_encrypt($3, $8, $9), pgp_sym_encrypt($4, $8, $9), pgp_sym_encrypt($5, $8, $9), pgp_sym_encrypt($6, $8, $9), pgp_sym_encrypt($7, $8, $9))
       RETURNING id`,
      [tenantId, "Ada Peer", "1970-01-02", "MRN-000123", "+44 20 7946 0000", "ada@example.org", "1 Example Street\nLondon", phiKey, PGP_OPTIONS],
    );
    return rows[0]!;
  });

  const app = express();
  app.disable("x-powered-by");
  app.use(helmet());
  app.use(express.json({ limit: "1mb" }));
  app.use((req: Request, res: Response, next: NextFunction) => {
    const m = /^Bearer (.+)$/.exec(req.get("authorization") ?? "");
    const claims = m ? verifyToken(jwtSecret, m[1]!) : null;
    if (!claims) return void res.status(401).json({ error: "unauthorized" });
    res.locals.caller = { userId: claims.sub, tenantId: claims.tid } satisfies Caller;
    next();
  });
  app.get("/peer/patients/:id", async (req, res) => {
    const caller = res.locals.caller as Caller;
    try {
      const row = await inTenant(caller, async (c) => {
        const { rows } = await c.query(
          `SELECT id, pgp_sym_decrypt(name, $2) AS name, pgp_sym_decrypt(birth_date, $2) AS birth_date, pgp_sym_decrypt(mrn, $2) AS mrn,
                  pgp_sym_decrypt(phone, $2) AS phone, pgp_sym_decrypt(email, $2) AS email, pgp_sym_decrypt(address, $2) AS address,
                  version, created_at, updated_at
             FROM bench_peer.patients WHERE id = $1`,
          [req.params.id, phiKey],
        );
        if (rows[0]) await audit(c, req, caller, "patient.read", "patient", rows[0].id, rows[0].id);
        return rows[0];
      });
      if (!row) return void res.status(404).json({ error: "not found" });
      res.setHeader("ETag", `"${row.version}"`);
      res.json({
        id: row.id,
        name: row.name,
        birthDate: row.birth_date,
        mrn: row.mrn,
        phone: row.phone,
        email: row.email,
        address: row.address,
        version: row.version,
        createdAt: row.created_at,
        updatedAt: row.updated_at,
      });
    } catch {
      res.status(500).json({ error: "internal" });
    }
  });
  app.post("/peer/patients/:id/notes", async (req, res) => {
    const caller = res.locals.caller as Caller;
    const body = typeof req.body?.body === "string" ? (req.body.body as string) : "";
    if (!body) return void res.status(400).json({ error: "body is required" });
    try {
      const note = await inTenant(caller, async (c) => {
        const { rows: found } = await c.query("SELECT id FROM bench_peer.patients WHERE id = $1", [req.params.id]);
        if (!found[0]) return undefined;
        const {
          rows: [n],
        } = await c.query("INSERT INTO bench_peer.notes (tenant_id, patient_id, kind, created_by) VALUES ($1, $2, 'note', $3) RETURNING *", [
          caller.tenantId,
          req.params.id,
          caller.userId,
        ]);
        await c.query(
          "INSERT INTO bench_peer.note_versions (tenant_id, patient_id, note_id, version, change, body, created_by) VALUES ($1, $2, $3, 1, 'original', pgp_sym_encrypt($4, $6, $7), $5)",
          [caller.tenantId, req.params.id, n.id, body, caller.userId, phiKey, PGP_OPTIONS],
        );
        await audit(c, req, caller, "note.create", "note", n.id, req.params.id);
        return n;
      });
      if (!note) return void res.status(404).json({ error: "not found" });
      res.status(201).json({
        id: note.id,
        patientId: note.patient_id,
        kind: note.kind,
        status: note.status,
        body,
        currentVersion: 1,
        version: note.version,
        createdAt: note.created_at,
        createdBy: note.created_by,
      });
    } catch {
      res.status(500).json({ error: "internal" });
    }
  });

  const server = https.createServer({ cert: opts.tls.certPem, key: opts.tls.keyPem }, app);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
    patientId: patient.id,
    token: signToken(jwtSecret, { sub: userId, tid: tenantId, exp: Math.floor(Date.now() / 1000) + 86_400 }),
    async settle() {
      while (pool.waitingCount > 0 || pool.totalCount > pool.idleCount) await new Promise((resolve) => setTimeout(resolve, 100));
    },
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      await pool.end();
    },
  };
}

/**
 * Checks, after a run, that the peer did what it claims: one audit row per answered request, a
 * chain that recomputes from the first row, and a stored value that is pgp ciphertext.
 */
export async function checkPeer(databaseUrl: string): Promise<{ auditRows: number; chainOk: boolean; encrypted: boolean }> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    // FORCE ROW LEVEL SECURITY applies to the owner too: read as the one tenant the peer serves.
    await client.query("BEGIN");
    await client.query("SELECT set_config('peer.tenant_id', '00000000-0000-4000-8000-0000000000a1', true)");
    const { rows } = await client.query<{ n: string; ok: boolean | null }>(
      `SELECT count(*) AS n, bool_and(ok) AS ok FROM (
         SELECT hash = digest(prev_hash || convert_to(concat_ws('|', to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), tenant_id, actor_id, action, resource_type, resource_id, patient_id, source_ip, user_agent), 'UTF8'), 'sha256')
                AND prev_hash = coalesce(lag(hash) OVER (ORDER BY seq), '\\x00'::bytea) AS ok
           FROM bench_peer.audit_log) chain`,
    );
    const { rows: enc } = await client.query<{ plain: boolean }>("SELECT position(convert_to('Ada Peer', 'UTF8') in name) = 0 AS plain FROM bench_peer.patients LIMIT 1");
    await client.query("COMMIT");
    return { auditRows: Number(rows[0]!.n), chainOk: rows[0]!.ok !== false, encrypted: enc[0]?.plain === true };
  } finally {
    await client.end();
  }
}
