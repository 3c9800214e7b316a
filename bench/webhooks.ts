import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import type { AddressInfo } from "node:net";
import { randomBytes, randomUUID } from "node:crypto";
import pg from "pg";
import { Registry } from "prom-client";
import { Webhook } from "standardwebhooks";
import { loadConfig } from "../daemon/config/load.js";
import type { ApplianceContext } from "../daemon/context.js";
import { openDatabase } from "../daemon/db/connection.js";
import { embeddedDatabaseUrl, startEmbeddedPostgres } from "../daemon/db/embedded.js";
import { applyMigrations } from "../daemon/db/migrate.js";
import { APP_ROLE, OWNER_ROLE } from "../daemon/db/roles.js";
import { inScope } from "../daemon/db/sql.js";
import { HOST_OPERATOR, type Actor } from "../daemon/kernel/actor.js";
import { SYSTEM_META } from "../daemon/kernel/request-meta.js";
import { RootKey } from "../daemon/keys/root-key.js";
import { randomKey } from "../daemon/keys/primitives.js";
import { silentLogger } from "../daemon/log/logger.js";
import { DeliveryWorker } from "../daemon/webhooks/delivery.js";
import { publishWebhookEvent } from "../daemon/webhooks/index.js";
import { approveHost, createEndpoint } from "../daemon/webhooks/service.js";
import type { BenchRow } from "./run.js";

/**
 * Outbound webhook fan-out (issue 17): events published to a tenant whose ENDPOINTS endpoints
 * all subscribe, delivered by one replica's worker to a local keep-alive HTTP receiver — claim
 * (SKIP LOCKED), sign (HMAC-SHA-256), POST, record the attempt — against a baseline of the same
 * bodies POSTed to the same receiver with the same concurrency and no queue, no signature, no
 * database. Rounds alternate so machine load weighs on both alike. The receiver checks a sample
 * of the deliveries with the Standard Webhooks reference verifier; a bad one fails the bench.
 */
const ENDPOINTS = Number(process.env.BENCH_WEBHOOK_ENDPOINTS ?? 10);
const EVENTS = Number(process.env.BENCH_WEBHOOK_EVENTS ?? 400);
const ROUNDS = Number(process.env.BENCH_WEBHOOK_ROUNDS ?? 3);
const CONCURRENCY = 64;
const TARGET = 500;

function startReceiver(secrets: Map<string, string>) {
  let received = 0;
  let verified = 0;
  let failed = 0;
  const server = http.createServer({ keepAliveTimeout: 30_000 }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      received++;
      const secret = secrets.get(req.url ?? "");
      if (secret && received % 50 === 0) {
        try {
          new Webhook(secret).verify(Buffer.concat(chunks), req.headers as Record<string, string>);
          verified++;
        } catch {
          failed++;
        }
      }
      res.writeHead(204).end();
    });
  });
  return {
    server,
    counts: () => ({ received, verified, failed }),
    listen: () => new Promise<number>((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port))),
  };
}

/** The baseline: the same number of POSTs of a same-sized body, CONCURRENCY at a time, keep-alive. */
async function plainPosts(port: number, total: number, body: string): Promise<number> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next++ < total) {
        await new Promise<void>((resolve, reject) => {
          const req = http.request({
            host: "127.0.0.1",
            port,
            path: "/plain",
            method: "POST",
            agent,
            headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
          });
          req.on("error", reject);
          req.on("response", (res) => {
            res.resume();
            res.on("end", resolve);
          });
          req.end(body);
        });
      }
    }),
  );
  const ms = performance.now() - t0;
  agent.destroy();
  return ms;
}

export async function run(): Promise<BenchRow[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "wardkeep-bench-webhooks-"));
  fs.chmodSync(dir, 0o711);
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  const embedded = await startEmbeddedPostgres({ dataDir: path.join(dir, "data"), port, passwordFile: path.join(dir, "su-password") });
  const ownerPw = randomBytes(12).toString("hex");
  const appPw = randomBytes(12).toString("hex");
  const su = new pg.Client({ connectionString: embedded.superuserUrl });
  await su.connect();
  await su.query(`CREATE ROLE ${OWNER_ROLE} LOGIN PASSWORD '${ownerPw}'`);
  await su.query(`CREATE ROLE ${APP_ROLE} LOGIN PASSWORD '${appPw}'`);
  await su.query(`CREATE DATABASE wk_bench OWNER ${OWNER_ROLE}`);
  await su.end();
  const url = (user: string, password: string) => embeddedDatabaseUrl(embedded, "wk_bench", { user, password });
  const config = loadConfig({
    env: {
      WARDKEEP_DATA_DIR: dir,
      WARDKEEP_DATABASE_URL: url(OWNER_ROLE, ownerPw),
      WARDKEEP_WEBHOOKS_ALLOW_PLAIN_HTTP: "true",
      WARDKEEP_WEBHOOKS_CONCURRENCY: String(CONCURRENCY),
      WARDKEEP_WEBHOOKS_POLL_INTERVAL_MS: "50",
    },
  });
  const db = openDatabase({ ownerUrl: url(OWNER_ROLE, ownerPw), appUrl: url(APP_ROLE, appPw), appRole: APP_ROLE, created: [] }, config);
  const rootKey = new RootKey("keyfile");
  rootKey.open({ mode: "keyfile", unsealKey: randomKey(), generation: 1, keks: new Map(), internalKey: randomKey() });
  const ctx: ApplianceContext = { config, log: silentLogger(), db, rootKey, metrics: new Registry(), clock: { now: () => new Date() } };
  const secrets = new Map<string, string>();
  const receiver = startReceiver(secrets);
  const receiverPort = await receiver.listen();
  const rows: BenchRow[] = [];
  try {
    await applyMigrations(db.owner, url(OWNER_ROLE, ownerPw), APP_ROLE);
    const tenantId = await inScope(
      db.app,
      { kind: "appliance" },
      async (t) => (await t.rows<{ id: string }>("INSERT INTO tenants (name, slug) VALUES ('Bench', 'bench') RETURNING id"))[0]!.id,
    );
    const owner: Actor = { userId: randomUUID(), role: "owner", tenantId, via: "session" };
    await approveHost(ctx, HOST_OPERATOR, { host: "127.0.0.1", port: receiverPort, allowPrivate: true }, SYSTEM_META);
    for (let i = 0; i < ENDPOINTS; i++) {
      const created = await createEndpoint(ctx, owner, { url: `http://127.0.0.1:${receiverPort}/ep${i}`, eventTypes: ["consent.revoked"] }, SYSTEM_META);
      secrets.set(`/ep${i}`, created.secret!);
    }
    const publishAll = async () => {
      // 20 events per transaction, as a busy clinic's consent revocations would come in.
      for (let i = 0; i < EVENTS; i += 20) {
        await inScope(db.app, { kind: "tenant", tenantId }, async (t) => {
          for (let j = i; j < Math.min(EVENTS, i + 20); j++) {
            await publishWebhookEvent(ctx, t, { tenantId, type: "consent.revoked", data: { patientId: randomUUID(), consentId: randomUUID() } });
          }
        });
      }
    };
    // Row-level security applies to every role here (FORCE): the count runs in appliance scope.
    const delivered = async () =>
      inScope(db.app, { kind: "appliance" }, async (t) => Number((await t.one<{ n: string }>("SELECT count(*)::text AS n FROM webhook_deliveries WHERE status = 'delivered'"))!.n));
    const total = EVENTS * ENDPOINTS;
    const sampleBody = JSON.stringify({ type: "consent.revoked", timestamp: new Date().toISOString(), data: { patientId: randomUUID(), consentId: randomUUID() } });

    const webhookRound = async () => {
      await publishAll();
      const before = await delivered();
      const worker = new DeliveryWorker(ctx);
      const t0 = performance.now();
      worker.start();
      while ((await delivered()) < before + total) await new Promise((r) => setTimeout(r, 10));
      const ms = performance.now() - t0;
      await worker.stop();
      return ms;
    };
    // Warm-up of both paths (connections, plans, JIT).
    await plainPosts(receiverPort, 500, sampleBody);
    await webhookRound();

    let plainMs = 0;
    let webhookMs = 0;
    for (let r = 0; r < ROUNDS; r++) {
      plainMs += await plainPosts(receiverPort, total, sampleBody);
      webhookMs += await webhookRound();
    }
    const counts = receiver.counts();
    if (counts.failed > 0) throw new Error(`${counts.failed} of ${counts.verified + counts.failed} sampled deliveries failed the reference verifier`);
    const rate = (total * ROUNDS) / (webhookMs / 1000);
    const plainRate = (total * ROUNDS) / (plainMs / 1000);
    rows.push({
      name: `signed deliveries/s (${ENDPOINTS} endpoints x ${EVENTS} events, ${CONCURRENCY} in flight)`,
      value: rate,
      unit: "deliveries/s",
      baseline: plainRate,
      ratio: rate / plainRate,
      target: `>= ${TARGET}/s`,
      met: rate >= TARGET,
    });
    rows.push({ name: "sampled deliveries verified by the reference code", value: counts.verified, unit: "deliveries" });
  } finally {
    receiver.server.closeAllConnections();
    receiver.server.close();
    await db.close();
    await embedded.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}
