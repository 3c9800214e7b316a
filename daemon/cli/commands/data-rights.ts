import fs from "node:fs";
import { finished } from "node:stream/promises";
import type { Command } from "commander";
import { z } from "zod";
import { hostOperatorIn } from "../../kernel/actor.js";
import { SYSTEM_META } from "../../kernel/request-meta.js";
import {
  cancelDeletion,
  deletionListQuery,
  legalHoldPlace,
  legalHoldRelease,
  listDeletionRequests,
  listLegalHolds,
  placeLegalHold,
  releaseLegalHold,
  requestPatientDeletion,
  requestTenantDeletion,
  streamExport,
  type DeletionRequestRes,
  type LegalHoldRes,
} from "../../records/index.js";
import { parseOptions, tenantByRef, unsealOptions, withHostOperator } from "../host-operator.js";
import type { UnsealOpts } from "../offline-context.js";
import { CliError, printResult, type GlobalOptions } from "../output.js";

/** Days and hours until the purge and crypto-shredding, as the console's countdown shows them. */
function timeLeft(r: DeletionRequestRes, now: number): string {
  if (r.status !== "pending") return r.status === "purged" ? `purged ${r.purgedAt?.slice(0, 10)}` : "cancelled";
  if (r.blockedByLegalHoldSince) return "held (a legal hold blocks the purge)";
  const minutes = Math.floor((Date.parse(r.purgeAfter) - now) / 60_000);
  if (minutes <= 0) return "due on the next purge run";
  return `${Math.floor(minutes / 1440)} days ${Math.floor((minutes % 1440) / 60)} h left`;
}
const erasureLine = (r: DeletionRequestRes, now: number) =>
  `${r.id}  ${(r.subject === "tenant" ? "whole tenant" : `patient ${r.patientId}`).padEnd(44)} ${r.status.padEnd(9)} purge after ${r.purgeAfter}  ${timeLeft(r, now)}`;
const holdLine = (h: LegalHoldRes) =>
  `${h.id}  patient ${h.patientId}  ${h.active ? "in force    " : `released ${h.releasedAt!.slice(0, 10)}`}  ${h.reason}${h.releaseReason ? `  (released: ${h.releaseReason})` : ""}`;

const uuid = z.uuid({ message: "not a patient id (a UUID)" });
const requestId = z.uuid({ message: "not a request id (a UUID; `data-rights erasures list` shows them)" });
const holdId = z.uuid({ message: "not a hold id (a UUID; `data-rights holds list` shows them)" });

/**
 * `wardkeep data-rights`: a tenant's erasure requests with the time left until crypto-shredding,
 * its holds on single patients, and one patient's export to a file, as the host operator acting
 * as the tenant's owner (docs/cli.md): listed, requested and cancelled, placed and released
 * through the same services as the console's Data rights page. The host operator has no account,
 * so the rows record none (migration 0260) and the audit trail records `host_operator`.
 */
export function registerDataRights(program: Command) {
  const rights = program.command("data-rights").description("a tenant's erasure requests and their countdown, its holds on single patients, one patient's export");

  const erasures = rights.command("erasures").description("a tenant's erasure requests: list (the default), request, cancel");
  erasures
    .command("list", { isDefault: true })
    .description("erasure requests of a tenant: subject, status, when the purge and crypto-shredding may run, and the time left")
    .requiredOption("--tenant <tenant>", "the tenant's id or slug")
    .option("--status <status>", "only pending, cancelled or purged requests")
    .action(async (opts: { tenant: string; status?: string }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const query = parseOptions(deletionListQuery, { status: opts.status }, { status: "--status" });
      const { items, now } = await withHostOperator({ unseal: false }, async (ctx) => ({
        ...(await listDeletionRequests(ctx, hostOperatorIn((await tenantByRef(ctx, opts.tenant)).id), query)),
        now: ctx.clock.now().getTime(),
      }));
      printResult(global, { erasures: items }, items.length ? items.map((r) => erasureLine(r, now)) : ["no erasure requests"]);
    });
  erasures
    .command("request")
    .description("request the erasure of one patient (or --whole-tenant): purged and crypto-shredded after the grace period unless cancelled; refused while a legal hold stands")
    .requiredOption("--tenant <tenant>", "the tenant's id or slug")
    .option("--patient <id>", "the patient to erase")
    .option("--whole-tenant", "erase every patient of the tenant, and the tenant")
    .action(async (opts: { tenant: string; patient?: string; wholeTenant?: boolean }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      if (!opts.patient === !opts.wholeTenant) throw new CliError("give --patient ID or --whole-tenant (one of them)");
      const patientId = opts.patient === undefined ? undefined : parseOptions(uuid, opts.patient, { "": "--patient" });
      const { erasure, now } = await withHostOperator({ unseal: false }, async (ctx) => {
        const actor = hostOperatorIn((await tenantByRef(ctx, opts.tenant)).id);
        const erasure = patientId ? await requestPatientDeletion(ctx, actor, patientId, SYSTEM_META) : await requestTenantDeletion(ctx, actor, SYSTEM_META);
        return { erasure, now: ctx.clock.now().getTime() };
      });
      printResult(global, { erasure }, [`erasure requested: ${erasureLine(erasure, now)}`]);
    });
  erasures
    .command("cancel")
    .description("cancel a pending erasure request (before its purge)")
    .requiredOption("--tenant <tenant>", "the tenant's id or slug")
    .requiredOption("--request <id>", "the erasure request's id")
    .action(async (opts: { tenant: string; request: string }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const id = parseOptions(requestId, opts.request, { "": "--request" });
      const { erasure, now } = await withHostOperator({ unseal: false }, async (ctx) => ({
        erasure: await cancelDeletion(ctx, hostOperatorIn((await tenantByRef(ctx, opts.tenant)).id), id, SYSTEM_META),
        now: ctx.clock.now().getTime(),
      }));
      printResult(global, { erasure }, [`erasure cancelled: ${erasureLine(erasure, now)}`]);
    });

  const holds = rights.command("holds").description("a tenant's legal holds on single patients: list (the default), place, release");
  unsealOptions(
    holds
      .command("list", { isDefault: true })
      .description("a tenant's legal holds on single patients (in force or released, with reasons; audited as a read); class and tenant holds: `retention holds`")
      .requiredOption("--tenant <tenant>", "the tenant's id or slug")
      .option("--patient <id>", "only this patient's holds"),
  ).action(async (opts: UnsealOpts & { tenant: string; patient?: string }, cmd: Command) => {
    const global = cmd.optsWithGlobals<GlobalOptions>();
    const patientId = opts.patient === undefined ? undefined : parseOptions(uuid, opts.patient, { "": "--patient" });
    const { items } = await withHostOperator({ unseal: true, ...opts }, async (ctx) =>
      listLegalHolds(ctx, hostOperatorIn((await tenantByRef(ctx, opts.tenant)).id), patientId ? { patientId } : {}, SYSTEM_META),
    );
    printResult(global, { holds: items }, items.length ? items.map(holdLine) : ["no holds on single patients"]);
  });
  unsealOptions(
    holds
      .command("place")
      .description("place a legal hold on one patient: no deletion, purge or attachment removal while it stands (the reason is stored encrypted)")
      .requiredOption("--tenant <tenant>", "the tenant's id or slug")
      .requiredOption("--patient <id>", "the patient to hold")
      .requiredOption("--reason <text>", "the matter and why (3 to 500 characters; no clinical detail)"),
  ).action(async (opts: UnsealOpts & { tenant: string; patient: string; reason: string }, cmd: Command) => {
    const global = cmd.optsWithGlobals<GlobalOptions>();
    const patientId = parseOptions(uuid, opts.patient, { "": "--patient" });
    const body = parseOptions(legalHoldPlace, { reason: opts.reason }, { reason: "--reason" });
    const hold = await withHostOperator({ unseal: true, ...opts }, async (ctx) =>
      placeLegalHold(ctx, hostOperatorIn((await tenantByRef(ctx, opts.tenant)).id), patientId, body, SYSTEM_META),
    );
    printResult(global, { hold }, [`legal hold placed: ${holdLine(hold)}`]);
  });
  unsealOptions(
    holds
      .command("release")
      .description("release a legal hold on one patient, with the reason it ends (stored encrypted with the hold)")
      .requiredOption("--tenant <tenant>", "the tenant's id or slug")
      .requiredOption("--patient <id>", "the patient held")
      .requiredOption("--hold <id>", "the hold's id")
      .requiredOption("--reason <text>", "why the hold ends (3 to 500 characters)"),
  ).action(async (opts: UnsealOpts & { tenant: string; patient: string; hold: string; reason: string }, cmd: Command) => {
    const global = cmd.optsWithGlobals<GlobalOptions>();
    const patientId = parseOptions(uuid, opts.patient, { "": "--patient" });
    const id = parseOptions(holdId, opts.hold, { "": "--hold" });
    const body = parseOptions(legalHoldRelease, { reason: opts.reason }, { reason: "--reason" });
    const hold = await withHostOperator({ unseal: true, ...opts }, async (ctx) =>
      releaseLegalHold(ctx, hostOperatorIn((await tenantByRef(ctx, opts.tenant)).id), patientId, id, body, SYSTEM_META),
    );
    printResult(global, { hold }, [`legal hold released: ${holdLine(hold)}`]);
  });

  unsealOptions(
    rights
      .command("export")
      .description("one patient's records, decrypted, as a JSON file (right of access, a transfer); every patient read is audited")
      .requiredOption("--tenant <tenant>", "the tenant's id or slug")
      .requiredOption("--patient <id>", "the patient's id")
      .requiredOption("--out-file <file>", "where to write the JSON (created; an existing file is refused)"),
  ).action(async (opts: UnsealOpts & { tenant: string; patient: string; outFile: string }, cmd: Command) => {
    const global = cmd.optsWithGlobals<GlobalOptions>();
    const patientId = parseOptions(uuid, opts.patient, { "": "--patient" });
    if (fs.existsSync(opts.outFile)) throw new CliError(`--out-file: ${opts.outFile} exists; choose a new file`);
    let opened: fs.WriteStream | undefined;
    try {
      const result = await withHostOperator({ unseal: true, ...opts }, async (ctx) => {
        const out = fs.createWriteStream(opts.outFile, { flags: "wx", mode: 0o600 });
        opened = out;
        const r = await streamExport(
          ctx,
          hostOperatorIn((await tenantByRef(ctx, opts.tenant)).id),
          { kind: "patient", patientId },
          { format: "json", records: "patients" },
          { out, begin() {} },
          SYSTEM_META,
        );
        if (!out.writableEnded) out.end();
        await finished(out);
        return r;
      });
      printResult(global, { file: opts.outFile, patientId, ...result }, [`wrote the export of patient ${patientId} to ${opts.outFile} (PHI: keep it as you keep the records)`]);
    } catch (err) {
      // Nothing half-written is left behind to be mistaken for an export.
      opened?.destroy();
      fs.rmSync(opts.outFile, { force: true });
      throw err;
    }
  });
}
