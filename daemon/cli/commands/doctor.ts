import fs from "node:fs";
import { X509Certificate, createPrivateKey } from "node:crypto";
import path from "node:path";
import type { Command } from "commander";
import { certificateHostnames } from "../../appliance.js";
import { inDataDir, loadConfig } from "../../config/load.js";
import type { Config } from "../../config/schema.js";
import { pendingMigrations } from "../../db/migrate.js";
import { assertAppRoleIsRestricted } from "../../db/roles.js";
import { KeyFileUnseal, sealProgress } from "../../keys/index.js";
import { withOfflineContext } from "../offline-context.js";
import { oneLine, printResult, type GlobalOptions } from "../output.js";

export type Finding = { check: string; status: "ok" | "warn" | "fail"; detail: string; fix?: string };

const MIN_FREE_BYTES = 2 * 1024 ** 3;
const MAX_CLOCK_SKEW_MS = 5_000;

function checkTls(config: Config, now: Date): Finding {
  const certFile = config.tls.certFile ?? path.join(inDataDir(config, "tls"), "server.crt");
  const keyFile = config.tls.keyFile ?? path.join(inDataDir(config, "tls"), "server.key");
  if (!fs.existsSync(certFile)) {
    return config.tls.certFile
      ? { check: "tls", status: "fail", detail: `certificate file ${certFile} is missing`, fix: "fix tls.certFile or unset it to use the internal CA" }
      : { check: "tls", status: "warn", detail: "no certificate yet", fix: "`wardkeep start` issues one from the internal CA on first start" };
  }
  try {
    const cert = new X509Certificate(fs.readFileSync(certFile));
    if (!cert.checkPrivateKey(createPrivateKey(fs.readFileSync(keyFile)))) {
      return { check: "tls", status: "fail", detail: "the private key does not match the certificate", fix: "import the matching key with `wardkeep tls import`" };
    }
    const notAfter = new Date(cert.validTo);
    if (notAfter < now)
      return { check: "tls", status: "fail", detail: `certificate expired on ${notAfter.toISOString()}`, fix: "run `wardkeep tls renew` or import a new certificate" };
    const missing = config.tls.certFile ? [] : certificateHostnames(config).filter((h) => !cert.checkHost(h) && !cert.checkIP(h));
    if (missing.length)
      return { check: "tls", status: "warn", detail: `certificate does not cover ${missing.join(", ")}`, fix: "restart the daemon (it re-issues) or run `wardkeep tls renew`" };
    const days = Math.floor((notAfter.getTime() - now.getTime()) / 86_400_000);
    if (days < 30) return { check: "tls", status: "warn", detail: `certificate expires in ${days} days`, fix: "run `wardkeep tls renew` or import a new certificate" };
    return { check: "tls", status: "ok", detail: `certificate valid until ${notAfter.toISOString().slice(0, 10)} (${days} days)` };
  } catch (err) {
    return { check: "tls", status: "fail", detail: `cannot read the certificate or key: ${oneLine(err)}`, fix: "check the PEM files" };
  }
}

/** The key store's own unseal mode (what a rekey set), when the database can be read. */
type StoreSeal = { initialised: boolean; mode: string } | undefined;

async function checkKeys(config: Config, store: StoreSeal): Promise<Finding[]> {
  const mode = store?.initialised ? store.mode : config.keys.unseal;
  const file = inDataDir(config, config.keys.keyFile);
  if (mode !== "keyfile") {
    const findings: Finding[] = [{ check: "keys", status: "ok", detail: `unseal mode ${mode}: an operator unseals after start (\`wardkeep unseal\`)` }];
    if (store?.initialised && config.keys.unseal !== mode) {
      findings.push({
        check: "keys-config",
        status: "warn",
        detail: `keys.unseal is ${config.keys.unseal} but the key store is sealed with ${mode}`,
        fix: `set keys.unseal: ${mode} in the configuration (or WARDKEEP_KEYS_UNSEAL=${mode}) so new replicas agree`,
      });
    }
    if (fs.existsSync(file)) {
      findings.push({
        check: "keys-old-keyfile",
        status: "warn",
        detail: `the old root key file ${file} is still on disk: it no longer unseals the key store, but it unseals key-store backups taken before the rekey`,
        fix: `overwrite and delete it: shred -u ${file} (or rekey with --shred-old-keyfile)`,
      });
    }
    return findings;
  }
  return [await checkKeyFile(file)];
}

async function checkKeyFile(file: string): Promise<Finding> {
  if (!fs.existsSync(file))
    return { check: "keys", status: "warn", detail: "no root key file yet (created on first start)", fix: "for production set keys.unseal to passphrase, shamir or pkcs11" };
  try {
    (await new KeyFileUnseal(file).open()).fill(0);
  } catch (err) {
    return { check: "keys", status: "fail", detail: oneLine(err), fix: "restore the key file from the installation's backup or fix its mode" };
  }
  return {
    check: "keys",
    status: "warn",
    detail: "unsealing from a key file (evaluation only)",
    fix: "for production rekey (`wardkeep keys rekey --unseal passphrase`, or shamir or pkcs11), then set keys.unseal to match",
  };
}

function checkDisk(config: Config): Finding {
  fs.mkdirSync(config.dataDir, { recursive: true });
  const stat = fs.statfsSync(config.dataDir);
  const free = stat.bavail * stat.bsize;
  const total = stat.blocks * stat.bsize;
  const detail = `${(free / 1024 ** 3).toFixed(1)} GiB free of ${(total / 1024 ** 3).toFixed(1)} GiB at ${path.resolve(config.dataDir)}`;
  if (free < MIN_FREE_BYTES || free / total < 0.05) return { check: "disk", status: "fail", detail, fix: "free space or move dataDir to a larger volume" };
  if (free / total < 0.15) return { check: "disk", status: "warn", detail, fix: "plan more space before snapshots and the audit trail fill it" };
  return { check: "disk", status: "ok", detail };
}

/** Checks what keeps the appliance from serving, and says how to fix each problem. */
export async function runDoctor(config: Config): Promise<Finding[]> {
  const findings: Finding[] = [{ check: "config", status: "ok", detail: "valid" }];
  findings.push(checkDisk(config));
  let store: StoreSeal;
  try {
    await withOfflineContext(config, async (ctx, targets) => {
      findings.push({ check: "database", status: "ok", detail: `reachable${targets.embedded ? " (embedded PostgreSQL)" : ""}` });
      try {
        await assertAppRoleIsRestricted(targets.appUrl);
        findings.push({ check: "database-roles", status: "ok", detail: `requests run as ${targets.appRole}, without BYPASSRLS` });
      } catch (err) {
        findings.push({ check: "database-roles", status: "fail", detail: oneLine(err), fix: "ALTER ROLE ... NOBYPASSRLS NOSUPERUSER" });
      }
      const pending = await pendingMigrations(ctx.db.owner);
      // The key store, not the configuration, says how it is unsealed (a rekey changes it).
      if (pending.length === 0) store = await sealProgress(ctx).catch(() => undefined);
      findings.push(
        pending.length
          ? { check: "migrations", status: "fail", detail: `${pending.length} pending (${pending.join(", ")})`, fix: "run `wardkeep migrate`" }
          : { check: "migrations", status: "ok", detail: "current" },
      );
      const [row] = await ctx.db.owner.rows<{ now: Date }>("SELECT now() AS now");
      const skew = Math.abs(row!.now.getTime() - Date.now());
      findings.push(
        skew > MAX_CLOCK_SKEW_MS
          ? {
              check: "clock",
              status: "fail",
              detail: `this host and PostgreSQL disagree by ${(skew / 1000).toFixed(1)} s`,
              fix: "synchronise both with NTP (audit timestamps and TOTP depend on it)",
            }
          : { check: "clock", status: "ok", detail: `within ${skew} ms of PostgreSQL` },
      );
    });
  } catch (err) {
    findings.push({ check: "database", status: "fail", detail: oneLine(err), fix: "check database.url, the password file and that PostgreSQL is running" });
  }
  findings.push(checkTls(config, new Date()));
  findings.push(...(await checkKeys(config, store)));
  return findings;
}

export function registerDoctor(program: Command) {
  program
    .command("doctor")
    .description("check database, roles, migrations, TLS, keys, disk and clock, and say how to fix problems")
    .action(async (_opts, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const findings = await runDoctor(loadConfig());
      const failed = findings.filter((f) => f.status === "fail");
      const mark = { ok: "ok  ", warn: "WARN", fail: "FAIL" } as const;
      printResult(
        global,
        { ok: failed.length === 0, healthy: failed.length === 0, findings },
        findings.map((f) => `${mark[f.status]} ${f.check}: ${f.detail}${f.fix && f.status !== "ok" ? ` — ${f.fix}` : ""}`),
      );
      if (failed.length) {
        if (!global.json) process.stderr.write(`wardkeep: ${failed.length} problem(s) found: ${failed.map((f) => f.check).join(", ")}\n`);
        process.exitCode = 1;
      }
    });
}
