import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { Writable } from "node:stream";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startAppliance } from "../../../daemon/appliance.js";
import { loadConfig } from "../../../daemon/config/load.js";
import { createLogger } from "../../../daemon/log/logger.js";
import { openAlertsOf } from "../../../daemon/alerts/index.js";
import { tempDir, type TestAppliance } from "../../helpers/appliance.js";
import { createTenant, signIn, type SignedIn } from "../../helpers/actors.js";
import { freePort } from "../../helpers/postgres.js";

/**
 * The appliance on its own embedded PostgreSQL (not the suite's shared cluster), which the test
 * kills and freezes under load. Every answer must be a success or a 503 problem+json with
 * Retry-After, within a bounded time; every acknowledged write must be there afterwards; the
 * daemon must recover by itself.
 */
let app: TestAppliance;
let desk: SignedIn;
let dataDir: string;

beforeAll(async () => {
  dataDir = tempDir("wardkeep-outage-");
  const config = loadConfig({
    env: {
      WARDKEEP_DATA_DIR: dataDir,
      WARDKEEP_PORT: "0",
      WARDKEEP_SERVER_REDIRECT_PORT: "0",
      WARDKEEP_SERVER_HOST: "127.0.0.1",
      WARDKEEP_DATABASE_EMBEDDED_PORT: String(await freePort()),
      WARDKEEP_SERVER_SHUTDOWN_TIMEOUT_MS: "3000",
      // Shorter than the defaults so the test's outages can be short; the mechanism is the same.
      WARDKEEP_DATABASE_HEARTBEAT_MS: "500",
      WARDKEEP_DATABASE_PROBE_TIMEOUT_MS: "1000",
      WARDKEEP_DATABASE_COMMIT_TIMEOUT_MS: "3000",
      WARDKEEP_DATABASE_ACQUIRE_TIMEOUT_MS: "2000",
    },
  });
  const logLines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      logLines.push(...chunk.toString().split("\n").filter(Boolean));
      cb();
    },
  });
  const appliance = await startAppliance(config, { log: createLogger({ level: "info", stream }), announce: () => {} });
  app = {
    ...appliance,
    config,
    dataDir,
    caPem: fs.readFileSync(path.join(dataDir, "tls", "ca.crt"), "utf8"),
    logLines,
    announcements: [],
    baseUrl: `https://localhost:${appliance.server.port}`,
    close: async () => void (await appliance.stop()),
  } as unknown as TestAppliance;
  const tenant = await createTenant(app, "Outage General");
  desk = await signIn(app, { role: "front_desk", tenantId: tenant.id, mfa: false });
}, 120_000);
afterAll(async () => {
  await app?.close();
  if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
});

type Answer = { status: number; ms: number; retryAfter?: string; type?: string; contentType?: string; id?: string; name: string };

/**
 * Registers patients at a steady rate (a new request every 40 ms, at most 16 in flight) until
 * `until` resolves: new requests keep arriving while earlier ones wait, as at a real ward.
 */
async function writeLoad(until: Promise<unknown>): Promise<Answer[]> {
  let done = false;
  void until.finally(() => (done = true));
  const answers: Answer[] = [];
  const inFlight = new Set<Promise<void>>();
  let n = 0;
  while (!done) {
    if (inFlight.size < 16) {
      const name = `Outage Patient ${++n}`;
      const started = Date.now();
      const p = desk.agent
        .post("/api/v1/patients")
        .send({ name })
        .timeout(60_000)
        .then((res) => {
          answers.push({
            status: res.status,
            ms: Date.now() - started,
            retryAfter: res.headers["retry-after"] as string | undefined,
            type: res.body?.type,
            contentType: res.headers["content-type"] as string,
            id: res.body?.id,
            name,
          });
        })
        .finally(() => inFlight.delete(p));
      inFlight.add(p);
    }
    await new Promise((r) => setTimeout(r, 40));
  }
  await Promise.all(inFlight);
  return answers;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what: () => Promise<boolean>, ms: number): Promise<number> {
  const started = Date.now();
  while (Date.now() - started < ms) {
    if (await what().catch(() => false)) return Date.now() - started;
    await sleep(100);
  }
  throw new Error(`not within ${ms} ms`);
}

const ready = async () => (await request(app.baseUrl).get("/readyz").ca(app.caPem)).status === 200;

function expectOnlySuccessOr503(answers: Answer[]) {
  const other = answers.filter((a) => a.status !== 201 && a.status !== 503).map((a) => a.status);
  // On failure, the daemon's own record of each 500 says which path met the outage unprepared.
  const failed = app.logLines.filter((l) => l.includes('"request failed"'));
  expect(other, failed.join("\n").slice(0, 4000)).toEqual([]);
  for (const a of answers.filter((x) => x.status === 503)) {
    expect(a.contentType).toMatch(/^application\/problem\+json/);
    expect(a.type).toBe("urn:wardkeep:problem:unavailable");
    expect(Number(a.retryAfter)).toBeGreaterThan(0);
  }
}

async function expectAcknowledgedWritesPresent(answers: Answer[]) {
  const acknowledged = answers.filter((a) => a.status === 201);
  for (const a of acknowledged) {
    const res = await desk.agent.get(`/api/v1/patients/${a.id}`);
    expect(res.status).toBe(200);
    expect(res.body.name).toBe(a.name);
  }
}

describe("database outage", () => {
  it("answers 503 with Retry-After while the embedded PostgreSQL is killed, restarts it, and serves again by itself", async () => {
    const pid = app.embedded!.pid!;
    const load = (async () => {
      await sleep(500);
      process.kill(pid, "SIGKILL");
      await sleep(500);
      const readyz = await request(app.baseUrl).get("/readyz").ca(app.caPem);
      expect(readyz.status).toBe(503);
      expect(readyz.headers["retry-after"]).toBeDefined();
      // The supervisor restarts it after a second; the daemon notices without being told.
      await waitFor(ready, 15_000);
      await sleep(500);
    })();
    const answers = await writeLoad(load);
    await load;
    expectOnlySuccessOr503(answers);
    expect(answers.filter((a) => a.status === 503).length).toBeGreaterThan(0);
    expect(answers.slice(-3).map((a) => a.status)).toEqual([201, 201, 201]);
    expect(app.embedded!.pid).not.toBe(pid);
    await expectAcknowledgedWritesPresent(answers);
    expect(app.logLines.some((l) => l.includes("embedded PostgreSQL exited unexpectedly"))).toBe(true);
    expect(app.logLines.some((l) => l.includes("embedded PostgreSQL restarted"))).toBe(true);
    await waitFor(async () => (await openAlertsOf(app.ctx)).some((a) => a.kind === "database.embedded_restarted"), 5_000);
  }, 60_000);

  it("answers within seconds while PostgreSQL is frozen (SIGSTOP), and recovers within seconds of SIGCONT", async () => {
    // The postmaster and every backend (each backend is its own process group): the whole server freezes.
    const pid = app.embedded!.pid!;
    const server = [
      pid,
      ...execFileSync("pgrep", ["-P", String(pid)], { encoding: "utf8" })
        .trim()
        .split("\n")
        .map(Number),
    ];
    const signal = (sig: NodeJS.Signals) => server.forEach((p) => process.kill(p, sig));
    let frozenAt = 0;
    let thawedAt = 0;
    const load = (async () => {
      await sleep(500);
      signal("SIGSTOP");
      frozenAt = Date.now();
      await sleep(5_000);
      signal("SIGCONT");
      thawedAt = Date.now();
      await waitFor(ready, 10_000);
      await sleep(500);
    })();
    let answers: Answer[];
    try {
      answers = await writeLoad(load);
      await load;
    } finally {
      if (!thawedAt) signal("SIGCONT");
    }
    expectOnlySuccessOr503(answers);
    const refused = answers.filter((a) => a.status === 503);
    expect(refused.length).toBeGreaterThan(0);
    // Bounded: heartbeat + two probe timeouts + the commit deadline at worst, never the 30 s of before.
    expect(Math.max(...answers.map((a) => a.ms))).toBeLessThan(app.config.database.commitTimeoutMs + 1_500);
    expect(answers.slice(-3).map((a) => a.status)).toEqual([201, 201, 201]);
    expect(thawedAt - frozenAt).toBeGreaterThan(4_500);
    await expectAcknowledgedWritesPresent(answers);
    expect(app.logLines.some((l) => l.includes("database unreachable"))).toBe(true);
    expect(app.logLines.some((l) => l.includes("database reachable again"))).toBe(true);
    await waitFor(async () => (await openAlertsOf(app.ctx)).some((a) => a.kind === "database.outage"), 5_000);
  }, 60_000);
});
