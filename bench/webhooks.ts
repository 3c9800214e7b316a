import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import type { AddressInfo } from "node:net";
import { randomUUID } from "node:crypto";
import { Registry } from "prom-client";
import { Webhook } from "standardwebhooks";
import { loadConfig } from "../daemon/config/load.js";
import type { ApplianceContext } from "../daemon/context.js";
import { openDatabase } from "../daemon/db/connection.js";
import { startEmbeddedPostgres } from "../daemon/db/embedded.js";
import { applyMigrations } from "../daemon/db/migrate.js";
import { APP_ROLE } from "../daemon/db/roles.js";
import { inScope } from "../daemon/db/sql.js";
import { HOST_OPERATOR, type Actor } from "../daemon/kernel/actor.js";
import { SYSTEM_META } from "../daemon/kernel/request-meta.js";
import { RootKey } from "../daemon/keys/root-key.js";
import { randomKey } from "../daemon/keys/primitives.js";
import { silentLogger } from "../daemon/log/logger.js";
import { verifyV1a } from "../test/helpers/webhook-receiver.js";
import { DeliveryWorker } from "../daemon/webhooks/delivery.js";
import { publishWebhookEvent } from "../daemon/webhooks/index.js";
import { approveHost, createEndpoint } from "../daemon/webhooks/service.js";
import { createBenchDatabase } from "./cluster.js";
import type { BenchRow } from "./run.js";

/**
 * Outbound webhook fan-out (issue 17): events published to a tenant whose ENDPOINTS endpoints
 * all subscribe, delivered by one replica's worker to a local keep-alive HTTP receiver — claim
 * (SKIP LOCKED), sign, POST, record the attempt — against a baseline of the same bodies POSTed
 * to the same receiver with the same concurrency and no queue, no signature, no database. Two
 * sets of endpoints: `v1` (HMAC-SHA-256) and `v1a` (Ed25519). Rounds alternate (plain, v1, v1a)
 * so machine load weighs on all alike. The receiver checks a sample of the deliveries (the
 * Standard Webhooks reference verifier for v1, a node:crypto Ed25519 verifier written from the
 * spec for v1a); a bad one fails the bench.
 *
 * BENCH_WEBHOOK_LEVERS=1 adds rounds of the v1 pipeline with one setting changed at a time
 * (claim batch, concurrency, the limit per endpoint), each against the default pipeline in the same rounds.
 */
const ENDPOINTS = Number(process.env.BENCH_WEBHOOK_ENDPOINTS ?? 10);
const EVENTS = Number(process.env.BENCH_WEBHOOK_EVENTS ?? 200);
const ROUNDS = Number(process.env.BENCH_WEBHOOK_ROUNDS ?? 2);
const LEVERS = process.env.BENCH_WEBHOOK_LEVERS === "1";
const CONCURRENCY = 64;
const TARGET = 500;

type Key = { scheme: "v1" | "v1a"; value: string };

function startReceiver(keys: Map<string, Key>) {
  let received = 0;
  let verified = 0;
  let failed = 0;
  const server = http.createServer({ keepAliveTimeout: 30_000 }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      received++;
      const key = keys.get(req.url ?? "");
      if (key && received % 50 === 0) {
        const body = Buffer.concat(chunks);
        const h = req.headers as Record<string, string>;
        let ok: boolean;
        try {
          if (key.scheme === "v1") ok = new Webhook(key.value).verify(body, h) !== undefined;
          else ok = verifyV1a(key.value, { id: h["webhook-id"]!, timestamp: h["webhook-timestamp"]!, signature: h["webhook-signature"]! }, body.toString("utf8"));
        } catch {
          ok = false;
        }
        if (ok) verified++;
        else failed++;
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
  const { ownerUrl, appUrl } = await createBenchDatabase(embedded, "wk_bench");
  const config = loadConfig({
    env: {
      WARDKEEP_DATA_DIR: dir,
      WARDKEEP_DATABASE_URL: ownerUrl,
      WARDKEEP_WEBHOOKS_ALLOW_PLAIN_HTTP: "true",
      WARDKEEP_WEBHOOKS_CONCURRENCY: String(CONCURRENCY),
      WARDKEEP_WEBHOOKS_POLL_INTERVAL_MS: "50",
    },
  });
  const db = openDatabase({ ownerUrl, appUrl, appRole: APP_ROLE, created: [] }, config);
  const rootKey = new RootKey("keyfile");
  rootKey.open({ mode: "keyfile", unsealKey: randomKey(), generation: 1, keks: new Map(), internalKey: randomKey() });
  const ctx: ApplianceContext = { config, log: silentLogger(), db, rootKey, metrics: new Registry(), clock: { now: () => new Date() } };
  const keys = new Map<string, Key>();
  const receiver = startReceiver(keys);
  const receiverPort = await receiver.listen();
  const rows: BenchRow[] = [];
  try {
    await applyMigrations(db.owner, ownerUrl, APP_ROLE);
    const tenantId = await inScope(
      db.app,
      { kind: "appliance" },
      async (t) => (await t.rows<{ id: string }>("INSERT INTO tenants (name, slug) VALUES ('Bench', 'bench') RETURNING id"))[0]!.id,
    );
    const owner: Actor = { userId: randomUUID(), role: "owner", tenantId, via: "session" };
    await approveHost(ctx, HOST_OPERATOR, { host: "127.0.0.1", port: receiverPort, allowPrivate: true }, SYSTEM_META);
    // v1 endpoints take consent.revoked, v1a endpoints erasure.completed: one publish reaches one set.
    for (let i = 0; i < ENDPOINTS; i++) {
      const v1 = await createEndpoint(ctx, owner, { url: `http://127.0.0.1:${receiverPort}/v1/${i}`, eventTypes: ["consent.revoked"] }, SYSTEM_META);
      keys.set(`/v1/${i}`, { scheme: "v1", value: v1.secret! });
      const v1a = await createEndpoint(ctx, owner, { url: `http://127.0.0.1:${receiverPort}/v1a/${i}`, eventTypes: ["erasure.completed"], signatureScheme: "v1a" }, SYSTEM_META);
      keys.set(`/v1a/${i}`, { scheme: "v1a", value: v1a.endpoint.publicKey! });
    }
    const publishAll = async (scheme: "v1" | "v1a") => {
      // 20 events per transaction, as a busy clinic's consent revocations would come in.
      for (let i = 0; i < EVENTS; i += 20) {
        await inScope(db.app, { kind: "tenant", tenantId }, async (t) => {
          for (let j = i; j < Math.min(EVENTS, i + 20); j++) {
            if (scheme === "v1") await publishWebhookEvent(ctx, t, { tenantId, type: "consent.revoked", data: { patientId: randomUUID(), consentId: randomUUID() } });
            else await publishWebhookEvent(ctx, t, { tenantId, type: "erasure.completed", data: { deletionRequestId: randomUUID(), subject: "patient", patientId: randomUUID() } });
          }
        });
      }
    };
    // Row-level security applies to every role here (FORCE): the count runs in appliance scope. It reads the
    // partial index of pending deliveries, so its cost does not grow with the rounds already delivered.
    const pending = async () =>
      inScope(db.app, { kind: "appliance" }, async (t) => Number((await t.one<{ n: string }>("SELECT count(*)::text AS n FROM webhook_deliveries WHERE status = 'pending'"))!.n));
    const delivered = async () =>
      inScope(db.app, { kind: "appliance" }, async (t) => Number((await t.one<{ n: string }>("SELECT count(*)::text AS n FROM webhook_deliveries WHERE status = 'delivered'"))!.n));
    const total = EVENTS * ENDPOINTS;
    const sampleBody = JSON.stringify({ type: "consent.revoked", timestamp: new Date().toISOString(), data: { patientId: randomUUID(), consentId: randomUUID() } });

    /** One round of the pipeline: publish, then time the worker from start until every delivery is recorded delivered. */
    const webhookRound = async (scheme: "v1" | "v1a", settings: Partial<typeof config.webhooks> = {}) => {
      await publishAll(scheme);
      const before = await delivered();
      const worker = new DeliveryWorker({ ...ctx, config: { ...config, webhooks: { ...config.webhooks, ...settings } } });
      const t0 = performance.now();
      worker.start();
      // How full the slots are: the share of 5 ms samples with nothing in flight, and the average in flight.
      const busy: number[] = [];
      const sampler = setInterval(() => busy.push(worker.load().inFlight), 5);
      while ((await pending()) > 0) await new Promise((r) => setTimeout(r, 20));
      const ms = performance.now() - t0;
      clearInterval(sampler);
      (Object.keys(settings).length === 0 ? slots[scheme] : []).push(...busy);
      await worker.stop();
      // Every one of them delivered (the receiver answers 204): none failed and went back to wait.
      const got = (await delivered()) - before;
      if (got !== total) throw new Error(`${got} of ${total} deliveries were delivered`);
      return ms;
    };
    const slots = { v1: [] as number[], v1a: [] as number[] };
    // Warm-up of every path (connections, plans, JIT, key objects).
    await plainPosts(receiverPort, 500, sampleBody);
    await webhookRound("v1");
    await webhookRound("v1a");
    slots.v1.length = 0;
    slots.v1a.length = 0;

    const levers: { name: string; settings: Partial<typeof config.webhooks> }[] = LEVERS
      ? [
          { name: "claim batch 16 instead of 200", settings: { batchSize: 16 } },
          { name: "concurrency 16 instead of 64", settings: { concurrency: 16 } },
          { name: "concurrency 128 instead of 64", settings: { concurrency: 128 } },
          { name: "concurrency 256 instead of 64", settings: { concurrency: 256 } },
          { name: "perEndpointConcurrency 64 (no limit per endpoint) instead of 4", settings: { perEndpointConcurrency: 64 } },
        ]
      : [];
    // BENCH_WEBHOOK_CLAIM_AHEAD="0,16": rounds with webhooks.perEndpointClaimAhead at each value, against the default pipeline.
    for (const n of (process.env.BENCH_WEBHOOK_CLAIM_AHEAD ?? "").split(",").filter(Boolean)) {
      levers.push({ name: `perEndpointClaimAhead ${n} instead of ${config.webhooks.perEndpointClaimAhead}`, settings: { perEndpointClaimAhead: Number(n) } });
    }
    let plainMs = 0;
    let v1Ms = 0;
    let v1aMs = 0;
    const leverMs = levers.map(() => 0);
    for (let r = 0; r < ROUNDS; r++) {
      plainMs += await plainPosts(receiverPort, total, sampleBody);
      v1Ms += await webhookRound("v1");
      v1aMs += await webhookRound("v1a");
      for (let l = 0; l < levers.length; l++) leverMs[l]! += await webhookRound("v1", levers[l]!.settings);
    }
    const counts = receiver.counts();
    if (counts.failed > 0) throw new Error(`${counts.failed} of ${counts.verified + counts.failed} sampled deliveries failed verification`);
    const perSecond = (ms: number) => (total * ROUNDS) / (ms / 1000);
    const plainRate = perSecond(plainMs);
    const shape = `${ENDPOINTS} endpoints x ${EVENTS} events, ${CONCURRENCY} in flight`;
    for (const [scheme, ms] of [
      ["v1 HMAC-SHA-256", v1Ms],
      ["v1a Ed25519", v1aMs],
    ] as const) {
      rows.push({
        name: `signed deliveries/s, ${scheme} (${shape}); baseline: plain POSTs`,
        value: perSecond(ms),
        unit: "deliveries/s",
        baseline: plainRate,
        ratio: perSecond(ms) / plainRate,
        target: `>= ${TARGET}/s`,
        met: perSecond(ms) >= TARGET,
      });
    }
    levers.forEach((lever, l) => {
      rows.push({
        name: `lever: ${lever.name}; baseline: the default v1 pipeline`,
        value: perSecond(leverMs[l]!),
        unit: "deliveries/s",
        baseline: perSecond(v1Ms),
        ratio: perSecond(leverMs[l]!) / perSecond(v1Ms),
      });
    });
    for (const scheme of ["v1", "v1a"] as const) {
      const busy = slots[scheme];
      rows.push({ name: `${scheme}: average requests in flight (of ${CONCURRENCY})`, value: busy.reduce((a, b) => a + b, 0) / busy.length, unit: "requests" });
      rows.push({ name: `${scheme}: share of the time with no request in flight`, value: busy.filter((b) => b === 0).length / busy.length, unit: "fraction" });
    }
    rows.push({ name: "sampled deliveries verified (v1 by the reference code, v1a by Ed25519 from the spec)", value: counts.verified, unit: "deliveries" });
  } finally {
    receiver.server.closeAllConnections();
    receiver.server.close();
    await db.close();
    await embedded.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}
