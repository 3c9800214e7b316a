/**
 * Access review campaigns (docs/access-reviews.md; HIPAA 164.308(a)(4)(ii)(C), ISO 27001 A.5.18):
 * a campaign snapshots every active person of a tenant (role, last sign-in, source, SCIM groups),
 * reviewers keep or remove each with a comment, and when the deadline passes the accounts nobody
 * reviewed are deactivated through `deprovisionAccount`, exactly as an admin's deactivation. The
 * closed campaign is exported as evidence signed with the audit signing key (as evidence packs
 * and disposition certificates are), verifiable offline with the public key alone.
 */
import { createHash, sign } from "node:crypto";
import { stringify } from "csv-stringify/sync";
import { recordAuthEvent, SYSTEM_ACTOR, type EventActor } from "../audit/append.js";
import type { ApplianceContext } from "../context.js";
import { inScope, isUniqueViolation, type Tx } from "../db/sql.js";
import type { Actor, Role } from "../kernel/actor.js";
import { Conflict, Forbidden, Invalid, NotFound } from "../kernel/errors.js";
import { authorize } from "../kernel/policy.js";
import { SYSTEM_META, type RequestMeta } from "../kernel/request-meta.js";
import { raiseAlert, resolveAlert } from "../alerts/index.js";
import { getAuditSigningKey } from "../keys/index.js";
import type { CampaignEvidenceRes, CampaignRes, CampaignSummaryRes, ReviewDecisionReq, ReviewEntryRes, StartCampaignReq } from "./schema.js";
import { deprovisionAccount } from "./users.js";

type CampaignRow = {
  id: string;
  tenant_id: string;
  status: "open" | "closed";
  trigger: "schedule" | "manual";
  started_by: string | null;
  started_at: Date;
  deadline_at: Date;
  unused_days: number;
  closed_at: Date | null;
  closed_reason: "all-decided" | "deadline" | null;
};

type EntryRow = {
  user_id: string;
  email: string | null;
  display_name: string | null;
  role: string;
  source: ReviewEntryRes["source"];
  break_glass: boolean;
  mfa_enabled: boolean;
  last_login_at: Date | null;
  account_created: Date;
  groups: string[];
  decision: "keep" | "remove" | null;
  comment: string | null;
  decided_by: string | null;
  decided_at: Date | null;
  outcome: ReviewEntryRes["outcome"];
};

const DAY_MS = 86_400_000;

function tenantOf(actor: Actor): string {
  if (!actor.tenantId) throw new Invalid("access reviews belong to a tenant; act inside one");
  return actor.tenantId;
}

function entryView(c: CampaignRow, e: EntryRow): ReviewEntryRes {
  const daysUnused = Math.max(0, Math.floor((c.started_at.getTime() - (e.last_login_at ?? e.account_created).getTime()) / DAY_MS));
  return {
    userId: e.user_id,
    email: e.email,
    displayName: e.display_name,
    role: e.role,
    source: e.source,
    breakGlassAccount: e.break_glass,
    mfaEnabled: e.mfa_enabled,
    lastLoginAt: e.last_login_at?.toISOString() ?? null,
    daysUnused,
    unused: daysUnused > c.unused_days,
    groups: e.groups,
    decision: e.decision,
    comment: e.comment,
    decidedBy: e.decided_by,
    decidedAt: e.decided_at?.toISOString() ?? null,
    outcome: e.outcome,
  };
}

function summaryOf(c: CampaignRow, entries: Pick<EntryRow, "decision" | "outcome">[]): CampaignSummaryRes {
  return {
    id: c.id,
    status: c.status,
    trigger: c.trigger,
    startedBy: c.started_by,
    startedAt: c.started_at.toISOString(),
    deadlineAt: c.deadline_at.toISOString(),
    unusedDays: c.unused_days,
    closedAt: c.closed_at?.toISOString() ?? null,
    closedReason: c.closed_reason,
    total: entries.length,
    decided: entries.filter((e) => e.decision !== null).length,
    removed: entries.filter((e) => e.decision === "remove").length,
    deactivatedUnreviewed: entries.filter((e) => e.outcome === "deactivated-unreviewed").length,
  };
}

const entriesOf = (t: Tx, campaignId: string) =>
  t.rows<EntryRow>("SELECT * FROM access_review_entries WHERE campaign_id = $1 ORDER BY role, email NULLS LAST, user_id", [campaignId]);

async function loadCampaign(t: Tx, tenantId: string, id: string, forUpdate = false): Promise<CampaignRow> {
  const [c] = await t.rows<CampaignRow>(`SELECT * FROM access_review_campaigns WHERE id = $1 AND tenant_id = $2${forUpdate ? " FOR UPDATE" : ""}`, [id, tenantId]);
  if (!c) throw new NotFound("no such access review campaign in this tenant");
  return c;
}

async function campaignIn(t: Tx, c: CampaignRow): Promise<CampaignRes> {
  const entries = await entriesOf(t, c.id);
  return { ...summaryOf(c, entries), entries: entries.map((e) => entryView(c, e)) };
}

/**
 * Opens a campaign in the caller's transaction: the snapshot of every active person of the
 * tenant (service accounts are not people: their API tokens expire by themselves), with the SCIM
 * groups each is in. One open campaign per tenant.
 */
async function openCampaign(
  ctx: ApplianceContext,
  t: Tx,
  tenantId: string,
  how: { trigger: CampaignRow["trigger"]; startedBy: string | null; deadlineDays: number },
  actor: EventActor,
  meta: RequestMeta,
): Promise<CampaignRow> {
  const [open] = await t.rows<{ id: string }>("SELECT id FROM access_review_campaigns WHERE tenant_id = $1 AND status = 'open'", [tenantId]);
  if (open) throw new Conflict(`campaign ${open.id} is still open in this tenant; finish it first`);
  const now = ctx.clock.now();
  const [tenant] = await t.rows<{ inactive_user_days: number | null }>("SELECT inactive_user_days FROM tenants WHERE id = $1", [tenantId]);
  const unusedDays = tenant?.inactive_user_days ?? ctx.config.access.inactiveUserDays;
  const [c] = await t
    .rows<CampaignRow>(
      `INSERT INTO access_review_campaigns (tenant_id, trigger, started_by, started_at, deadline_at, unused_days)
       VALUES ($1, $2, $3, $4, $5, $6) RETURNING *`,
      [tenantId, how.trigger, how.startedBy, now, new Date(now.getTime() + how.deadlineDays * DAY_MS), unusedDays],
    )
    .catch((err: unknown) => {
      if (isUniqueViolation(err)) throw new Conflict("a campaign is already open in this tenant");
      throw err;
    });
  const snapshot = await t.exec(
    `INSERT INTO access_review_entries (campaign_id, tenant_id, user_id, email, display_name, role, source, break_glass, mfa_enabled, last_login_at, account_created, groups)
     SELECT $1, u.tenant_id, u.id, u.email, u.display_name, u.role, u.source, u.break_glass_account, u.mfa_secret IS NOT NULL, u.last_login_at, u.created_at,
            coalesce((SELECT array_agg(g.display_name ORDER BY g.display_name) FROM scim_group_members m JOIN scim_groups g ON g.id = m.group_id WHERE m.user_id = u.id), '{}')
       FROM users u WHERE u.tenant_id = $2 AND u.kind = 'human' AND u.status = 'active'`,
    [c!.id, tenantId],
  );
  await recordAuthEvent(
    ctx,
    t,
    actor,
    {
      action: "access_review.start",
      resourceType: "access_review",
      resourceId: c!.id,
      tenantId,
      outcome: "success",
      reason: `${how.trigger}; ${snapshot} accounts; deadline ${c!.deadline_at.toISOString()}`,
    },
    meta,
  );
  return c!;
}

export async function startCampaign(ctx: ApplianceContext, actor: Actor, input: StartCampaignReq, meta: RequestMeta): Promise<CampaignRes> {
  const tenantId = tenantOf(actor);
  authorize(actor, "access_review:start", { tenantId });
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const c = await openCampaign(
      ctx,
      t,
      tenantId,
      { trigger: "manual", startedBy: actor.userId, deadlineDays: input.deadlineDays ?? ctx.config.access.reviewDeadlineDays },
      actor,
      meta,
    );
    return campaignIn(t, c);
  });
}

export async function listCampaigns(ctx: ApplianceContext, actor: Actor): Promise<CampaignSummaryRes[]> {
  const tenantId = tenantOf(actor);
  authorize(actor, "access_review:read", { tenantId });
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const campaigns = await t.rows<CampaignRow>("SELECT * FROM access_review_campaigns WHERE tenant_id = $1 ORDER BY started_at DESC LIMIT 100", [tenantId]);
    const entries = await t.rows<{ campaign_id: string; decision: EntryRow["decision"]; outcome: EntryRow["outcome"] }>(
      "SELECT campaign_id, decision, outcome FROM access_review_entries WHERE campaign_id = ANY($1::uuid[])",
      [campaigns.map((c) => c.id)],
    );
    return campaigns.map((c) =>
      summaryOf(
        c,
        entries.filter((e) => e.campaign_id === c.id),
      ),
    );
  });
}

export async function getCampaign(ctx: ApplianceContext, actor: Actor, id: string): Promise<CampaignRes> {
  const tenantId = tenantOf(actor);
  authorize(actor, "access_review:read", { tenantId });
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => campaignIn(t, await loadCampaign(t, tenantId, id)));
}

/**
 * A reviewer's decision on one account. `remove` deactivates it at once (deprovisionAccount:
 * sessions, API tokens, webhook, audit); `keep` may still become `remove` while the campaign is
 * open, a removal is final (an admin reactivates the account on the Users page). Nobody decides
 * on their own account. The last decision closes the campaign.
 */
export async function decideEntry(ctx: ApplianceContext, actor: Actor, campaignId: string, userId: string, input: ReviewDecisionReq, meta: RequestMeta): Promise<CampaignRes> {
  const tenantId = tenantOf(actor);
  authorize(actor, "access_review:decide", { tenantId });
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const c = await loadCampaign(t, tenantId, campaignId, true);
    if (c.status !== "open") throw new Conflict("this campaign is closed; its decisions are final");
    const [entry] = await t.rows<EntryRow>("SELECT * FROM access_review_entries WHERE campaign_id = $1 AND user_id = $2 FOR UPDATE", [campaignId, userId]);
    if (!entry) throw new NotFound("this account is not part of the campaign");
    if (userId === actor.userId || userId === actor.impersonatorId) {
      throw new Forbidden("nobody reviews their own account; another reviewer decides on it", { reason: "own_account" });
    }
    const [account] = await t.rows<{ role: Role }>("SELECT role FROM users WHERE id = $1", [userId]);
    // Only owners remove or vouch for owners (the policy's managesRole, on the account's role now).
    authorize(actor, "access_review:decide", { tenantId, targetRole: account!.role });
    if (entry.decision === "remove") throw new Conflict("this account was already removed in this campaign");
    if (entry.decision === input.decision) throw new Conflict(`this account was already decided: ${input.decision}`);
    let outcome: EntryRow["outcome"] = "kept";
    if (input.decision === "remove") {
      const done = await deprovisionAccount(ctx, t, actor, { userId, tenantId }, "access-review", meta, { detail: `access review ${campaignId}` });
      outcome = done.deactivated ? "removed" : "already-inactive";
    }
    await t.exec("UPDATE access_review_entries SET decision = $3, comment = $4, decided_by = $5, decided_at = $6, outcome = $7 WHERE campaign_id = $1 AND user_id = $2", [
      campaignId,
      userId,
      input.decision,
      input.comment,
      actor.userId,
      ctx.clock.now(),
      outcome,
    ]);
    // The comment stays in the campaign (the evidence); the trail names the decision and the account.
    await recordAuthEvent(
      ctx,
      t,
      actor,
      { action: "access_review.decide", resourceType: "user", resourceId: userId, outcome: "success", reason: `campaign ${campaignId}: ${input.decision}` },
      meta,
    );
    const [{ left }] = (await t.rows<{ left: string }>("SELECT count(*) AS left FROM access_review_entries WHERE campaign_id = $1 AND decision IS NULL", [campaignId])) as [
      { left: string },
    ];
    if (Number(left) === 0) await closeCampaign(ctx, t, c, "all-decided", actor, meta);
    return campaignIn(t, await loadCampaign(t, tenantId, campaignId));
  });
}

async function closeCampaign(ctx: ApplianceContext, t: Tx, c: CampaignRow, why: "all-decided" | "deadline", actor: EventActor, meta: RequestMeta): Promise<void> {
  await t.exec("UPDATE access_review_campaigns SET status = 'closed', closed_at = $2, closed_reason = $3 WHERE id = $1", [c.id, ctx.clock.now(), why]);
  // Nothing is left to remind anyone of.
  await resolveAlert(ctx, REMINDER_ALERT, (key) => key.startsWith(`${c.id}:`), { tenantId: c.tenant_id, tx: t });
  await recordAuthEvent(
    ctx,
    t,
    actor,
    { action: "access_review.close", resourceType: "access_review", resourceId: c.id, tenantId: c.tenant_id, outcome: "success", reason: why },
    meta,
  );
}

export type DeadlineRun = { closed: number; deactivated: number };

/**
 * Campaigns past their deadline (part of the `inactive-users` job): every account nobody
 * reviewed is deactivated through `deprovisionAccount`, as the system, then the campaign closes.
 * A tenant's last active owner stays (`kept-last-owner`). Each campaign is its own transaction,
 * locked, so two replicas never close one twice.
 */
export async function closeCampaignsPastDeadline(ctx: ApplianceContext): Promise<DeadlineRun> {
  const due = await inScope(ctx.db.app, { kind: "appliance" }, (t) =>
    t.rows<{ id: string; tenant_id: string }>("SELECT id, tenant_id FROM access_review_campaigns WHERE status = 'open' AND deadline_at <= $1 ORDER BY deadline_at", [
      ctx.clock.now(),
    ]),
  );
  const run: DeadlineRun = { closed: 0, deactivated: 0 };
  for (const d of due) {
    await inScope(ctx.db.app, { kind: "tenant", tenantId: d.tenant_id }, async (t) => {
      const c = await loadCampaign(t, d.tenant_id, d.id, true);
      if (c.status !== "open") return;
      const undecided = await t.rows<{ user_id: string }>(
        "SELECT user_id FROM access_review_entries WHERE campaign_id = $1 AND decision IS NULL ORDER BY role DESC, user_id FOR UPDATE",
        [c.id],
      );
      for (const e of undecided) {
        const done = await deprovisionAccount(ctx, t, SYSTEM_ACTOR, { userId: e.user_id, tenantId: c.tenant_id }, "access-review-deadline", SYSTEM_META, {
          keepLast: true,
          detail: `access review ${c.id}: not reviewed by the deadline`,
        });
        const [now] = await t.rows<{ status: string; role: string }>("SELECT status, role FROM users WHERE id = $1", [e.user_id]);
        const outcome = done.deactivated ? "deactivated-unreviewed" : now!.status === "active" ? "kept-last-owner" : "already-inactive";
        if (done.deactivated) run.deactivated += 1;
        await t.exec("UPDATE access_review_entries SET outcome = $3 WHERE campaign_id = $1 AND user_id = $2", [c.id, e.user_id, outcome]);
      }
      await closeCampaign(ctx, t, c, "deadline", SYSTEM_ACTOR, SYSTEM_META);
      run.closed += 1;
    });
  }
  return run;
}

/** The alert that reminds a tenant's reviewers of a campaign's deadline (docs/access-reviews.md "Reminders"). */
export const REMINDER_ALERT = "access_review.deadline_near";

/**
 * The `access-review-reminders` job: for each open campaign whose deadline is within one of
 * `access.reviewReminderDays` (3 and 1 by default) and which still has accounts nobody decided, a
 * tenant alert keyed by campaign and stage, so the tenant's alert channels (e-mail through the
 * SMTP relay, syslog) carry it to the reviewers once per stage: ids and counts only. A stage's alert
 * stays open (raising it again only counts) until the campaign closes, which resolves it.
 */
export async function remindReviewers(ctx: ApplianceContext): Promise<{ reminded: number }> {
  const stages = [...new Set(ctx.config.access.reviewReminderDays)].sort((a, b) => a - b);
  if (stages.length === 0) return { reminded: 0 };
  const now = ctx.clock.now();
  const open = await inScope(ctx.db.app, { kind: "appliance" }, (t) =>
    t.rows<{ id: string; tenant_id: string; deadline_at: Date }>(
      "SELECT id, tenant_id, deadline_at FROM access_review_campaigns WHERE status = 'open' AND deadline_at > $1 AND deadline_at <= $2 ORDER BY deadline_at",
      [now, new Date(now.getTime() + stages.at(-1)! * DAY_MS)],
    ),
  );
  let reminded = 0;
  for (const c of open) {
    const daysLeft = (c.deadline_at.getTime() - now.getTime()) / DAY_MS;
    // The nearest stage not yet passed: 2.5 days left is the 3-day reminder, 0.5 the 1-day one.
    const stage = stages.find((d) => daysLeft <= d)!;
    await inScope(ctx.db.app, { kind: "tenant", tenantId: c.tenant_id }, async (t) => {
      const [counts] = await t.rows<{ open_entries: number; open_owners: number; reviewers: number }>(
        `SELECT count(*) FILTER (WHERE e.decision IS NULL)::int AS open_entries,
                count(*) FILTER (WHERE e.decision IS NULL AND e.role = 'owner')::int AS open_owners,
                (SELECT count(*) FROM users u WHERE u.tenant_id = $2 AND u.status = 'active' AND u.role IN ('owner', 'admin'))::int AS reviewers
           FROM access_review_entries e WHERE e.campaign_id = $1`,
        [c.id, c.tenant_id],
      );
      if (!counts || counts.open_entries === 0) return;
      const raised = await raiseAlert(
        ctx,
        {
          kind: REMINDER_ALERT,
          severity: stage <= 1 ? "critical" : "warning",
          key: `${c.id}:${stage}d`,
          tenantId: c.tenant_id,
          summary:
            `Access review ${c.id} closes within ${stage} ${stage === 1 ? "day" : "days"} (${c.deadline_at.toISOString()}): ${counts.open_entries} ${counts.open_entries === 1 ? "account is" : "accounts are"} not reviewed yet ` +
            `(${counts.open_owners} of them owners, whom only owners decide); ${counts.reviewers} owners and admins can decide. Accounts still undecided at the deadline are deactivated.`,
          details: {
            campaignId: c.id,
            daysBefore: stage,
            deadline: c.deadline_at.toISOString(),
            openEntries: counts.open_entries,
            openOwnerEntries: counts.open_owners,
            reviewers: counts.reviewers,
          },
        },
        t,
      );
      if (raised.opened) reminded += 1;
    });
  }
  return { reminded };
}

/** The `access-review-campaigns` job: a campaign in every active tenant that has none open. */
export async function startScheduledCampaigns(ctx: ApplianceContext): Promise<{ started: number; alreadyOpen: number }> {
  const tenants = await inScope(ctx.db.app, { kind: "appliance" }, (t) =>
    t.rows<{ id: string; open: boolean }>(
      "SELECT tn.id, EXISTS (SELECT 1 FROM access_review_campaigns c WHERE c.tenant_id = tn.id AND c.status = 'open') AS open FROM tenants tn WHERE tn.status = 'active' ORDER BY tn.created_at",
    ),
  );
  let started = 0;
  for (const tn of tenants.filter((x) => !x.open)) {
    const opened = await inScope(ctx.db.app, { kind: "tenant", tenantId: tn.id }, (t) =>
      openCampaign(ctx, t, tn.id, { trigger: "schedule", startedBy: null, deadlineDays: ctx.config.access.reviewDeadlineDays }, SYSTEM_ACTOR, SYSTEM_META),
    ).catch((err: unknown) => {
      // Another replica or an admin opened one a moment ago: nothing to do in this tenant.
      if (err instanceof Conflict) return null;
      throw err;
    });
    if (opened) started += 1;
  }
  return { started, alreadyOpen: tenants.length - tenants.filter((x) => !x.open).length };
}

// ---- evidence ----------------------------------------------------------------------------------

const CSV_COLUMNS = [
  "user_id",
  "email",
  "display_name",
  "role",
  "source",
  "break_glass_account",
  "mfa_enabled",
  "last_login_at",
  "days_unused",
  "unused",
  "groups",
  "decision",
  "comment",
  "decided_by",
  "decided_at",
  "outcome",
] as const;

// OWASP "CSV injection": a cell a spreadsheet would run as a formula gets a leading apostrophe.
const FORMULA_START = /^[=+\-@\t\r]/;
const cell = (v: string | number | boolean | null): string => {
  const s = v === null ? "" : String(v);
  return FORMULA_START.test(s) ? `'${s}` : s;
};

function evidenceCsv(entries: ReviewEntryRes[]): string {
  const rows = entries.map((e) =>
    [
      e.userId,
      e.email,
      e.displayName,
      e.role,
      e.source,
      e.breakGlassAccount,
      e.mfaEnabled,
      e.lastLoginAt,
      e.daysUnused,
      e.unused,
      e.groups.join("; "),
      e.decision,
      e.comment,
      e.decidedBy,
      e.decidedAt,
      e.outcome,
    ].map(cell),
  );
  return stringify([[...CSV_COLUMNS], ...rows], { record_delimiter: "\r\n" });
}

/** The canonical text: fixed key order, so anyone can re-serialise and compare (docs/access-reviews.md). */
function evidenceText(tenantId: string, campaign: CampaignRes, csv: string, signedAt: string, keyId: string): string {
  const count = (o: ReviewEntryRes["outcome"]) => campaign.entries.filter((e) => e.outcome === o).length;
  return JSON.stringify({
    format: "wardkeep-access-review/1",
    campaignId: campaign.id,
    tenantId,
    trigger: campaign.trigger,
    startedBy: campaign.startedBy,
    startedAt: campaign.startedAt,
    deadlineAt: campaign.deadlineAt,
    closedAt: campaign.closedAt,
    closedReason: campaign.closedReason,
    unusedDays: campaign.unusedDays,
    counts: {
      total: campaign.total,
      kept: count("kept"),
      removed: count("removed"),
      deactivatedUnreviewed: count("deactivated-unreviewed"),
      alreadyInactive: count("already-inactive"),
      keptLastOwner: count("kept-last-owner"),
    },
    entries: campaign.entries,
    csvSha256: createHash("sha256").update(csv, "utf8").digest("hex"),
    auditActions: ["access_review.start", "access_review.decide", "access_review.close", "user.deactivate"],
    signedAt,
    signedBy: keyId,
  });
}

/**
 * The signed evidence of a closed campaign, for auditors (audited as a read): canonical JSON and
 * CSV, one Ed25519 signature over the JSON, which carries the CSV's SHA-256. An open campaign has
 * none yet: its result is not final.
 */
export async function exportCampaignEvidence(ctx: ApplianceContext, actor: Actor, campaignId: string, meta: RequestMeta): Promise<CampaignEvidenceRes> {
  const tenantId = tenantOf(actor);
  authorize(actor, "access_review:export", { tenantId });
  const key = await getAuditSigningKey(ctx);
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const campaign = await campaignIn(t, await loadCampaign(t, tenantId, campaignId));
    if (campaign.status !== "closed") throw new Conflict("this campaign is still open: its evidence is signed once it closes (every account decided, or the deadline)");
    const csv = evidenceCsv(campaign.entries);
    const evidence = evidenceText(tenantId, campaign, csv, ctx.clock.now().toISOString(), key.keyId);
    const signature = sign(null, Buffer.from(evidence, "utf8"), key.privateKey);
    const spki = Buffer.from(key.publicKeyDer, "base64");
    await recordAuthEvent(ctx, t, actor, { action: "access_review.export", resourceType: "access_review", resourceId: campaignId, outcome: "success" }, meta);
    return {
      evidence,
      csv,
      signature: signature.toString("base64"),
      publicKeySpki: key.publicKeyDer,
      keyId: key.keyId,
      // Ed25519 SPKI is a 12-byte header then the 32-byte key: the fingerprint hashes the key alone.
      fingerprint: createHash("sha256")
        .update(spki.subarray(spki.length - 32))
        .digest("hex"),
    };
  });
}
