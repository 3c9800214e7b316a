import fs from "node:fs";
import path from "node:path";
import readline from "node:readline/promises";
import type { Command } from "commander";
import { inDataDir, loadConfig } from "../../config/load.js";
import type { ApplianceContext } from "../../context.js";
import { CLI_OPERATOR } from "../../audit/append.js";
import {
  flushNonceCounts,
  assertSchemaCurrent,
  callDaemon,
  daemonTarget,
  OperatorError,
  unsealForOperator,
  type CurrentSecret,
  issueRecoveryKit,
  type UnsealMode,
  rewrapPending,
  rotateDataKey,
  rotateKek,
  rotateTenantKeys,
  sealProgress,
  shredKeyFile,
  tenantKeyId,
  type TenantRotation,
  initialiseKeyStore,
  rekeyKeyStore,
  describeKeys,
  type KeyStatus,
  UnsealError,
} from "../../keys/index.js";
import { AppError } from "../../kernel/errors.js";
import { withOfflineContext } from "../offline-context.js";
import { integerOption, parseUnsealMode, sealInput, UNSEAL_MODES } from "../seal-input.js";
import { CliError, printResult, type GlobalOptions } from "../output.js";
import { aliasTo, hiddenAlias } from "../flags.js";

type SealOptions = { unseal: string; passphraseFile?: string; shares?: string; threshold?: string; outDir?: string; createHsmKey?: boolean; shredOldKeyfile?: boolean };

/**
 * After a rekey away from a key file the old file no longer unseals the key store but still
 * unseals every key-store backup taken before: shred it when asked (--shred-old-keyfile), ask
 * at a terminal, and otherwise say where it is and how to remove it.
 */
async function disposeOfOldKeyFile(file: string, opts: { shred?: boolean; json?: boolean }): Promise<{ shredded: boolean; lines: string[] }> {
  if (!fs.existsSync(file)) return { shredded: false, lines: [] };
  let shred = opts.shred === true;
  if (!shred && !opts.json && process.stdin.isTTY && process.stderr.isTTY) {
    const rl = readline.createInterface({ input: process.stdin, output: process.stderr });
    const answer = await rl.question(`Overwrite and delete the old key file ${file}? It unseals key-store backups taken before this rekey. [y/N] `);
    rl.close();
    shred = /^y(es)?$/i.test(answer.trim());
  }
  if (shred) {
    shredKeyFile(file);
    return { shredded: true, lines: [`the old key file ${file} was overwritten and deleted`] };
  }
  return {
    shredded: false,
    lines: [`the old key file ${file} is still on disk and unseals key-store backups taken before this rekey: delete it (shred -u ${file}) or rekey with --shred-old-keyfile`],
  };
}
type SecretOptions = { currentPassphraseFile?: string; shareFile?: string[] };

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** Runs `work` on an offline context whose barrier is unsealed with the current secret; maps errors to one line. */
async function withKeys<T>(secret: CurrentSecret, work: (ctx: ApplianceContext) => Promise<T>, opts: { unseal?: boolean } = {}): Promise<T> {
  const config = loadConfig();
  try {
    return await withOfflineContext(config, async (ctx) => {
      if (opts.unseal === false) await assertSchemaCurrent(ctx);
      else await unsealForOperator(ctx, secret);
      try {
        return await work(ctx);
      } finally {
        await flushNonceCounts(ctx).catch(() => undefined);
        ctx.rootKey.seal("command finished");
      }
    });
  } catch (err) {
    if (err instanceof OperatorError || err instanceof UnsealError || err instanceof AppError) throw new CliError(err.message);
    throw err;
  }
}

/** Shares go to the terminal, or one file per custodian (0600) with --out-dir. */
function deliverShares(shares: string[], threshold: number, outDir: string | undefined): { files?: string[]; lines: string[] } {
  if (!outDir) {
    return {
      lines: [
        `${shares.length} custodian shares (any ${threshold} unseal). Give each to a different person; they are shown once and never stored:`,
        ...shares.map((s, i) => `  share ${i + 1}: ${s}`),
      ],
    };
  }
  fs.mkdirSync(outDir, { recursive: true, mode: 0o700 });
  const files = shares.map((share, i) => {
    const file = path.join(path.resolve(outDir), `unseal-share-${i + 1}-of-${shares.length}.txt`);
    fs.writeFileSync(file, `Wardkeep unseal share ${i + 1} of ${shares.length} (any ${threshold} unseal)\n\n${share}\n`, { mode: 0o600, flag: "wx" });
    return file;
  });
  return {
    files,
    lines: [
      `${shares.length} custodian share files written (any ${threshold} unseal); hand each to a different person and delete it from this host:`,
      ...files.map((f) => `  ${f}`),
    ],
  };
}

function tenantProgressLine(p: TenantRotation): string {
  if (p.state === "rotating-keys") return `rotating keys: ${p.keysRotated} of ${p.keysTotal} at a new version`;
  return `re-encrypting: ${p.keysReencrypted} of ${p.keysRotated} key(s) done, ${p.valuesReencrypted} value(s) re-encrypted${p.state === "finished" ? "; finished" : ""}`;
}

function summarise(status: KeyStatus, daemon: Record<string, unknown> | undefined): string[] {
  const lines = [
    `key store: ${status.seal.initialised ? `initialised, unseal mode ${status.seal.mode}` : "not initialised"}`,
    daemon ? `daemon: ${daemon.sealed ? `SEALED (${String(daemon.reason ?? "")})` : `unsealed since ${String(daemon.unsealedAt)}`}` : "daemon: not reachable",
  ];
  for (const k of status.kek.versions) lines.push(`KEK v${k.version}: ${k.state}, created ${k.createdAt.slice(0, 10)}, wraps ${k.wraps} data key version(s)`);
  if (status.kek.rotation.inProgress) lines.push(`KEK rotation in progress: ${status.kek.rotation.remaining} data key version(s) still to rewrap`);
  for (const t of status.tenants) {
    const versions = t.versions.map((v) => `v${v.version} ${v.state}${v.values !== null ? ` (${v.values} values)` : ""}`).join(", ");
    lines.push(`tenant ${t.tenantId}: ${versions || "no tenant key yet"}; ${t.patientKeys} patient key(s)${t.shredScheduledFor ? `; SHREDDING after ${t.shredScheduledFor}` : ""}`);
  }
  for (const a of status.applianceKeys) lines.push(`${a.keyId}: ${a.versions.map((v) => `v${v.version} ${v.state}`).join(", ")}`);
  for (const r of status.tenantRotations.filter((x) => !x.completedAt)) lines.push(`tenant rotation open: tenant ${r.tenantId}, ${tenantProgressLine(r)}`);
  for (const r of status.rotations.filter((x) => !x.completedAt)) lines.push(`rotation open: ${r.keyId ?? "KEK"} v${r.from} -> v${r.to}, ${r.itemsDone} rewritten so far`);
  lines.push(
    `shredding: ${status.shredding.scheduled} scheduled${status.shredding.nextDestroyAfter ? ` (next ${status.shredding.nextDestroyAfter})` : ""}, ${status.shredding.destroyed} destroyed`,
  );
  lines.push(
    status.recovery
      ? `recovery key ${status.recovery.fingerprint}: ${status.recovery.issuedAt ? `kit issued ${status.recovery.issuedAt.slice(0, 10)}` : "KIT NOT YET WRITTEN (wardkeep keys recovery-kit --out-file FILE)"}`
      : "recovery key: none",
  );
  return lines;
}

export function registerKeys(program: Command) {
  const keys = program.command("keys").description("root key, data keys, rotation, custodian shares and the recovery kit");

  keys
    .command("init")
    .description("initialise the key store: choose how it is unsealed (first install; once)")
    .requiredOption("--unseal <mode>", `unseal mode: ${UNSEAL_MODES.join(", ")}`)
    .option("--passphrase-file <file>", "passphrase mode: file holding the new passphrase (- for stdin); otherwise asked twice")
    .option("--shares <n>", "shamir mode: number of custodian shares (default 5)")
    .option("--threshold <k>", "shamir mode: shares needed to unseal (default 3)")
    .option("--out-dir <dir>", "shamir mode: write one share file per custodian instead of printing them")
    .option("--create-hsm-key", "pkcs11 mode: create the AES key in the HSM when the token has none with keys.pkcs11.keyLabel")
    .action(async (opts: SealOptions, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const mode = parseUnsealMode(opts.unseal);
      const input = await sealInput(mode, opts).catch((err: unknown) => {
        throw err instanceof OperatorError ? new CliError(err.message) : err;
      });
      const result = await withKeys({}, (ctx) => initialiseKeyStore(ctx, mode, input, CLI_OPERATOR), { unseal: false });
      const shares = result.shares ? deliverShares(result.shares, input.threshold ?? 3, opts.outDir) : undefined;
      printResult(global, { mode, ...(shares ? { shares: shares.files ? undefined : result.shares, shareFiles: shares.files } : {}), keyFile: result.createdFile }, [
        `key store initialised (unseal mode ${mode})`,
        ...(shares?.lines ?? []),
        ...(mode === "keyfile" ? ["WARNING: a key file is for evaluation only; use passphrase, shamir or pkcs11 in production"] : []),
        `set keys.unseal: ${mode} in the configuration (or WARDKEEP_KEYS_UNSEAL) so new installs and replicas agree`,
        "next: write the recovery kit once and store it offline: wardkeep keys recovery-kit --out-file FILE",
      ]);
    });

  const rekeyAction = (forced?: UnsealMode) => async (opts: SealOptions & SecretOptions, cmd: Command) => {
    const global = cmd.optsWithGlobals<GlobalOptions>();
    const mode = forced ?? parseUnsealMode(opts.unseal);
    const secret = { passphraseFile: opts.currentPassphraseFile, shareFiles: opts.shareFile };
    const result = await withKeys(secret, async (ctx) => {
      const input = await sealInput(mode, opts).catch((err: unknown) => {
        throw err instanceof OperatorError ? new CliError(err.message) : err;
      });
      const previous = (await sealProgress(ctx)).mode;
      return { ...(await rekeyKeyStore(ctx, mode, input, CLI_OPERATOR)), threshold: input.threshold, previous };
    });
    const shares = result.shares ? deliverShares(result.shares, result.threshold ?? 3, opts.outDir) : undefined;
    const oldKeyFile =
      result.previous === "keyfile" && mode !== "keyfile"
        ? await disposeOfOldKeyFile(inDataDir(loadConfig(), loadConfig().keys.keyFile), { shred: opts.shredOldKeyfile, json: global.json })
        : { shredded: false, lines: [] };
    printResult(
      global,
      {
        mode,
        generation: result.generation,
        oldKeyFileShredded: oldKeyFile.shredded,
        ...(shares ? { shares: shares.files ? undefined : result.shares, shareFiles: shares.files } : {}),
      },
      [
        `unseal key replaced (mode ${mode}, generation ${result.generation}); data keys are unchanged`,
        ...oldKeyFile.lines,
        ...(shares?.lines ?? []),
        "the previous passphrase, shares or key file no longer unseal; running replicas keep working and use the new secret at their next unseal",
        `set keys.unseal: ${mode} in the configuration (or WARDKEEP_KEYS_UNSEAL=${mode}) so new replicas and \`wardkeep doctor\` agree`,
      ],
    );
  };

  keys
    .command("rekey")
    .description("change how the key store is unsealed (new passphrase, new shares, an HSM, or back to a key file)")
    .requiredOption("--unseal <mode>", `new unseal mode: ${UNSEAL_MODES.join(", ")}`)
    .option("--passphrase-file <file>", "passphrase mode: file holding the NEW passphrase")
    .option("--current-passphrase-file <file>", "file holding the CURRENT passphrase (passphrase mode now)")
    .option("--share-file <file>", "a CURRENT custodian share (shamir mode now); repeat", collect)
    .option("--shares <n>", "shamir mode: number of new shares (default 5)")
    .option("--threshold <k>", "shamir mode: new shares needed (default 3)")
    .option("--out-dir <dir>", "shamir mode: write one share file per custodian")
    .option("--create-hsm-key", "pkcs11 mode: create the AES key in the HSM when missing")
    .option("--shred-old-keyfile", "when leaving keyfile mode: overwrite and delete the old root key file (asked at a terminal otherwise)")
    .action(rekeyAction());

  keys
    .command("split")
    .description("split the unseal key into k-of-n custodian shares (rekeys to shamir mode)")
    .option("--shares <n>", "number of shares (default 5)")
    .option("--threshold <k>", "shares needed to unseal (default 3)")
    .option("--out-dir <dir>", "write one share file per custodian instead of printing them")
    .option("--current-passphrase-file <file>", "file holding the CURRENT passphrase (passphrase mode now)")
    .option("--share-file <file>", "a CURRENT custodian share (shamir mode now); repeat", collect)
    .action(rekeyAction("shamir"));

  keys
    .command("status")
    .description("key versions, what each protects (counts), rotation progress, seal state")
    .option("--no-counts", "skip counting stored values per key (scans every encrypted column)")
    .option("--url <url>", "the running daemon, for its seal state (default https://127.0.0.1:<server.port>)")
    .action(async (opts: { counts: boolean; url?: string }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const config = loadConfig();
      const status = await withKeys({}, (ctx) => describeKeys(ctx, { countValues: opts.counts }), { unseal: false });
      const daemon = await callDaemon(daemonTarget(config, { url: opts.url }), "GET", "/api/v1/keys/seal-status").then(
        (a) => (a.status === 200 ? a.body : undefined),
        () => undefined,
      );
      // This process never unsealed: report the daemon's seal state, not its own.
      const report = { ...status, seal: { ...status.seal, ...(daemon ?? { sealed: null, reason: "daemon not reachable" }) }, cache: undefined };
      printResult(global, { status: report }, summarise(status, daemon));
    });

  keys
    .command("rotate")
    .description("rotate the KEK (rewraps every data key now), a tenant's data keys (every patient's key, then re-encrypts their values; resumable), or the audit signing key")
    .option("--kek", "rotate the root key-encryption key")
    .option("--tenant <tenant>", "rotate every data key of this tenant and re-encrypt what they cover, with progress; run it again to resume an interrupted rotation")
    .option("--audit-signing", "rotate the audit checkpoint signing key pair")
    .option("--current-passphrase-file <file>", "file holding the unseal passphrase (passphrase mode)")
    .option("--share-file <file>", "a custodian share (shamir mode); repeat", collect)
    .action(async (opts: { kek?: boolean; tenant?: string; auditSigning?: boolean } & SecretOptions, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const targets = [opts.kek, opts.tenant, opts.auditSigning].filter(Boolean).length;
      if (targets !== 1) throw new CliError("give exactly one of --kek, --tenant ID or --audit-signing");
      if (opts.tenant && !/^[0-9a-f-]{36}$/.test(opts.tenant)) throw new CliError("--tenant must be a tenant id (UUID)");
      const secret = { passphraseFile: opts.currentPassphraseFile, shareFiles: opts.shareFile };
      if (opts.kek) {
        const result = await withKeys(secret, async (ctx) => {
          const rotated = await rotateKek(ctx, CLI_OPERATOR);
          const rewrap = await rewrapPending(ctx);
          return { ...rotated, rewrapped: rewrap.rewrapped, retired: rewrap.retired };
        });
        printResult(
          global,
          result,
          `KEK rotated: v${result.from} -> v${result.to}; ${result.rewrapped} key(s) rewrapped; retired ${result.retired.map((v) => `v${v}`).join(", ") || "nothing yet"}`,
        );
        return;
      }
      if (opts.tenant) {
        const tenantId = opts.tenant;
        // Progress on stderr (stdout stays the result, or the one JSON object with --json); it is
        // persisted after each batch, so a killed run resumes from the last line printed.
        const progress = (p: TenantRotation) => process.stderr.write(`${tenantProgressLine(p)}\n`);
        const { rotation, resumed } = await withKeys(secret, (ctx) => rotateTenantKeys(ctx, tenantId, CLI_OPERATOR, { onProgress: progress }));
        printResult(global, { keyId: tenantKeyId(tenantId), tenantRotation: rotation, resumed }, [
          ...(resumed ? [`resumed the tenant key rotation started ${rotation.startedAt}`] : []),
          rotation.state === "finished"
            ? `tenant ${tenantId}: ${rotation.keysRotated} data key(s) at a new version, ${rotation.valuesReencrypted} value(s) re-encrypted; finished`
            : `tenant ${tenantId}: ${tenantProgressLine(rotation)}; some values could not be re-encrypted now (locked or unreadable: see the daemon log); key maintenance retries them (wardkeep keys status)`,
        ]);
        return;
      }
      const result = await withKeys(secret, (ctx) => rotateDataKey(ctx, "audit-signing", "operator", CLI_OPERATOR));
      printResult(global, result, `audit-signing rotated: v${result.from} -> v${result.to}; new writes use v${result.to}`);
    });

  keys
    .command("recovery-kit")
    .description("write the recovery private key ONCE (optionally Shamir-split) for offline storage")
    .requiredOption("--out-file <file>", "kit file to write (never overwritten)")
    .addOption(hiddenAlias("--out <file>", "--out-file"))
    .on("option:out", aliasTo("outFile"))
    .option("--shares <n>", "split the private key into n shares (one file each)")
    .option("--threshold <k>", "shares needed to recover it")
    .option("--reissue", "make a NEW recovery key pair (when the old kit is lost or compromised)")
    .option("--current-passphrase-file <file>", "file holding the unseal passphrase (passphrase mode)")
    .option("--share-file <file>", "a custodian share (shamir mode); repeat", collect)
    .action(async (opts: { outFile: string; shares?: string; threshold?: string; reissue?: boolean } & SecretOptions, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const shares = opts.shares === undefined ? undefined : integerOption("shares", opts.shares, 0);
      const threshold = opts.threshold === undefined ? undefined : integerOption("threshold", opts.threshold, 0);
      const result = await withKeys({ passphraseFile: opts.currentPassphraseFile, shareFiles: opts.shareFile }, (ctx) =>
        issueRecoveryKit(ctx, { out: opts.outFile, shares, threshold, reissue: opts.reissue }, CLI_OPERATOR),
      );
      printResult(global, result, [
        `recovery kit written (fingerprint ${result.fingerprint})${result.reissued ? ": NEW recovery key pair" : ""}:`,
        ...result.files.map((f) => `  ${f}`),
        "store it offline now; the appliance no longer holds the private key and cannot write it again",
      ]);
    });
}
