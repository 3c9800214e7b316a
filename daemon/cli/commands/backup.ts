import fs from "node:fs";
import type { Command } from "commander";
import cliProgress from "cli-progress";
import { Registry } from "prom-client";
import { readManifest, scanTarget } from "../../../backup/catalog.js";
import { restoreSnapshot } from "../../../backup/restore.js";
import { openTarget, targetDefinitionSchema, targetSecretsSchema, type SnapshotTarget, type TargetDefinition } from "../../../backup/targets/index.js";
import {
  auditVerifierFor,
  listSnapshotRecords,
  pitrStatus,
  reconcileCatalogue,
  runBaseBackup,
  runPitrDrill,
  shipSpool,
  restoreInPlace,
  restoreSnapshotById,
  runDrill,
  runSnapshot,
  verifySnapshotById,
  addTarget,
  listTargets,
  testTargetConnection,
  type AuditMeta,
  type InPlaceDetails,
  type SnapshotRecord,
  type TargetTestRes,
} from "../../backups/index.js";
import { systemClock } from "../../clock.js";
import { loadConfig } from "../../config/load.js";
import { APP_ROLE } from "../../db/roles.js";
import { AppError } from "../../kernel/errors.js";
import { loadRecoveryPrivateKey, RootKey } from "../../keys/index.js";
import { silentLogger } from "../../log/logger.js";
import { withOfflineContext, withUnsealedContext, type UnsealOpts } from "../offline-context.js";
import { CliError, printResult, type GlobalOptions } from "../output.js";
import { aliasTo, hiddenAlias } from "../flags.js";

const CLI_META: AuditMeta = { actor: { userId: null, role: "host_operator" }, userAgent: "wardkeep-cli" };

const collect = (v: string, prev: string[] = []) => [...prev, v];

/** A target from a JSON file (definition plus optional `secrets`), for an appliance that has no policy yet. */
function targetFromFile(file: string): SnapshotTarget {
  const { def, secrets } = targetInputFromFile(file);
  return openTarget(def, secrets);
}

/** The definition and secrets of a `--target-file`, checked with the API's own schemas. */
function targetInputFromFile(file: string) {
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (err) {
    throw new CliError(`--target-file ${file}: ${(err as NodeJS.ErrnoException).code ?? "not valid JSON"}`);
  }
  const { secrets, ...def } = raw as { secrets?: unknown };
  const parsedDef = targetDefinitionSchema.safeParse(def);
  const parsedSecrets = targetSecretsSchema.safeParse(secrets ?? {});
  if (!parsedDef.success) throw new CliError(`--target-file ${file}: ${parsedDef.error.issues[0]!.path.join(".")}: ${parsedDef.error.issues[0]!.message}`);
  if (!parsedSecrets.success) throw new CliError(`--target-file ${file}: secrets: ${parsedSecrets.error.issues[0]!.message}`);
  return { def: parsedDef.data, secrets: parsedSecrets.data };
}

/** Exit code of a target whose connection test failed (docs/cli.md). */
const EXIT_TARGET_UNREACHABLE = 3;

function testLines(r: TargetTestRes): string[] {
  return [
    `target ${r.target} (${r.where}): ${r.ok ? "OK" : "FAILED"}: ${r.detail}`,
    ...r.steps.map((s) => `  ${s.ok ? "ok    " : "FAILED"} ${s.name.padEnd(6)} ${String(s.ms).padStart(5)} ms  ${s.detail}`),
  ];
}

/** Where a saved target points, without opening it (no secret is read). */
function whereOf(t: TargetDefinition): string {
  if (t.kind === "fs") return `fs:${t.path}`;
  if (t.kind === "sftp") return `sftp://${t.username}@${t.host}:${t.port}${t.path.startsWith("/") ? "" : "/"}${t.path}`;
  return `s3://${t.bucket}/${t.prefix ?? ""}${t.endpoint ? ` at ${t.endpoint}` : ""}`;
}

function registerTarget(backup: Command, unsealOptions: (c: Command) => Command) {
  const target = backup.command("target").description("the snapshot targets of the backup policy: add (tested first), test, list");

  unsealOptions(
    target
      .command("add")
      .description("add a target to the policy, or replace the one of the same name; its connection is tested first and it is not saved when the test fails")
      .requiredOption("--target-file <file>", "the target as JSON (definition as in the admin API, plus optional `secrets`)")
      .option("--no-test", "save without testing the connection (a target that is not reachable yet)"),
  ).action(async (opts: UnsealOpts & { targetFile: string; test: boolean }, cmd: Command) => {
    const global = cmd.optsWithGlobals<GlobalOptions>();
    const { def, secrets } = targetInputFromFile(opts.targetFile);
    const r = await withUnsealedContext(opts, (ctx) => addTarget(ctx, { target: def, secrets }, CLI_META, { skipTest: !opts.test }));
    if (r.test && !r.test.ok) {
      if (!global.json) process.stdout.write(testLines(r.test).join("\n") + "\n");
      throw new CliError(`target ${def.name} not saved: ${r.test.detail}`, EXIT_TARGET_UNREACHABLE);
    }
    printResult(global, { target: r.policy.targets.find((t) => t.name === def.name), test: r.test, replaced: r.replaced }, [
      ...(r.test ? testLines(r.test) : [`target ${def.name}: saved without a connection test`]),
      `target ${def.name} ${r.replaced ? "replaced" : "added"}; the policy has ${r.policy.targets.length} target(s): ${r.policy.targets.map((t) => t.name).join(", ")}`,
    ]);
  });

  unsealOptions(
    target
      .command("test [name]")
      .description("test a saved target's connection (list, write, read back, delete a probe object), or one not saved yet with --target-file")
      .option("--target-file <file>", "test this definition (plus optional `secrets`) instead of a saved target"),
  ).action(async (name: string | undefined, opts: UnsealOpts & { targetFile?: string }, cmd: Command) => {
    const global = cmd.optsWithGlobals<GlobalOptions>();
    if (!name === !opts.targetFile) throw new CliError("name a saved target, or give --target-file (not both)", 2);
    const r = await withUnsealedContext(opts, async (ctx) => {
      if (opts.targetFile) {
        const { def, secrets } = targetInputFromFile(opts.targetFile);
        return testTargetConnection(ctx, { target: def, secrets }, CLI_META);
      }
      const saved = (await listTargets(ctx)).find((t) => t.name === name);
      if (!saved) throw new CliError(`no target named ${name} in the backup policy (wardkeep backup target list)`);
      const { hasSecrets: _hasSecrets, ...def } = saved;
      return testTargetConnection(ctx, { target: targetDefinitionSchema.parse(def) }, CLI_META);
    });
    if (!r.ok) {
      if (global.json) process.stdout.write(JSON.stringify({ ok: false, error: `target ${r.target}: ${r.detail}`, test: r }) + "\n");
      else process.stdout.write(testLines(r).join("\n") + "\n");
      if (!global.json) process.stderr.write(`wardkeep: target ${r.target}: ${r.detail}\n`);
      process.exitCode = EXIT_TARGET_UNREACHABLE;
      return;
    }
    printResult(global, { test: r }, testLines(r));
  });

  target
    .command("list")
    .description("the targets of the backup policy (never their secrets)")
    .action(async (_opts: unknown, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const targets = await withOfflineContext(loadConfig(), (ctx) => listTargets(ctx));
      printResult(
        global,
        { targets },
        targets.length
          ? targets.map((t) => `${t.name.padEnd(16)} ${t.kind.padEnd(4)} ${whereOf(t)}${t.hasSecrets ? "  (secrets stored)" : ""}`)
          : ["no targets: add one with `wardkeep backup target add --target-file FILE`"],
      );
    });
}

function progressBar(global: GlobalOptions) {
  if (global.json || !process.stderr.isTTY) return undefined;
  return new cliProgress.SingleBar(
    { format: "  {bar} {percentage}% | {value}/{total} MiB | {table}", stream: process.stderr, hideCursor: true },
    cliProgress.Presets.shades_classic,
  );
}

const mib = (n: number) => Math.round(n / 1048576);

/** One line of `backup list`: a pruned or vanished snapshot says so and when, a partial one names the target that failed. */
function recordLine(r: SnapshotRecord): string {
  const where = r.copies.length
    ? r.copies.map((c) => `${c.target}${c.state === "present" ? "" : `(${c.state})`}`).join(",")
    : r.targets.map((t) => `${t.target}${t.ok ? "" : "(failed)"}`).join(",");
  const note =
    r.status === "pruned"
      ? `  pruned ${r.prunedAt?.slice(0, 19) ?? ""}Z`
      : r.status === "partial"
        ? `  missing on ${r.targets
            .filter((t) => !t.ok)
            .map((t) => t.target)
            .join(", ")}`
        : "";
  return `${r.id}  ${r.status.padEnd(11)} ${String(mib(r.storedBytes ?? 0)).padStart(6)} MiB  ${where}${note}`;
}

type TargetListing = {
  target: string;
  /** Ids only, as before (scripts rely on it). */
  complete: string[];
  snapshots: (
    | {
        id: string;
        createdAt: string;
        completedAt: string;
        trigger: string;
        appVersion: string;
        schemaVersion: string;
        tables: number;
        rows: number;
        storedBytes: number;
        attachments: number;
        attachmentsMissing: number;
        signerKeyId: string;
      }
    | { id: string; error: string }
  )[];
  incomplete: string[];
};

/** What is really on a target: every complete snapshot's manifest read (not authenticated: no key needed). */
async function listTarget(target: SnapshotTarget): Promise<TargetListing> {
  const scan = await scanTarget(target);
  const snapshots: TargetListing["snapshots"] = [];
  for (const id of scan.complete) {
    try {
      const { body } = await readManifest(target, id);
      snapshots.push({
        id,
        createdAt: body.createdAt,
        completedAt: body.completedAt,
        trigger: body.producer.trigger,
        appVersion: body.producer.appVersion,
        schemaVersion: body.database.schemaVersion,
        tables: body.objects.length,
        rows: body.objects.reduce((n, o) => n + o.rows, 0),
        storedBytes: body.objects.reduce((n, o) => n + o.storedBytes, 0),
        attachments: body.attachments?.entries.length ?? 0,
        attachmentsMissing: body.attachments?.missing.length ?? 0,
        signerKeyId: body.signer.keyId,
      });
    } catch (err) {
      snapshots.push({ id, error: (err as Error).message });
    }
  }
  return { target: target.name, complete: scan.complete, snapshots, incomplete: scan.incomplete.map((d) => d.id) };
}

export function registerBackup(program: Command) {
  const backup = program.command("backup").description("encrypted snapshots to the configured targets");
  const unsealOptions = (c: Command) =>
    c.option("--passphrase-file <file>", "file holding the unseal passphrase (passphrase mode)").option("--share-file <file>", "a custodian share (shamir mode); repeat", collect);

  registerTarget(backup, unsealOptions);

  unsealOptions(backup.command("run").description("take a snapshot now (one REPEATABLE READ transaction, streamed to every target)")).action(
    async (opts: UnsealOpts, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const bar = progressBar(global);
      const run = await withUnsealedContext(opts, (ctx) =>
        runSnapshot(ctx, {
          trigger: "cli",
          meta: CLI_META,
          onProgress: (p) => {
            if (!bar) return;
            if (!bar.isActive) bar.start(Math.max(1, mib(p.estimatedBytes)), 0, { table: p.table });
            bar.setTotal(Math.max(mib(p.estimatedBytes), mib(p.plainBytes), 1));
            bar.update(mib(p.plainBytes), { table: p.table });
          },
        }).finally(() => bar?.stop()),
      );
      if (run.status === "failed") throw new CliError(`snapshot ${run.id} failed: ${run.error}`);
      printResult(global, { snapshot: run }, [
        `snapshot ${run.id} ${run.status}: ${run.tables} tables, ${run.rows} rows, ${mib(run.storedBytes ?? 0)} MiB stored in ${((run.durationMs ?? 0) / 1000).toFixed(1)} s`,
        ...run.targets.map((t) => `  ${t.ok ? "ok    " : "FAILED"} ${t.target}${t.error ? `: ${t.error}` : ""}`),
      ]);
    },
  );

  unsealOptions(backup.command("base-backup").description("take a physical base backup now (point-in-time recovery replays WAL over it; embedded PostgreSQL)")).action(
    async (opts: UnsealOpts, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const run = await withUnsealedContext(opts, (ctx) => runBaseBackup(ctx, "cli"));
      if (run.status === "failed") throw new CliError(`base backup ${run.id} failed: ${run.outcomes.map((o) => `${o.target}: ${o.error}`).join("; ")}`);
      printResult(
        global,
        {
          baseBackup: {
            id: run.id,
            status: run.status,
            startWal: run.body.startWal,
            stopWal: run.body.stopWal,
            completedAt: run.body.completedAt,
            storedBytes: run.body.object.storedBytes,
            targets: run.outcomes,
            phases: run.phases,
          },
        },
        [
          `base backup ${run.id} ${run.status}: ${mib(run.body.object.storedBytes)} MiB stored, WAL ${run.body.startWal} .. ${run.body.stopWal}; restores reach back to ${run.body.completedAt}`,
          ...run.outcomes.map((t) => `  ${t.ok ? "ok    " : "FAILED"} ${t.target}${t.error ? `: ${t.error}` : ""}`),
        ],
      );
    },
  );

  unsealOptions(
    backup
      .command("pitr-drill")
      .description("point-in-time recovery drill now: restore a target's archive to a random time (or --at) into a scratch cluster and check it (exit 1 when it fails)")
      .option("--target <name>", "the target to drill (default: the one drilled longest ago)")
      .option("--at <time>", "recover to this ISO 8601 time instead of a random one in the retained window"),
  ).action(async (opts: UnsealOpts & { target?: string; at?: string }, cmd: Command) => {
    const global = cmd.optsWithGlobals<GlobalOptions>();
    const at = opts.at === undefined ? undefined : new Date(opts.at);
    if (at && (Number.isNaN(at.getTime()) || !/(Z|[+-]\d\d:\d\d)$/.test(opts.at!))) throw new CliError(`--at must be an ISO 8601 time with a zone, not ${JSON.stringify(opts.at)}`);
    const drill = await withUnsealedContext(opts, (ctx) => runPitrDrill(ctx, { trigger: "cli", target: opts.target, at }));
    const ph = drill.phases;
    printResult(global, { drill }, [
      `PITR drill ${drill.id} on target ${drill.target} ${drill.status.toUpperCase()}: recovered to ${drill.targetTime ?? "?"} (last transaction ${drill.achievedTime ?? "none"}) from base backup ${drill.baseBackup ?? "none"}`,
      ...(drill.rtoMs !== null
        ? [`  RTO ${drill.rtoMs} ms: locate ${ph.locateMs ?? 0} ms, base backup ${ph.baseMs ?? 0} ms, replay ${ph.replayMs ?? 0} ms, verify ${ph.verifyMs ?? 0} ms`]
        : []),
      ...drill.checks.map((c) => `  ${c.ok ? "ok    " : "FAILED"} ${c.name}: ${c.detail}`),
      ...(drill.error ? [`  error: ${drill.error}`] : []),
    ]);
    if (drill.status !== "passed") process.exitCode = 1;
  });

  unsealOptions(backup.command("wal").description("the WAL archive: ship what waits in the spool now, then show the recovery point of each target")).action(
    async (opts: UnsealOpts, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const { shipped, status } = await withUnsealedContext(opts, async (ctx) => ({ shipped: await shipSpool(ctx), status: await pitrStatus(ctx) }));
      printResult(global, { shipped, status }, [
        `shipped ${shipped.shipped.length} WAL file(s); ${shipped.waiting} waiting in the spool (${mib(shipped.spoolBytes)} MiB)`,
        ...shipped.failed.map((f) => `  FAILED ${f.target}: ${f.error}`),
        ...status.targets.map(
          (t) =>
            `  ${t.target}: newest ${t.newestWal ?? "none"} archived ${t.newestArchivedAt ?? "never"}; recovery point ${t.rpoSeconds == null ? "unknown" : `${t.rpoSeconds} s`}`,
        ),
        `  archiver: ${status.archiver.archivedCount} archived, ${status.archiver.failedCount} failed${status.archiver.failing ? ` (FAILING since ${status.archiver.lastFailedAt})` : ""}`,
      ]);
      if (shipped.failed.length) process.exitCode = 3;
    },
  );

  unsealOptions(
    backup
      .command("list")
      .description("snapshots this appliance recorded, or (with --target-file) the complete snapshots on a target")
      .option("--target-file <file>", "list a target directly (JSON definition, as in the admin API, plus optional secrets)"),
  ).action(async (opts: UnsealOpts & { targetFile?: string }, cmd: Command) => {
    const global = cmd.optsWithGlobals<GlobalOptions>();
    if (opts.targetFile) {
      const target = targetFromFile(opts.targetFile);
      try {
        const listing = await listTarget(target);
        printResult(global, listing, [
          `target ${target.name} (${target.describe()}): ${listing.snapshots.length} complete snapshot(s)`,
          ...listing.snapshots.map((s) =>
            "error" in s
              ? `${s.id}  UNREADABLE manifest: ${s.error}`
              : `${s.id}  ${s.trigger.padEnd(8)} ${String(s.tables).padStart(3)} tables ${String(s.rows).padStart(9)} rows ${String(mib(s.storedBytes)).padStart(6)} MiB  ${s.attachments} attachment(s)${s.attachmentsMissing ? ` (${s.attachmentsMissing} left out)` : ""}`,
          ),
          ...(listing.incomplete.length ? [`(${listing.incomplete.length} interrupted, ignored: ${listing.incomplete.join(", ")})`] : []),
        ]);
      } catch (err) {
        if (err instanceof AppError) throw new CliError(err.message);
        throw err;
      } finally {
        await target.close();
      }
      return;
    }
    const records = await withOfflineContext(loadConfig(), (ctx) => listSnapshotRecords(ctx));
    printResult(global, { snapshots: records }, records.length ? records.map(recordLine) : ["no snapshots yet"]);
  });

  unsealOptions(backup.command("reconcile").description("compare the catalogue with what every target holds now: marks and alerts vanished and unrecorded snapshots")).action(
    async (opts: UnsealOpts, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const r = await withUnsealedContext(opts, (ctx) => reconcileCatalogue(ctx, CLI_META));
      if (r.skipped) throw new CliError(`reconcile skipped: ${r.skipped}; try again when it has finished`);
      printResult(
        global,
        { reconcile: r },
        r.targets.map((t) =>
          t.error
            ? `  FAILED ${t.target}: ${t.error}`
            : `  ${t.vanished.length || t.appeared.length ? "DIFFERS" : "ok     "} ${t.target}: ${t.listed} snapshot(s)${t.vanished.length ? `, vanished: ${t.vanished.join(", ")}` : ""}${t.appeared.length ? `, not recorded here: ${t.appeared.join(", ")}` : ""}${t.returned.length ? `, back again: ${t.returned.join(", ")}` : ""}${t.adopted.length ? `, recorded now: ${t.adopted.join(", ")}` : ""}`,
        ),
      );
      if (r.targets.some((t) => t.error))
        throw new CliError(
          `reconcile could not list ${r.targets
            .filter((t) => t.error)
            .map((t) => t.target)
            .join(", ")}`,
        );
    },
  );

  unsealOptions(
    backup
      .command("verify <id>")
      .description("download the snapshot and check every digest, GCM tag and row count, without restoring")
      .option("--target <name>", "read from this target (default: the first that holds it)"),
  ).action(async (id: string, opts: UnsealOpts & { target?: string }, cmd: Command) => {
    const global = cmd.optsWithGlobals<GlobalOptions>();
    const r = await withUnsealedContext(opts, (ctx) => verifySnapshotById(ctx, id, { target: opts.target, meta: CLI_META }));
    printResult(global, { verify: r }, `snapshot ${id} on ${r.target} verified: ${r.objects} objects, ${r.rows} rows, ${mib(r.storedBytes)} MiB, every digest and tag valid`);
  });

  unsealOptions(
    program
      .command("restore <id>")
      .description(
        "restore a snapshot into an EMPTY database (refuses a non-empty one), into a new scratch database (--scratch), or in place of the live database (--in-place, with the daemon stopped)",
      )
      .option("--into <url>", "owner connection URL of the empty database (postgres://...)")
      .option("--scratch", "restore into a new scratch database this appliance creates and keeps for inspection (as a drill does)")
      .option("--in-place", "replace this appliance's live database with the snapshot: a safety snapshot first, every session ends (stop the daemon first)")
      .option("--confirm <name>", "with --in-place: the appliance's name (its public host name), typed to confirm")
      .option("--target <name>", "target from this appliance's policy")
      .option("--target-file <file>", "target as a JSON file: for a brand-new appliance that has no policy yet")
      .option("--recovery-key-file <file>", "the recovery kit (PEM): restore without this appliance's keys")
      .option("--recovery-share-file <file>", "a recovery kit share (repeat k times) instead of --recovery-key-file", collect)
      .addOption(hiddenAlias("--recovery-key <file>", "--recovery-key-file"))
      .on("option:recovery-key", aliasTo("recoveryKeyFile"))
      .addOption(hiddenAlias("--recovery-share <file>", "--recovery-share-file"))
      .on("option:recovery-share", aliasTo("recoveryShareFile", { repeat: true }))
      .option("--expect-signer <hex>", "raw Ed25519 public key (hex) the manifest must be signed with")
      .option("--app-role <role>", "role requests run as (granted by the migrations)", APP_ROLE),
  ).action(
    async (
      id: string,
      opts: UnsealOpts & {
        into?: string;
        scratch?: boolean;
        inPlace?: boolean;
        confirm?: string;
        target?: string;
        targetFile?: string;
        recoveryKeyFile?: string;
        recoveryShareFile?: string[];
        expectSigner?: string;
        appRole: string;
      },
      cmd: Command,
    ) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      if ([opts.into, opts.scratch, opts.inPlace].filter(Boolean).length !== 1) throw new CliError("give --into URL, --scratch or --in-place (one of them)", 2);
      if (opts.inPlace && opts.confirm === undefined) throw new CliError("--in-place replaces the live database: give the appliance's name as --confirm NAME", 2);
      if (opts.into && !/^postgres(ql)?:\/\//.test(opts.into)) throw new CliError("--into must be a postgres:// URL");
      const human = (r: Awaited<ReturnType<typeof restoreSnapshot>> & { scratchDatabase?: string | null; inPlace?: InPlaceDetails }) => [
        `snapshot ${id} restored: ${r.tables} tables, ${r.rows} rows in ${(r.phases.totalMs / 1000).toFixed(1)} s (schema ${r.schema.restoredTo})`,
        `  phases: open ${r.phases.openMs} ms, schema ${r.phases.schemaMs} ms, load ${r.phases.loadMs} ms (AES-GCM ${r.phases.decryptCpuMs} ms), constraints ${r.phases.constraintsMs} ms, verify ${r.phases.verifyMs} ms`,
        `  audit chain: ${r.auditChain.checked ? (r.auditChain.intact ? `intact up to ${r.auditChain.expected?.seq ?? 0}` : "BROKEN") : r.auditChain.reason}`,
        r.inPlace
          ? `  restored in place of the live database; safety snapshot ${r.inPlace.safetySnapshotId} (restore it in place to undo); ${r.inPlace.sessionsEnded} session(s) ended; ${r.inPlace.readable.sampled} encrypted value(s) decrypted`
          : "scratchDatabase" in r && r.scratchDatabase
            ? `  restored into the scratch database ${r.scratchDatabase}; drop it when done (DROP DATABASE ${r.scratchDatabase})`
            : "  next: start the appliance on this database; the keys capability re-applies the crypto-shredding list",
      ];
      try {
        if (opts.recoveryKeyFile || opts.recoveryShareFile?.length) {
          // A brand-new appliance: only the target and the recovery kit are needed.
          const privateKey = opts.recoveryKeyFile
            ? await loadRecoveryPrivateKey({ pem: fs.readFileSync(opts.recoveryKeyFile, "utf8") })
            : await loadRecoveryPrivateKey({ shares: opts.recoveryShareFile!.map((f) => fs.readFileSync(f, "utf8")) });
          let target: SnapshotTarget;
          if (!opts.into) throw new CliError("with --recovery-key-file, give the empty database as --into URL");
          if (opts.targetFile) target = targetFromFile(opts.targetFile);
          else throw new CliError("with --recovery-key-file, give the target as --target-file (this appliance may have no policy)");
          try {
            const config = loadConfig();
            const r = await restoreSnapshot({
              target,
              snapshotId: id,
              intoUrl: opts.into,
              appRole: opts.appRole,
              opener: { recoveryPrivateKey: privateKey },
              trustedSigners: opts.expectSigner ? [Buffer.from(opts.expectSigner, "hex")] : [],
              verifyAuditChain: auditVerifierFor(
                { config, log: silentLogger(), clock: systemClock, rootKey: new RootKey(config.keys.unseal), metrics: new Registry() },
                "database",
              ),
            });
            printResult(global, { restore: r }, human(r));
          } finally {
            await target.close();
          }
          return;
        }
        if (opts.targetFile) throw new CliError("--target-file is for restores with --recovery-key-file; otherwise name a policy target with --target");
        const r = await withUnsealedContext(opts, (ctx) =>
          opts.inPlace
            ? restoreInPlace(ctx, id, { confirm: opts.confirm!, target: opts.target, meta: CLI_META, refuseWhileServing: true })
            : restoreSnapshotById(ctx, id, { intoUrl: opts.into, scratch: opts.scratch, target: opts.target, meta: CLI_META }),
        );
        printResult(global, { restore: r }, human(r));
      } catch (err) {
        if (err instanceof AppError) throw new CliError(err.message);
        throw err;
      }
    },
  );

  unsealOptions(
    program
      .command("drill")
      .description("recovery drill: restore the latest snapshot into a scratch database and verify it (RTO, RPO)")
      .option("--snapshot <id>", "drill this snapshot instead of the latest")
      .option("--target <name>", "read from this target"),
  ).action(async (opts: UnsealOpts & { snapshot?: string; target?: string }, cmd: Command) => {
    const global = cmd.optsWithGlobals<GlobalOptions>();
    const d = await withUnsealedContext(opts, (ctx) => runDrill(ctx, { trigger: "cli", snapshotId: opts.snapshot, target: opts.target, meta: CLI_META }));
    const lines = [
      `drill ${d.status.toUpperCase()}: snapshot ${d.snapshotId ?? "-"} from ${d.target || "-"}, RTO ${d.rtoMs ?? "-"} ms, RPO ${d.rpoMs === null ? "-" : Math.round(d.rpoMs / 1000) + " s"}`,
      ...d.checks.map((c) => `  ${c.ok ? "ok  " : "FAIL"} ${c.name}: ${c.detail}`),
    ];
    if (d.status !== "passed") {
      if (global.json) printResult(global, { drill: d }, []);
      else process.stdout.write(lines.join("\n") + "\n");
      throw new CliError(`recovery drill failed: ${d.error ?? "a check failed"}`);
    }
    printResult(global, { drill: d }, lines);
  });
}
