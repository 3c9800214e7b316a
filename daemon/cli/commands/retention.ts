import type { Command } from "commander";
import { z } from "zod";
import { claimAndRun, type JobSpec } from "../../jobs/index.js";
import { hostOperatorIn } from "../../kernel/actor.js";
import {
  classParams,
  listHolds,
  listRules,
  listRuns,
  previewPurge,
  purgeAllTenants,
  purgeTenant,
  retentionPurgeJob,
  type RetentionHoldRes,
  type RetentionPreviewRes,
  type RetentionRuleRes,
  type RetentionRunRes,
} from "../../retention/index.js";
import { parseOptions, tenantByRef, unsealOptions, withHostOperator } from "../host-operator.js";
import type { UnsealOpts } from "../offline-context.js";
import { CliError, printResult, type GlobalOptions } from "../output.js";

const ruleLine = (r: RetentionRuleRes) =>
  `${r.recordClass.padEnd(12)} ${`${r.periodDays} days after ${r.trigger}`.padEnd(28)} ${r.source.padEnd(8)} ${r.legalMinimumDays ? `minimum ${r.legalMinimumDays} days  ` : ""}${r.legalBasis ?? ""}`.trimEnd();
const previewLines = (p: RetentionPreviewRes) => [
  ...p.classes.map(
    (c) => `${c.recordClass.padEnd(12)} older than ${c.cutoff.slice(0, 10)}  would purge ${String(c.wouldPurge).padStart(7)}  held back ${String(c.heldBack).padStart(7)}`,
  ),
  `total: ${p.total} record(s) on the next run`,
];
const holdLine = (h: RetentionHoldRes) =>
  `${h.id}  ${(h.recordClass ?? "all classes").padEnd(12)} ${h.releasedAt ? `released ${h.releasedAt.slice(0, 10)}` : "in force     "}  ${h.reason}`;
const runLine = (tenant: string, r: RetentionRunRes | undefined, destroyed: number) =>
  `${tenant}: destroyed ${destroyed}${
    r
      ? ` (${
          Object.entries(r.counts)
            .filter(([, c]) => c.count > 0)
            .map(([cls, c]) => `${cls} ${c.count}`)
            .join(", ") || "nothing past its rule"
        }); run ${r.id}, certificate ${r.certified ? "signed" : "not signed"}`
      : ""
  }`;

const previewOptions = z.object({
  recordClass: classParams.shape.recordClass.optional(),
  periodDays: z.coerce.number().int().min(1).max(36500).optional(),
});

/**
 * `wardkeep retention`: the tenant's rules, what the next purge destroys, holds, and a purge run
 * now, as the host operator (docs/retention.md). The run goes through the job runner under the
 * `retention-purge` job's lock, so it never overlaps a replica's scheduled purge and shows on
 * the Jobs page.
 */
export function registerRetention(program: Command) {
  const retention = program.command("retention").description("the retention register: rules, next-run preview, holds, purge now");

  retention
    .command("rules")
    .description("each record class's rule in a tenant: period, trigger, default or the tenant's, legal minimum and basis")
    .requiredOption("--tenant <tenant>", "the tenant's id or slug")
    .action(async (opts: { tenant: string }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const { rules } = await withHostOperator({ unseal: false }, async (ctx) => listRules(ctx, hostOperatorIn((await tenantByRef(ctx, opts.tenant)).id)));
      printResult(global, { rules }, rules.map(ruleLine));
    });

  retention
    .command("preview")
    .description("what the next purge would destroy per class (and what holds keep); with --class and --period-days, under that change (dry run)")
    .requiredOption("--tenant <tenant>", "the tenant's id or slug")
    .option("--class <class>", "a record class to try another period for")
    .option("--period-days <days>", "the proposed period for --class")
    .action(async (opts: { tenant: string; class?: string; periodDays?: string }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const input = parseOptions(previewOptions, { recordClass: opts.class, periodDays: opts.periodDays }, { recordClass: "--class", periodDays: "--period-days" });
      if ((input.recordClass === undefined) !== (input.periodDays === undefined)) throw new CliError("--class and --period-days go together: the period proposed for that class");
      const preview = await withHostOperator({ unseal: false }, async (ctx) =>
        previewPurge(
          ctx,
          hostOperatorIn((await tenantByRef(ctx, opts.tenant)).id),
          input.recordClass && input.periodDays ? { recordClass: input.recordClass, periodDays: input.periodDays } : undefined,
        ),
      );
      printResult(global, { preview }, previewLines(preview));
    });

  retention
    .command("holds")
    .description("a tenant's holds on every record class or one (in force or released, with reasons); patient holds are listed per patient")
    .requiredOption("--tenant <tenant>", "the tenant's id or slug")
    .action(async (opts: { tenant: string }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const { holds } = await withHostOperator({ unseal: false }, async (ctx) => listHolds(ctx, hostOperatorIn((await tenantByRef(ctx, opts.tenant)).id)));
      printResult(global, { holds }, holds.length ? holds.map(holdLine) : ["no holds on the tenant or a record class"]);
    });

  unsealOptions(
    retention
      .command("run")
      .description("purge now what is past its rule (every tenant, or --tenant), as the retention-purge job: batches, holds respected, a signed certificate per tenant")
      .option("--tenant <tenant>", "only this tenant (id or slug)"),
  ).action(async (opts: UnsealOpts & { tenant?: string }, cmd: Command) => {
    const global = cmd.optsWithGlobals<GlobalOptions>();
    const result = await withHostOperator({ unseal: true, ...opts }, async (ctx) => {
      const only = opts.tenant ? await tenantByRef(ctx, opts.tenant) : undefined;
      const purged: { tenantId: string; runId: string; destroyed: number }[] = [];
      let failure: unknown;
      // The job's own name and lock: a replica's scheduled purge and this one never overlap.
      const spec: JobSpec = {
        ...retentionPurgeJob,
        async run(c, run) {
          try {
            if (only) {
              const r = await purgeTenant(c, only.id, { jobRunId: run.runId });
              purged.push({ tenantId: only.id, ...r });
              return { counts: { tenants: 1, destroyed: r.destroyed } };
            }
            return { counts: await purgeAllTenants(c, run.runId, (tenantId, r) => purged.push({ tenantId, ...r })) };
          } catch (err) {
            failure = err;
            throw err;
          }
        },
      };
      const claimed = await claimAndRun(ctx, spec, { trigger: "manual", requestedBy: null });
      if (!claimed) throw new CliError("the retention purge is running now (on a replica or another command); wait for it to finish");
      await claimed.done;
      if (failure) throw failure;
      const runs = new Map<string, RetentionRunRes>();
      for (const p of purged) {
        const found = (await listRuns(ctx, hostOperatorIn(p.tenantId))).runs.find((r) => r.id === p.runId);
        if (found) runs.set(p.runId, found);
      }
      return { jobRunId: claimed.runId, tenants: purged.map((p) => ({ tenantId: p.tenantId, destroyed: p.destroyed, run: runs.get(p.runId) ?? null })) };
    });
    const total = result.tenants.reduce((s, t) => s + t.destroyed, 0);
    printResult(global, result, [...result.tenants.map((t) => runLine(t.tenantId, t.run ?? undefined, t.destroyed)), `job run ${result.jobRunId}: ${total} record(s) destroyed`]);
  });
}
