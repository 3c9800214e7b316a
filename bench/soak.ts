import fs from "node:fs";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import pg from "pg";
import { startAppliance, type Appliance } from "../daemon/appliance.js";
import { createApiToken } from "../daemon/auth/api-tokens.js";
import { verifyAuditChain } from "../daemon/audit/index.js";
import { runDrill, runSnapshot } from "../daemon/backups/index.js";
import { writePolicy } from "../daemon/backups/policy.js";
import { loadConfig } from "../daemon/config/load.js";
import { startEmbeddedPostgres, type EmbeddedPostgres } from "../daemon/db/embedded.js";
import { createBenchDatabase } from "./cluster.js";
import { inScope } from "../daemon/db/sql.js";
import { SYSTEM_META } from "../daemon/kernel/request-meta.js";
import { silentLogger } from "../daemon/log/logger.js";
import { createTenant, signIn, type SignedIn } from "../test/helpers/actors.js";
import type { TestAppliance } from "../test/helpers/appliance.js";
import { spawnDaemon, type DaemonProcess } from "../test/helpers/daemon-process.js";
import { KEEP_ALIVE_TIMEOUT_MS } from "../daemon/http/server.js";
import type { BenchRow } from "./run.js";

/**
 * `npm run bench -- soak` (issue 16): a daemon process under mixed traffic for BENCH_SOAK_MINUTES
 * (10 by default; `BENCH_SOAK_MINUTES=2 npm run bench -- soak` for a short run) — paced sign-ins
 * and sign-outs, audited patient reads and registrations through an API token, step-up patient
 * exports — with an encrypted snapshot and a recovery drill taken by a second replica in the
 * middle, and PostgreSQL stopped and started again at half time. Reports throughput, p50/p99 per
 * kind, the daemon's RSS over time (growth after warm-up), answers by status inside and outside the
 * outage window, lost writes (every registration answered 201 is looked up with its audit event)
 * and the audit chain verified at the end. docs/assurance.md keeps the last figures.
 */
const MINUTES = Number(process.env.BENCH_SOAK_MINUTES ?? 10);
const READS_PER_SECOND = Number(process.env.BENCH_SOAK_READS ?? 30);
const WRITES_PER_SECOND = Number(process.env.BENCH_SOAK_WRITES ?? 8);
const SIGN_INS_PER_MINUTE = Number(process.env.BENCH_SOAK_SIGN_INS ?? 20);
const EXPORTS_PER_MINUTE = Number(process.env.BENCH_SOAK_EXPORTS ?? 2);
const OUTAGE_SECONDS = Number(process.env.BENCH_SOAK_OUTAGE_SECONDS ?? 5);

type Kind = "sign-in" | "read" | "write" | "export";
/**
 * `error`: why a request got no answer (status 0), so a run says what the client met. `retried`:
 * an idempotent request whose reused keep-alive connection was reset, sent again once (below).
 */
type Sample = { kind: Kind; at: number; ms: number; status: number; error?: string; retried?: string; reusedIdleMs?: number };
type Answer = {
  status: number;
  body: string;
  headers: Record<string, string | string[] | undefined>;
  error?: string;
  retried?: string;
  /** For a request that got no answer on a connection taken from the pool: how long it had been idle. */
  reusedIdleMs?: number;
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The clinical application's side. HTTP/1.1 keep-alive has a race no server can close: the daemon
 * ends a connection idle for `keepAliveTimeout` (5 s, announced in `Keep-Alive: timeout=5`) while
 * a client whose event loop was stalled past that moment still takes it from its pool and writes
 * on it; the reply is a reset. Node documents the remedy (`request.reusedSocket`): send an
 * idempotent request again on a new connection (not from the pool, which may hold more of them).
 * (An agent `timeout`, which makes Node drop idle
 * connections a second before the server's hint, also stays on the socket while it is in use and
 * cut slow sign-ins at 4 s in a run; not used.) Writes are not retried: they are reported with how
 * long their connection sat idle.
 */
function client(baseUrl: string, ca: string) {
  const agent = new https.Agent({ keepAlive: true, maxSockets: 32, ca });
  const freedAt = new WeakMap<object, number>();
  agent.on("free", (socket: object) => freedAt.set(socket, Date.now()));
  const once = (method: string, url: string, headers: Record<string, string>, data: string | undefined, fresh = false) =>
    new Promise<Answer>((resolve) => {
      let reusedIdleMs: number | undefined;
      const req = https.request(
        new URL(url, baseUrl),
        {
          method,
          agent: fresh ? false : agent,
          ca,
          headers: { ...headers, ...(data ? { "content-type": "application/json", "content-length": String(Buffer.byteLength(data)) } : {}) },
          timeout: 30_000,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString(), headers: res.headers }));
          res.on("error", (e) => resolve({ status: 0, body: "", headers: {}, error: e.message }));
        },
      );
      req.on("socket", (socket) => {
        const freed = freedAt.get(socket);
        if (req.reusedSocket && freed !== undefined) reusedIdleMs = Date.now() - freed;
      });
      req.on("timeout", () => req.destroy(new Error("timeout")));
      req.on("error", (e) => {
        const idle = reusedIdleMs === undefined ? "a new connection" : `a connection reused after ${reusedIdleMs} ms idle`;
        resolve({ status: 0, body: "", headers: {}, error: `${e.message} on ${idle}`, ...(reusedIdleMs === undefined ? {} : { reusedIdleMs }) });
      });
      req.end(data);
    });
  return async (method: string, url: string, headers: Record<string, string>, body?: unknown): Promise<Answer> => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const first = await once(method, url, headers, data);
    if (first.status !== 0 || first.reusedIdleMs === undefined || method !== "GET" || !/ECONNRESET|socket hang up/.test(first.error ?? "")) return first;
    // A new connection: the pool may hold more connections the server has closed meanwhile.
    const again = await once(method, url, headers, data, true);
    return { ...again, retried: first.error };
  };
}

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) : 0;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** Runs `once` every `periodMs` (paced, not closed-loop) until `stop()` says so; `lanes` in flight at most. */
async function paced(periodMs: number, lanes: number, stop: () => boolean, once: () => Promise<void>) {
  let next = Date.now();
  const inFlight = new Set<Promise<void>>();
  while (!stop()) {
    next += periodMs;
    if (inFlight.size < lanes) {
      const p = once().finally(() => inFlight.delete(p));
      inFlight.add(p);
    }
    const wait = next - Date.now();
    if (wait > 0) await sleep(wait);
    else next = Date.now();
  }
  await Promise.all(inFlight);
}

async function setUp(dir: string) {
  const pgDir = path.join(dir, "pg");
  const passwordFile = path.join(dir, "su-password");
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  const start = () => startEmbeddedPostgres({ dataDir: pgDir, port, passwordFile });
  const embedded = await start();
  const { ownerUrl, appUrl } = await createBenchDatabase(embedded, "wk_soak");
  const env = {
    WARDKEEP_DATA_DIR: path.join(dir, "data"),
    WARDKEEP_DATABASE_URL: ownerUrl,
    WARDKEEP_DATABASE_APP_URL: appUrl,
    WARDKEEP_PORT: "0",
    WARDKEEP_SERVER_REDIRECT_PORT: "0",
    WARDKEEP_SERVER_HOST: "127.0.0.1",
    WARDKEEP_LOG_LEVEL: "warn",
    WARDKEEP_BACKUP_SCHEDULER_ENABLED: "false",
    WARDKEEP_BACKUP_DRILL_ADMIN_URL: embedded.superuserUrl,
    // Sign-ins come from one address at 20 a minute: the per-address limit is for attackers.
    WARDKEEP_AUTH_IP_MAX_ATTEMPTS: "10000",
  };
  // A second replica outside the traffic: it sets the appliance up and takes the snapshot and drill.
  const operator = await startAppliance(loadConfig({ env }), { log: silentLogger(), announce: () => undefined });
  await inScope(operator.ctx.db.app, { kind: "appliance" }, (t) =>
    writePolicy(operator.ctx, t, { targets: [{ kind: "fs", name: "nas", path: path.join(dir, "nas") }], snapshotMaxAgeMinutes: 60, drillMaxAgeDays: 7 }, null),
  );
  // Info level: the daemon says when it listens (and writes one line per request, as in production).
  const daemon = spawnDaemon({ ...env, WARDKEEP_LOG_LEVEL: "info" });
  const daemonPort = await daemon.port();
  const caPem = fs.readFileSync(path.join(dir, "data", "tls", "ca.crt"), "utf8");
  const baseUrl = `https://localhost:${daemonPort}`;
  // The test helpers sign people in over HTTPS against the daemon under test.
  const app = { ctx: operator.ctx, baseUrl, caPem } as unknown as TestAppliance;
  const tenant = await createTenant(app, "Soak General");
  const desk = await signIn(app, { role: "front_desk", tenantId: tenant.id, mfa: false });
  const admin = await signIn(app, { role: "admin", tenantId: tenant.id });
  const adminActor = { userId: admin.user.id, role: "admin" as const, tenantId: tenant.id, via: "session" as const, mfaVerifiedAt: new Date() };
  const { token } = await createApiToken(operator.ctx, adminActor, { name: "EHR bridge", role: "front_desk", scopes: ["*"], expiresInDays: 1 }, SYSTEM_META);
  return { dir, embedded, restart: start, operator, daemon, baseUrl, caPem, tenant, desk, admin, token, superuserUrl: embedded.superuserUrl.replace(/\/postgres$/, "/wk_soak") };
}

export async function run(): Promise<BenchRow[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "wardkeep-bench-soak-"));
  fs.chmodSync(dir, 0o711);
  let embedded: EmbeddedPostgres | undefined;
  let operator: Appliance | undefined;
  let daemon: DaemonProcess | undefined;
  try {
    const env = await setUp(dir);
    ({ embedded, operator, daemon } = env);
    const call = client(env.baseUrl, env.caPem);
    const bearer = { authorization: `Bearer ${env.token}` };
    const samples: Sample[] = [];
    const acked: string[] = [];
    const rss: { at: number; kib: number }[] = [];
    const events: { at: number; what: string; ms?: number; ok?: boolean }[] = [];
    const durationMs = MINUTES * 60_000;
    const t0 = Date.now();
    const stop = () => Date.now() - t0 >= durationMs;
    const timed = async <R extends Pick<Answer, "status" | "error" | "retried" | "reusedIdleMs">>(kind: Kind, work: () => Promise<R>): Promise<R> => {
      const started = Date.now();
      const res = await work();
      samples.push({
        kind,
        at: started - t0,
        ms: Date.now() - started,
        status: res.status,
        ...(res.error ? { error: res.error } : {}),
        ...(res.retried ? { retried: res.retried } : {}),
        ...(res.reusedIdleMs === undefined ? {} : { reusedIdleMs: res.reusedIdleMs }),
      });
      return res;
    };

    // Seed a few patients to read.
    const readable: string[] = [];
    for (let i = 0; i < 20; i++) {
      const res = await call("POST", "/api/v1/patients", bearer, { name: `Soak Seed ${i}`, birthDate: "1980-02-03", mrn: `SOAK-${i}` });
      if (res.status === 201) readable.push((JSON.parse(res.body) as { id: string }).id);
    }
    const desk = env.desk;
    const admin: SignedIn = env.admin;
    let adminBusy = false;

    const rssTimer = setInterval(() => rss.push({ at: Date.now() - t0, kib: rssKiB(daemon!.child.pid!) }), 5_000);
    const lanes = [
      paced(1000 / READS_PER_SECOND, 16, stop, async () => {
        const id = readable[Math.floor(Math.random() * readable.length)]!;
        await timed("read", () => call("GET", `/api/v1/patients/${id}`, bearer));
      }),
      paced(1000 / WRITES_PER_SECOND, 8, stop, async () => {
        const res = await timed("write", () => call("POST", "/api/v1/patients", bearer, { name: `Soak Patient ${randomBytes(4).toString("hex")}`, phone: "+44 20 7946 0001" }));
        if (res.status === 201) {
          const id = (JSON.parse(res.body) as { id: string }).id;
          acked.push(id);
          if (readable.length < 500) readable.push(id);
        }
      }),
      paced(60_000 / SIGN_INS_PER_MINUTE, 2, stop, async () => {
        const res = await timed("sign-in", () => call("POST", "/api/v1/auth/login", {}, { email: desk.user.email, password: desk.password }));
        const cookie = ([] as string[])
          .concat(res.headers["set-cookie"] ?? [])
          .find((c) => c.startsWith("__Host-"))
          ?.split(";")[0];
        if (res.status === 200 && cookie) {
          const csrf = (JSON.parse(res.body) as { csrfToken: string }).csrfToken;
          await call("GET", "/api/v1/auth/session", { cookie });
          await call("POST", "/api/v1/auth/logout", { cookie, "x-csrf-token": csrf });
        }
      }),
      paced(60_000 / EXPORTS_PER_MINUTE, 1, stop, async () => {
        if (adminBusy) return;
        adminBusy = true;
        try {
          await admin.stepUp().catch(() => undefined);
          const id = readable[Math.floor(Math.random() * readable.length)]!;
          await timed("export", () => call("GET", `/api/v1/exports/patients/${id}?format=json`, admin.headers));
        } finally {
          adminBusy = false;
        }
      }),
      // A snapshot at 35 %, a drill at 65 %, by the other replica while traffic flows.
      (async () => {
        await sleep(durationMs * 0.35);
        const s = Date.now();
        const snap = await runSnapshot(operator!.ctx, { trigger: "manual" }).catch((err: Error) => ({ status: `failed: ${err.message}` }));
        events.push({ at: s - t0, what: `snapshot ${(snap as { status: string }).status}`, ms: Date.now() - s });
        await sleep(Math.max(0, t0 + durationMs * 0.65 - Date.now()));
        const d = Date.now();
        const drill = await runDrill(operator!.ctx, { trigger: "manual" }).catch((err: Error) => ({ status: `failed: ${err.message}` }));
        events.push({ at: d - t0, what: `drill ${(drill as { status: string }).status}`, ms: Date.now() - d });
      })(),
      // PostgreSQL stopped at half time and started again OUTAGE_SECONDS later.
      (async () => {
        await sleep(durationMs * 0.5);
        events.push({ at: Date.now() - t0, what: "PostgreSQL stopped" });
        await embedded!.stop();
        await sleep(OUTAGE_SECONDS * 1000);
        embedded = await env.restart();
        events.push({ at: Date.now() - t0, what: "PostgreSQL started" });
      })(),
    ];
    await Promise.all(lanes);
    clearInterval(rssTimer);
    rss.push({ at: Date.now() - t0, kib: rssKiB(daemon.child.pid!) });

    // The outage window: from the stop until the first answered write after the restart.
    const stoppedAt = events.find((e) => e.what === "PostgreSQL stopped")!.at;
    const startedAt = events.find((e) => e.what === "PostgreSQL started")!.at;
    const recoveredAt = samples.filter((s) => s.kind === "write" && s.status === 201 && s.at >= startedAt).reduce((m, s) => Math.min(m, s.at + s.ms), Infinity);
    const inOutage = (s: Sample) => s.at + s.ms >= stoppedAt && s.at <= recoveredAt;

    // Lost writes: every acknowledged registration is a row with its audit event.
    const su = new pg.Client({ connectionString: env.superuserUrl });
    await su.connect();
    let missingRows = -1;
    let missingEvents = -1;
    try {
      for (let i = 0; i < 200; i++) {
        if ((await su.query<{ n: number }>("SELECT count(*)::int AS n FROM audit_intake")).rows[0]!.n === 0) break;
        await sleep(100);
      }
      missingRows = (await su.query<{ n: number }>("SELECT count(*)::int AS n FROM unnest($1::uuid[]) id WHERE NOT EXISTS (SELECT 1 FROM patients p WHERE p.id = id)", [acked]))
        .rows[0]!.n;
      missingEvents = (
        await su.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM unnest($1::text[]) id WHERE NOT EXISTS (
             SELECT 1 FROM audit_events e WHERE e.canonical::jsonb->>'action' = 'patient.create' AND e.canonical::jsonb->>'resource_id' = id)`,
          [acked],
        )
      ).rows[0]!.n;
    } finally {
      await su.end();
    }
    const chain = await verifyAuditChain(operator.ctx);

    // Report.
    const rows: BenchRow[] = [];
    const seconds = durationMs / 1000;
    rows.push({ name: "duration", value: MINUTES, unit: "min" });
    for (const kind of ["read", "write", "sign-in", "export"] as Kind[]) {
      const ok = samples.filter((s) => s.kind === kind && s.status >= 200 && s.status < 300 && !inOutage(s));
      const ms = ok.map((s) => s.ms).sort((a, b) => a - b);
      rows.push({ name: `${kind} throughput`, value: ok.length / seconds, unit: "req/s" });
      rows.push({ name: `${kind} p50`, value: percentile(ms, 50), unit: "ms" });
      rows.push({ name: `${kind} p99`, value: percentile(ms, 99), unit: "ms" });
    }
    const byStatus = (filter: (s: Sample) => boolean) => {
      const m = new Map<number, number>();
      for (const s of samples.filter(filter)) m.set(s.status, (m.get(s.status) ?? 0) + 1);
      return [...m].sort((a, b) => a[0] - b[0]);
    };
    const outside = byStatus((s) => !inOutage(s));
    const inside = byStatus(inOutage);
    const fiveXxOutside = outside.filter(([st]) => st >= 500).reduce((n, [, c]) => n + c, 0);
    rows.push({ name: "5xx outside the outage window", value: fiveXxOutside, unit: "responses", target: "0", met: fiveXxOutside === 0 });
    // A connection idle past the daemon's keepAliveTimeout had been closed by it before the request
    // was written: the keep-alive race of docs/hardening.md, which the request never reached.
    const staleConnection = (x: Sample) => x.status === 0 && (x.reusedIdleMs ?? 0) >= KEEP_ALIVE_TIMEOUT_MS;
    const unanswered = samples.filter((x) => x.status === 0 && !inOutage(x));
    const raced = unanswered.filter(staleConnection).length;
    rows.push({ name: "no answer: written on a connection the daemon had closed (keep-alive race)", value: raced, unit: "requests" });
    rows.push({ name: "no answer, any other cause, outside the outage window", value: unanswered.length - raced, unit: "requests", target: "0", met: unanswered.length === raced });
    const retried = samples.filter((x) => x.retried !== undefined);
    rows.push({ name: "reads sent again after a reset on a reused keep-alive connection", value: retried.length, unit: "requests" });
    rows.push({ name: "outage window (stop to first write after restart)", value: (recoveredAt - stoppedAt) / 1000, unit: "s" });
    rows.push({ name: "recovery after PostgreSQL was back", value: (recoveredAt - startedAt) / 1000, unit: "s" });
    rows.push({ name: "acknowledged writes", value: acked.length, unit: "writes" });
    rows.push({ name: "lost writes (row or audit event missing)", value: missingRows + missingEvents, unit: "writes", target: "0", met: missingRows === 0 && missingEvents === 0 });
    rows.push({ name: "audit chain intact at the end", value: chain.intact ? 1 : 0, unit: "bool", target: "1", met: chain.intact });
    const warm = rss.filter((r) => r.at >= durationMs * 0.2 && r.at <= durationMs * 0.3);
    const late = rss.filter((r) => r.at >= durationMs * 0.8);
    const warmKiB = warm.length ? Math.max(...warm.map((r) => r.kib)) : rss[0]!.kib;
    const lateKiB = late.length ? Math.max(...late.map((r) => r.kib)) : rss[rss.length - 1]!.kib;
    const growth = (lateKiB - warmKiB) / warmKiB;
    rows.push({ name: "daemon RSS after warm-up (20-30 %)", value: warmKiB / 1024, unit: "MiB" });
    rows.push({ name: "daemon RSS at the end (last 20 %, max)", value: lateKiB / 1024, unit: "MiB" });
    rows.push({ name: "RSS growth past warm-up", value: growth * 100, unit: "%", target: "≤ 10", met: growth <= 0.1 });

    process.stderr.write(
      [
        `soak: ${MINUTES} min, ${samples.length} requests, ${acked.length} acknowledged writes`,
        `answers outside the outage window by status: ${JSON.stringify(outside)}`,
        `answers inside the outage window by status: ${JSON.stringify(inside)}`,
        `no answer outside the outage window (kind, start s, ms, error): ${JSON.stringify(
          samples.filter((x) => x.status === 0 && !inOutage(x)).map((x) => [x.kind, Math.round(x.at / 1000), x.ms, x.error ?? "?"]),
        )}`,
        `sent again after a reset on a reused connection (kind, start s, first error, status of the second): ${JSON.stringify(
          retried.map((x) => [x.kind, Math.round(x.at / 1000), x.retried, x.status]),
        )}`,
        `events: ${JSON.stringify(events)}`,
        `RSS (s, MiB): ${rss.map((r) => `${Math.round(r.at / 1000)}:${(r.kib / 1024).toFixed(0)}`).join(" ")}`,
        `audit chain: ${chain.intact ? "intact" : "BROKEN"}, ${chain.verified} events verified`,
        // Each 500 is logged by the daemon with its cause (redacted by its logger: no PHI).
        `daemon "request failed" log entries (the cause of each 500): ${JSON.stringify(
          daemon!
            .logs()
            .filter((l) => l.message === "request failed")
            .map((l) => JSON.stringify(l.error ?? l.err ?? null).slice(0, 300)),
        )}`,
        "",
      ].join("\n"),
    );
    return rows;
  } finally {
    await daemon?.stop("SIGTERM").catch(() => undefined);
    await operator?.stop().catch(() => undefined);
    await embedded?.stop().catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
