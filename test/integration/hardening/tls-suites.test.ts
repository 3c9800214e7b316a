import { execFile, execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import tls from "node:tls";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestAppliance, tempDir, type TestAppliance } from "../../helpers/appliance.js";

let app: TestAppliance;

beforeAll(async () => {
  app = await startTestAppliance();
});
afterAll(async () => {
  await app?.close();
});

/** The suite the server picks when the client offers only `ciphers` over TLS 1.2, or the handshake error. */
function handshake(ciphers: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect(
      { host: "127.0.0.1", port: app.server.port, ca: app.caPem, servername: "localhost", minVersion: "TLSv1.2", maxVersion: "TLSv1.2", ciphers: `${ciphers}@SECLEVEL=0` },
      () => {
        const name = socket.getCipher().standardName;
        socket.end();
        resolve(name);
      },
    );
    socket.on("error", reject);
  });
}

describe("TLS suites", () => {
  it("offers TLS 1.2 only with ECDHE key exchange and AEAD ciphers: every suite OpenSSL knows is tried one by one", async () => {
    // What `openssl s_client -tls1_2 -cipher X` does for each X, without a process per suite.
    const all = execFileSync("openssl", ["ciphers", "-tls1_2", "ALL:COMPLEMENTOFALL:@SECLEVEL=0"], { encoding: "utf8" }).trim().split(":");
    expect(all.length).toBeGreaterThan(40);
    const accepted: string[] = [];
    for (const cipher of all) {
      const outcome = await handshake(cipher).catch(() => undefined);
      if (outcome) accepted.push(outcome);
    }
    expect(accepted.sort()).toEqual(["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"]);
    for (const weak of ["AES128-GCM-SHA256", "AES128-SHA", "ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES256-SHA384", "DHE-RSA-AES128-GCM-SHA256"]) {
      await expect(handshake(weak), weak).rejects.toThrow();
    }
  });

  // testssl.sh takes about a minute on two cores, too long for every run: `npm run test:tls` runs it.
  it.runIf(process.env.WARDKEEP_TESTSSL === "1")(
    "leaves testssl.sh nothing to flag in cipher categories and forward secrecy",
    async () => {
      const out = tempDir("wardkeep-testssl-");
      const json = path.join(out, "report.json");
      // -s cipher categories, -f forward secrecy; nothing else, to keep it fast (protocols: the handshake test above).
      await promisify(execFile)("testssl", ["--quiet", "--color", "0", "--warnings", "off", "-s", "-f", "--jsonfile", json, `127.0.0.1:${app.server.port}`], {
        timeout: 120_000,
      }).catch((err: { code?: number }) => {
        // testssl.sh exits non-zero when it has findings; the report says which.
        if (!fs.existsSync(json)) throw err;
      });
      const findings = JSON.parse(fs.readFileSync(json, "utf8")) as { id: string; severity: string; finding: string }[];
      const flagged = findings.filter((f) => ["LOW", "MEDIUM", "HIGH", "CRITICAL"].includes(f.severity));
      expect(flagged).toEqual([]);
      expect(findings.map((f) => f.id)).toEqual(expect.arrayContaining(["cipherlist_LOW", "cipherlist_AVERAGE", "cipherlist_STRONG", "PFS"]));
      expect(findings.find((f) => f.id === "cipherlist_AVERAGE")?.finding).toBe("not offered");
      fs.rmSync(out, { recursive: true, force: true });
    },
    150_000,
  );
});
