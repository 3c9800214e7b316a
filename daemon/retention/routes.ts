import { z } from "zod";
import { defineRoute } from "../kernel/define-route.js";
import {
  classParams,
  dispositionCertificate,
  holdParams,
  retentionHoldPlace,
  retentionHoldRelease,
  retentionHoldView,
  retentionHoldsResponse,
  retentionPreview,
  retentionRuleChange,
  retentionRulesResponse,
  retentionRunsResponse,
  ruleChangeResult,
  runParams,
  TRIGGERS,
} from "./schema.js";
import { changeRule, listHolds, listRules, listRuns, placeHold, previewPurge, readCertificate, releaseHold } from "./service.js";

const tag = "retention";

/** The retention register of the caller's tenant (owners and admins change it; auditors read it and download certificates). */
export const retentionRoutes = [
  defineRoute(
    {
      method: "get",
      path: "/retention/rules",
      action: "retention:read",
      tag,
      summary: "The retention rule of every record class (the tenant's own or the default)",
      response: retentionRulesResponse,
    },
    async ({ ctx, actor }) => listRules(ctx, actor),
  ),
  defineRoute(
    {
      method: "get",
      path: "/retention/preview",
      action: "retention:read",
      tag,
      summary: "What the next purge run would destroy, per class, under the current rules or a proposed period for one class",
      query: z.object({
        recordClass: classParams.shape.recordClass.optional(),
        periodDays: z.coerce.number().int().min(1).max(36500).optional(),
        /** The trigger proposed for recordClass (kept from its rule when absent). */
        trigger: z.enum(TRIGGERS).optional(),
      }),
      response: retentionPreview,
    },
    async ({ ctx, actor, query }) =>
      previewPurge(ctx, actor, query.recordClass && query.periodDays ? { recordClass: query.recordClass, periodDays: query.periodDays, trigger: query.trigger } : undefined),
  ),
  defineRoute(
    {
      method: "put",
      path: "/retention/rules/:recordClass",
      action: "retention:update",
      tag,
      summary: "Change one class's rule; refused below the legal minimum; a change that purges records needs step-up and the confirmed count",
      params: classParams,
      body: retentionRuleChange,
      response: ruleChangeResult,
      problems: { 409: "The change purges records on the next run: confirm the count (the preview is in the problem)" },
    },
    async ({ ctx, actor, params, body, meta }) => changeRule(ctx, actor, params.recordClass, body, meta),
  ),
  defineRoute(
    { method: "get", path: "/retention/holds", action: "legal_hold:list", tag, summary: "Holds on the whole tenant or a record class", response: retentionHoldsResponse },
    async ({ ctx, actor }) => listHolds(ctx, actor),
  ),
  defineRoute(
    {
      method: "post",
      path: "/retention/holds",
      action: "legal_hold:place",
      tag,
      summary: "Place a hold on the tenant (recordClass null) or one class: nothing under it is purged",
      body: retentionHoldPlace,
      response: retentionHoldView,
      status: 201,
    },
    async ({ ctx, actor, body, meta }) => placeHold(ctx, actor, body, meta),
  ),
  defineRoute(
    {
      method: "post",
      path: "/retention/holds/:id/release",
      action: "legal_hold:release",
      tag,
      summary: "Release a hold, with a reason (step-up MFA)",
      params: holdParams,
      body: retentionHoldRelease,
      response: retentionHoldView,
      problems: { 409: "Already released" },
    },
    async ({ ctx, actor, params, body, meta }) => releaseHold(ctx, actor, params.id, body.reason, meta),
  ),
  defineRoute(
    {
      method: "get",
      path: "/retention/runs",
      action: "retention:read",
      tag,
      summary: "Purge runs of the tenant with what each destroyed per class",
      response: retentionRunsResponse,
    },
    async ({ ctx, actor }) => listRuns(ctx, actor),
  ),
  defineRoute(
    {
      method: "get",
      path: "/retention/runs/:id/certificate",
      action: "retention:read",
      tag,
      summary: "The run's disposition certificate, signed with the audit checkpoint key (Ed25519)",
      params: runParams,
      response: dispositionCertificate,
      problems: { 409: "The run has not finished" },
    },
    async ({ ctx, actor, params, meta }) => readCertificate(ctx, actor, params.id, meta),
  ),
];
