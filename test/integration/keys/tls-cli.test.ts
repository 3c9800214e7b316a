import { X509Certificate } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestAppliance, testEnv, type TestAppliance } from "../../helpers/appliance.js";
import { runCli } from "../../helpers/daemon-process.js";

const json = (stdout: string) => JSON.parse(stdout.trim().split("\n").at(-1)!) as Record<string, unknown>;

describe("wardkeep tls", () => {
  let app: TestAppliance;
  let env: Record<string, string>;
  beforeAll(async () => {
    app = await startTestAppliance();
    env = { ...testEnv(app.db, app.dataDir), WARDKEEP_PORT: String(app.server.port) };
  });
  afterAll(async () => {
    await app?.close();
  });

  const servedFingerprint = () =>
    new Promise<string>((resolve, reject) => {
      const socket = tls.connect({ host: "127.0.0.1", port: app.server.port, ca: app.caPem, servername: "localhost" }, () => {
        resolve(socket.getPeerCertificate().fingerprint256);
        socket.end();
      });
      socket.on("error", reject);
    });

  it("renew issues a new certificate that the running daemon serves without a restart", async () => {
    const before = await servedFingerprint();
    const renew = await runCli(["--json", "tls", "renew"], env);
    expect(renew.code, renew.stderr).toBe(0);
    const out = json(renew.stdout) as { certificate: { fingerprint256: string }; reload: string };
    expect(out.reload).toMatch(/now serves it/);
    expect(out.certificate.fingerprint256).not.toBe(before);
    expect(await servedFingerprint()).toBe(out.certificate.fingerprint256);
  });

  it("csr writes a request for the hospital CA and keeps its key in the TLS directory", async () => {
    const out = path.join(app.dataDir, "request.csr");
    const csr = await runCli(["--json", "tls", "csr", "--out", out, "--hostname", "wardkeep.hospital.example", "--organization", "St. Example"], env);
    expect(csr.code, csr.stderr).toBe(0);
    expect(fs.readFileSync(out, "utf8")).toMatch(/^-----BEGIN CERTIFICATE REQUEST-----/);
    expect(json(csr.stdout)).toMatchObject({ ok: true, hostnames: ["wardkeep.hospital.example"], key: path.join(app.dataDir, "tls", "server.next.key") });
  });

  it("import refuses a certificate that does not match the pending key, in one line", async () => {
    const foreign = path.join(app.dataDir, "foreign.crt");
    fs.writeFileSync(foreign, app.caPem);
    const res = await runCli(["tls", "import", "--cert", foreign], env);
    expect(res.code).toBe(1);
    expect(res.stderr.trim().split("\n")).toHaveLength(1);
    expect(new X509Certificate(fs.readFileSync(path.join(app.dataDir, "tls", "server.crt"))).fingerprint256).toBe(await servedFingerprint());
  });
});
