import type { KeyObject } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Command } from "commander";
import type { AuditRequestContext } from "../../audit/append.js";
import { describeCheckpointKeys, EXPORT_FORMATS, exportAuditEvidence, newPackId, type ExportFormat, publicKeysFromPem, verifyAuditChain } from "../../audit/index.js";
import type { ApplianceContext } from "../../context.js";
import { withUnsealedContext, type UnsealOpts } from "../offline-context.js";
import { CliError, printResult, type GlobalOptions } from "../output.js";
import { aliasTo, hiddenAlias } from "../flags.js";

const collect = (v: string, prev: string[] = []) => [...prev, v];

/** The host operator who ran the command, for the audit trail (the CLI has no session). */
function cliActor(): AuditRequestContext {
  let user = "unknown";
  try {
    user = os.userInfo().username;
  } catch {
    /* no passwd entry in some containers */
  }
  return { tenantId: null, actor: { userId: `os:${user}`, role: "host_operator" }, sourceIp: null, userAgent: "wardkeep-cli", requestId: null };
}

function parseDate(flag: string, value: string): Date {
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) throw new CliError(`${flag}: not a date (use ISO 8601, e.g. 2025-01-31 or 2025-01-31T12:00:00Z)`);
  return d;
}

export function registerAudit(program: Command) {
  const audit = program.command("audit").description("the hash-chained audit trail");
  const unsealOptions = (c: Command) =>
    c.option("--passphrase-file <file>", "file holding the unseal passphrase (passphrase mode)").option("--share-file <file>", "a custodian share (shamir mode); repeat", collect);

  unsealOptions(
    audit
      .command("verify")
      .description("recompute the whole chain and check checkpoint signatures; exit 1 and name the first broken seq if it is not intact")
      .option(
        "--public-key-file <file>",
        "verify checkpoint signatures against the PEM public keys in this file only (e.g. an evidence pack's audit-signing-*.pem); repeat for keys from before a rotation",
        collect,
      )
      .addOption(hiddenAlias("--public-key <file>", "--public-key-file"))
      .on("option:public-key", aliasTo("publicKeyFile", { repeat: true })),
  ).action(async (opts: UnsealOpts & { publicKeyFile?: string[] }, cmd: Command) => {
    const global = cmd.optsWithGlobals<GlobalOptions>();
    let keys: KeyObject[] | undefined;
    for (const file of opts.publicKeyFile ?? []) {
      try {
        keys = [...(keys ?? []), ...publicKeysFromPem(fs.readFileSync(file, "utf8"))];
      } catch (err) {
        throw new CliError(`--public-key-file: cannot read an Ed25519 public key from ${file} (${(err as Error).message})`);
      }
    }
    const report = await withUnsealedContext(opts, (ctx) => verifyAuditChain(ctx, { publicKeys: keys }), "optional");
    if (!report.intact) {
      if (!global.json) throw new CliError(`audit chain ${report.summary}`);
      process.stdout.write(JSON.stringify({ ok: false, error: `audit chain ${report.summary}`, ...report }) + "\n");
      process.exitCode = 1;
      return;
    }
    printResult(global, report, [
      report.summary,
      `${report.verified} events, ${report.checkpoints.verified}/${report.checkpoints.total} checkpoint signatures verified (key: ${report.keyTrust}${report.keyIds.length ? " " + report.keyIds.join(", ") : ""})`,
    ]);
  });

  unsealOptions(
    audit.command("fingerprint").description("print the fingerprint of the key that signs evidence packs (and of older keys), for an auditor's verify.sh --fingerprint"),
  ).action(async (opts: UnsealOpts, cmd: Command) => {
    const global = cmd.optsWithGlobals<GlobalOptions>();
    const k = await withUnsealedContext(opts, (ctx) => describeCheckpointKeys(ctx));
    const older = k.verificationKeys.filter((v) => v.fingerprint !== k.fingerprint);
    printResult(
      global,
      {
        algorithm: k.algorithm,
        keyId: k.keyId,
        fingerprint: k.fingerprint,
        olderKeys: older.map((v) => ({ keyId: v.keyId, fingerprint: v.fingerprint, keyringVersion: v.keyringVersion, legacy: v.legacy, retiredAt: v.retiredAt })),
      },
      [
        `${k.fingerprint}  (${k.algorithm}, key id ${k.keyId}, signs evidence packs now)`,
        ...older.map((v) => `${v.fingerprint}  (older key ${v.keyId}${v.legacy ? ", legacy" : ""}${v.retiredAt ? `, retired ${v.retiredAt}` : ""})`),
        "an auditor checks a pack with: sh verify.sh --fingerprint <fingerprint> <pack dir>",
      ],
    );
  });

  unsealOptions(
    audit
      .command("export")
      .description("write an evidence pack (events, checkpoints, public key, signed manifest) to a local directory")
      .requiredOption("--from <date>", "start of the range, inclusive (ISO 8601)")
      .requiredOption("--to <date>", "end of the range, exclusive (ISO 8601)")
      .option("--format <formats>", "events as csv, jsonl and/or fhir (comma-separated; JSON Lines is always written)", "csv,jsonl,fhir")
      .requiredOption("--out-dir <dir>", "directory to write the pack into (a new sub-directory is made per pack)")
      .addOption(hiddenAlias("--out <dir>", "--out-dir"))
      .on("option:out", aliasTo("outDir"))
      .option("--tenant <tenant>", "only this tenant's events (others appear redacted, still chained)"),
  ).action(async (opts: UnsealOpts & { from: string; to: string; format: string; outDir: string; tenant?: string }, cmd: Command) => {
    const global = cmd.optsWithGlobals<GlobalOptions>();
    const formats = opts.format
      .split(",")
      .map((f) => f.trim().toLowerCase())
      .filter(Boolean);
    const bad = formats.find((f) => !EXPORT_FORMATS.includes(f as ExportFormat));
    if (bad) throw new CliError(`--format: unknown format ${bad} (use csv, jsonl, fhir)`);
    const from = parseDate("--from", opts.from);
    const to = parseDate("--to", opts.to);
    const manifest = await withUnsealedContext(opts, async (ctx) => {
      const dir = path.resolve(opts.outDir, newPackId(ctx.clock.now()));
      let last = 0;
      return exportAuditEvidence(ctx, cliActor(), { from, to, formats: formats as ExportFormat[], tenantId: opts.tenant ?? null }, dir, (p) => {
        if (global.json || Date.now() - last < 1_000) return;
        last = Date.now();
        process.stderr.write(`exported ${p.done} of ${p.total} events\n`);
      }).then((m) => ({ ...m, dir }));
    });
    printResult(global, manifest, [
      `evidence pack written to ${manifest.dir}`,
      `${manifest.events.included} events (${manifest.events.redacted} redacted), seq ${Number(manifest.chainStart.seq) + 1}..${manifest.chainEnd.seq}, head ${manifest.chainEnd.hash}`,
      `verify offline: sh ${path.join(manifest.dir, "verify.sh")} --fingerprint <hex from wardkeep audit fingerprint> ${manifest.dir}`,
    ]);
  });
}
