import fs from "node:fs";
import path from "node:path";
import request from "supertest";
import { describe, expect, it } from "vitest";
import { tempDir } from "../../helpers/appliance.js";
import { runCli, spawnDaemon } from "../../helpers/daemon-process.js";
import { freePort } from "../../helpers/postgres.js";

/** The `wardkeep start` worker processes under `primary` (its other child is the embedded PostgreSQL). */
function workerPids(primary: number): number[] {
  const children = fs.readFileSync(`/proc/${primary}/task/${primary}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
  return children.filter((pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").includes("start");
    } catch {
      return false; // exited meanwhile
    }
  });
}

async function until<T>(what: string, probe: () => T | undefined, timeoutMs = 30_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("server.workers: several daemon processes on one port", () => {
  it("refuses an unseal that needs a person in each worker, in one line, before starting anything", async () => {
    const dataDir = tempDir("wardkeep-workers-refused-");
    try {
      const r = await runCli(["start"], { WARDKEEP_DATA_DIR: dataDir, WARDKEEP_SERVER_WORKERS: "2", WARDKEEP_KEYS_UNSEAL: "shamir", WARDKEEP_PORT: "0" });
      expect(r.code).toBe(1);
      expect(r.stderr.trim().split("\n")).toEqual([
        "wardkeep: server.workers is 2 but keys.unseal shamir needs a person to unseal each process: use 1 worker, or an unseal every worker can do alone (keyfile, pkcs11, passphrase with keys.passphraseFile)",
      ]);
      expect(fs.existsSync(path.join(dataDir, "pg"))).toBe(false);
    } finally {
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it("serves from two workers on the embedded PostgreSQL, replaces a killed worker, and stops them all on SIGTERM", async () => {
    const dataDir = tempDir("wardkeep-workers-");
    fs.chmodSync(dataDir, 0o711);
    const daemon = spawnDaemon({
      WARDKEEP_DATA_DIR: dataDir,
      WARDKEEP_DATABASE_EMBEDDED_PORT: String(await freePort()),
      WARDKEEP_PORT: "0",
      WARDKEEP_SERVER_REDIRECT_PORT: "0",
      WARDKEEP_SERVER_HOST: "127.0.0.1",
      WARDKEEP_SERVER_WORKERS: "2",
    });
    try {
      const port = Number((await daemon.waitFor(/2 workers listening on https:\/\/[^:]+:(\d+)/, 90_000))[1]);
      const ca = fs.readFileSync(path.join(dataDir, "tls", "ca.crt"), "utf8");
      const primary = daemon.child.pid!;
      const first = workerPids(primary);
      expect(first).toHaveLength(2);

      // Each new connection goes to the next worker: /metrics on fresh connections shows both processes.
      const starts = new Set<string>();
      for (let i = 0; i < 6; i++) {
        const res = await request(`https://localhost:${port}`).get("/metrics").ca(ca).set("connection", "close").timeout(10_000);
        expect(res.status).toBe(200);
        starts.add(/^wardkeep_process_start_time_seconds (\d+)/m.exec(res.text)![1]!);
      }
      expect(starts.size).toBe(2);
      const ready = await request(`https://localhost:${port}`).get("/readyz").ca(ca);
      expect(ready.body.status).toBe("ready");

      // A worker killed outright: once the primary has seen it go (a connection handed to it in that
      // instant is lost with it), the other answers every connection and a replacement starts.
      process.kill(first[0]!, "SIGKILL");
      await daemon.waitFor(/a worker exited unexpectedly; starting another/);
      for (let i = 0; i < 4; i++) {
        const res = await request(`https://localhost:${port}`).get("/readyz").ca(ca).set("connection", "close").timeout(10_000);
        expect(res.body.status).toBe("ready");
      }
      const replaced = await until("a replacement worker", () => {
        const now = workerPids(primary);
        return now.length === 2 && !now.includes(first[0]!) ? now : undefined;
      });
      expect(replaced).toContain(first[1]);
      await until("the replacement to listen", () => ((daemon.stdout().match(/"listening on https:/g) ?? []).length >= 3 ? true : undefined));
      const afterRestart = await request(`https://localhost:${port}`).get("/readyz").ca(ca).set("connection", "close").timeout(10_000);
      expect(afterRestart.body.status).toBe("ready");

      // Stopped while a second replacement is still starting: that one is told to stop once it
      // can hear it, and the primary waits for it before stopping PostgreSQL.
      const before = (daemon.stdout().match(/a worker exited unexpectedly/g) ?? []).length;
      process.kill(replaced[0]!, "SIGKILL");
      await until("the second death to be seen", () => ((daemon.stdout().match(/a worker exited unexpectedly/g) ?? []).length > before ? true : undefined));
      const starting = await until("a second replacement to be forked", () => workerPids(primary).find((pid) => !replaced.includes(pid)));
      expect(await daemon.stop("SIGTERM")).toBe(0);
      // The live one of the two, and the one that was starting (the killed ones say nothing).
      expect(daemon.logs().filter((l) => l.message === "stopped cleanly")).toHaveLength(2);
      for (const pid of [...replaced, starting]) expect(fs.existsSync(`/proc/${pid}`)).toBe(false);
      expect(fs.existsSync(path.join(dataDir, "pg", "postmaster.pid"))).toBe(false);
    } finally {
      if (daemon.child.exitCode === null) await daemon.stop("SIGKILL");
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  }, 150_000);
});
