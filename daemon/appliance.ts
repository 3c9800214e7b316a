import os from "node:os";
import path from "node:path";
import fs from "node:fs";
import { Gauge, Registry, collectDefaultMetrics } from "prom-client";
import { accessJobs } from "./access/background.js";
import { auditJobs, startAuditServices } from "./audit/background.js";
import { backupJobs, registerBackupMetrics, startWalShipper } from "./backups/background.js";
import { jobsWatchdog, registerJobMetrics, startJobRunner, type JobSpec } from "./jobs/index.js";
import { recordsJobs } from "./records/background.js";
import { retentionJobs } from "./retention/background.js";
import { alertsJobs, startAlertServices } from "./alerts/background.js";
import { startWebhookServices } from "./webhooks/background.js";
import { ssoJobs } from "./sso/background.js";
import { ensureSetupToken } from "./auth/index.js";
import { keyMaintenanceJob, RootKey, startKeyMaintenance, unsealAtStart } from "./keys/index.js";
import { ensureTlsMaterial, TlsError, watchTlsDirectory } from "./tls/index.js";
import { systemClock, type Clock } from "./clock.js";
import { inDataDir } from "./config/load.js";
import { publicOrigin } from "./config/public-url.js";
import type { Config } from "./config/schema.js";
import type { ApplianceContext } from "./context.js";
import { openDatabase } from "./db/connection.js";
import type { EmbeddedPostgres } from "./db/embedded.js";
import { raiseAlert } from "./alerts/index.js";
import { applyMigrations, pendingMigrations } from "./db/migrate.js";
import { assertAppRoleIsRestricted, prepareDatabase } from "./db/roles.js";
import { wakeCheckpointer } from "./db/wal-archive.js";
import { createHttpApp } from "./http/app.js";
import { startHttpServers, type RunningServer, type TlsCredentials } from "./http/server.js";
import type { Logger } from "./log/logger.js";

export type Appliance = {
  ctx: ApplianceContext;
  server: RunningServer;
  url: string;
  /** The embedded PostgreSQL this appliance started and supervises (none with an external database). */
  embedded?: EmbeddedPostgres;
  stop(): Promise<{ drained: boolean }>;
};

export type StartOptions = {
  log: Logger;
  clock?: Clock;
  /** Where the one-time setup token banner goes (stderr by default; never the JSON log). */
  announce?: (text: string) => void;
  /** False: no background WAL shipper (bench/pitr.ts drives and times the passes itself). */
  walShipper?: boolean;
};

/** The names the internal certificate covers: what browsers and probes on this host will use. */
export function certificateHostnames(config: Config): string[] {
  return [...new Set([config.server.publicHostname, "localhost", "127.0.0.1", "::1", os.hostname(), ...config.tls.hostnames])];
}

export async function loadTls(config: Config, log: Logger): Promise<TlsCredentials> {
  if (config.tls.certFile && config.tls.keyFile) {
    try {
      return { certPem: fs.readFileSync(config.tls.certFile, "utf8"), keyPem: fs.readFileSync(config.tls.keyFile, "utf8") };
    } catch (err) {
      throw new TlsError(`tls: cannot read ${config.tls.certFile} or ${config.tls.keyFile} (${(err as NodeJS.ErrnoException).code})`);
    }
  }
  const material = await ensureTlsMaterial({
    dir: inDataDir(config, "tls"),
    hostnames: certificateHostnames(config),
    validityDays: config.tls.certValidityDays,
  });
  if (material.created.ca) log.info(`internal CA created: ${path.join(inDataDir(config, "tls"), "ca.crt")} (import it into browsers and clients to trust the appliance)`);
  if (material.created.certificate) log.info(`TLS certificate issued for ${certificateHostnames(config).join(", ")}`, { fingerprint256: material.fingerprint256 });
  if (material.expiresSoon) log.warn(`the TLS certificate expires on ${material.notAfter.toISOString()}; run \`wardkeep tls renew\` or import a new one`);
  return { certPem: material.certPem, keyPem: material.keyPem };
}

const REDUNDANT_TOTAL_GAUGES = ["wardkeep_nodejs_active_handles_total", "wardkeep_nodejs_active_requests_total", "wardkeep_nodejs_active_resources_total"];

function applianceMetrics(rootKey: RootKey): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "wardkeep_" });
  // prom-client names three gauges with `_total`, which Prometheus reserves for counters (promtool
  // check metrics fails them); each is the sum of the same gauge by type (docs/metrics.md, Renamed).
  for (const name of REDUNDANT_TOTAL_GAUGES) registry.removeSingleMetric(name);
  new Gauge({
    name: "wardkeep_sealed",
    help: "1 while the root key is sealed (PHI routes answer 503)",
    registers: [registry],
    collect() {
      this.set(rootKey.isSealed ? 1 : 0);
    },
  });
  return registry;
}

/** Every recurring job of the appliance: the one list the job runner schedules (docs/jobs.md). */
export function applianceJobs(): JobSpec[] {
  return [...auditJobs, keyMaintenanceJob, ...backupJobs, ...recordsJobs, ...retentionJobs, ...accessJobs, ...alertsJobs, ...ssoJobs, jobsWatchdog];
}

/**
 * Says when the database goes away and comes back (docs/hardening.md, "Database outage"): one log
 * line each way rather than one per failed request, and an alert once the database can hold it.
 * The embedded PostgreSQL is restarted by its supervisor (db/embedded.ts); its exit and restart
 * are logged and alerted the same way.
 */
function superviseDatabase(ctx: ApplianceContext, embedded: EmbeddedPostgres | undefined): void {
  const { log } = ctx;
  let restarts = 0;
  // Recorded once the database can hold it: retried for a minute after the database returns.
  const alert = (input: Parameters<typeof raiseAlert>[1]) =>
    void (async () => {
      for (let attempt = 0; ; attempt++) {
        try {
          return await raiseAlert(ctx, input);
        } catch (err) {
          if (attempt >= 30) return log.warn("could not record a database alert", { kind: input.kind, error: (err as Error).message });
          await new Promise((r) => setTimeout(r, 2_000).unref());
        }
      }
    })();
  ctx.db.circuit.onChange((e) => {
    if (e.state === "open") {
      log.error("database unreachable: requests are answered 503 with Retry-After until it answers again", { reason: e.reason });
      return;
    }
    const seconds = Math.round(e.downMs / 100) / 10;
    log.warn("database reachable again: serving requests", { downSeconds: seconds });
    alert({
      kind: "database.outage",
      severity: "critical",
      summary: `PostgreSQL did not answer for ${seconds} s; requests meanwhile were answered 503 and changed nothing`,
      details: { downSeconds: seconds, embeddedRestarts: restarts },
    });
  });
  embedded?.supervise({
    exited(reason) {
      log.error("embedded PostgreSQL exited unexpectedly; restarting it", { reason });
    },
    restarted(attempt) {
      restarts += 1;
      log.warn("embedded PostgreSQL restarted", { attempt, restarts });
      void ctx.db.circuit.probeNow();
      alert({
        kind: "database.embedded_restarted",
        severity: "warning",
        summary: `the embedded PostgreSQL exited and was restarted (${restarts} restart(s) since start)`,
        details: { restarts },
      });
    },
    restartFailed(attempt, reason) {
      log.error("embedded PostgreSQL did not start again; retrying with backoff", { attempt, reason });
    },
  });
}

/**
 * Brings the appliance up in dependency order — database and roles, migrations, TLS, root key,
 * HTTP — and says in a few lines what it created, so a first start explains itself.
 */
export async function startAppliance(config: Config, opts: StartOptions): Promise<Appliance> {
  const { log } = opts;
  const announce = opts.announce ?? ((text: string) => process.stderr.write(text + "\n"));
  // Traversable (not listable) so the embedded PostgreSQL's own user reaches var/pg; keys/,
  // tls/ and secrets/ inside it are 0700.
  fs.mkdirSync(config.dataDir, { recursive: true, mode: 0o711 });

  const targets = await prepareDatabase(config);
  for (const line of targets.created) log.info(line);
  if (config.database.url && config.backup.walArchiving) {
    // The compose file's PostgreSQL archives too; its owner role is the image's superuser (the
    // embedded one is woken by db/embedded.ts after each of its starts).
    const woken = await wakeCheckpointer(targets.ownerUrl).catch((err: Error) => `failed: ${err.message}`);
    if (woken !== "woken" && woken !== "not-archiving")
      log.warn(
        `could not wake PostgreSQL's checkpointer (${woken}): until its first checkpoint (checkpoint_timeout) archive_timeout is not applied; run SELECT pg_reload_conf() as a superuser after each PostgreSQL start (docs/backups.md)`,
      );
  }
  const db = openDatabase(targets, config);
  const cleanup = async () => {
    await db.close();
    await targets.embedded?.stop();
  };
  try {
    await assertAppRoleIsRestricted(targets.appUrl);
    if (config.database.migrateOnStart) {
      const applied = await applyMigrations(db.owner, targets.ownerUrl, targets.appRole);
      log.info(applied.length ? `migrations applied: ${applied.join(", ")}` : "database schema is current");
    } else {
      const pending = await pendingMigrations(db.owner);
      if (pending.length) log.warn(`${pending.length} migration(s) pending and migrateOnStart is false: not ready until \`wardkeep migrate\``);
    }

    const tls = await loadTls(config, log);

    const rootKey = new RootKey(config.keys.unseal, {
      cacheSize: config.keys.dataKeyCacheSize,
      cacheTtlMs: config.keys.dataKeyCacheSeconds * 1000,
      nonceBudget: config.keys.nonceBudget,
    });
    const ctx: ApplianceContext = { config, log, db, rootKey, metrics: applianceMetrics(rootKey), clock: opts.clock ?? systemClock };
    superviseDatabase(ctx, targets.embedded);
    // Other replicas' changes reach this daemon's caches through LISTEN/NOTIFY (daemon/db/invalidation.ts).
    db.invalidations.start(log);
    // The key store's own mode decides how; when it cannot unseal, the appliance serves sealed (503 on PHI routes).
    await unsealAtStart(ctx);
    const app = createHttpApp(ctx);
    const server = await startHttpServers(app, config, tls);
    // `wardkeep tls renew|import` rewrite dataDir/tls; serve the new certificate without a restart.
    const stopTlsWatch = config.tls.certFile ? () => undefined : watchTlsDirectory(inDataDir(config, "tls"), (next) => server.reloadCertificate(next), log);
    const url = `https://${config.server.publicHostname}:${server.port}`;
    ctx.publicUrl = publicOrigin(config, server.port);
    const audit = startAuditServices(ctx);
    const keyMaintenance = startKeyMaintenance(ctx);
    registerBackupMetrics(ctx);
    registerJobMetrics(ctx);
    const jobs = startJobRunner(ctx, applianceJobs());
    const walShipper = opts.walShipper === false ? { stop: async () => {} } : startWalShipper(ctx);
    const alerts = startAlertServices(ctx);
    const webhooks = startWebhookServices(ctx);
    log.info(`listening on ${url}${server.redirectPort ? ` (http://:${server.redirectPort} redirects)` : ""}`);

    if ((await pendingMigrations(db.app)).length === 0) {
      const setup = await ensureSetupToken(ctx);
      if (setup.state === "issued") {
        announce(
          [
            "",
            "  ┌─ First-run setup ──────────────────────────────────────────────────",
            `  │ Setup token (shown once, valid until ${setup.expiresAt.toISOString()}):`,
            `  │   ${setup.token}`,
            `  │ Create the first super-admin at ${url}/ with it, or run`,
            "  │   wardkeep admin create --email E --password-file F",
            "  └────────────────────────────────────────────────────────────────────",
            "",
          ].join("\n"),
        );
      } else if (setup.state === "pending") {
        log.info("setup pending: use the token printed at first start, `wardkeep admin setup-token` for a new one, or `wardkeep admin create`");
      }
    }

    let stopping: Promise<{ drained: boolean }> | undefined;
    return {
      ctx,
      server,
      url,
      embedded: targets.embedded,
      stop() {
        stopping ??= (async () => {
          // Close the listener first, then say so: whoever reads the line can rely on it.
          const closing = server.close(config.server.shutdownTimeoutMs);
          log.info("shutting down: draining in-flight requests");
          const result = await closing;
          await jobs.stop();
          await walShipper.stop();
          await alerts.stop();
          await webhooks.stop();
          await audit.stop();
          stopTlsWatch();
          await keyMaintenance.stop();
          rootKey.seal("shut down");
          await cleanup();
          log.info(result.drained ? "stopped cleanly" : "stopped after the shutdown timeout cut remaining connections");
          return result;
        })();
        return stopping;
      },
    };
  } catch (err) {
    await cleanup();
    throw err;
  }
}
