/**
 * The baseline for bench/records.ts: a bare Express app over the same HTTPS, reading and writing
 * the same row shapes (a patient's six demographic fields; a note plus its first version) in the
 * same PostgreSQL, in plain text, with no authentication, access check, encryption or audit.
 * It exists only here, so the product has no switch that turns its protections off.
 */
import https from "node:https";
import type { AddressInfo } from "node:net";
import express from "express";
import pg from "pg";

const SCHEMA = `
CREATE SCHEMA IF NOT EXISTS bench_baseline;
CREATE TABLE IF NOT EXISTS bench_baseline.patients (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(), tenant_id uuid NOT NULL, name text, birth_date text, mrn text, phone text, email text, address text,
  version integer NOT NULL DEFAULT 1, created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS bench_baseline.notes (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(), tenant_id uuid NOT NULL, patient_id uuid NOT NULL REFERENCES bench_baseline.patients (id),
  kind text NOT NULL, status text NOT NULL DEFAULT 'draft', current_version integer NOT NULL DEFAULT 1, version integer NOT NULL DEFAULT 1,
  created_at timestamptz NOT NULL DEFAULT now(), created_by uuid NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS bench_baseline.note_versions (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(), tenant_id uuid NOT NULL, patient_id uuid NOT NULL, note_id uuid NOT NULL REFERENCES bench_baseline.notes (id),
  version integer NOT NULL, change text NOT NULL, body text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), created_by uuid NOT NULL);
`;

export type Baseline = { url: string; patientId: string; close(): Promise<void> };

export async function startBaseline(opts: { databaseUrl: string; poolMax: number; tls: { certPem: string; keyPem: string } }): Promise<Baseline> {
  const pool = new pg.Pool({ connectionString: opts.databaseUrl, max: opts.poolMax });
  await pool.query(SCHEMA);
  const tenantId = "00000000-0000-4000-8000-000000000001";
  const userId = "00000000-0000-4000-8000-000000000002";
  const {
    rows: [patient],
  } = await pool.query<{ id: string }>(
    "INSERT INTO bench_baseline.patients (tenant_id, name, birth_date, mrn, phone, email, address) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    [tenantId, "Ada Baseline", "1970-01-02", "MRN-000123", "+44 20 7946 0000", "ada@example.org", "1 Example Street\nLondon"],
  );

  const app = express();
  app.use(express.json({ limit: "1mb" }));
  app.get("/baseline/patients/:id", async (req, res) => {
    const { rows } = await pool.query("SELECT * FROM bench_baseline.patients WHERE id = $1", [req.params.id]);
    if (!rows[0]) return void res.status(404).end();
    const r = rows[0];
    res.json({
      id: r.id,
      name: r.name,
      birthDate: r.birth_date,
      mrn: r.mrn,
      phone: r.phone,
      email: r.email,
      address: r.address,
      version: r.version,
      createdAt: r.created_at,
      updatedAt: r.updated_at,
    });
  });
  app.post("/baseline/patients/:id/notes", async (req, res) => {
    const client = await pool.connect();
    try {
      await client.query("BEGIN");
      const {
        rows: [note],
      } = await client.query("INSERT INTO bench_baseline.notes (tenant_id, patient_id, kind, created_by) VALUES ($1, $2, 'note', $3) RETURNING *", [
        tenantId,
        req.params.id,
        userId,
      ]);
      await client.query(
        "INSERT INTO bench_baseline.note_versions (tenant_id, patient_id, note_id, version, change, body, created_by) VALUES ($1, $2, $3, 1, 'original', $4, $5)",
        [tenantId, req.params.id, note.id, String(req.body?.body ?? ""), userId],
      );
      await client.query("COMMIT");
      res.status(201).json({ ...note, body: req.body?.body });
    } catch {
      await client.query("ROLLBACK");
      res.status(500).end();
    } finally {
      client.release();
    }
  });

  const server = https.createServer({ cert: opts.tls.certPem, key: opts.tls.keyPem }, app);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
    patientId: patient!.id,
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      await pool.end();
    },
  };
}
