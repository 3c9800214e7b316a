import { createPublicKey } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { Command } from "commander";
import { z } from "zod";
import {
  decideEntry,
  exportCampaignEvidence,
  getCampaign,
  listCampaigns,
  reviewDecisionRequest,
  startCampaign,
  startCampaignRequest,
  type CampaignRes,
  type CampaignSummaryRes,
} from "../../access/index.js";
import { hostOperatorIn } from "../../kernel/actor.js";
import { SYSTEM_META } from "../../kernel/request-meta.js";
import { parseOptions, tenantByRef, unsealOptions, withHostOperator } from "../host-operator.js";
import type { UnsealOpts } from "../offline-context.js";
import { CliError, printResult, type GlobalOptions } from "../output.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const summaryLine = (c: CampaignSummaryRes) =>
  `${c.id}  ${c.status.padEnd(6)} ${c.trigger.padEnd(8)} started ${c.startedAt.slice(0, 10)}  deadline ${c.deadlineAt.slice(0, 10)}  decided ${c.decided}/${c.total}  removed ${c.removed}  deactivated unreviewed ${c.deactivatedUnreviewed}`;

const entryLines = (c: CampaignRes) =>
  c.entries.map((e) =>
    `${e.userId}  ${(e.email ?? "").padEnd(36)} ${e.role.padEnd(12)} ${e.source.padEnd(6)} last sign-in ${e.lastLoginAt?.slice(0, 10) ?? "never     "}  ${(e.decision ?? "undecided").padEnd(9)} ${e.outcome ?? ""}`.trimEnd(),
  );

function campaignId(id: string): string {
  if (!UUID.test(id)) throw new CliError("<id>: not a campaign id (wardkeep access-review list shows them)");
  return id;
}

/**
 * `wardkeep access-review`: a tenant's access review campaigns (docs/access-reviews.md) as the
 * host operator, through the same services as the API: start one now, list, show the accounts and
 * their decisions, decide on one account, and write a closed campaign's signed evidence to a folder.
 */
export function registerAccessReview(program: Command) {
  const review = program.command("access-review").description("access review campaigns: every account kept or removed by a reviewer, with signed evidence");

  review
    .command("start")
    .description("start a campaign now in a tenant: a snapshot of every active person, to be reviewed by the deadline")
    .requiredOption("--tenant <tenant>", "the tenant's id or slug")
    .option("--deadline-days <days>", "days the reviewers have (1 to 90; default access.reviewDeadlineDays)")
    .action(async (opts: { tenant: string; deadlineDays?: string }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const input = parseOptions(
        startCampaignRequest.extend({ deadlineDays: z.coerce.number().int().min(1).max(90).optional() }),
        { deadlineDays: opts.deadlineDays },
        { deadlineDays: "--deadline-days" },
      );
      const campaign = await withHostOperator({ unseal: false }, async (ctx) => startCampaign(ctx, hostOperatorIn((await tenantByRef(ctx, opts.tenant)).id), input, SYSTEM_META));
      printResult(global, { campaign }, [`campaign ${campaign.id} started: ${campaign.total} accounts to review by ${campaign.deadlineAt}`]);
    });

  review
    .command("list")
    .description("a tenant's campaigns, newest first: state, deadline, progress")
    .requiredOption("--tenant <tenant>", "the tenant's id or slug")
    .action(async (opts: { tenant: string }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const campaigns = await withHostOperator({ unseal: false }, async (ctx) => listCampaigns(ctx, hostOperatorIn((await tenantByRef(ctx, opts.tenant)).id)));
      printResult(global, { campaigns }, campaigns.length ? campaigns.map(summaryLine) : ["no access review campaigns in this tenant"]);
    });

  review
    .command("show")
    .description("one campaign: every account with role, source, last sign-in, decision and outcome")
    .argument("<id>", "the campaign's id (wardkeep access-review list)")
    .requiredOption("--tenant <tenant>", "the tenant's id or slug")
    .action(async (id: string, opts: { tenant: string }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const campaign = await withHostOperator({ unseal: false }, async (ctx) => getCampaign(ctx, hostOperatorIn((await tenantByRef(ctx, opts.tenant)).id), campaignId(id)));
      printResult(global, { campaign }, [summaryLine(campaign), ...entryLines(campaign)]);
    });

  review
    .command("decide")
    .description("keep or remove one account of an open campaign, with a comment; remove deactivates it at once")
    .argument("<id>", "the campaign's id")
    .requiredOption("--tenant <tenant>", "the tenant's id or slug")
    .requiredOption("--user <user>", "the account's email or id")
    .requiredOption("--decision <decision>", "keep or remove")
    .requiredOption("--comment <comment>", "why, for the evidence (1 to 1000 characters)")
    .action(async (id: string, opts: { tenant: string; user: string; decision: string; comment: string }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const input = parseOptions(reviewDecisionRequest, { decision: opts.decision, comment: opts.comment }, { decision: "--decision", comment: "--comment" });
      const campaign = await withHostOperator({ unseal: false }, async (ctx) => {
        const actor = hostOperatorIn((await tenantByRef(ctx, opts.tenant)).id);
        const current = await getCampaign(ctx, actor, campaignId(id));
        const wanted = opts.user.toLowerCase();
        const entry = current.entries.find((e) => e.userId === wanted || e.email?.toLowerCase() === wanted);
        if (!entry) throw new CliError(`--user: ${opts.user} is not part of campaign ${id} (wardkeep access-review show lists its accounts)`);
        return decideEntry(ctx, actor, id, entry.userId, input, SYSTEM_META);
      });
      const entry = campaign.entries.find((e) => e.userId === opts.user.toLowerCase() || e.email?.toLowerCase() === opts.user.toLowerCase())!;
      printResult(global, { campaign }, [`${entry.email ?? entry.userId}: ${entry.decision} (${entry.outcome})`, summaryLine(campaign)]);
    });

  unsealOptions(
    review
      .command("export")
      .description("write a closed campaign's signed evidence (JSON, CSV, Ed25519 signature, public key) to a folder, for auditors")
      .argument("<id>", "the campaign's id")
      .requiredOption("--tenant <tenant>", "the tenant's id or slug")
      .requiredOption("--out-dir <dir>", "folder to write into (created if missing)"),
  ).action(async (id: string, opts: { tenant: string; outDir: string } & UnsealOpts, cmd: Command) => {
    const global = cmd.optsWithGlobals<GlobalOptions>();
    const evidence = await withHostOperator({ unseal: true, ...opts }, async (ctx) =>
      exportCampaignEvidence(ctx, hostOperatorIn((await tenantByRef(ctx, opts.tenant)).id), campaignId(id), SYSTEM_META),
    );
    fs.mkdirSync(opts.outDir, { recursive: true });
    const base = path.join(opts.outDir, `access-review-${id}`);
    const files = { evidence: `${base}.json`, csv: `${base}.csv`, signature: `${base}.json.sig`, publicKey: path.join(opts.outDir, "public-key.pem") };
    fs.writeFileSync(files.evidence, evidence.evidence);
    fs.writeFileSync(files.csv, evidence.csv);
    fs.writeFileSync(files.signature, Buffer.from(evidence.signature, "base64"));
    fs.writeFileSync(files.publicKey, createPublicKey({ key: Buffer.from(evidence.publicKeySpki, "base64"), format: "der", type: "spki" }).export({ format: "pem", type: "spki" }));
    printResult(global, { files, keyId: evidence.keyId, fingerprint: evidence.fingerprint }, [
      `evidence of campaign ${id} written to ${opts.outDir}`,
      `signing key fingerprint ${evidence.fingerprint} (compare with wardkeep audit fingerprint)`,
      `verify: openssl pkeyutl -verify -pubin -inkey ${files.publicKey} -rawin -in ${files.evidence} -sigfile ${files.signature}`,
      `then: sha256sum ${files.csv} equals csvSha256 in ${path.basename(files.evidence)}`,
    ]);
  });
}
