import type { Command } from "commander";
import { listSessions, revokeAllRequest, revokeAllSessions, type SessionView } from "../../auth/index.js";
import { SYSTEM_META } from "../../kernel/request-meta.js";
import { findUser, operatorFor, parseOptions, withHostOperator } from "../host-operator.js";
import { CliError, printResult, type GlobalOptions } from "../output.js";

const line = (s: SessionView) =>
  `${(s.userEmail ?? "service account").padEnd(36)} ${s.device.padEnd(18)} ${(s.sourceIp ?? "-").padEnd(15)} last seen ${s.lastSeenAt}  signed in ${s.createdAt}  ${s.id}`;

export function registerSession(program: Command) {
  const session = program.command("session").description("live sessions of a tenant (or of appliance staff): list, sign out one person or everyone");

  session
    .command("list")
    .description("every live session: user, device, address, last seen, signed in, session id")
    .option("--tenant <tenant>", "the tenant's id or slug (without it: appliance staff)")
    .option("--user <user>", "only this account's sessions (email or id)")
    .action(async (opts: { tenant?: string; user?: string }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const sessions = await withHostOperator({ unseal: false }, async (ctx) => {
        if (opts.user) {
          const { user, actor } = await findUser(ctx, opts.user, opts.tenant);
          return listSessions(ctx, actor, { userId: user.id });
        }
        return listSessions(ctx, await operatorFor(ctx, opts.tenant), { all: true });
      });
      printResult(global, { sessions }, sessions.length ? sessions.map(line) : ["nobody is signed in"]);
    });

  session
    .command("revoke")
    .description("sign out one account (--user) or everyone of the tenant (--all) at once; the reason goes into the audit trail")
    .option("--tenant <tenant>", "the tenant's id or slug (without it: appliance staff, or the tenant --user belongs to)")
    .option("--user <user>", "the account whose sessions end (email or id)")
    .option("--all", "every session of the tenant (or of appliance staff)")
    .requiredOption("--reason <text>", 'why, recorded in the audit trail (e.g. "suspected phishing, INC-2231")')
    .action(async (opts: { tenant?: string; user?: string; all?: boolean; reason: string }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      if (Boolean(opts.user) === Boolean(opts.all)) throw new CliError("give either --user or --all", 2);
      const { reason } = parseOptions(revokeAllRequest, { reason: opts.reason }, { reason: "--reason" });
      const outcome = await withHostOperator({ unseal: false }, async (ctx) => {
        if (opts.user) {
          const { user, actor } = await findUser(ctx, opts.user, opts.tenant);
          return { who: user.email ?? user.id, ...(await revokeAllSessions(ctx, actor, { userId: user.id, ...(reason ? { reason } : {}) }, SYSTEM_META)) };
        }
        return { who: null, ...(await revokeAllSessions(ctx, await operatorFor(ctx, opts.tenant), { everyone: true, ...(reason ? { reason } : {}) }, SYSTEM_META)) };
      });
      const ended = `${outcome.revoked} session${outcome.revoked === 1 ? "" : "s"}`;
      printResult(
        global,
        { revoked: outcome.revoked },
        outcome.who ? `${ended} of ${outcome.who} ended` : `${ended} ended: everyone of ${opts.tenant ? `tenant ${opts.tenant}` : "the appliance staff"} is signed out`,
      );
    });
}
