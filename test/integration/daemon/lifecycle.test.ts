import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import tls from "node:tls";
import pg from "pg";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { knownMigrations } from "../../../daemon/db/migrate.js";
import { tempDir, testEnv } from "../../helpers/appliance.js";
import { spawnDaemon } from "../../helpers/daemon-process.js";
import { createTestDatabase, freePort, type TestDatabase } from "../../helpers/postgres.js";

describe("first start and restart on the embedded PostgreSQL", () => {
  it("creates database, roles, CA, key file and setup token once, and a second start reuses them", async () => {
    const dataDir = tempDir("wardkeep-embedded-");
    fs.chmodSync(dataDir, 0o711);
    const env = {
      WARDKEEP_DATA_DIR: dataDir,
      WARDKEEP_DATABASE_EMBEDDED_PORT: String(await freePort()),
      WARDKEEP_PORT: "0",
      WARDKEEP_SERVER_REDIRECT_PORT: "0",
      WARDKEEP_SERVER_HOST: "127.0.0.1",
    };
    try {
      const first = spawnDaemon(env);
      const port = await first.port();
      await first.waitFor(/Setup token \(shown once/);
      const messages = first.logs().map((l) => String(l.message));
      expect(messages).toEqual(
        expect.arrayContaining([
          expect.stringMatching(/^embedded PostgreSQL initialised/),
          "database wardkeep created",
          expect.stringMatching(/^roles wardkeep_owner .* and wardkeep_app .* created/),
          `migrations applied: ${knownMigrations().join(", ")}`,
          expect.stringMatching(/^internal CA created/),
          expect.stringMatching(/^root key file created .*EVALUATION ONLY/),
        ]),
      );
      expect(first.stderr()).toMatch(/Setup token \(shown once/);
      const ca = fs.readFileSync(path.join(dataDir, "tls", "ca.crt"), "utf8");
      const cert = fs.readFileSync(path.join(dataDir, "tls", "server.crt"), "utf8");
      const rootKey = fs.readFileSync(path.join(dataDir, "keys", "root.key"), "utf8");
      expect(fs.statSync(path.join(dataDir, "keys", "root.key")).mode & 0o777).toBe(0o600);
      expect((await request(`https://localhost:${port}`).get("/readyz").ca(ca)).status).toBe(200);
      // The daemon's pools reach the embedded PostgreSQL through its private Unix socket.
      expect(fs.statSync(path.join(dataDir, "pg.sock")).mode & 0o777).toBe(0o700);
      const su = new pg.Client({
        host: "127.0.0.1",
        port: Number(env.WARDKEEP_DATABASE_EMBEDDED_PORT),
        user: "postgres",
        password: fs.readFileSync(path.join(dataDir, "secrets", "pg-superuser-password"), "utf8").trim(),
        database: "wardkeep",
      });
      await su.connect();
      try {
        const sessions = (await su.query<{ client_addr: string | null }>("SELECT client_addr FROM pg_stat_activity WHERE usename IN ('wardkeep_owner', 'wardkeep_app')")).rows;
        expect(sessions.length).toBeGreaterThan(0);
        expect(sessions.every((s) => s.client_addr === null)).toBe(true);
      } finally {
        await su.end();
      }
      expect(await first.stop()).toBe(0);
      expect(fs.existsSync(path.join(dataDir, "pg", "postmaster.pid"))).toBe(false);

      const second = spawnDaemon(env);
      const port2 = await second.port();
      await second.waitFor(/setup pending/);
      const messages2 = second.logs().map((l) => String(l.message));
      expect(messages2).toContain("database schema is current");
      expect(messages2.some((m) => /created|initialised/.test(m))).toBe(false);
      expect(second.stderr()).not.toMatch(/Setup token/);
      expect(messages2).toEqual(expect.arrayContaining([expect.stringMatching(/^setup pending/)]));
      expect(fs.readFileSync(path.join(dataDir, "tls", "ca.crt"), "utf8")).toBe(ca);
      expect(fs.readFileSync(path.join(dataDir, "tls", "server.crt"), "utf8")).toBe(cert);
      expect(fs.readFileSync(path.join(dataDir, "keys", "root.key"), "utf8")).toBe(rootKey);
      expect((await request(`https://localhost:${port2}`).get("/readyz").ca(ca)).status).toBe(200);
      expect(await second.stop("SIGINT")).toBe(0);
    } finally {
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  }, 120_000);
});

describe("a daemon on an external PostgreSQL", () => {
  let db: TestDatabase;
  let dataDir: string;
  beforeAll(async () => {
    db = await createTestDatabase();
    dataDir = tempDir();
  });
  afterAll(async () => {
    await db.drop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it("on SIGTERM stops accepting, finishes the in-flight request, then exits 0", async () => {
    const daemon = spawnDaemon(testEnv(db, dataDir));
    const port = await daemon.port();
    const ca = fs.readFileSync(path.join(dataDir, "tls", "ca.crt"), "utf8");
    const body = JSON.stringify({ token: "wks_setup_not-the-token", email: "it@hospital.example", password: "correct horse battery" });
    const socket = tls.connect({ host: "127.0.0.1", port, ca, servername: "localhost" });
    await new Promise<void>((resolve, reject) => socket.once("secureConnect", resolve).once("error", reject));
    let response = "";
    socket.on("data", (d: Buffer) => (response += d.toString()));
    const closed = new Promise<void>((resolve) => socket.on("close", () => resolve()));
    // Headers and half the body: the request is in flight when the signal arrives.
    socket.write(`POST /api/v1/setup HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n` + body.slice(0, 20));
    await new Promise((r) => setTimeout(r, 300));
    daemon.child.kill("SIGTERM");
    await daemon.waitFor(/shutting down: draining/);

    const refused = await new Promise<string>((resolve) => {
      const probe = net.connect({ host: "127.0.0.1", port });
      probe.on("connect", () => {
        probe.destroy();
        resolve("connected");
      });
      probe.on("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? "error"));
    });
    expect(refused).toBe("ECONNREFUSED");

    socket.write(body.slice(20));
    await closed;
    expect(response).toMatch(/^HTTP\/1\.1 403 /);
    expect(response).toContain("urn:wardkeep:problem:forbidden");
    expect(await daemon.exited).toBe(0);
    expect(daemon.logs().map((l) => l.message)).toContain("stopped cleanly");
  }, 90_000);

  it("never writes seeded canary PHI into any log line", async () => {
    const canaries = ["Zebulon Quaxworth", "zebulon.q@example.org", "1961-04-17", "MRN-88412077", "+1 (555) 010-7788", "17 Larkspur Crescent"] as const;
    const daemon = spawnDaemon({ ...testEnv(db, dataDir), WARDKEEP_LOG_LEVEL: "debug" });
    const port = await daemon.port();
    const ca = fs.readFileSync(path.join(dataDir, "tls", "ca.crt"), "utf8");
    const base = () => request(`https://localhost:${port}`);
    await base()
      .post("/api/v1/setup")
      .ca(ca)
      .send({ token: "wks_setup_wrong", email: canaries[1], password: `${canaries[0]} ${canaries[2]}`, name: canaries[0], mrn: canaries[3] });
    await base().post("/api/v1/setup").ca(ca).set("content-type", "application/json").send(`{"name": "${canaries[0]}", "dob": "${canaries[2]}"`);
    await base()
      .get(`/api/v1/patients?name=${encodeURIComponent(canaries[0])}&mrn=${canaries[3]}`)
      .ca(ca);
    await base()
      .get(`/api/v1/lookup/${encodeURIComponent(canaries[1])}`)
      .ca(ca)
      .set("x-request-id", canaries[4]);
    await base()
      .post("/api/v1/setup")
      .ca(ca)
      .send({ token: "t", email: "x@y.org", password: "p".repeat(20), address: canaries[5], phone: canaries[4] });
    expect(await daemon.stop()).toBe(0);
    const output = daemon.stdout() + daemon.stderr();
    expect(daemon.logs().filter((l) => l.message === "request").length).toBeGreaterThanOrEqual(5);
    for (const canary of canaries) expect(output, `log contains ${canary}`).not.toContain(canary);
    expect(output).not.toContain("Quaxworth");
  }, 90_000);
});
