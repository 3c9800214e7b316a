import os from "node:os";
import type { Command } from "commander";
import { acknowledgeAlertAsOperator, listAlertsAsOperator, type AlertViewRes } from "../../alerts/index.js";
import { loadConfig } from "../../config/load.js";
import { withOfflineContext } from "../offline-context.js";
import { CliError, printResult, type GlobalOptions } from "../output.js";

function operator(): { userId: string; userAgent: string } {
  let user = "unknown";
  try {
    user = os.userInfo().username;
  } catch {
    /* no passwd entry in some containers */
  }
  return { userId: `os:${user}`, userAgent: "wardkeep-cli" };
}

/** One line per alert: id, severity, state, kind (key), summary, and who is on it. */
export function alertLine(a: AlertViewRes): string {
  const state = a.resolvedAt ? `resolved ${a.resolvedAt}` : a.acknowledgedAt ? "acknowledged" : "open";
  const ack = a.acknowledgementNote ? ` — ack: ${a.acknowledgementNote}` : "";
  return `${a.id.padStart(6)}  ${a.severity.padEnd(8)} ${state.padEnd(12)} ${a.kind}${a.key ? ` (${a.key})` : ""}${a.tenantId ? ` [tenant ${a.tenantId}]` : ""}: ${a.summary} (seen ${a.occurrences}x, last ${a.lastSeen})${ack}`;
}

export function registerAlerts(program: Command) {
  const alerts = program.command("alerts").description("the alerts centre: what is wrong now, and who is on it (docs/alerts.md)");

  alerts
    .command("list")
    .description("open alerts (most severe first), or with --all / --resolved their history; every tenant's and the appliance's")
    .option("--all", "open and resolved")
    .option("--resolved", "resolved only")
    .option("--limit <n>", "at most this many (1..1000)", "200")
    .action(async (opts: { all?: boolean; resolved?: boolean; limit: string }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const limit = Number(opts.limit);
      if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new CliError("--limit: a whole number from 1 to 1000", 2);
      if (opts.all && opts.resolved) throw new CliError("--all and --resolved: choose one", 2);
      const state = opts.all ? "all" : opts.resolved ? "resolved" : "open";
      const result = await withOfflineContext(loadConfig(), (ctx) => listAlertsAsOperator(ctx, { state, limit }));
      printResult(
        global,
        result,
        result.alerts.length ? [`${result.openCount} open`, ...result.alerts.map(alertLine)] : [`${result.openCount} open; no ${state === "all" ? "" : state + " "}alerts`],
      );
    });

  alerts
    .command("ack <id>")
    .description("acknowledge an open alert with a note (audited as the host operator); it stays open until the problem clears")
    .requiredOption("--note <text>", "what is being done about it")
    .action(async (id: string, opts: { note: string }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      if (!/^\d{1,18}$/.test(id)) throw new CliError(`${id}: an alert id is a number (see wardkeep alerts list)`, 2);
      const alert = await withOfflineContext(loadConfig(), (ctx) => acknowledgeAlertAsOperator(ctx, id, opts.note, operator()));
      printResult(global, { alert }, `acknowledged: ${alertLine(alert)}`);
    });
}
