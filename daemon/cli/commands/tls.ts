import fs from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { Command } from "commander";
import { certificateHostnames } from "../../appliance.js";
import { inDataDir, loadConfig } from "../../config/load.js";
import type { Config } from "../../config/schema.js";
import { daemonTarget, OperatorError } from "../../keys/index.js";
import { createCertificateSigningRequest, describeCertificate, importCertificate, renewServerCertificate, TlsError, type TlsMaterial } from "../../tls/index.js";
import { CliError, printResult, type GlobalOptions } from "../output.js";
import { aliasTo, hiddenAlias } from "../flags.js";

function readPem(file: string, what: string): string {
  try {
    return fs.readFileSync(file, "utf8");
  } catch (err) {
    throw new CliError(`cannot read the ${what} ${file} (${(err as NodeJS.ErrnoException).code})`);
  }
}

function refuseConfiguredCertificate(config: Config) {
  if (config.tls.certFile) throw new CliError(`tls.certFile is set (${config.tls.certFile}): the daemon serves that file; replace it there instead`);
}

/**
 * The daemon watches dataDir/tls and reloads a new certificate without dropping connections;
 * this checks that it now serves the new one (by fingerprint), or says what to do.
 */
async function reloadOutcome(config: Config, fingerprint: string): Promise<string> {
  const target = daemonTarget(config);
  const wanted = fingerprint.toUpperCase();
  for (let attempt = 0; attempt < 20; attempt++) {
    let served: string | undefined;
    try {
      // The served certificate may not chain to our CA (an imported one): only its fingerprint matters here.
      served = (await servedCertificate(target.url)).fingerprint256;
    } catch {
      return "the daemon is not running: it uses the new certificate at its next start";
    }
    if (served?.toUpperCase() === wanted) return "the running daemon now serves it (reloaded without a restart)";
    await sleep(250);
  }
  return "the running daemon did not pick it up: restart it to serve the new certificate";
}

/** Reads the served certificate's fingerprint without trusting it (a fingerprint comparison is the check). */
async function servedCertificate(url: string) {
  const tls = await import("node:tls");
  const u = new URL(url);
  return new Promise<{ fingerprint256?: string }>((resolve, reject) => {
    const socket = tls.connect(
      { host: u.hostname, port: Number(u.port || 443), servername: u.hostname === "127.0.0.1" ? "localhost" : u.hostname, rejectUnauthorized: false },
      () => {
        const fingerprint256 = socket.getPeerCertificate().fingerprint256;
        socket.end();
        resolve({ fingerprint256 });
      },
    );
    socket.on("error", (err) => reject(new OperatorError(err.message)));
  });
}

function describeMaterial(m: TlsMaterial) {
  const d = describeCertificate(m.certPem);
  return { subject: d.subject, issuer: d.issuer, notAfter: d.notAfter.toISOString(), fingerprint256: d.fingerprint256, hostnames: d.hostnames, source: m.source };
}

export function registerTls(program: Command) {
  const tls = program.command("tls").description("the daemon's TLS certificate: renew from the internal CA, import the hospital's, or make a CSR");

  tls
    .command("show")
    .description("the certificate the daemon serves from dataDir/tls")
    .action(async (_opts, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const config = loadConfig();
      const file = config.tls.certFile ?? path.join(inDataDir(config, "tls"), "server.crt");
      const d = describeCertificate(readPem(file, "certificate"));
      printResult(global, { certificate: { ...d, notBefore: d.notBefore.toISOString(), notAfter: d.notAfter.toISOString() } }, [
        `subject: ${d.subject}`,
        `issuer: ${d.issuer}`,
        `valid: ${d.notBefore.toISOString()} to ${d.notAfter.toISOString()}`,
        `names: ${d.hostnames.join(", ")}`,
        `SHA-256: ${d.fingerprint256}`,
      ]);
    });

  tls
    .command("renew")
    .description("issue a new server certificate from the internal CA (replaces an imported one too)")
    .action(async (_opts, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const config = loadConfig();
      refuseConfiguredCertificate(config);
      const material = await renewServerCertificate({ dir: inDataDir(config, "tls"), hostnames: certificateHostnames(config), validityDays: config.tls.certValidityDays }).catch(
        (err: unknown) => {
          throw err instanceof TlsError ? new CliError(err.message) : err;
        },
      );
      const outcome = await reloadOutcome(config, material.fingerprint256);
      printResult(global, { certificate: describeMaterial(material), reload: outcome }, [
        `certificate renewed until ${material.notAfter.toISOString()} (SHA-256 ${material.fingerprint256})`,
        outcome,
      ]);
    });

  tls
    .command("import")
    .description("use a certificate issued by the hospital's CA (PEM chain, leaf first)")
    .requiredOption("--cert-file <file>", "PEM certificate chain")
    .option("--key-file <file>", "PEM private key; omitted, the key made by `wardkeep tls csr` is used")
    .addOption(hiddenAlias("--cert <file>", "--cert-file"))
    .on("option:cert", aliasTo("certFile"))
    .addOption(hiddenAlias("--key <file>", "--key-file"))
    .on("option:key", aliasTo("keyFile"))
    .action(async (opts: { certFile: string; keyFile?: string }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const config = loadConfig();
      refuseConfiguredCertificate(config);
      const material = await importCertificate({
        dir: inDataDir(config, "tls"),
        certPem: readPem(opts.certFile, "certificate"),
        keyPem: opts.keyFile ? readPem(opts.keyFile, "private key") : undefined,
      }).catch((err: unknown) => {
        throw err instanceof TlsError ? new CliError(err.message) : err;
      });
      const outcome = await reloadOutcome(config, material.fingerprint256);
      printResult(global, { certificate: describeMaterial(material), reload: outcome }, [`certificate imported (SHA-256 ${material.fingerprint256})`, outcome]);
    });

  tls
    .command("csr")
    .description("make a key and a certificate signing request for the hospital's CA; import the signed certificate with `tls import --cert`")
    .requiredOption("--out-file <file>", "where to write the CSR (PEM)")
    .addOption(hiddenAlias("--out <file>", "--out-file"))
    .on("option:out", aliasTo("outFile"))
    .option("--hostname <name>", "a DNS name or IP for the certificate; repeat (default: the appliance's names)", (v: string, prev: string[] = []) => [...prev, v])
    .option("--organization <name>", "organisation (O) in the subject")
    .action(async (opts: { outFile: string; hostname?: string[]; organization?: string }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const config = loadConfig();
      const hostnames = opts.hostname?.length ? opts.hostname : certificateHostnames(config);
      const { csrPem, keyPath } = await createCertificateSigningRequest({ dir: inDataDir(config, "tls"), hostnames, organization: opts.organization }).catch((err: unknown) => {
        throw err instanceof TlsError ? new CliError(err.message) : err;
      });
      fs.writeFileSync(opts.outFile, csrPem, { mode: 0o644 });
      printResult(global, { csr: path.resolve(opts.outFile), key: keyPath, hostnames }, [
        `CSR written to ${path.resolve(opts.outFile)} for ${hostnames.join(", ")}`,
        `its private key stays in ${keyPath}; once the hospital CA signs it: wardkeep tls import --cert-file SIGNED.pem`,
      ]);
    });
}
